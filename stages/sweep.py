"""Ray Tune over guidance kind x strength x interval x sampler x steps x p_uncond; each trial samples and evaluates.

No trial trains: `p_uncond` selects among the cached train_diffusion outputs. Two rounds
(multi-fidelity): every configuration is screened with `sweep.screen_images` images, then the
configurations of each guidance kind not clearly worse than its best (95% intervals of the
leaderboard's ranking metric overlap; at most `sweep.top_k`, null: all) are evaluated again with
`sweep.full_images` (pipeline.sweep_space.select_full_round); image i depends only on (seed, i),
so the full round reuses the screened chunks and generates only the rest. Each round is one Ray
Tune experiment (a function trainable per configuration asking for `sweep.cpus_per_trial` CPUs,
at most `sweep.max_concurrent` at once, and on a private local instance never more than fit beside
the pool's started actors: pipeline.resources.at_once_beside_pool) stored in the stage's partial output.

Sampling and feature extraction are not done by the trials: the stage starts ONE pool of sampler
actors (pipeline.generation.pool: up to `sweep.num_actors`, `sweep.cpus_per_actor` CPUs each,
one GPU each with `sweep.use_gpu` or `eval.use_gpu`) and every trial hands its (configuration,
index range) chunks of `sweep.chunk_size` images, then their feature tasks, to it (the trial body:
stages/sweep_trial.py). One configuration's images spread over every actor and a wide sweep
keeps them all busy; the actors keep the networks they loaded, so switching configuration does
not read the store again. Joined to a cluster, actors the cluster cannot place yet wait for the
autoscaler and take work when they start.

Resume: a trial writes its chunks as it goes and its row to results/<round>/<config_id>.json
last, so the set of finished trials is whatever rows exist, and a trial killed midway regenerates
only its missing chunks. Re-running after a driver kill starts a Tune experiment over the
configurations without a row only; nothing finished is repeated. Each trial also gets a nested
MLflow run (logged by the driver as trials complete, and at the next start for trials that
finished while the driver was dead), tagged with the nodes its chunks and features ran on.

Output: trials.parquet (one row per configuration and fidelity: the SamplerConfig's settings with
its id and name, w and s, NFE per image, images/s per sampler actor, N, every metric, protocol id,
device, the Ray node of the trial and of every chunk and feature task) and grids/<config_id>.png
(one row per class).
"""
import dataclasses
import io
import json
import posixpath
import time

from pipeline.capacity import Work, features, passes_per_image, sampling
from pipeline.cluster import target_address
from pipeline.graph import StageSpec
from pipeline.resources import NotEnoughResourcesError, Placement, Units, at_once_beside_pool, units_that_fit
from pipeline.tracking import Tracker

# Function-local imports: they bring in torch, Ray, SciPy and pandas, which planning (it imports every
# stage) does not need.


def trial_units(cfg) -> Units:
    return Units("sweep trial", cfg.sweep.max_concurrent, cpus=cfg.sweep.cpus_per_trial, knob="sweep.max_concurrent",
                 per="configuration, as many at once as fit")


def pool_units(cfg) -> Units:
    sw = cfg.sweep
    return Units("sampler actor", sw.num_actors, cpus=sw.cpus_per_actor,
                 gpus=1.0 if sw.use_gpu or cfg.eval.use_gpu else 0.0, knob="sweep.num_actors",
                 gpu_knob="sweep.use_gpu, eval.use_gpu", pool=True)


STAGE = StageSpec(
    name="sweep",
    # 2: as sample 2, and KID on clean-fid's subsets, intervals in the protocol
    # 3: the full round is every configuration not clearly worse than its kind's best, by the ranking metric
    # 4: trials' chunks on the pool, resumed per chunk; generate's fast path
    version="4",
    reads=("sweep", "eval", "diffusion", "data"),
    inputs=("train_diffusion", "train_classifier", "train_evalnet", "reference_stats"),
    units=lambda cfg: (trial_units(cfg), pool_units(cfg)),
    outputs=("trials.parquet",),
)

FEATURE_TASK_IMAGES = 10_000  # images per feature task of a trial (its statistics travel back once)

