"""Binary symmetric channel: every bit of a packet flips independently with probability BER.

The BER is given directly (``ber``) or from the energy per bit of BPSK (or Gray-coded QPSK)
over AWGN (``ebn0_db``): BER = Q(√(2·Eb/N0)) = ½·erfc(√(Eb/N0)).

With ``crc: true`` a packet with at least one flipped bit is an erasure. In the real stack
the packet's CRC32 (in the packetizer's header) decides that; here "any bit flipped" stands
in for "CRC32 fails". The two agree for practical purposes: CRC32 detects every error of at
most 3 bits and every burst of at most 32 bits, and misses a random error pattern with
probability about 2⁻³² (≈ 2.3·10⁻¹⁰), so undetected corruption is left out of the model.
With ``crc: false`` corrupted payloads are delivered and the receiver must cope.

Simulation draws the number of flipped bits per packet (binomial), then their distinct
positions, and XORs them into a uint8 view of the payloads: cost grows with the number of
errors, not with the number of bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import erfc

from channels.base import check_bool, check_probability, check_real, check_rng
from sim.errors import ConfigError

__all__ = ["BSC", "BSCState", "bpsk_ber", "packet_error_rate"]


def bpsk_ber(ebn0_db: float) -> float:
    """Bit error rate of BPSK over AWGN at ``ebn0_db`` (dB): ½·erfc(√(10^(Eb/N0 dB / 10)))."""
    return float(0.5 * erfc(math.sqrt(10.0 ** (ebn0_db / 10.0))))


def packet_error_rate(ber: float, bits_per_packet) -> float | np.ndarray:
    """P(at least one of ``bits_per_packet`` bits flipped) = 1 − (1 − BER)^bits."""
    return -np.expm1(np.asarray(bits_per_packet, dtype=float) * np.log1p(-ber))


@dataclass(frozen=True, kw_only=True)
class BSC:
    """Bit errors, as erasures (CRC) or as corrupted payloads. Give ``ber`` or ``ebn0_db``.

    Parameters
    ----------
    ber : float
        Bit error probability in [0, 0.5].
    ebn0_db : float
        Alternatively, Eb/N0 in dB (any finite value) of BPSK over AWGN.
    crc : bool, optional
        True (default): a packet with any bit error is lost. False: it is delivered corrupted.
    """

    kind: ClassVar[str] = "bsc"
    ber: float | None = None
    ebn0_db: float | None = None
    crc: bool = True

    def __post_init__(self):
        if (self.ber is None) == (self.ebn0_db is None):
            got = "both" if self.ber is not None else "neither"
            raise ConfigError(f"channel: bsc needs exactly one of ber and ebn0_db, got {got}")
        if self.ber is not None:
            ber = check_probability("channel.ber", self.ber, hi=0.5)
        else:
            ber = bpsk_ber(check_real("channel.ebn0_db", self.ebn0_db))
        check_bool("channel.crc", self.crc)
        object.__setattr__(self, "_ber", ber)

    @property
    def bit_error_rate(self) -> float:
        """The BER in use (given, or computed from ``ebn0_db``)."""
        return self._ber

    def start(self, rng: np.random.Generator) -> "BSCState":
        """A state drawing from ``rng``; bit errors have no memory."""
        return BSCState(self, check_rng(rng))


class BSCState:
    """Live BSC; see :class:`channels.base.ChannelState`."""

    def __init__(self, channel: BSC, rng: np.random.Generator):
        self.channel = channel
        self._rng = rng
        self._ber = channel.bit_error_rate
        self._crc = bool(channel.crc)

    def _flip_positions(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per packet the number of bit errors, and their distinct global bit indices.

        Positions are drawn uniformly; duplicates within a packet are redrawn until all are
        distinct, which leaves a uniformly random set of the drawn size (the procedure
        treats all positions alike).
        """
        counts = self._rng.binomial(bits, self._ber)
        total = int(counts.sum())
        if total == 0:
            return counts, np.zeros(0, dtype=np.int64)
        packet = np.repeat(np.arange(bits.size), counts)
        start = np.cumsum(bits) - bits
        size = bits[packet]
        where = start[packet] + (self._rng.random(total) * size).astype(np.int64)
        while True:
            _, first = np.unique(where, return_index=True)
            if first.size == total:
                return counts, where
            again = np.ones(total, dtype=bool)
            again[first] = False
            idx = np.flatnonzero(again)
            where[idx] = start[packet[idx]] + (self._rng.random(idx.size) * size[idx]).astype(np.int64)

    def losses(self, n: int, *, bits_per_packet=None) -> np.ndarray:
        """(n,) bool: packets erased by the CRC (all False with ``crc: false``).

        ``bits_per_packet`` (int or (n,) ints, bits) is required with ``crc: true``.
        """
        n = int(n)
        if not self._crc:
            return np.zeros(n, dtype=bool)
        if bits_per_packet is None:
            raise TypeError("bsc losses(n) needs bits_per_packet: loss depends on packet size")
        bits = np.broadcast_to(np.asarray(bits_per_packet, dtype=np.int64), (n,))
        return self._rng.binomial(bits, self._ber) > 0

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        n = len(payloads)
        bits = np.fromiter((8 * len(x) for x in payloads), dtype=np.int64, count=n)
        if self._crc:
            lost = self._rng.binomial(bits, self._ber) > 0
            return lost, [b"" if gone else data for data, gone in zip(payloads, lost.tolist())]
        counts, where = self._flip_positions(bits)
        lost = np.zeros(n, dtype=bool)
        if where.size == 0:
            return lost, list(payloads)
        hit = np.flatnonzero(counts)
        buf = np.frombuffer(b"".join(payloads[i] for i in hit.tolist()), dtype=np.uint8).copy()
        # map global bit indices (over all payloads) to indices in the joined hit payloads
        start_all = np.cumsum(bits) - bits
        start_hit = np.cumsum(bits[hit]) - bits[hit]
        shift = np.repeat(start_all[hit] - start_hit, counts[hit])
        local = np.sort(where) - shift  # sorted `where` follows packet order, as `shift` does
        byte, bit = np.divmod(local, 8)
        cells, inverse = np.unique(byte, return_inverse=True)
        masks = np.bincount(inverse, weights=np.left_shift(1, 7 - bit)).astype(np.uint8)
        buf[cells] ^= masks  # distinct bits of one byte: their sum is their OR
        out = list(payloads)
        edges = np.cumsum(bits[hit] // 8).tolist()
        begin = 0
        for i, end in zip(hit.tolist(), edges):
            out[i] = buf[begin:end].tobytes()
            begin = end
        return lost, out

    def expected_loss_rate(self, bits_per_packet: int) -> float:
        """1 − (1 − BER)^bits with ``crc: true``; 0 without (nothing is erased)."""
        if not self._crc:
            return 0.0
        return float(packet_error_rate(self._ber, bits_per_packet))
