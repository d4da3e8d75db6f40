"""Shared Ray Train machinery for the training stages (diffusion, noisy classifier, evalnet).

    spec.py        TrainSpec: duration, batch, optimiser, checkpoint cadence, seed (in images)
    task.py        Task: what is trained (model, loss, extra state); the loop is generic
    seeding.py     per-step random streams from (seed, rank, images seen)
    state.py       the training state saved in a checkpoint and loaded back
    loop.py        the per-worker loop run by Ray Train (DDP, AdamW, warm-up, clipping, EMA)
    trainer.py     the driver: resource check, TorchTrainer, resume, the result
    evalnet.py     the evaluation classifier as a Task, and saving/loading its final weights
    diffusion.py   the class-conditional diffusion model (CFG dropout, t sampling, simple/hybrid
                   loss) and the noisy classifier as Tasks; noisy top-1/top-5 per t bucket
    artifacts.py   final diffusion models, guides and noisy classifiers on disk (torch only)
    samples.py     DDIM sample grids of a trained model; class accuracy of its samples

No MLflow here: the driver returns the history and the stage logs it. Modules that need Ray
import it inside functions, so `load_evalnet` works where Ray is not installed.
"""
