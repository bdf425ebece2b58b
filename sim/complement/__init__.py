"""Receiver-side repair of missing latent cells ("complement").

Every method is a :class:`~sim.complement.method.ComplementMethod` (the declared protocol)::

    method(latent: (C, h, w) float32, missing: (h, w) bool (True = missing),
           rng: numpy.random.Generator, noise_std: float = 0.0) -> (C, h, w) float32
    method.batch(latents, masks, rngs, noise_stds) -> list of the same, one per item

:data:`COMPLEMENT_METHODS` maps the plain fills' names (the scenario's ``method:`` / ``fill:``
value) to methods: ``zero``, ``mean`` and ``interp`` (harmonic interpolation,
:func:`sim.complement.fill.harmonic_fill`). Known cells come back exactly. Methods that need
the codec (:data:`sim.complement.learned.CODEC_METHODS`: ``learned``, ``learned-denoise``,
``learned-noedge``, ``pixel-telea``, ``pixel-diffusion``; docs/complement.md) are known to
:func:`complement_method` too, as placeholders, and are built once per run with
:func:`make_method`; ``learned-denoise`` also changes known cells (``method.alters_known``).
"""

from __future__ import annotations

import difflib

from sim.complement.fill import harmonic_fill, mean_fill, zero_fill
from sim.complement.learned import CODEC_METHODS, make_method
from sim.complement.method import ComplementMethod, FillMethod
from sim.errors import ConfigError

__all__ = ["COMPLEMENT_METHODS", "CODEC_METHODS", "ComplementMethod", "FillMethod", "complement_method",
           "make_method", "zero_fill", "mean_fill", "harmonic_fill"]

COMPLEMENT_METHODS: dict[str, ComplementMethod] = {
    name: FillMethod(name, fill) for name, fill in (("zero", zero_fill), ("mean", mean_fill),
                                                    ("interp", harmonic_fill))
}


def complement_method(name: str, where: str = "method") -> ComplementMethod:
    """The registered method ``name`` (a codec method's placeholder until :func:`make_method` builds it);
    ConfigError listing the known ones otherwise."""
    fn = (COMPLEMENT_METHODS.get(name) or CODEC_METHODS.get(name)) if isinstance(name, str) else None
    if fn is None:
        names = [*COMPLEMENT_METHODS, *CODEC_METHODS]
        hint = difflib.get_close_matches(str(name), names, n=1)
        raise ConfigError(f"{where} = {name!r}: expected one of {', '.join(names)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return fn
