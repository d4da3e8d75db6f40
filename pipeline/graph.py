"""The stages as a DAG, their cache keys, and the plan: what runs, what is cached, and why.

A stage's cache key is sha256(name, version, the resolved config sections it reads, its
variant, its inputs' keys). A stage may fan out over a list-valued config key (one training
per `train.p_uncond` value): each value is its own instance with its own key, and the hashed
section holds that single value, so adding a value to the list leaves the other keys as they
were.
"""
from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from pipeline.capacity import Networks, Row
from pipeline.capacity import plan as capacity_plan
from pipeline.config import SECTIONS, Config, flatten, hash_value
from pipeline.store import NOT_PUBLISHED, Store

if TYPE_CHECKING:
    from pipeline.resources import Units

# The order of registration is the order of execution among independent stages.
STAGE_MODULES = (
    "stages.shard",
    "stages.train_diffusion",
    "stages.train_classifier",
    "stages.train_evalnet",
    "stages.reference_stats",
    "stages.sample",
    "stages.evaluate",
    "stages.sweep",
    "stages.leaderboard",
)


@dataclass(frozen=True)
class StageSpec:
    """What a stage declares. Stage modules must stay cheap to import: heavy imports go in run()."""

    name: str
    version: str
    reads: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    fan_out: tuple[str, ...] = ()  # dotted list-valued keys, one instance per combination
    # what each unit of its work asks Ray for (a tuple: several kinds of unit); None: the driver
    units: Optional[Callable[[Config], "Units | tuple[Units, ...]"]] = None
    # Files a whole output must hold (paths, or globs such as "train-*.tar" that must match at
    # least one file): a manifest without them is not a published output.
    outputs: tuple[str, ...] = ()

    def __post_init__(self):
        for section in self.reads:
            if section not in SECTIONS:
                raise ValueError(f"stage {self.name} reads unknown config section {section!r}")
        for key in self.fan_out:
            if key.split(".")[0] not in self.reads:
                raise ValueError(f"stage {self.name} fans out over {key} but does not read its section")


@dataclass
class Stage:
    """A stage module: `STAGE` (its spec), `run(ctx, cfg, inputs)`, and optionally `work(cfg, nets)`
    -> pipeline.capacity.Work, the work it implies (the capacity plan of `--dry-run`)."""

    spec: StageSpec
    run: Callable
    # `check(cfg) -> list[str]`: what would make the stage fail that the config's rules cannot see
    # (an input URI that does not answer), found before anything starts; optional, and quick.
    check: Optional[Callable] = None
    work: Optional[Callable] = None

    @property
    def name(self) -> str:
        return self.spec.name


def load_stages(modules: tuple[str, ...] = STAGE_MODULES) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        spec: StageSpec = module.STAGE
        if spec.name in stages:
            raise ValueError(f"two stages are named {spec.name}")
        stages[spec.name] = Stage(spec, module.run, check=getattr(module, "check", None),
                                  work=getattr(module, "work", None))
    for stage in stages.values():
        for dep in stage.spec.inputs:
            if dep not in stages:
                raise ValueError(f"stage {stage.name} needs {dep}, which is not registered")
    return stages


def topological_order(stages: dict[str, Stage]) -> list[str]:
    order, state = [], {}

    def visit(name: str, trail: tuple[str, ...]):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError("stage graph has a cycle: " + " -> ".join(trail + (name,)))
        state[name] = "visiting"
        for dep in stages[name].spec.inputs:
            visit(dep, trail + (name,))
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name, ())
    return order


# ----------------------------------------------------------------------------------------------
# Instances and keys


@dataclass
class Instance:
    """One runnable unit: a stage, perhaps with a fan-out variant."""

    stage: Stage
    variant: dict[str, Any]
    key: str = ""
    material: dict = field(default_factory=dict)
    inputs: dict[str, list["Instance"]] = field(default_factory=dict)
    status: str = ""  # cached | run | skip
    reason: str = ""
    forced: bool = False    # --force / --restart: rebuilt and republished even if cached
    restart: bool = False   # --restart: its partial output is discarded first
    damaged: bool = False   # a published output failed verification: moved aside, then rebuilt

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def label(self) -> str:
        if not self.variant:
            return self.name
        inner = ",".join(f"{k.split('.')[-1]}={v}" for k, v in self.variant.items())
        return f"{self.name}[{inner}]"


