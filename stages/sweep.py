"""Ray Tune over guidance kind x strength x interval x sampler x steps x p_uncond; each trial samples and evaluates.

No trial trains: `p_uncond` selects among the cached train_diffusion outputs. Two rounds
(multi-fidelity): every configuration is screened with `sweep.screen_images` images, then the
configurations of each guidance kind not clearly worse than its best (95% intervals of the
leaderboard's ranking metric overlap; at most `sweep.top_k`, null: all) are evaluated again with
`sweep.full_images` (pipeline.sweep_space.select_full_round); image i depends only on (seed, i),
so the full round reuses the screened images and generates only the rest. Each round is one Ray
Tune experiment (a function trainable per configuration, resources from `sweep.cpus_per_trial` /
`gpus_per_trial`, at most `sweep.max_concurrent` at once) stored in the stage's partial output.

Resume: a trial writes its row to results/<round>/<config_id>.json last, so the set of finished
trials is whatever rows exist. Re-running after a driver kill starts a Tune experiment over the
configurations without a row only; nothing finished is repeated. Each trial also gets a nested
MLflow run (logged by the driver as trials complete, and at the next start for trials that
finished while the driver was dead).

Output: trials.parquet (one row per configuration and fidelity: the SamplerConfig's settings with
its id and name, w and s, NFE per image, images/s, N, every metric, protocol id, device) and
grids/<config_id>.png (one row per class). The trial body is stages/sweep_trial.py (a helper of
this stage, not a stage).
"""
from pipeline.graph import StageSpec
from pipeline.resources import Units

STAGE = StageSpec(
    name="sweep",
    # 2: as sample 2, and KID on clean-fid's subsets, intervals in the protocol
    # 3: the full round is every configuration not clearly worse than its kind's best, by the ranking metric
    version="3",
    reads=("sweep", "eval", "diffusion", "data"),
    inputs=("train_diffusion", "train_classifier", "train_evalnet", "reference_stats"),
    units=lambda cfg: Units("sweep trial", cfg.sweep.max_concurrent, cpus=cfg.sweep.cpus_per_trial,
                            gpus=cfg.sweep.gpus_per_trial, knob="sweep.max_concurrent",
                            gpu_knob="sweep.gpus_per_trial",
                            per="configuration, as many at once as fit"),
    outputs=("trials.parquet",),
)


TUNE_DIR = "tune"  # the Ray Tune experiments, inside the partial output (removed once published)
SAMPLES_DIR = "samples"  # screened images kept for the full round (removed once published)
TRIALS = "trials.parquet"


def dataset_name(data) -> str:
    """How the leaderboard names the dataset: source family (or the dataset folder) and resolution."""
    import posixpath

    if data.source.startswith("imagenet"):
        base = "imagenet"
    elif data.source in ("digits", "generated") or not data.path:
        base = data.source
    else:
        base = posixpath.basename(str(data.path).rstrip("/")) or data.source
    return f"{base}-{data.resolution}px"


