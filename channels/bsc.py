"""Binary symmetric channel: every bit of a packet flips independently with probability BER.

The BER is given directly (``ber``) or from the energy per bit of BPSK (or Gray-coded QPSK)
over AWGN (``ebn0_db``): BER = Q(√(2·Eb/N0)) = ½·erfc(√(Eb/N0)).

With ``crc: true`` a packet with at least one flipped bit is an erasure. In the real stack
the packet's CRC32 (in the packetizer's header) decides that; here "any bit flipped" stands
in for "CRC32 fails". The two agree for practical purposes: CRC32 detects every error of at
most 3 bits and every burst of at most 32 bits, and misses a random error pattern with
probability about 2⁻³² (≈ 2.3·10⁻¹⁰), so undetected corruption is left out of the model.
With ``crc: false`` corrupted payloads are delivered and the receiver must cope.

Simulation draws the gaps between bit errors (geometric) and XORs the flips into a uint8
view of the hit payloads: cost grows with the number of errors, not of bits.
"""

from __future__ import annotations

import itertools
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
    """Live BSC; see :class:`channels.base.ChannelState`.

    The bits of the packets of a call, concatenated in sending order, form one Bernoulli
    process; the gaps between its bit errors are i.i.d. Geometric(BER), so error positions
    are drawn as cumulative sums of geometric gaps: distinct by construction, exact, and
    at a cost proportional to the number of errors.
    """

    def __init__(self, channel: BSC, rng: np.random.Generator):
        self.channel = channel
        self._rng = rng
        self._ber = channel.bit_error_rate
        self._crc = bool(channel.crc)

    def _erased(self, bits: np.ndarray) -> np.ndarray:
        """(n,) bool: packets with at least one bit error.

        The first error of a packet falls at a Geometric(BER) bit index, so the packet is
        hit iff that index is ≤ its bits: P = 1 − (1 − BER)^bits, one draw per packet.
        """
        if self._ber == 0.0:
            return np.zeros(bits.size, dtype=bool)
        return self._rng.geometric(self._ber, bits.size) <= bits

    def _error_positions(self, total_bits: int) -> np.ndarray:
        """Sorted, distinct indices of the flipped bits among ``total_bits`` bits."""
        if self._ber == 0.0 or total_bits == 0:
            return np.zeros(0, dtype=np.int64)
        last = int(self._rng.geometric(self._ber)) - 1  # the first error; usually past the end
        if last >= total_bits:
            return np.zeros(0, dtype=np.int64)
        chunks = [np.array([last], dtype=np.int64)]
        mean = (total_bits - last) * self._ber
        size = int(mean + 5.0 * math.sqrt(mean)) + 1  # rarely too few: then draw again
        while last < total_bits:  # the last drawn error must fall past the end
            # a gap past the end means the same as any longer one: cap it (no overflow at tiny BER)
            gaps = np.minimum(self._rng.geometric(self._ber, size), total_bits + 1)
            pos = last + np.cumsum(gaps)
            chunks.append(pos)
            last = int(pos[-1])
        pos = np.concatenate(chunks)
        return pos[: np.searchsorted(pos, total_bits)]

    def losses(self, n: int, *, bits_per_packet=None) -> np.ndarray:
        """(n,) bool: packets erased by the CRC (all False with ``crc: false``).

        ``bits_per_packet`` (int or (n,) ints, bits) is required with ``crc: true``.
        """
        n = int(n)
        if not self._crc:
            return np.zeros(n, dtype=bool)
        if bits_per_packet is None:
            raise TypeError("bsc losses(n) needs bits_per_packet: loss depends on packet size")
        return self._erased(np.broadcast_to(np.asarray(bits_per_packet, dtype=np.int64), (n,)))

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        n = len(payloads)
        sizes = [len(x) for x in payloads]
        if self._crc:
            lost = self._erased(8 * np.array(sizes, dtype=np.int64))
            return lost, [b"" if gone else data for data, gone in zip(payloads, lost.tolist())]
        lost = np.zeros(n, dtype=bool)
        pos = self._error_positions(8 * sum(sizes))
        if pos.size == 0:
            return lost, list(payloads)
        joined = bytearray(b"".join(payloads))
        byte = pos >> 3
        # positions are distinct, so XOR-ing the flips of one byte one by one is exact
        np.bitwise_xor.at(np.frombuffer(joined, dtype=np.uint8), byte,
                          np.right_shift(128, pos & 7).astype(np.uint8))
        ends = list(itertools.accumulate(sizes))
        out = list(payloads)
        for i in np.unique(np.searchsorted(ends, byte, side="right")).tolist():
            out[i] = bytes(joined[ends[i] - sizes[i]: ends[i]])
        return lost, out

    def expected_loss_rate(self, bits_per_packet: int) -> float:
        """1 − (1 − BER)^bits with ``crc: true``; 0 without (nothing is erased)."""
        if not self._crc:
            return 0.0
        return float(packet_error_rate(self._ber, bits_per_packet))
