"""Sampling and scoring library: a trial (one sampler configuration) -> images -> metrics.

    trial = SamplerTrial(guidance="cfg", w=1.0, sampler="ddim", steps=50, num_images=1000, seed=0)
    models = load_models(trial, diffusion_location, classifier_location)
    images, labels = generate(trial, models, range(trial.num_images), batch_size=250)
    extractors, notes = make_extractors(cfg.eval, evalnet_location)
    metrics, protocol = score(images, labels, extractors, load_references(ref_location), cfg.eval,
                              seed_range(trial.seed, trial.num_images))

Ray appears only in ``pool`` (generate_parallel); nothing here knows MLflow or the runner.
"""
from pipeline.generation.chunks import ChunkPlan, iter_chunks, missing_chunks, plan_chunks, read_chunk, write_chunk
from pipeline.generation.generate import NET_BATCH, build_denoiser, generate, sampling_schedule, to_uint8
from pipeline.generation.labels import labels_for
from pipeline.generation.models import Models, load_models
from pipeline.generation.scoring import (load_references, make_extractors, protocol_id, protocol_params, score,
                                         score_batches, seed_range, stats_file, write_references)
from pipeline.generation.trial import SamplerTrial, guided_steps, interval_timesteps, nfe_per_image

__all__ = [
    "SamplerTrial", "nfe_per_image", "guided_steps", "interval_timesteps", "labels_for", "Models", "load_models",
    "generate", "build_denoiser", "sampling_schedule", "to_uint8", "NET_BATCH", "ChunkPlan", "plan_chunks",
    "write_chunk", "read_chunk", "iter_chunks", "missing_chunks", "load_references", "make_extractors", "score",
    "score_batches", "seed_range", "protocol_params", "protocol_id", "stats_file", "write_references",
]
