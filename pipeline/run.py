"""`python -m pipeline.run`: command line -> config -> plan -> execute.

    python -m pipeline.run                          # configs/default.yaml, every stage
    python -m pipeline.run --config configs/imagenet64.yaml --set train.lr=1e-4
    python -m pipeline.run --dry-run                # the plan: keys, cached or to run, and why
    python -m pipeline.run --stages shard,train_evalnet --force shard
    python -m pipeline.run --print-config

Exit status: 0 done, 1 a stage failed, 2 bad config or arguments, 128+N killed by signal N.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from pipeline import failures, stopping, tracking
from pipeline.capacity import CapacityError
from pipeline.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from pipeline.graph import (
    Instance,
    Plan,
    build_instances,
    format_capacity,
    format_units,
    load_stages,
    make_plan,
)
from pipeline.resources import gpus_a_local_instance_lacks
from pipeline.store import Directory, Output, Store, check_root

# Function-local imports: they bring in tqdm, which importing this module does not need.


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. --set train.lr=2e-4 --set sweep.w=[0,0.5,1]")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit; writes nothing")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to run (plus what they need that is not cached)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="re-run and republish this stage even if cached, resuming an interrupted partial "
                             "output if there is one (repeatable or comma-separated)")
    parser.add_argument("--restart", action="append", default=[], metavar="STAGE",
                        help="as --force, but discard the stage's partial output and start it from scratch")
    parser.add_argument("--verify", action="store_true",
                        help="check the sha256 of every cached file, trusting no size+mtime record")
    return parser.parse_args(argv)


class UsageError(ValueError):
    pass


def _stage_names(text: Optional[Iterable[str]], known: dict) -> set[str]:
    names = {n.strip() for part in (text or []) for n in part.split(",") if n.strip()}
    unknown = sorted(names - set(known))
    if unknown:
        raise UsageError(f"unknown stage {', '.join(unknown)} (stages: {', '.join(known)})")
    return names


# ----------------------------------------------------------------------------------------------
# What a stage sees


@dataclass
class StageContext:
    """Handed to `stage.run(ctx, cfg, inputs)`: where to write, where to log."""

    label: str
    key: str
    variant: dict[str, Any]
    out: Directory
    tracker: Any  # pipeline.tracking.RunLogger of the stage's nested MLflow run
    store: Store
    started: float = field(default_factory=time.time)

    def log(self, message: str) -> None:
        print(f"    {self.label}: {message}", flush=True)

    def progress(self, iterable=None, total: Optional[int] = None, desc: Optional[str] = None, unit: str = "it"):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=f"    {desc or self.label}", unit=unit, leave=False,
                    mininterval=1.0, file=sys.stderr, disable=None)

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        self.tracker.log_metrics(metrics, step)

    def log_params(self, params: dict[str, Any]) -> None:
        self.tracker.log_params(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tracker.set_tags(tags)

    def log_artifact(self, local_path: str, artifact_path: Optional[str] = None) -> None:
        self.tracker.log_artifact(local_path, artifact_path)


def _inputs_of(inst: Instance, outputs: dict[str, Output]) -> dict[str, Any]:
    """The stage's inputs from the outputs already opened (cached) or published this run."""
    inputs: dict[str, Any] = {}
    for dep, dep_instances in inst.inputs.items():
        opened = {d.label: outputs[d.label] for d in dep_instances}
        fanned = bool(dep_instances[0].stage.spec.fan_out)
        inputs[dep] = opened if fanned else next(iter(opened.values()))
    return inputs


# ----------------------------------------------------------------------------------------------
# Before anything starts


def preflight(config: Config) -> list[str]:
    """What the config points at outside this process, asked before Ray or MLflow start and
    within seconds (the config's own rules ran when it was loaded): the tracking store answers,
    the store root can hold a store."""
    problems = []
    problem = tracking.reachability_problem(config.tracking.uri)
    if problem:
        problems.append(f"tracking.uri = {config.tracking.uri!r}: {problem}")
    problem = check_root(config.store.root)
    if problem:
        problems.append(f"store.root = {config.store.root!r}: {problem}")
    return problems


def stage_checks(plan: Plan, config: Config) -> list[str]:
    """For each stage the plan will run, what would make it fail that can be found before Ray
    starts: its own `check` (an input URI that does not answer) and GPUs its units ask for that a
    private local instance cannot have (pipeline.resources)."""
    problems = []
    for stage in {i.name: i.stage for i in plan.to_run()}.values():
        if stage.check is not None:
            problems += stage.check(config)
        problem = gpus_a_local_instance_lacks(stage.spec.units(config), config.cluster) if stage.spec.units else None
        if problem:
            problems.append(f"{stage.name}: {problem}")
    return problems


