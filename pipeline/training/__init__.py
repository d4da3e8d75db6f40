"""Shared Ray Train machinery for the training stages (diffusion, noisy classifier, evalnet).

    spec.py        TrainSpec: duration, batch, optimiser, checkpoint cadence, seed (in images),
                   workers and their resources, precision; train_spec(config section)
    task.py        Task: what is trained (model, loss, extra state); the loop is generic
    seeding.py     per-step random streams from (seed, rank, images seen)
    state.py       the training state saved in a checkpoint and loaded back
    precision.py   fp32 / bf16 / fp16 autocast, fp16 loss scaling
    loop.py        the per-worker loop run by Ray Train (DDP, AdamW, warm-up, clipping, EMA)
    trainer.py     the driver: placement (pipeline.resources), TorchTrainer, resume, the result
    networks.py    config sections -> constructor arguments of the three networks
    stage_run.py   what the three training stages share around fit (history, registry, summary)
    evalnet.py     the evaluation classifier as a Task; its accuracy on a shard split
    diffusion.py   the class-conditional diffusion model (CFG dropout, t sampling, simple/hybrid
                   loss) and the noisy classifier as Tasks; noisy top-1/top-5 per t bucket
    samples.py     sample grids of a trained model and the class accuracy of its samples, through
                   pipeline.generation (one sampler, one respacing)

The trained weights on disk live in pipeline.weights, which generation reads without importing
training. No MLflow here: the stages hand in their context and log through it. Modules that need
Ray import it inside functions.
"""
