"""Part II: predicting tumour drift patterns with diffusion models (Method 1, DDIM Method 2, decoupled)."""
