"""``complement``: never resend data; the receiver repairs the missing cells itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sim.complement import ComplementMethod, complement_method
from sim.policies.base import Decision, Repairing, check_method

__all__ = ["Complement"]


@dataclass(frozen=True)
class Complement(Repairing):
    """Decode after the first pass, repairing missing cells with ``method``.

    Parameters
    ----------
    method : str
        A name in :data:`sim.complement.COMPLEMENT_METHODS`: ``learned`` (the default: EEN
        edges + latent diffusion inpainting with the shipped ``tiny`` weights; without them
        the run stops with one line, it never falls back), ``learned-denoise``,
        ``learned-noedge``, ``pixel-telea``, ``pixel-diffusion``, or the plain fills ``zero``,
        ``mean``, ``interp`` (harmonic interpolation, no model).
    method_options : dict
        Keyword options of :func:`sim.complement.make_method` for ``method`` (``weights``,
        ``steps``, …; docs/complement.md); checked here, applied when the runner builds the
        method once per run.
    """

    kind: ClassVar[str] = "complement"
    method: str = "learned"
    method_options: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "method_options", check_method(self.kind, self.method, self.method_options))

    @property
    def cutoff_s(self) -> float | None:
        return None

    def decide(self, d: Decision) -> bool:
        return False

    def repairer(self, method: ComplementMethod | None = None) -> ComplementMethod:
        """``method`` (built by the runner), else the registry's ``self.method`` (a codec method's
        placeholder raises ConfigError when called: it must be built first). A method that alters
        known cells (the denoising step) runs even when nothing is missing (:func:`~sim.policies.base.needs_repair`)."""
        return complement_method(self.method) if method is None else method