def _variants(spec: StageSpec, config: Config) -> list[dict[str, Any]]:
    if not spec.fan_out:
        return [{}]
    lists = []
    for key in spec.fan_out:
        section, attr = key.split(".", 1)
        values = getattr(getattr(config, section), attr)
        lists.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*lists)]


def _hashed_sections(spec: StageSpec, config: Config, variant: dict[str, Any]) -> dict:
    sections = {name: config.section(name) for name in spec.reads}  # fresh dicts: safe to edit
    for key, value in variant.items():
        section, attr = key.split(".", 1)
        sections[section][attr] = value
    return sections


def build_instances(stages: dict[str, Stage], config: Config) -> list[Instance]:
    """Every instance of every stage, in execution order, with its cache key."""
    by_stage: dict[str, list[Instance]] = {}
    ordered: list[Instance] = []
    for name in topological_order(stages):
        stage = stages[name]
        for variant in _variants(stage.spec, config):
            inst = Instance(stage, variant)
            inst.inputs = {dep: by_stage[dep] for dep in stage.spec.inputs}
            inst.material = {
                "stage": name,
                "version": stage.spec.version,
                "variant": variant,
                "config": _hashed_sections(stage.spec, config, variant),
                "inputs": {dep: sorted(i.key for i in insts) for dep, insts in inst.inputs.items()},
            }
            inst.key = hash_value(inst.material)[:20]
            by_stage.setdefault(name, []).append(inst)
            ordered.append(inst)
    return ordered


# ----------------------------------------------------------------------------------------------
# The plan


@dataclass
class Plan:
    instances: list[Instance]

    def to_run(self) -> list[Instance]:
        return [i for i in self.instances if i.status == "run"]

    def format(self, store_uri: str) -> str:
        width = max(len(i.label) for i in self.instances)
        lines = [f"plan ({len(self.to_run())} to run, store {store_uri}):"]
        for inst in self.instances:
            mark = {"cached": "cached", "run": "RUN   ", "skip": "skip  "}[inst.status]
            lines.append(f"  {inst.label:<{width}}  {inst.key}  {mark}  {inst.reason}")
        return "\n".join(lines)


def format_units(plan: Plan, config: Config) -> str:
    """Per stage of the plan (not skipped): what each unit of its work asks Ray for and how many
    run at once (pipeline.resources.Units), from the stage's own declaration."""
    names = list(dict.fromkeys(i.name for i in plan.instances if i.status != "skip"))
    if not names:
        return ""
    stages = {i.name: i.stage for i in plan.instances}
    width = max(len(n) for n in names)
    lines = ["resources (per stage: units at once x what each unit asks Ray for):"]
    for name in names:
        declared = stages[name].spec.units
        units = declared(config) if declared else ()
        units = units if isinstance(units, tuple) else (units,)
        lines.append(f"  {name:<{width}}  {'; '.join(u.describe() for u in units) or 'in the driver process'}")
    return "\n".join(lines)


def plan_capacity(plan: Plan, config: Config, nets=None):
    """The capacity plan (pipeline.capacity.Plan) of the instances to run: the work each stage
    declares (`work`) in images, network passes and FLOPs of the configured networks, and its
    device-hours and wall-clock on the units it declares. Networks are built on the meta device
    (`nets`: pipeline.capacity.Networks of this config, already counted)."""
    nets = nets or Networks(config)
    rows = []
    for inst in (i for i in plan.instances if i.status != "skip"):
        runs, stage = inst.status == "run", inst.stage
        rows.append(Row(inst.label, runs, stage.work(config, nets) if runs and stage.work else None,
                        stage.spec.units(config) if stage.spec.units else None))
    return capacity_plan(rows, config.cluster, nets) if rows else None


def format_capacity(plan: Plan, config: Config) -> str:
    capacity = plan_capacity(plan, config)
    return "\n".join(capacity.lines) if capacity else ""


