"""Receiver-side repair of missing latent cells ("complement").

:data:`COMPLEMENT_METHODS` maps a method name (the scenario's ``method:`` / ``fill:``
value) to a function::

    method(latent: (C, h, w) float32, missing: (h, w) bool (True = missing),
           rng: numpy.random.Generator) -> (C, h, w) float32

Known cells must come back exactly. Shipped: ``zero``, ``mean`` and ``interp`` (harmonic
interpolation, :func:`sim.complement.fill.harmonic_fill`). The learned method (EEN edges +
ControlNet latent inpainting) registers here under its own name.
"""

from __future__ import annotations

import difflib
from typing import Callable

from sim.complement.fill import harmonic_fill, mean_fill, zero_fill
from sim.errors import ConfigError

__all__ = ["COMPLEMENT_METHODS", "complement_method", "zero_fill", "mean_fill", "harmonic_fill"]

COMPLEMENT_METHODS: dict[str, Callable] = {
    "zero": zero_fill,
    "mean": mean_fill,
    "interp": harmonic_fill,
}


def complement_method(name: str, where: str = "method") -> Callable:
    """The registered method ``name``; ConfigError listing the known ones otherwise."""
    fn = COMPLEMENT_METHODS.get(name) if isinstance(name, str) else None
    if fn is None:
        hint = difflib.get_close_matches(str(name), COMPLEMENT_METHODS, n=1)
        raise ConfigError(f"{where} = {name!r}: expected one of {', '.join(COMPLEMENT_METHODS)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return fn
