"""latentcast: send learned image latents over lossy networks; resend or complement."""

__version__ = "0.1.0"
__all__ = ["__version__"]
