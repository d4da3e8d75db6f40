"""`python -m pipeline.bench NAME [--json] [--quick] [--out FILE]`: hot paths timed against naive baselines.

Each benchmark is a module `pipeline/benches/<NAME>.py` with `run(quick: bool) -> dict`, which
times the pipeline's code path and the tool a user would pick instead in the same process and
returns flat figures; `ratio` is the headline (ours / peer, higher is better). A benchmark that
cannot run here (`gpu` without CUDA) returns `{"skipped": reason}`: one line, exit status 0.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import sys
import time
from pathlib import Path

import pipeline.benches


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(pipeline.benches.__path__) if not m.name.startswith("_"))


def run_bench(name: str, quick: bool = False) -> dict:
    if name not in available():
        raise KeyError(f"unknown benchmark {name!r} (available: {', '.join(available()) or 'none yet'})")
    module = importlib.import_module(f"pipeline.benches.{name}")
    started = time.perf_counter()
    figures = dict(module.run(quick=quick))
    figures.setdefault("bench", name)
    figures["wall_s"] = round(time.perf_counter() - started, 2)
    if "skipped" in figures:
        return figures
    ratio = figures.get("ratio")
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise ValueError(f"benchmark {name} returned no finite 'ratio': {ratio!r}")
    return figures


def format_figures(figures: dict) -> str:
    width = max(len(k) for k in figures)
    lines = []
    for key, value in figures.items():
        shown = f"{value:,.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(available()) or 'none yet'}")
    parser.add_argument("--json", action="store_true", help="print one JSON object (its `ratio` is the headline)")
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests; figures are noisy")
    parser.add_argument("--out", metavar="FILE", help="also write the figures to FILE as one JSON object (the "
                                                      "`gpu` record is what cluster.capacity.bench reads)")
    args = parser.parse_args(argv)
    if not args.name:
        print("benchmarks: " + (", ".join(available()) or "none yet"))
        return 0
    try:
        figures = run_bench(args.name, quick=args.quick)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
    if "skipped" in figures and not args.json:
        print(f"{args.name}: skipped: {figures['skipped']}")
    else:
        print(json.dumps(figures) if args.json else format_figures(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
