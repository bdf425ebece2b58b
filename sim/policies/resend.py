"""``resend``: selective repeat until everything has arrived, ``max_rounds`` or ``deadline_s``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sim.complement import COMPLEMENT_METHODS, ComplementMethod
from sim.policies.base import Decision, Repairing, check_int, check_seconds

__all__ = ["Resend"]


@dataclass(frozen=True)
class Resend(Repairing):
    """Selective repeat: after each pass, NACK every missing packet; the sender resends them.

    Parameters
    ----------
    max_rounds : int ≥ 1
        Most transmission passes, the first included (1 = never resend data).
    deadline_s : float > 0, optional
        Hard deadline (simulated seconds since the first bit): the receiver decodes then
        with whatever has arrived; later arrivals are not used.

    Cells still missing when either limit ends the transfer are filled with zeros (not
    complemented): ``stats["missing_share"] > 0`` shows it.
    """

    kind: ClassVar[str] = "resend"
    complements: ClassVar[bool] = False
    max_rounds: int = 8
    deadline_s: float | None = None

    def __post_init__(self):
        check_int("policy.resend.max_rounds", self.max_rounds, 1)
        check_seconds("policy.resend.deadline_s", self.deadline_s, allow_none=True)

    @property
    def cutoff_s(self) -> float | None:
        return self.deadline_s

    def decide(self, d: Decision) -> bool:
        return d.rounds < self.max_rounds

    def repairer(self, method: ComplementMethod | None = None) -> ComplementMethod:
        """The zero fill, whatever ``method`` is."""
        return COMPLEMENT_METHODS["zero"]
