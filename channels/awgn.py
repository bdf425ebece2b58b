"""AWGN channel: analog transmission of latent values at a given signal-to-noise ratio.

Nothing is lost: ``losses`` is all False and ``transmit`` delivers the payload bytes
unchanged. The channel acts on *values* through :meth:`AWGNState.add_noise`: zero-mean
Gaussian noise of variance ``signal power / 10^(snr_db / 10)``, where the signal power is
the mean of ``values²`` over the array passed in (one call = one normalisation block,
e.g. one image's latent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from channels.base import check_real, check_rng

__all__ = ["AWGN", "AWGNState", "add_awgn", "awgn_std"]


def add_awgn(values: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``values`` plus white Gaussian noise at ``snr_db`` (dB) relative to their mean power.

    Parameters
    ----------
    values : ndarray, any shape
        Real signal (e.g. a latent). Floating dtypes are kept; others become float64.
    snr_db : float
        10·log10(mean(values²) / noise variance).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape: a new array. All-zero input comes back as zeros (no power, no noise).
    """
    x = np.asarray(values)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    noise = rng.standard_normal(x.shape)
    return (x + awgn_std(x, snr_db) * noise).astype(dtype, copy=False)


def awgn_std(values: np.ndarray, snr_db: float) -> float:
    """The noise standard deviation :func:`add_awgn` uses: √(mean(values²) / 10^(snr_db / 10))."""
    x = np.asarray(values)
    power = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return float(np.sqrt(power / 10.0 ** (snr_db / 10.0)))


@dataclass(frozen=True, kw_only=True)
class AWGN:
    """Analog noise on values; no packet loss.

    Parameters
    ----------
    snr_db : float
        Signal-to-noise ratio in dB (any finite value).
    """

    kind: ClassVar[str] = "awgn"
    snr_db: float

    def __post_init__(self):
        check_real("channel.snr_db", self.snr_db)

    def add_noise(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``values`` with noise at ``snr_db``; see :func:`add_awgn`."""
        return add_awgn(values, float(self.snr_db), check_rng(rng))

    def noise_std(self, values: np.ndarray) -> float:
        """The standard deviation of the noise :meth:`add_noise` gives ``values`` (the receiver's
        knowledge of its channel: the SNR and the received block's power)."""
        return awgn_std(values, float(self.snr_db))

    def start(self, rng: np.random.Generator) -> "AWGNState":
        return AWGNState(self, check_rng(rng))


class AWGNState:
    """Live AWGN channel: lossless for packets, noisy for values."""

    def __init__(self, channel: AWGN, rng: np.random.Generator):
        self.channel = channel
        self._rng = rng

    def add_noise(self, values: np.ndarray) -> np.ndarray:
        """``values`` with noise at the channel's SNR, drawn from this state's generator."""
        return add_awgn(values, float(self.channel.snr_db), self._rng)

    def losses(self, n: int, *, bits_per_packet=None) -> np.ndarray:
        """(n,) all False."""
        return np.zeros(int(n), dtype=bool)

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        """Nothing lost; payloads delivered as they are (noise applies to values only)."""
        return np.zeros(len(payloads), dtype=bool), list(payloads)

    def expected_loss_rate(self, bits_per_packet: int = 0) -> float:
        return 0.0
