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
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from pipeline.config import Config, ConfigError, DEFAULT_CONFIG, load_config
from pipeline.graph import Instance, Plan, build_instances, format_units, load_stages, make_plan
from pipeline.store import Directory, Output, Store


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
                        help="re-run this stage even if cached (repeatable or comma-separated)")
    parser.add_argument("--verify", action="store_true", help="check sha256 of cached outputs, not just sizes")
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
# Execution


def _raise_terminated(signum, _frame):
    from pipeline.tracking import Terminated

    raise Terminated(signum)


def _install_signal_handlers() -> dict:
    """SIGTERM/SIGINT raise `Terminated`, so every open MLflow run is ended FAILED."""
    return {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGINT)}


def execute(plan: Plan, config: Config, config_path: str, store: Store) -> int:
    from pipeline import tracking

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
        i.label for i in plan.to_run() if not i.reason.startswith("forced") and store.has_partial(i.name, i.key)})
    with tracker.pipeline_run(config, config_path, keys, git=producer, name=report.name()) as parent:
        parent.log_config(config)
        parent.log_text(plan.format(store.root_uri), "plan.txt")
        if plan.to_run():
            from pipeline import cluster

            cluster.connect(config.cluster)
            _install_signal_handlers()  # ray.init installs its own SIGTERM handler; ours must win
            print(cluster.describe(), flush=True)
        for n, inst in enumerate(active, 1):
            head = f"[{n}/{len(active)}] {inst.label}"
            if inst.status == "cached":
                outputs[inst.label] = store.open(inst.name, inst.key)
                print(f"{head}: cached ({inst.key})", flush=True)
                continue
            print(f"{head}: running ({inst.reason})", flush=True)
            t0 = time.time()
            try:
                outputs[inst.label] = _run_instance(inst, _inputs_of(inst, outputs), config, store, tracker,
                                                     parent.run_id, producer)
            except BaseException as exc:
                report.seconds[inst.label] = time.time() - t0
                with contextlib.suppress(Exception):
                    parent.set_description(report.description(outputs, tracker, failed=(inst.label, exc)))
                if not isinstance(exc, Exception):
                    raise
                print(f"{head}: FAILED after {time.time() - t0:.1f}s: {type(exc).__name__}: {exc}", flush=True)
                partial = store.partial_dir(inst.name, inst.key)
                if partial.files():
                    print(f"    partial output kept for resume: {partial.uri}", flush=True)
                elif store.has_partial(inst.name, inst.key):
                    store.fs.delete_dir(partial.path)  # nothing was written: leave no trace
                if not isinstance(exc, NotImplementedError):
                    traceback.print_exc()
                raise
            report.seconds[inst.label] = time.time() - t0
            print(f"{head}: done in {report.seconds[inst.label]:.1f}s -> {outputs[inst.label].uri}", flush=True)
        parent.log_metrics(report.headline(outputs))
        parent.set_description(report.description(outputs, tracker))
        run_id = parent.run_id
    report.print_summary(outputs, tracker, run_id, time.time() - started)
    return 0


def _run_instance(inst: Instance, inputs: dict[str, Any], config: Config, store: Store, tracker, parent_id: str,
                  producer: dict[str, str]) -> Output:
    forced = inst.reason.startswith("forced")
    tags = {"pipeline.stage": inst.name, "pipeline.stage_version": inst.stage.spec.version,
            "store.key": inst.key, **{f"variant.{k}": v for k, v in inst.variant.items()}}
    with tracker.run(inst.label, tags, parent=parent_id) as stage_log:
        stage_log.set_tags({f"store.input.{label}": out.key for dep in inputs.values()
                            for label, out in (dep.items() if isinstance(dep, dict) else [(dep.stage, dep)])})
        partial = store.begin(inst.name, inst.key, fresh=forced)
        ctx = StageContext(inst.label, inst.key, inst.variant, partial, stage_log, store)
        summary = inst.stage.run(ctx, config, inputs) or {}
        output = store.publish(inst.name, inst.key, {
            "label": inst.label, "version": inst.stage.spec.version, "variant": inst.variant,
            "material": inst.material, "summary": summary,
            "producer": {"mlflow_run_id": stage_log.run_id, **producer},
        }, replace=forced)
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


def main(argv: Optional[list[str]] = None, stage_modules: Optional[tuple[str, ...]] = None) -> int:
    """The CLI; `stage_modules` replaces the registered stages (tests run small graphs)."""
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    stages = load_stages(stage_modules) if stage_modules else load_stages()
    try:
        selected = _stage_names([args.stages], stages) if args.stages else None
        force = frozenset(_stage_names(args.force, stages))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = Store(config.store.root)
    instances = build_instances(stages, config)
    plan = make_plan(instances, store, selected, force,
                     deep_verify=args.verify or config.store.verify == "sha256")
    print(plan.format(store.root_uri), flush=True)
    if args.dry_run:
        print(format_units(plan, config), flush=True)
        return 0

    previous = _install_signal_handlers()
    try:
        return execute(plan, config, args.config, store)
    except Exception:
        return 1
    except BaseException as exc:
        from pipeline.tracking import Terminated

        if isinstance(exc, Terminated):
            print(f"\nstopped by signal {exc.signum}; runs marked FAILED, partial outputs kept", file=sys.stderr)
            return 128 + exc.signum
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
