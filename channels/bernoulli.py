"""Bernoulli channel: each packet is lost independently with probability ``loss``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from channels.base import check_probability, check_rng, erase

__all__ = ["Bernoulli", "BernoulliState"]


@dataclass(frozen=True, kw_only=True)
class Bernoulli:
    """I.i.d. packet erasures.

    Parameters
    ----------
    loss : float
        Probability in [0, 1] that a packet is lost. YAML key ``loss``.
    """

    kind: ClassVar[str] = "bernoulli"
    loss: float

    def __post_init__(self):
        check_probability("channel.loss", self.loss)

    def start(self, rng: np.random.Generator) -> "BernoulliState":
        """A state drawing from ``rng``; Bernoulli losses have no memory to start."""
        return BernoulliState(self, check_rng(rng))


class BernoulliState:
    """Live Bernoulli channel; see :class:`channels.base.ChannelState`."""

    def __init__(self, channel: Bernoulli, rng: np.random.Generator):
        self.channel = channel
        self._rng = rng
        self._loss = float(channel.loss)

    def losses(self, n: int, *, bits_per_packet=None) -> np.ndarray:
        """(n,) bool, True = lost; one uniform draw per packet."""
        return self._rng.random(int(n)) < self._loss

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        lost = self.losses(len(payloads))
        return lost, erase(payloads, lost)

    def expected_loss_rate(self, bits_per_packet: int = 0) -> float:
        """``loss``, whatever the packet size."""
        return self._loss
