"""Stand-ins for the training stages: random-weight tiny models in the real on-disk formats
(pipeline/weights.py), written instantly, so the
sweep and leaderboard run through the real runner without minutes of training.

    shard ─► train_diffusion[p_uncond=…] (random UNet + guide) ─┐
          ├► train_classifier (random noisy classifier)          ├► sweep ─► leaderboard
          ├► train_evalnet (random EvalNet) ─► reference_stats ──┘
"""
MODULES = ("stages.shard", "tests.sweep_stages.train_diffusion", "tests.sweep_stages.train_classifier",
           "tests.sweep_stages.train_evalnet", "stages.reference_stats", "stages.sweep", "stages.leaderboard")
NUM_CLASSES = 10  # digits
