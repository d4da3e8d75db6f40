"""`python -m tests.reliability.drive WORKDIR GRAPH [pipeline args...]`: the runner on one of the
suite's stage graphs, with its store and MLflow in WORKDIR, in a process of its own (so a test can
signal it, kill it, or run two at once). Exits as `python -m pipeline.run` does (128+N on a signal).

GRAPH: `fast` (real shard, reference_stats, sample, evaluate, sweep; random-weight stand-ins for the three
trainings), `train` (real shard and train_evalnet), `chaos` (real shard, train_evalnet,
reference_stats, sample, sweep; stand-ins for train_diffusion and train_classifier) or `fake`
(tests/fake_stages).
"""
from __future__ import annotations

import sys
from pathlib import Path

CONFIG = Path(__file__).with_name("reduced.yaml")
STANDINS = ("tests.sweep_stages.train_diffusion", "tests.sweep_stages.train_classifier")
GRAPHS = {
    "fast": ("stages.shard", *STANDINS, "tests.sweep_stages.train_evalnet", "stages.reference_stats",
             "stages.sample", "stages.evaluate", "stages.sweep"),
    "train": ("stages.shard", "stages.train_evalnet"),
    "chaos": ("stages.shard", *STANDINS, "stages.train_evalnet", "stages.reference_stats", "stages.sample",
              "stages.sweep"),
}


def graph(name: str) -> tuple[str, ...]:
    if name == "fake":
        from tests.fake_stages.graph import MODULES

        return MODULES
    return GRAPHS[name]


def arguments(root: Path, *args: str) -> list[str]:
    return ["--config", str(CONFIG), "--set", f"store.root={root / 'runs'}",
            "--set", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "--set", f"tracking.artifact_location={root / 'mlruns'}", *args]


def main(argv: list[str]) -> None:
    from pipeline import stopping
    from pipeline.run import main as run_main

    root, name, rest = Path(argv[0]).resolve(), argv[1], argv[2:]
    status = run_main(arguments(root, *rest), stage_modules=graph(name))
    stopping.exit_now_if_stopped(status)
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
