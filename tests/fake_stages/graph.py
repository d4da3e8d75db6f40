"""A small real graph for the runner's tests: the stages write real files through the store.

    source ──► train[p_uncond=…] ──► report
           └─► evalnet ────────────┘

`FAKE_KILL_AT=<stage>` makes that stage SIGKILL its own process after writing its first file;
`FAKE_SLEEP=<seconds>` makes `source` sleep (so a test can signal the process mid-stage);
`FAKE_WAIT_FOR=<path>` makes it wait until that file exists (so a test decides when it goes on).
"""
from __future__ import annotations

import json
import os
import signal
import time

from pipeline.graph import StageSpec

MODULES = tuple(f"tests.fake_stages.{m}" for m in ("source", "train", "evalnet", "report"))


def write_parts(ctx, name: str, payloads: list[dict]) -> dict:
    """Write one file per payload, skipping those a previous interrupted attempt finished."""
    written, kept = 0, 0
    for i, payload in enumerate(payloads):
        rel = f"{name}-{i}.json"
        if ctx.out.exists(rel):
            kept += 1
            continue
        ctx.out.write_json(rel, payload)
        written += 1
        if os.environ.get("FAKE_KILL_AT") == name and written == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return {"written": written, "kept": kept}


def spec(name: str, reads, inputs=(), fan_out=()) -> StageSpec:
    return StageSpec(name=name, version="1", reads=tuple(reads), inputs=tuple(inputs), fan_out=tuple(fan_out))


def read_json(output, rel):
    return json.loads(output.read_bytes(rel))


def maybe_sleep():
    seconds = float(os.environ.get("FAKE_SLEEP", "0"))
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.05)
    gate = os.environ.get("FAKE_WAIT_FOR")
    while gate and not os.path.exists(gate):
        time.sleep(0.05)
