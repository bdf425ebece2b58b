"""``hybrid``: resend while it pays (deadline or missing-share rule), then complement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sim.complement import ComplementMethod, complement_method
from sim.policies.base import Decision, Repairing, check_choice, check_int, check_method, check_seconds, check_share

__all__ = ["Hybrid"]

MODES = ("deadline", "threshold")


@dataclass(frozen=True)
class Hybrid(Repairing):
    """Resend or complement, decided at every decision point.

    Parameters
    ----------
    mode : {"deadline", "threshold"}
        ``deadline``: resend while the estimated worst-case end of the next round
        (:attr:`Decision.eta_s`) stays within ``deadline_s``; otherwise complement now.
        ``deadline_s`` is also a hard deadline: the receiver complements then at the latest.
        ``threshold``: complement as soon as at most ``max_missing`` of the cells are
        missing; resend otherwise.
    deadline_s : float > 0
        Seconds since the first bit (``deadline`` mode; ignored in ``threshold`` mode).
    max_missing : float in [0, 1]
        Share of latent cells (``threshold`` mode; ignored in ``deadline`` mode).
    method : str
        Complement method, a name in :data:`sim.complement.COMPLEMENT_METHODS` (see
        :class:`~sim.policies.complement.Complement`).
    method_options : dict
        Keyword options of :func:`sim.complement.make_method` for ``method``.
    max_rounds : int ≥ 1
        Most transmission passes, the first included; then complement.
    """

    kind: ClassVar[str] = "hybrid"
    mode: str = "deadline"
    deadline_s: float = 0.5
    max_missing: float = 0.05
    method: str = "interp"
    method_options: dict = field(default_factory=dict)
    max_rounds: int = 8

    def __post_init__(self):
        check_choice("policy.hybrid.mode", self.mode, MODES)
        check_seconds("policy.hybrid.deadline_s", self.deadline_s)
        check_share("policy.hybrid.max_missing", self.max_missing)
        check_int("policy.hybrid.max_rounds", self.max_rounds, 1)
        object.__setattr__(self, "method_options", check_method(self.kind, self.method, self.method_options))

    @property
    def cutoff_s(self) -> float | None:
        return self.deadline_s if self.mode == "deadline" else None

    def decide(self, d: Decision) -> bool:
        if d.rounds >= self.max_rounds:
            return False
        if self.mode == "deadline":
            return d.eta_s <= self.deadline_s
        return d.missing_share > self.max_missing

    def repairer(self, method: ComplementMethod | None = None) -> ComplementMethod:
        """As :meth:`Complement.repairer <sim.policies.complement.Complement.repairer>`."""
        return complement_method(self.method) if method is None else method
