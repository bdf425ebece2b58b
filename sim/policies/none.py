"""``none``: never resend data; decode with missing cells filled — the floor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim.complement import COMPLEMENT_METHODS
from sim.policies.base import Decision, check_choice

__all__ = ["NoRepair"]

FILLS = ("zero", "mean")


@dataclass(frozen=True)
class NoRepair:
    """Decode after the first pass; missing cells become ``fill``.

    Parameters
    ----------
    fill : {"zero", "mean"}
        0, or the per-channel mean of the received cells.
    """

    kind: ClassVar[str] = "none"
    fill: str = "zero"

    def __post_init__(self):
        check_choice("policy.none.fill", self.fill, FILLS)

    @property
    def cutoff_s(self) -> float | None:
        return None

    def decide(self, d: Decision) -> bool:
        return False

    def repair(self, latent, missing, rng: np.random.Generator, method=None):
        return COMPLEMENT_METHODS[self.fill](latent, missing, rng), False