TUNE_DIR = "tune"  # the Ray Tune experiments, inside the partial output (removed once published)
SAMPLES_DIR = "samples"  # the trials' chunks, kept for resume and the full round (removed once published)
TRIALS = "trials.parquet"


def dataset_name(data) -> str:
    """How the leaderboard names the dataset: source family (or the dataset folder) and resolution."""
    if data.source.startswith("imagenet"):
        base = "imagenet"
    elif data.source in ("digits", "generated") or not data.path:
        base = data.source
    else:
        base = posixpath.basename(str(data.path).rstrip("/")) or data.source
    return f"{base}-{data.resolution}px"


def run(ctx, cfg, inputs):
    from pipeline.generation.pool import Pool
    from pipeline.generation.workers import WorkerSpec, where_tags
    from pipeline.sweep_space import configurations, select_full_round, selection_metric
    from stages.sweep_trial import FULL, SCREEN, TrialInputs

    sw = cfg.sweep
    diffusion = {float(out.variant["train.p_uncond"]): out.uri for out in inputs["train_diffusion"].values()}
    configs = configurations(sw, sorted(diffusion))
    _check_resources(ctx, cfg)
    worker = WorkerSpec(stage="sweep", sample_on_gpu=sw.use_gpu, features_on_gpu=cfg.eval.use_gpu,
                        require_cuda=cfg.cluster.require_cuda, threads=max(1, int(sw.cpus_per_actor)))
    placement = Placement.from_config(cfg.cluster, "sweep", ctx.log)
    logger = TrialLogger(ctx, cfg)

    with Pool.start(pool_units(cfg), worker, placement, "sweep.cpus_per_actor, sweep.use_gpu, eval.use_gpu",
                    beside=trial_units(cfg)) as pool:
        logger.pool = pool
        at_once = at_once_beside_pool(trial_units(cfg), placement, pool_units(cfg), pool.workers)
        if at_once != sw.max_concurrent:
            trials = "1 trial" if at_once == 1 else f"{at_once} trials"
            ctx.log(f"at most {trials} at once: what this local Ray instance holds beside the pool's "
                    f"{pool.workers} sampler actor(s) (sweep.max_concurrent: {sw.max_concurrent})")
        trial_inputs = TrialInputs(
            out_uri=ctx.out.uri, diffusion=diffusion, classifier=inputs["train_classifier"].uri,
            evalnet=inputs["train_evalnet"].uri, reference_stats=inputs["reference_stats"].uri, eval_cfg=cfg.eval,
            batch_size=sw.batch_size, dataset=dataset_name(cfg.data), num_train_timesteps=cfg.diffusion.timesteps,
            pool=pool.name, chunk_size=sw.chunk_size, screen_images=sw.screen_images,
            require_cuda=cfg.cluster.require_cuda)
        screened = run_round(ctx, SCREEN, configs, sw.screen_images, trial_inputs, sw, logger, at_once)
        rows = list(screened.values())
        chosen = []
        if sw.full_images > sw.screen_images:
            selection = select_full_round(rows, sw.top_k)
            chosen = selection.config_ids
            by_id = {c.id: c for c in configs}
            ctx.log("full round: " + selection.describe({c.id: c.name for c in configs}))
            rows += list(run_round(ctx, FULL, [by_id[c] for c in chosen], sw.full_images, trial_inputs, sw,
                                   logger, at_once).values())
    for row in rows:
        row["mlflow_run_id"] = logger.run_id(row)

    _write_table(ctx, rows)
    ctx.out.delete(TUNE_DIR)
    ctx.out.delete(SAMPLES_DIR)
    with ctx.out.local_file(TRIALS) as path:
        ctx.log_artifact(path)
    nodes = sorted({n for row in rows for n in json.loads(row.get("sample_nodes") or "{}") if n})
    chunks = list({(row["config_id"], unit["chunk"]): unit  # the full round's rows list the screened chunks again
                   for row in rows for unit in json.loads(row.get("sample_units") or "[]")}.values())
    features = [unit for row in rows for unit in json.loads(row.get("feature_units") or "[]")]
    ctx.set_tags({"units.sample_nodes": ",".join(nodes)[:5000], **where_tags(chunks, "units.chunks"),
                  **where_tags(features, "units.features")})
    ctx.log_metrics({"configurations": len(configs), "trials": len(rows), "full_configurations": len(chosen),
                     "sample_nodes": len(nodes)})
    return {"configurations": len(configs), "trials": len(rows), "screen_images": sw.screen_images,
            "full_images": sw.full_images, "full_configurations": len(chosen),
            "select_metric": selection_metric(rows), "dataset": dataset_name(cfg.data),
            "resumed_trials": logger.resumed, "sample_nodes": nodes}