# ----------------------------------------------------------------------------------------------
# Execution


def execute(plan: Plan, config: Config, config_path: str, store: Store) -> int:
    tracker = tracking.Tracker(config.tracking)
    stale = tracker.fail_stale_runs()
    if stale:
        print(f"marked {len(stale)} run(s) left RUNNING by a killed process as FAILED", flush=True)
    keys = {i.label: i.key for i in plan.instances if i.status != "skip"}
    started = time.time()
    outputs: dict[str, Output] = {}
    producer = tracking.git_state()
    active = [i for i in plan.instances if i.status != "skip"]
    report = RunReport(config_path, config, active, resumed={
        i.label for i in plan.to_run() if not i.restart and store.has_partial(i.name, i.key)})
    with tracker.pipeline_run(config, config_path, keys, git=producer, name=report.name()) as parent:
        parent.log_config(config)
        parent.log_text(plan.format(store.root_uri), "plan.txt")
        if plan.to_run():
            from pipeline import cluster

            os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # SIGINT stays ours during a sweep
            cluster.connect(config.cluster)
            stopping.reinstall()  # ray.init installs its own SIGTERM handler; ours must win
            print(cluster.describe(), flush=True)
        for n, inst in enumerate(active, 1):
            head = f"[{n}/{len(active)}] {inst.label}"
            if inst.status == "cached":
                outputs[inst.label] = store.open(inst.name, inst.key, required=inst.stage.spec.outputs)
                print(f"{head}: cached ({inst.key})", flush=True)
                continue
            with store.lock(inst.name, inst.key, on_wait=lambda holder: print(
                    f"{head}: waiting for {holder}, which is writing this output", flush=True)):
                opened = _published_meanwhile(inst, store)
                if opened is not None:
                    outputs[inst.label], inst.status = opened, "cached"
                    print(f"{head}: cached ({inst.key}, published by another run while this one waited)", flush=True)
                    continue
                t0 = time.time()
                try:
                    outputs[inst.label] = _run_guarded(head, inst, _inputs_of(inst, outputs), config, store, tracker,
                                                       parent.run_id, producer)
                except BaseException as exc:
                    report.seconds[inst.label] = time.time() - t0
                    with contextlib.suppress(Exception):
                        parent.set_description(report.description(
                            outputs, tracker, failed=(inst.label, getattr(exc, "error", exc))))
                    raise
                report.seconds[inst.label] = time.time() - t0
        parent.log_metrics(report.headline(outputs))
        parent.set_description(report.description(outputs, tracker))
        run_id = parent.run_id
    report.print_summary(outputs, tracker, run_id, time.time() - started)
    return 0


def _published_meanwhile(inst: Instance, store: Store) -> Optional[Output]:
    """The output, if another run published it while this one waited for the lock (a forced
    instance is rebuilt all the same)."""
    if inst.forced or inst.damaged or inst.status != "run":
        return None
    problem = store.verify(inst.name, inst.key, required=inst.stage.spec.outputs, level="stat")
    if problem is not None:
        if store.exists(inst.name, inst.key):  # published meanwhile, yet not whole: say why it is rebuilt
            print(f"    {inst.label}: the output another run published does not verify ({problem}); rebuilding it",
                  flush=True)
            inst.damaged = True
        return None
    return store.open(inst.name, inst.key, required=inst.stage.spec.outputs)


class StageFailed(RuntimeError):
    """A stage raised; the console has had its one-line summary, the log its traceback."""

    def __init__(self, label: str, error: BaseException, log: str):
        self.label, self.error, self.log = label, error, log
        super().__init__(f"{label}: {failures.one_line(error)}")


def _run_guarded(head: str, inst: Instance, inputs: dict[str, Any], config: Config, store: Store, tracker,
                 parent_id: str, producer: dict[str, str]) -> Output:
    print(f"{head}: running ({inst.reason})", flush=True)
    t0 = time.time()
    try:
        output = _run_instance(inst, inputs, config, store, tracker, parent_id, producer)
    except BaseException as exc:
        stopped = stopping.received() is not None or isinstance(exc, KeyboardInterrupt)
        what = "stopped" if stopped else f"FAILED: {failures.one_line(exc)}"
        print(f"{head}: {what} after {time.time() - t0:.1f}s", flush=True)
        partial = store.partial_dir(inst.name, inst.key)
        if partial.files():
            print(f"    partial output kept for resume: {partial.uri}", flush=True)
        elif store.has_partial(inst.name, inst.key):
            store.fs.delete_dir(partial.path)  # nothing was written: leave no trace
        if stopped or not isinstance(exc, Exception):
            raise
        raise StageFailed(inst.label, exc, failures.write_log(exc, f"stage {inst.label}")) from exc
    print(f"{head}: done in {time.time() - t0:.1f}s -> {output.uri}", flush=True)
    return output


