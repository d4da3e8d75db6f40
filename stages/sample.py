"""N images for one sampler configuration on a pool of Ray actors, per-image seeds.

The configuration is the `sample` section (pipeline.generation.SamplerConfig, its null net_batch
resolved for the actors' device); the model is the train_diffusion output whose p_uncond is
sample.p_uncond (with its guide/ for autoguidance), the train_classifier output serves classifier
guidance. The pool (pipeline.generation.pool) has up to sample.num_actors sampler actors, each
asking Ray for sample.cpus_per_actor CPUs and, with sample.use_gpu, one GPU (CUDA, or per
cluster.require_cuda); joined to a cluster, actors not placed yet wait for the autoscaler and take
chunks when they start. They load the models once and take chunks of sample.chunk_size image
indices; each chunk is written atomically as chunk_<k>.npz (images uint8 NHWC, labels, indices;
no pickle), so a re-run after an interruption generates only the missing chunks (the runner
keeps the partial output). Image i depends only on (sample.seed, i): the output is the same for
any number of actors, placement, batch size or resumption. units/chunk_<k>.json says where each
chunk was made (Ray node id, node type, device); samples.json describes the set and lists them,
grid.png shows the first 100 images (also an MLflow artifact); images/s, NFE per image and the
nodes used are logged.
"""
import time

import numpy as np

from pipeline.capacity import Work, sampling
from pipeline.graph import StageSpec
from pipeline.resources import Placement, Units

# Function-local imports: they bring in torch and SciPy, which planning (it imports every stage) does not need.


def units(cfg) -> Units:
    s = cfg.sample
    return Units("sampler actor", s.num_actors, cpus=s.cpus_per_actor, gpus=1.0 if s.use_gpu else 0.0,
                 knob="sample.num_actors", gpu_knob="sample.use_gpu",
                 pool=True)


STAGE = StageSpec(
    name="sample",
    version="3",  # 3: chunks on the pool (units/ records); generate's fast path
    reads=("sample", "diffusion"),
    inputs=("train_diffusion", "train_classifier"),
    units=units,
    outputs=("samples.json", "chunk_*.npz"),
)

SAMPLES_FILE = "samples.json"
UNITS_DIR = "units"  # units/chunk_<k>.json: where each chunk was made
GRID_FILE = "grid.png"
GRID_IMAGES = 100


def pick_model(train_diffusion: dict, p_uncond: float):
    """The train_diffusion output (label -> Output) trained with ``p_uncond``."""
    for output in train_diffusion.values():
        if abs(float(output.variant.get("train.p_uncond", -1.0)) - p_uncond) < 1e-9:
            return output
    have = sorted(o.variant.get("train.p_uncond") for o in train_diffusion.values())
    raise ValueError(f"no train_diffusion output has p_uncond={p_uncond} (trained: {have})")


