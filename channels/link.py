"""Link: rate, propagation delay and jitter of the forward and reverse paths.

A burst of packets is serialised back to back from ``start_s`` (the link is assumed idle
then; the engine tracks when it is busy), each taking ``8·(size + header_bytes)/rate``
seconds; packet i has fully arrived at

    start_s + Σ_{j≤i} 8·(s_j + header_bytes)/rate + delay_s + U_i,   U_i ~ Uniform[0, jitter_s]

with the U_i independent. With jitter, packets **may be reordered** (a later packet can
draw less extra delay than an earlier one); ``arrival_times`` returns times in sending
order, not sorted. Loss is the channel's business, not the link's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from channels.base import build, check_int, check_real, check_rng
from sim.errors import ConfigError

__all__ = ["Link", "make_link"]


@dataclass(frozen=True, kw_only=True)
class Link:
    """A point-to-point path with a reverse path (for NACKs/ACKs).

    Parameters
    ----------
    rate_bps : float
        Forward rate, bits/s, > 0.
    delay_s : float
        One-way propagation delay, seconds, ≥ 0 (same both ways).
    reverse_rate_bps : float, optional
        Reverse rate, bits/s, > 0; default (unset) = ``rate_bps``.
    jitter_s : float, optional
        Extra per-packet delay, uniform in [0, jitter_s] seconds, ≥ 0; default 0.
    mtu : int, optional
        Largest packet on the wire, bytes, headers included, ≥ 64; default 1200.
    header_bytes : int, optional
        Per-packet overhead counted on the wire (IP/UDP-like), bytes, 0 ≤ · < mtu; default 28.
    """

    rate_bps: float
    delay_s: float
    reverse_rate_bps: float | None = None
    jitter_s: float = 0.0
    mtu: int = 1200
    header_bytes: int = 28

    def __post_init__(self):
        check_real("link.rate_bps", self.rate_bps, 0.0, None, lo_open=True,
                   what="a rate > 0 (bits/s)")
        if self.reverse_rate_bps is not None:
            check_real("link.reverse_rate_bps", self.reverse_rate_bps, 0.0, None, lo_open=True,
                       what="a rate > 0 (bits/s)")
        check_real("link.delay_s", self.delay_s, 0.0, None, what="a delay ≥ 0 (seconds)")
        check_real("link.jitter_s", self.jitter_s, 0.0, None, what="a jitter ≥ 0 (seconds)")
        check_int("link.mtu", self.mtu, 64)
        check_int("link.header_bytes", self.header_bytes, 0)
        if self.header_bytes >= self.mtu:
            raise ConfigError(f"link.header_bytes = {self.header_bytes!r}: expected less than "
                              f"link.mtu = {self.mtu!r}, to leave room for a payload")

    @property
    def reverse_rate(self) -> float:
        """Reverse rate in use, bits/s."""
        return float(self.rate_bps if self.reverse_rate_bps is None else self.reverse_rate_bps)

    @property
    def max_payload(self) -> int:
        """Largest payload per packet, bytes: ``mtu − header_bytes``."""
        return self.mtu - self.header_bytes

    def serialization_s(self, nbytes, *, reverse: bool = False):
        """Time to put packet(s) of ``nbytes`` payload bytes on the wire, seconds.

        ``header_bytes`` is added to each. ``nbytes`` may be an int or an array (then an
        array of the same shape comes back).
        """
        rate = self.reverse_rate if reverse else float(self.rate_bps)
        size = np.asarray(nbytes, dtype=np.float64) + self.header_bytes
        out = 8.0 * size / rate
        return float(out) if out.ndim == 0 else out

    def arrival_times(self, start_s: float, sizes_bytes: np.ndarray,
                      rng: np.random.Generator | None = None, *, reverse: bool = False) -> np.ndarray:
        """When each packet of a back-to-back burst has fully arrived, seconds.

        Parameters
        ----------
        start_s : float
            Time the first bit of the burst is sent, seconds.
        sizes_bytes : array of int, shape (n,)
            Payload sizes in sending order, bytes, each ≤ ``max_payload``.
        rng : numpy.random.Generator, optional
            Needed only when ``jitter_s > 0``; nothing is drawn otherwise.
        reverse : bool
            Use the reverse path's rate.

        Returns
        -------
        ndarray of float64, shape (n,), in sending order (not sorted: jitter may reorder).
        """
        sizes = np.asarray(sizes_bytes)
        if sizes.ndim != 1:
            raise ValueError(f"sizes_bytes must be 1-D, got shape {sizes.shape}")
        if sizes.size and (sizes.min() < 0 or sizes.max() > self.max_payload):
            raise ValueError(f"packet payload sizes must be in [0, {self.max_payload}] bytes "
                             f"(mtu {self.mtu} − header {self.header_bytes}); got "
                             f"{sizes.min()}..{sizes.max()}")
        t = float(start_s) + np.cumsum(self.serialization_s(sizes, reverse=reverse)) + float(self.delay_s)
        if self.jitter_s > 0 and sizes.size:
            if rng is None:
                raise TypeError("arrival_times needs rng when jitter_s > 0")
            t = t + check_rng(rng).uniform(0.0, float(self.jitter_s), sizes.size)
        return t


def make_link(**kwargs) -> Link:
    """A :class:`Link` from the scenario's ``link:`` mapping; unknown/missing keys → ConfigError."""
    return build(Link, "link", kwargs)