def run(ctx, cfg, inputs):
    from pipeline.sweep_space import configurations, select_full_round, selection_metric
    from stages.sweep_trial import FULL, SCREEN, TrialInputs

    sw = cfg.sweep
    diffusion = {float(out.variant["train.p_uncond"]): out.uri for out in inputs["train_diffusion"].values()}
    configs = configurations(sw, sorted(diffusion))
    trial_inputs = TrialInputs(
        out_uri=ctx.out.uri, diffusion=diffusion, classifier=inputs["train_classifier"].uri,
        evalnet=inputs["train_evalnet"].uri, reference_stats=inputs["reference_stats"].uri, eval_cfg=cfg.eval,
        batch_size=sw.batch_size, dataset=dataset_name(cfg.data), use_gpu=sw.gpus_per_trial > 0,
        num_threads=max(1, int(sw.cpus_per_trial)), num_train_timesteps=cfg.diffusion.timesteps)
    _check_resources(ctx, cfg)
    logger = TrialLogger(ctx, cfg)

    screened = run_round(ctx, SCREEN, configs, sw.screen_images, trial_inputs, sw, logger)
    rows = list(screened.values())
    chosen = []
    if sw.full_images > sw.screen_images:
        selection = select_full_round(rows, sw.top_k)
        chosen = selection.config_ids
        by_id = {c.id: c for c in configs}
        ctx.log("full round: " + selection.describe({c.id: c.name for c in configs}))
        rows += list(run_round(ctx, FULL, [by_id[c] for c in chosen], sw.full_images, trial_inputs, sw,
                               logger).values())
    for row in rows:
        row["mlflow_run_id"] = logger.run_id(row)

    _write_table(ctx, rows)
    ctx.out.delete(TUNE_DIR)
    ctx.out.delete(SAMPLES_DIR)
    with ctx.out.local_file(TRIALS) as path:
        ctx.log_artifact(path)
    ctx.log_metrics({"configurations": len(configs), "trials": len(rows), "full_configurations": len(chosen)})
    return {"configurations": len(configs), "trials": len(rows), "screen_images": sw.screen_images,
            "full_images": sw.full_images, "full_configurations": len(chosen),
            "select_metric": selection_metric(rows), "dataset": trial_inputs.dataset,
            "resumed_trials": logger.resumed}


def run_round(ctx, fidelity, configs, num_images, trial_inputs, sw, logger) -> dict:
    """Every configuration of one round evaluated at `num_images`; finished trials are not repeated."""
    import time

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
        resources = {"cpu": sw.cpus_per_trial, **({"gpu": sw.gpus_per_trial} if sw.gpus_per_trial else {})}
        trainable = tune.with_resources(
            tune.with_parameters(sweep_trial.trainable, inputs=trial_inputs, fidelity=fidelity,
                                 num_images=num_images), resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"spec": tune.grid_search([c.to_dict() for c in pending])},
            tune_config=tune.TuneConfig(max_concurrent_trials=sw.max_concurrent),
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
        from pipeline.tracking import Tracker

        self.ctx = ctx
        self.tracker = Tracker(cfg.tracking)
        self.parent = ctx.tracker.run_id
        self.resumed = 0

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
        tags = {**trial_run_tags(row, fidelity), "pipeline.stage": "sweep", "store.key": self.ctx.key}
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
    """A private local instance never grows: fail now rather than wait forever. A cluster may
    autoscale (cluster/gpu.yaml starts with no GPU worker): say what the trials wait for."""
    import ray

    from pipeline.cluster import target_address

    sw, total = cfg.sweep, ray.cluster_resources()
    short = [f"{sw.cpus_per_trial:g} CPU" if total.get("CPU", 0) < sw.cpus_per_trial else "",
             f"{sw.gpus_per_trial:g} GPU" if sw.gpus_per_trial and total.get("GPU", 0) < sw.gpus_per_trial else ""]
    short = [s for s in short if s]
    if not short:
        return
    have = f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"
    if target_address(cfg.cluster) is None:
        raise RuntimeError(f"a sweep trial needs {' and '.join(short)} (sweep.cpus_per_trial / gpus_per_trial) but "
                           f"this local Ray instance has {have}: no trial could ever start")
    ctx.log(f"a trial needs {' and '.join(short)}, the cluster has {have} now: trials wait for the autoscaler")


def _write_table(ctx, rows: list[dict]) -> None:
    import io

    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    ctx.out.write_bytes(TRIALS, buf.getvalue())


def work(cfg, nets):
    """Both rounds: every configuration screened, then the top_k of each guidance kind taken to
    full_images (only the images beyond the screened ones are generated; all are scored again).
    Which configurations win is not known before screening: each kind's costliest top_k are counted."""
    from pipeline.capacity import Work, features, passes_per_image, sampling
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
