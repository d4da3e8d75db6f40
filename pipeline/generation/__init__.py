"""Sampling and scoring library: a sampler configuration -> images -> metrics.

    config = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddim", steps=50, seed=0)
    models = load_models(config, diffusion_location, classifier_location)
    images, labels = generate(config, models, range(1000), batch_size=250)
    extractors, notes = make_extractors(cfg.eval, evalnet_location)
    metrics, protocol = score(images, labels, extractors, load_references(ref_location), cfg.eval,
                              seed_range(config.seed, 1000))

Ray appears only in ``pool`` (generate_parallel); nothing here knows MLflow or the runner.
"""
from pipeline.generation.chunks import ChunkPlan, iter_chunks, missing_chunks, plan_chunks, read_chunk, write_chunk
from pipeline.generation.generate import build_denoiser, generate, sampling_schedule, to_uint8
from pipeline.generation.labels import labels_for
from pipeline.generation.models import Models, load_models
from pipeline.generation.sampler_config import (SamplerConfig, guided_steps, interval_timesteps, nfe_per_image,
                                                resolve_net_batch)
from pipeline.generation.scoring import (load_references, make_extractors, protocol_id, protocol_params, score,
                                         score_batches, seed_range, stats_file, write_references)

__all__ = [
    "SamplerConfig", "nfe_per_image", "guided_steps", "interval_timesteps", "resolve_net_batch", "labels_for",
    "Models", "load_models", "generate", "build_denoiser", "sampling_schedule", "to_uint8", "ChunkPlan",
    "plan_chunks", "write_chunk", "read_chunk", "iter_chunks", "missing_chunks", "load_references",
    "make_extractors", "score", "score_batches", "seed_range", "protocol_params", "protocol_id", "stats_file",
    "write_references",
]