def run_round(ctx, fidelity, configs, num_images, trial_inputs, sw, logger, at_once) -> dict:
    """Every configuration of one round evaluated at `num_images`, at most `at_once` trials at a time
    (None: as many as the cluster places); finished trials are not repeated."""
    from ray import tune

    from stages import sweep_trial

    done = sweep_trial.read_results(ctx.out, fidelity)
    wanted = [c.id for c in configs]
    pending = [c for c in configs if c.id not in done]
    finished_before = len(wanted) - len(pending)
    logger.resumed += finished_before
    ctx.log(f"{fidelity} round: {len(configs)} configurations at N={num_images}"
            + (f"; {finished_before} finished before, {len(pending)} to run" if finished_before else ""))
    for cid in wanted:
        if cid in done:
            logger.log(fidelity, done[cid])  # finished while the driver was dead: its MLflow run may be missing
    errors = []
    if pending:
        parts = max(1, min(2 * sw.num_actors, num_images // FEATURE_TASK_IMAGES))
        trial_inputs = dataclasses.replace(trial_inputs, feature_parts=parts)
        trainable = tune.with_resources(
            tune.with_parameters(sweep_trial.trainable, inputs=trial_inputs, fidelity=fidelity,
                                 num_images=num_images), {"cpu": sw.cpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space={"spec": tune.grid_search([c.to_dict() for c in pending])},
            # a trial is a short coordinator: a fresh actor per trial (a new process importing torch)
            # cost more than most trials' own work (~8 s of ~10 here); a reused one keeps its imports
            tune_config=tune.TuneConfig(max_concurrent_trials=at_once, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{fidelity}-{time.strftime('%Y%m%dT%H%M%S')}",
                storage_path=ctx.out.child(TUNE_DIR), storage_filesystem=ctx.out.fs, verbose=0,
                callbacks=[logger.callback(fidelity, len(configs), finished_before)],
                failure_config=tune.FailureConfig(max_failures=1)))
        grid = tuner.fit()
        errors = [str(e) for e in grid.errors]
    results = sweep_trial.read_results(ctx.out, fidelity)
    missing = [c.name for c in configs if c.id not in results]
    if missing:
        raise RuntimeError(f"{len(missing)} trial(s) of the {fidelity} round failed ({', '.join(missing[:5])}"
                           f"{', ...' if len(missing) > 5 else ''}); finished trials are kept for the re-run. "
                           + (f"First error: {errors[0][:2000]}" if errors else ""))
    for cid in wanted:
        logger.log(fidelity, results[cid])
    return {cid: results[cid] for cid in wanted}


class TrialLogger:
    """A nested MLflow run per evaluated configuration and fidelity, under the stage's run."""

    def __init__(self, ctx, cfg):
        self.ctx = ctx
        self.tracker = Tracker(cfg.tracking)
        self.parent = ctx.tracker.run_id
        self.resumed = 0
        self.pool = None  # the sweep's pool: the driver says when its work waits for the cluster
        self.checked = 0.0

    @staticmethod
    def _marker(fidelity: str, cid: str) -> str:
        return f"mlflow/{fidelity}/{cid}.json"

    def run_id(self, row) -> str:
        rel = self._marker(row["fidelity"], row["config_id"])
        return self.ctx.out.read_json(rel)["run_id"] if self.ctx.out.exists(rel) else ""

    def log(self, fidelity: str, row: dict) -> None:
        from pipeline.generation import SamplerConfig
        from pipeline.leaderboard.mlflow_runs import trial_run_tags
        from stages.sweep_trial import trial_row

        out = self.ctx.out
        marker = self._marker(fidelity, row["config_id"])
        if out.exists(marker):
            return
        tags = {**trial_run_tags(row, fidelity), "pipeline.stage": "sweep", "store.key": self.ctx.key,
                **{f"units.{k}": str(row.get(k) or "")[:5000] for k in ("node_id", "node_type", "sample_nodes",
                                                                         "sample_node_types", "feature_nodes",
                                                                         "feature_node_types")}}
        params = {**trial_row(SamplerConfig.from_dict(row)),
                  **{k: row[k] for k in ("num_images", "nfe", "fidelity", "device")}}
        metrics = {k: v for k, v in row.items() if k not in params and isinstance(v, (int, float))
                   and not isinstance(v, bool) and v is not None}
        with self.tracker.run(f"{row['name']} N={row['num_images']}", tags, parent=self.parent) as run:
            run.log_params(params)
            run.log_metrics(metrics)
            if out.exists(row["grid"]):
                with out.local_file(row["grid"]) as path:
                    run.log_artifact(path, "grid")
        out.write_json(marker, {"run_id": run.run_id})

    def callback(self, fidelity: str, total: int, before: int):
        from ray import tune

        from pipeline.generation import SamplerConfig
        from stages.sweep_trial import result_path

        logger = self

        class LogFinishedTrials(tune.Callback):
            count = before

            def on_step_begin(self, iteration, trials, **info):
                if logger.pool is not None and time.monotonic() - logger.checked > 5.0:
                    logger.checked = time.monotonic()
                    logger.pool.say_waiting()

            def on_trial_complete(self, iteration, trials, trial, **info):
                cid = SamplerConfig.from_dict(trial.config["spec"]).id
                if not logger.ctx.out.exists(result_path(fidelity, cid)):
                    return
                row = logger.ctx.out.read_json(result_path(fidelity, cid))
                logger.log(fidelity, row)
                LogFinishedTrials.count += 1
                score = next((f"{m} {row[m]:.4g}" for m in ("fd_evalnet", "fid") if row.get(m) is not None), "")
                speed = f", {row['images_per_s']:.1f} img/s" if row.get("images_per_s") else ""
                logger.ctx.log(f"{fidelity} {LogFinishedTrials.count}/{total} {row['name']}: {score}{speed}")

        return LogFinishedTrials()


def _check_resources(ctx, cfg) -> None:
    """A private local instance never grows: fail now if it cannot hold one trial (its pool is
    sized by pipeline.resources.pool_size). A cluster may autoscale: say what the trials wait for."""
    import ray

    trial, total = trial_units(cfg), ray.cluster_resources()
    if units_that_fit(trial, total):
        return
    have = f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"
    if target_address(cfg.cluster) is None:
        raise NotEnoughResourcesError(f"a sweep trial needs {trial.each()} (sweep.cpus_per_trial) but this local Ray "
                                      f"instance has {have}: no trial could ever start")
    ctx.log(f"a trial needs {trial.each()}, the cluster has {have} now: trials wait for the autoscaler")


def _write_table(ctx, rows: list[dict]) -> None:
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    ctx.out.write_bytes(TRIALS, buf.getvalue())


def work(cfg, nets):
    """Both rounds: every configuration screened, then the top_k of each guidance kind taken to
    full_images (only the images beyond the screened ones are generated; all are scored again).
    Which configurations win is not known before screening: each kind's costliest top_k are counted."""
    from pipeline.sweep_space import configurations

    sw, timesteps = cfg.sweep, cfg.diffusion.timesteps
    configs = configurations(sw, cfg.train.p_uncond)
    parts = [sampling("screen round", configs, sw.screen_images, nets, timesteps),
             features("screen round, scoring", len(configs) * sw.screen_images, nets, cfg.eval.extractors,
                      pieces=len(configs))]
    if sw.full_images > sw.screen_images:
        def flops_per_image(config):
            return sum(count * net.gflops for net, count in passes_per_image(config, nets, timesteps))

        by_kind: dict[str, list] = {}
        for config in configs:
            by_kind.setdefault(config.guidance, []).append(config)
        full = [c for kind in by_kind.values() for c in sorted(kind, key=flops_per_image, reverse=True)[:sw.top_k]]
        parts += [sampling("full round", full, sw.full_images - sw.screen_images, nets, timesteps),
                  features("full round, scoring", len(full) * sw.full_images, nets, cfg.eval.extractors,
                           pieces=len(full))]
    return Work(tuple(parts))
