"""``complement``: never resend data; the receiver repairs the missing cells itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim.complement import complement_method
from sim.policies.base import Decision

__all__ = ["Complement"]


@dataclass(frozen=True)
class Complement:
    """Decode after the first pass, repairing missing cells with ``method``.

    Parameters
    ----------
    method : str
        A name in :data:`sim.complement.COMPLEMENT_METHODS` (``interp`` = harmonic
        interpolation; the learned EEN + ControlNet method registers there too).
    """

    kind: ClassVar[str] = "complement"
    method: str = "interp"

    def __post_init__(self):
        complement_method(self.method, "policy.complement.method")

    @property
    def cutoff_s(self) -> float | None:
        return None

    def decide(self, d: Decision) -> bool:
        return False

    def repair(self, latent, missing, rng: np.random.Generator):
        if not missing.any():
            return np.asarray(latent, dtype=np.float32), False
        return complement_method(self.method)(latent, missing, rng), True
