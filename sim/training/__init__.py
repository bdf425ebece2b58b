"""Training recipes for the shipped tiny models (codec, EEN, latent UNet/ControlNet)."""