def run(ctx, cfg, inputs):
    from pipeline.diffusion.guidance import CLASSIFIER
    from pipeline.generation import SamplerConfig, nfe_per_image, plan_chunks
    from pipeline.generation.chunks import remove_temporaries
    from pipeline.generation.pool import Pool, sample_chunks
    from pipeline.generation.workers import WorkerSpec, count_by, where_tags

    s = cfg.sample
    config = SamplerConfig.from_section(s, device_type="cuda" if s.use_gpu else "cpu")
    model = pick_model(inputs["train_diffusion"], s.p_uncond)
    classifier = inputs["train_classifier"].uri if CLASSIFIER in config.kind.needs else None
    timesteps = int(model.read_json("model.json")["diffusion"]["timesteps"])
    nfe = nfe_per_image(config, timesteps)
    removed = remove_temporaries(ctx.out) + (remove_temporaries(ctx.out.subdir(UNITS_DIR))
                                             if ctx.out.exists(UNITS_DIR) else 0)
    if removed:
        ctx.log(f"removed {removed} temporary file(s) left by an interrupted run")
    plans = plan_chunks(s.num_images, s.chunk_size)
    ctx.log(f"{config.name}: {s.num_images} images from {model.uri}, {nfe} network evaluations per image, "
            f"{len(plans)} chunks")
    worker = WorkerSpec(stage="sample", sample_on_gpu=s.use_gpu, require_cuda=cfg.cluster.require_cuda,
                        threads=max(1, int(s.cpus_per_actor)))
    placement = Placement.from_config(cfg.cluster, "sample", ctx.log)
    bar = ctx.progress(total=s.num_images, desc="sample", unit="img")
    started = time.time()
    try:
        with Pool.start(units(cfg), worker, placement, "sample.cpus_per_actor, sample.use_gpu") as pool:
            result = sample_chunks(pool, config, plans, model.uri, ctx.out, classifier_location=classifier,
                                   batch_size=s.batch_size, where_dir=ctx.out.subdir(UNITS_DIR).uri,
                                   on_chunk=lambda info: bar.update(info["num_images"]))
            result.startup_seconds = pool.status()["first_ready_s"] or 0.0
    finally:
        bar.close()
    if result.reused_chunks:
        ctx.log(f"kept {result.reused_chunks} of {result.num_chunks} chunks from an interrupted run")
    made = chunk_units(ctx.out, plans)
    nodes = count_by(made, "node_id")
    ctx.log(f"{result.generated_images} images in {result.seconds:.1f}s ({result.images_per_s:.1f} images/s, "
            f"first actor ready after {result.startup_seconds:.1f}s) on {len(nodes)} node(s)")
    description = {
        "config": config.to_dict(), "config_id": config.id, "name": config.name, "num_images": s.num_images,
        "chunk_size": s.chunk_size, "chunks": [p.name for p in plans], "image_shape": None, "nfe_per_image": nfe,
        "model": {"uri": model.uri, "key": model.key, "p_uncond": config.p_uncond},
        "classifier": classifier, "seed_range": [config.seed, 0, s.num_images],
        "units": made, "nodes": nodes, "node_types": count_by(made, "node_type"),
    }
    unet = model.read_json("model.json")["unet"]
    description["image_shape"] = [unet["image_size"], unet["image_size"], unet.get("in_channels", 3)]
    ctx.out.write_json(SAMPLES_FILE, description)
    _log_grid(ctx, plans)
    ctx.log_params({f"sample.{k}": v for k, v in
                    {**config.to_dict(), "config_id": config.id, "num_images": s.num_images}.items()})
    ctx.set_tags({"trial": config.name, "model.key": model.key, **where_tags(made)})
    figures = {"images_per_s": result.images_per_s, "nfe_per_image": float(nfe),
               "sample_seconds": result.seconds, "startup_seconds": result.startup_seconds,
               "generated_images": float(result.generated_images), "reused_chunks": float(result.reused_chunks),
               "nodes": float(len(nodes))}
    ctx.log_metrics(figures)
    return {**figures, "name": config.name, "num_images": s.num_images, "num_chunks": result.num_chunks,
            "num_actors": s.num_actors, "wall_seconds": round(time.time() - started, 3)}


def chunk_units(out, plans) -> list[dict]:
    """Where each chunk was made (units/<chunk>.json, written with it), in chunk order."""
    from pipeline.generation.workers import where_records

    return where_records(out.subdir(UNITS_DIR), plans)


def _log_grid(ctx, plans) -> None:
    """The first images as a PNG grid: in the output and as an MLflow artifact."""
    from pipeline.generation.chunks import read_chunk
    from pipeline.generation.grid import grid_png

    images = []
    for plan in plans:
        images.append(read_chunk(ctx.out, plan)[0])
        if sum(len(i) for i in images) >= GRID_IMAGES:
            break
    images = np.concatenate(images)[:GRID_IMAGES]
    data = grid_png(images, scale=max(1, 64 // images.shape[1]))
    ctx.out.write_bytes(GRID_FILE, data)
    with ctx.out.local_file(GRID_FILE) as path:
        ctx.log_artifact(path)


def work(cfg, nets):
    from pipeline.generation.sampler_config import SamplerConfig

    config = SamplerConfig.from_section(cfg.sample)
    return Work((sampling(config.name, [config], cfg.sample.num_images, nets, cfg.diffusion.timesteps),))
