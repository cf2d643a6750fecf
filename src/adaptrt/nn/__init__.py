"""What the studies share below them: SSIM, training-loop helpers."""