def make_plan(
    instances: list[Instance],
    store: Store,
    selected: Optional[set[str]] = None,
    force: frozenset[str] = frozenset(),
    deep_verify: bool = False,
    restart: frozenset[str] = frozenset(),
    level: str = "size",
) -> Plan:
    """Decide which instances run and why, changing nothing but the store's record of confirmed
    hashes (none in a Store made with remember_hashes=False, as a dry run's).

    `selected` stage names run (when not cached) together with every upstream instance they
    need that is not cached; other stages are skipped. `force` names stages re-run and
    republished regardless, resuming an interrupted partial output; `restart` ones (also forced)
    discard it. A published output that fails verification (at `level`, see
    pipeline.store_integrity; "sha256" with `deep_verify`) is moved aside and rebuilt.
    """
    force = frozenset(force) | frozenset(restart)
    wanted: set[int] = set()
    if selected is None:
        wanted = {id(i) for i in instances}
    else:
        def want(inst: Instance):
            if id(inst) in wanted:
                return
            wanted.add(id(inst))
            for deps in inst.inputs.values():
                for dep in deps:
                    want(dep)

        for inst in instances:
            if inst.name in selected or inst.name in force:
                want(inst)

    for inst in instances:
        if id(inst) not in wanted:
            inst.status, inst.reason = "skip", "not selected"
            continue
        selected_here = selected is None or inst.name in selected or inst.name in force
        inst.forced, inst.restart = inst.name in force, inst.name in restart
        if inst.forced:
            inst.status, inst.reason = "run", _why_forced(inst, store)
            continue
        problem = store.verify(inst.name, inst.key, deep=deep_verify, required=inst.stage.spec.outputs, level=level)
        if problem is None:
            inst.status, inst.reason = "cached", "cached"
            continue
        inst.status = "run"
        inst.reason = _why_run(inst, store, problem)
        if not selected_here:
            inst.reason = "needed upstream, " + inst.reason
    return Plan(instances)


def _resume_note(inst: Instance, store: Store) -> str:
    if not store.has_partial(inst.name, inst.key):
        return ""
    return "; discarding its partial output (--restart)" if inst.restart else "; resuming its partial output"


def _why_forced(inst: Instance, store: Store) -> str:
    flag = "--restart" if inst.restart else "--force"
    published = store.exists(inst.name, inst.key)
    return f"forced ({flag}){'; republished' if published else ''}{_resume_note(inst, store)}"


def _why_run(inst: Instance, store: Store, problem: str) -> str:
    if problem != NOT_PUBLISHED and store.output_dir(inst.name, inst.key).exists(""):
        inst.damaged = True
        return f"output failed verification ({problem}): moved aside and rebuilt{_resume_note(inst, store)}"
    resume = _resume_note(inst, store)
    previous = store.latest_manifest(inst.name, inst.label)
    if previous is None:
        return "no output yet" + resume
    changes = diff_material(previous.get("material", {}), inst.material)
    return ("changed: " + "; ".join(changes) if changes else "no output under this key") + resume


def diff_material(old: dict, new: dict, limit: int = 4) -> list[str]:
    """Human-readable differences between two key materials (config values, input keys)."""
    changes = []
    if old.get("version") != new.get("version"):
        changes.append(f"version {old.get('version')} -> {new.get('version')}")
    old_flat, new_flat = flatten(old.get("config", {})), flatten(new.get("config", {}))
    for key in sorted(set(old_flat) | set(new_flat)):
        if old_flat.get(key, "<unset>") != new_flat.get(key, "<unset>"):
            changes.append(f"{key} {old_flat.get(key, '<unset>')!r} -> {new_flat.get(key, '<unset>')!r}")
    for dep in sorted(set(old.get("inputs", {})) | set(new.get("inputs", {}))):
        if old.get("inputs", {}).get(dep) != new.get("inputs", {}).get(dep):
            changes.append(f"input {dep} changed")
    if len(changes) > limit:
        changes = changes[:limit] + [f"and {len(changes) - limit} more"]
    return changes