def _run_instance(inst: Instance, inputs: dict[str, Any], config: Config, store: Store, tracker, parent_id: str,
                  producer: dict[str, str]) -> Output:
    tags = {"pipeline.stage": inst.name, "pipeline.stage_version": inst.stage.spec.version,
            "store.key": inst.key, **{f"variant.{k}": v for k, v in inst.variant.items()}}
    with tracker.run(inst.label, tags, parent=parent_id) as stage_log:
        stage_log.set_tags({f"store.input.{label}": out.key for dep in inputs.values()
                            for label, out in (dep.items() if isinstance(dep, dict) else [(dep.stage, dep)])})
        moved = store.quarantine(inst.name, inst.key) if inst.damaged else None
        if moved is not None:
            print(f"    the damaged output was moved aside (kept for inspection): {moved.uri}", flush=True)
            stage_log.set_tags({"store.damaged_moved_to": moved.uri})
        partial = store.begin(inst.name, inst.key, fresh=inst.restart)
        ctx = StageContext(inst.label, inst.key, inst.variant, partial, stage_log, store)
        summary = inst.stage.run(ctx, config, inputs) or {}
        output = store.publish(inst.name, inst.key, {
            "label": inst.label, "version": inst.stage.spec.version, "variant": inst.variant,
            "material": inst.material, "summary": summary,
            "producer": {"mlflow_run_id": stage_log.run_id, **producer},
        }, replace=inst.forced, required=inst.stage.spec.outputs)
        stage_log.set_tags({"store.uri": output.uri, "store.total_bytes": output.manifest["total_bytes"]})
        stage_log.log_dict(summary, "summary.json")
    return output


# ----------------------------------------------------------------------------------------------
# What a run tells people: its name in MLflow, its description there, the summary at its end

MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


@dataclass
class RunReport:
    """A pipeline run as people see it. A stage's summary may name `pages` (paths in its output,
    also logged as artifacts of its MLflow run, the main one first: linked from the run's
    description, the first printed at the end) and `headline` metrics (logged on the parent run as
    `<stage>.<metric>`), e.g. the leaderboard's page, plots and best numbers."""

    config_path: str
    config: Config
    active: list[Instance]
    resumed: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)

    def what_ran(self) -> str:
        ran = sum(i.status == "run" for i in self.active)
        n = len(self.active)
        what = ("cached" if not ran else f"{n} stage{'s' * (n != 1)}" if ran == n else f"{ran} of {n} stages")
        return what + (" · resumed" if self.resumed else "")

    def name(self) -> str:
        """The parent run's name: config, what ran, short config key, e.g. `default · 9 stages ·
        3f2a9c1e`, `default · 4 of 9 stages · resumed · 3f2a9c1e`, `default · cached · 3f2a9c1e`
        (what ran before the key: the UI's run list cuts long names short)."""
        return f"{Path(self.config_path).stem} · {self.what_ran()} · {self.config.hash()[:8]}"

    def headline(self, outputs: dict[str, Output]) -> dict[str, float]:
        return {f"{out.stage}.{k}": float(v) for out in outputs.values()
                for k, v in (out.summary.get("headline") or {}).items() if v is not None}

    def _pages(self, outputs: dict[str, Output]) -> list[tuple[Output, str, str]]:
        """(output, artifact path, MLflow run id) of every page a stage named."""
        return [(out, page, out.manifest.get("producer", {}).get("mlflow_run_id", ""))
                for out in outputs.values() for page in out.summary.get("pages") or []]

    def description(self, outputs: dict[str, Output], tracker,
                    failed: Optional[tuple[str, BaseException]] = None) -> str:
        """Markdown for the run's page in the MLflow UI: what ran, links to the pages, every stage."""
        ran = [i.label for i in self.active if i.status == "run"]
        lines = [f"**{Path(self.config_path).stem}** (`{self.config_path}`, config `{self.config.hash()[:12]}`): "
                 f"{len(ran)} of {len(self.active)} stages to run, the rest cached"
                 + (f"; resumed {', '.join(sorted(self.resumed))}." if self.resumed else ".")]
        if failed:
            lines.append(f"\n**Failed** at `{failed[0]}`: {type(failed[1]).__name__}: {failed[1]}"[:2000])
        links = [f"[{out.stage}: {page}]({tracker.ui_path(run_id, page)})"
                 for out, page, run_id in self._pages(outputs) if run_id]
        if links:
            lines.append("\n" + " · ".join(links))
        headline = self.headline(outputs)
        if headline:
            lines.append("\n" + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(headline.items())))
        lines += ["", "| stage | this run | store key |", "| --- | --- | --- |"]
        for inst in self.active:
            if inst.label in self.seconds:
                done = f"ran {self.seconds[inst.label]:.1f}s" + (" (resumed)" if inst.label in self.resumed else "")
                done = done if inst.label in outputs else "FAILED"
            else:
                done = "cached" if inst.status == "cached" else "not reached"
            lines.append(f"| {inst.label.replace('|', '/')} | {done} | `{inst.key}` |")
        return "\n".join(lines)

    def print_summary(self, outputs: dict[str, Output], tracker, run_id: str, seconds: float) -> None:
        print(f"\nfinished in {seconds:.1f}s: {self.what_ran()}", flush=True)
        for label, out in outputs.items():
            took = f"{self.seconds[label]:.1f}s" if label in self.seconds else "cached"
            print(f"  {label:<32} {took:>9}  {out.uri}")
        for out in outputs.values():
            page = (out.summary.get("pages") or [None])[0]  # the first page a stage names is its main one
            if page:
                print(f"{out.stage}: {Path(out.child(page)).as_uri() if out.local_path else f'{out.uri}/{page}'}")
        print(f"MLflow run {run_id} in {tracker.uri}")
        if tracker.uri.startswith(("http://", "https://")):
            print(f"open it at {tracker.ui_url(tracker.uri, run_id)}", flush=True)
        else:
            print(f"look at it: mlflow ui --backend-store-uri {tracker.uri}  (binds 127.0.0.1:5000), then open\n"
                  f"  {tracker.ui_url(MLFLOW_UI, run_id)}", flush=True)


