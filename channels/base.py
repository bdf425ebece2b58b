"""The channel contract, and the checks every model and the link share.

A *channel* is a frozen, validated description (its dataclass fields are exactly the YAML
keys of the scenario's ``channel:`` section, less ``kind``). Calling
:meth:`Channel.start` with a ``numpy.random.Generator`` gives a :class:`ChannelState`: the
live channel for one transmission. Packets go through the state in the order they are put
on the wire, back to back; the state carries on across calls, so a retransmission sent
inside a loss burst sees the burst (as on a real path). All randomness comes from the
generator given to ``start``; nothing here touches a global RNG.

Units: packet counts are dimensionless, sizes are bytes, ``bits_per_packet`` is bits
(``8 * len(payload)``), rates are probabilities per packet or per bit.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from sim.errors import ConfigError

__all__ = [
    "Channel", "ChannelState", "as_config", "build", "erase", "run_lengths", "check_rng",
    "check_real", "check_probability", "check_int", "check_bool", "check_path",
]


@runtime_checkable
class ChannelState(Protocol):
    """One transmission's live channel. Obtained from :meth:`Channel.start`."""

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        """Send ``payloads`` back to back, in this order.

        Parameters
        ----------
        payloads : list of bytes, length n
            Packet payloads as put on the wire.

        Returns
        -------
        lost : ndarray of bool, shape (n,)
            True where the packet is erased (never reaches the receiver).
        delivered : list of bytes, length n
            What the receiver gets: ``b""`` where ``lost``; otherwise the payload, which a
            channel without error detection (``bsc`` with ``crc: false``) may have
            bit-corrupted. Unchanged payloads are the very objects passed in.
        """
        ...

    def losses(self, n: int, *, bits_per_packet: int | np.ndarray | None = None) -> np.ndarray:
        """The loss pattern of the next ``n`` packets (True = lost), advancing the state.

        ``bits_per_packet`` (bits, an int or an array of shape (n,)) is needed only where
        loss depends on packet size (``bsc``); packet-level models ignore it.
        """
        ...

    def expected_loss_rate(self, bits_per_packet: int) -> float:
        """Long-run packet loss probability in theory, for packets of ``bits_per_packet`` bits."""
        ...


@runtime_checkable
class Channel(Protocol):
    """A validated channel description; ``kind`` is its name in ``channels.CHANNELS``."""

    kind: ClassVar[str]

    def start(self, rng: np.random.Generator) -> ChannelState:
        """A fresh state for one transmission (GE starts in Good, a trace at its offset)."""
        ...


# --------------------------------------------------------------------------- helpers


def check_rng(rng) -> np.random.Generator:
    """``rng`` itself, or a TypeError: channels draw only from a given Generator."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"expected a numpy.random.Generator, got {type(rng).__name__} "
                        f"(use numpy.random.default_rng(seed))")
    return rng


def erase(payloads: list[bytes], lost: np.ndarray) -> list[bytes]:
    """``payloads`` with ``b""`` in place of each lost packet."""
    return [b"" if gone else data for data, gone in zip(payloads, lost.tolist())]


def run_lengths(lost) -> dict[str, int]:
    """Histogram of the runs of consecutive losses in a loss pattern.

    Parameters
    ----------
    lost : array-like of bool, shape (n,)
        True = lost, in wire order (e.g. the ``lost`` flags of every burst, concatenated).

    Returns
    -------
    dict
        ``{"m": count}``: how many maximal runs of exactly m consecutive losses (keys as
        JSON writes them, in increasing m; ``{}`` when nothing is lost). This is the
        ``loss_runs`` record field (``docs/engine.md``).
    """
    x = np.concatenate(([0], np.asarray(lost, dtype=np.int8).ravel(), [0]))
    d = np.diff(x)
    lengths = np.flatnonzero(d == -1) - np.flatnonzero(d == 1)
    vals, counts = np.unique(lengths, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}


def _number(where: str, value) -> float:
    """``value`` as a finite float, or a ConfigError naming ``where`` and the value."""
    if isinstance(value, str):
        hint = ""
        try:
            float(value)
            hint = (" (PyYAML reads 1e-5 or 2.0e6 as text: a YAML 1.1 float needs a dot "
                    "and a signed exponent, e.g. 1.0e-5, 2.0e+6)")
        except ValueError:
            pass
        raise ConfigError(f"{where} = {value!r}: expected a number, got text{hint}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where} = {value!r}: expected a number")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r}: expected a finite number")
    return value


def check_real(where: str, value, lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False, hi_open: bool = False, what: str | None = None) -> float:
    """Refuse ``value`` unless it is a finite real in the interval; returns it as float."""
    x = _number(where, value)
    bad = ((lo is not None and (x < lo or (lo_open and x == lo)))
           or (hi is not None and (x > hi or (hi_open and x == hi))))
    if bad:
        if what is None:
            left = "-inf" if lo is None else f"{lo:g}"
            right = "inf" if hi is None else f"{hi:g}"
            what = f"a number in {'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"
        raise ConfigError(f"{where} = {value!r}: expected {what}")
    return x


def check_probability(where: str, value, hi: float = 1.0) -> float:
    """Refuse ``value`` unless it is a probability in [0, ``hi``]."""
    return check_real(where, value, 0.0, hi, what=f"a probability in [0, {hi:g}]")


def check_int(where: str, value, lo: int) -> int:
    """Refuse ``value`` unless it is an integer ≥ ``lo`` (2.0 is refused: counts are ints)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{where} = {value!r}: expected an integer ≥ {lo}")
    if value < lo:
        raise ConfigError(f"{where} = {value!r}: expected an integer ≥ {lo}")
    return int(value)


def check_bool(where: str, value) -> bool:
    """Refuse anything but ``true`` / ``false``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    return bool(value)


def check_path(where: str, value) -> str:
    """Refuse ``value`` unless it is a non-empty path (str or os.PathLike)."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"{where} = {value!r}: expected a file path")
    return os.fspath(value)


def build(cls, section: str, kwargs: dict):
    """``cls(**kwargs)`` with unknown and missing keys reported as ConfigError.

    ``section`` prefixes the key names in messages (``channel``, ``link``).
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    label = getattr(cls, "kind", None)
    owner = f"{section} kind {label!r}" if label else section
    for key in kwargs:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(f"{section}.{key}: unknown key for {owner}; expected keys: "
                              f"{', '.join(names)}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    missing = [f.name for f in fields if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{section}.{missing[0]} missing: {owner} needs "
                          f"{', '.join(missing)}")
    return cls(**kwargs)


def as_config(obj) -> dict:
    """A channel's (or link's) YAML mapping: ``kind`` first if it has one, unset keys left out.

    ``make_channel(**as_config(ch)) == ch`` and ``make_link(**as_config(link)) == link``.
    """
    out = {"kind": obj.kind} if hasattr(obj, "kind") else {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None:
            out[f.name] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return out
