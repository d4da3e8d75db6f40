"""Stopping on SIGTERM / SIGINT: promptly, once, with the right exit status.

The first signal records its number and raises `Terminated` in the main thread. `Terminated` is
a `KeyboardInterrupt`, the exception Python and its libraries already expect from Ctrl-C: Ray's
blocking calls (`ray.get`, `ray.wait`) turn a handler's KeyboardInterrupt into their own
KeyboardInterrupt instead of swallowing it, and Tune lets it through. Code that catches it on the
way (or a library that replaces it) cannot lose the stop: `received()` keeps the signal number for
the runner's exit status (128 + N). A watchdog then gives the process `GRACE_SECONDS` to unwind
(end its MLflow runs, release Ray); a second signal, or the watchdog, exits at once with 128 + N.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_SECONDS = 25.0

_received: Optional[int] = None


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGINT."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"terminated by signal {signum} ({signal.Signals(signum).name})")


def received() -> Optional[int]:
    """The number of the first stop signal this process received, or None."""
    return _received


def exit_status(signum: int) -> int:
    return 128 + signum


def _hard_exit(signum: int, why: str) -> None:
    print(f"\n{why}: exiting now with status {exit_status(signum)}", file=sys.stderr, flush=True)
    os._exit(exit_status(signum))


def _watchdog(signum: int, seconds: float) -> None:
    timer = threading.Timer(seconds, _hard_exit, (signum, f"still unwinding {seconds:g}s after the stop signal"))
    timer.daemon = True
    timer.start()


def _handle(signum: int, _frame) -> None:
    global _received
    if _received is not None:
        _hard_exit(signum, f"second stop signal ({signal.Signals(signum).name})")
    _received = signum
    print(f"\nreceived {signal.Signals(signum).name}: stopping (partial outputs are kept; "
          "send it again to exit at once)", file=sys.stderr, flush=True)
    _watchdog(signum, GRACE_SECONDS)
    raise Terminated(signum)


def install() -> dict:
    """Install the handlers (main thread only); returns the previous ones for `restore`."""
    return {s: signal.signal(s, _handle) for s in SIGNALS}


def reinstall() -> None:
    """Take the signals back after a library replaced the handlers (ray.init does for SIGTERM)."""
    for s in SIGNALS:
        signal.signal(s, _handle)


def restore(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def check() -> None:
    """Raise `Terminated` if a stop signal came (for code that resumes after catching it)."""
    if _received is not None:
        raise Terminated(_received)


def exit_now_if_stopped(status: int) -> None:
    """After a stop, leave without the interpreter's teardown: once Ray has been shut down it can
    hang for half a minute in C++ threads (and the watchdog, a Python thread, cannot run then)."""
    if _received is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def reset() -> None:
    """Forget a received signal (tests that run the pipeline several times in one process)."""
    global _received
    _received = None