# ----------------------------------------------------------------------------------------------
# Failures and signals: one plain line each, the details in a log file


def _stopped(signum: int) -> int:
    try:
        from pipeline import cluster

        cluster.disconnect()
    finally:
        print(f"stopped by {signal.Signals(signum).name}: MLflow runs marked FAILED, partial outputs kept; "
              "the same command resumes", file=sys.stderr, flush=True)
    return stopping.exit_status(signum)


def main(argv: Optional[list[str]] = None, stage_modules: Optional[tuple[str, ...]] = None) -> int:
    """The CLI; `stage_modules` replaces the registered stages (tests run small graphs)."""
    args = parse_args(argv)
    previous = stopping.install()
    try:
        return _main(args, stage_modules)
    except StageFailed as failed:
        print(f"pipeline failed in stage {failed}; log: {failed.log}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return _stopped(stopping.received() or signal.SIGINT)
    except Exception as error:
        if stopping.received() is not None:  # a library turned the stop into an error of its own
            return _stopped(stopping.received())
        log = failures.write_log(error, "pipeline")
        print(f"pipeline failed: {failures.one_line(error)}; log: {log}", file=sys.stderr, flush=True)
        return 1
    finally:
        stopping.restore(previous)


def _main(args: argparse.Namespace, stage_modules: Optional[tuple[str, ...]]) -> int:
    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}\nnothing was started", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    stages = load_stages(stage_modules) if stage_modules else load_stages()
    try:
        selected = _stage_names([args.stages], stages) if args.stages else None
        restart = frozenset(_stage_names(args.restart, stages))
        force = frozenset(_stage_names(args.force, stages)) | restart
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = preflight(config)
    if not problems:
        store = Store(config.store.root, remember_hashes=not args.dry_run)
        plan = make_plan(build_instances(stages, config), store, selected, force, restart=restart,
                         level="sha256" if args.verify else config.store.verify)
        print(plan.format(store.root_uri), flush=True)
        problems = stage_checks(plan, config)
    if problems:
        for problem in problems:
            print(f"config error: {problem}", file=sys.stderr)
        print(f"nothing was started ({len(problems)} problem(s) above)", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_units(plan, config), flush=True)
        try:
            print(format_capacity(plan, config), flush=True)
        except CapacityError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        return 0
    return execute(plan, config, args.config, store)


def cli() -> None:
    status = main()
    stopping.exit_now_if_stopped(status)
    sys.exit(status)


if __name__ == "__main__":
    cli()
