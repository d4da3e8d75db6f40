"""A failure said once: one plain line for the console, the traceback in a log file.

The log goes to `$PIPELINE_LOG_DIR` (default ./logs), one file per failing process, named
`pipeline-<time>-<pid>.log`; when it cannot be written the traceback goes to stderr instead.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

LOG_DIR_ENV, DEFAULT_LOG_DIR = "PIPELINE_LOG_DIR", "logs"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of the error's message (its repr when there is none), cut to `limit`."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "") or repr(error)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}"


def write_log(error: BaseException, where: str) -> str:
    """Write the traceback of `error` (raised in `where`) to the log; returns the file's path."""
    directory = os.environ.get(LOG_DIR_ENV, DEFAULT_LOG_DIR)
    path = os.path.join(directory, f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"{where} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}: command {' '.join(sys.argv)}\n\n")
            f.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    except OSError as io_error:
        print(f"(could not write the log {path}: {io_error}; the traceback follows)", file=sys.stderr)
        traceback.print_exception(type(error), error, error.__traceback__)
        return "<stderr>"
    return os.path.abspath(path)
