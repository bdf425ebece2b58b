"""One base exception for everything latentcast refuses or cannot do."""

from __future__ import annotations

__all__ = ["LatentcastError", "ConfigError", "InputError", "ModelLoadError"]


class LatentcastError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits with status 2."""


class ConfigError(LatentcastError, ValueError):
    """A scenario or option has a value outside what is allowed."""


class InputError(LatentcastError, ValueError):
    """An input file (image, trace, results) is missing, unreadable or of the wrong kind."""


class ModelLoadError(LatentcastError):
    """Weights could not be found or loaded."""
