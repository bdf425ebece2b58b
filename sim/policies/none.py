"""``none``: never resend data; decode with missing cells filled — the floor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sim.complement import COMPLEMENT_METHODS, ComplementMethod
from sim.policies.base import Decision, Repairing, check_choice

__all__ = ["NoRepair"]

FILLS = ("zero", "mean")


@dataclass(frozen=True)
class NoRepair(Repairing):
    """Decode after the first pass; missing cells become ``fill`` (not counted as complemented).

    Parameters
    ----------
    fill : {"zero", "mean"}
        0, or the per-channel mean of the received cells.
    """

    kind: ClassVar[str] = "none"
    complements: ClassVar[bool] = False
    fill: str = "zero"

    def __post_init__(self):
        check_choice("policy.none.fill", self.fill, FILLS)

    @property
    def cutoff_s(self) -> float | None:
        return None

    def decide(self, d: Decision) -> bool:
        return False

    def repairer(self, method: ComplementMethod | None = None) -> ComplementMethod:
        """The ``fill``, whatever ``method`` is."""
        return COMPLEMENT_METHODS[self.fill]
