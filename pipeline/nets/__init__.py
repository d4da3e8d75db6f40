"""Networks: the ADM UNet (unet), the noisy classifier (classifier), the clean evaluation
classifier (evalnet), their building blocks (layers) and a FLOP counter (flops)."""
