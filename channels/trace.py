"""Trace channel: replay a recorded loss pattern, one packet per line.

File format: one ``0`` (delivered) or ``1`` (lost) per line; ``#`` starts a comment
(whole line or after the value); blank lines are ignored. Any other content is refused
with the file name and line number. Relative paths are resolved by the scenario loader
before the channel is built; this module takes the path as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from channels.base import check_int, check_path, check_rng, erase
from sim.errors import ConfigError

__all__ = ["Trace", "TraceState", "read_trace"]


def read_trace(path: str) -> np.ndarray:
    """The 0/1 pattern of a trace file as (n,) bool (True = lost), n ≥ 1.

    Raises
    ------
    ConfigError
        Missing or unreadable file, a value other than 0/1 (naming file and line), or
        no packets at all.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"channel.path = {path!r}: trace file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"channel.path = {path!r}: is a directory, expected a trace file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"channel.path = {path!r}: cannot read the trace file "
                          f"({err.__class__.__name__})") from None
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        if value not in ("0", "1"):
            raise ConfigError(f"{path}:{number}: trace value {value!r} on line {number}; "
                              f"expected 0 (delivered) or 1 (lost), one per line")
        values.append(value == "1")
    if not values:
        raise ConfigError(f"channel.path = {path!r}: the trace has no packets (only blank "
                          f"lines or comments)")
    return np.array(values, dtype=bool)


@dataclass(frozen=True, kw_only=True)
class Trace:
    """Deterministic replay of a 0/1 loss trace, wrapping around at its end.

    Parameters
    ----------
    path : str
        Trace file (see the module docstring for the format). Read and checked when the
        channel is built.
    offset : int, optional
        Index (0-based, in packets, counting only value lines) of the trace entry the
        first packet of each transmission gets; 0 ≤ offset < trace length. Default 0.
    """

    kind: ClassVar[str] = "trace"
    path: str
    offset: int = 0

    def __post_init__(self):
        path = check_path("channel.path", self.path)
        offset = check_int("channel.offset", self.offset, 0)
        pattern = read_trace(path)
        if offset >= pattern.size:
            raise ConfigError(f"channel.offset = {self.offset!r}: expected an index below the "
                              f"trace length {pattern.size} ({path})")
        pattern.setflags(write=False)
        object.__setattr__(self, "_pattern", pattern)

    @property
    def pattern(self) -> np.ndarray:
        """The whole trace, (n,) bool, read-only."""
        return self._pattern

    def start(self, rng: np.random.Generator | None = None) -> "TraceState":
        """A state at ``offset``; ``rng`` is accepted for the common interface and unused."""
        if rng is not None:
            check_rng(rng)
        return TraceState(self)


class TraceState:
    """Live trace replay; ``position`` is the trace index of the next packet."""

    def __init__(self, channel: Trace):
        self.channel = channel
        self.position = int(channel.offset)
        self._pattern = channel.pattern

    def losses(self, n: int, *, bits_per_packet=None) -> np.ndarray:
        """(n,) bool: the next ``n`` trace entries, wrapping around at the end."""
        n = int(n)
        size, start = self._pattern.size, self.position
        if start + n <= size:
            out = self._pattern[start: start + n].copy()
        else:
            out = self._pattern[(start + np.arange(n)) % size]
        self.position = (start + n) % size
        return out

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        lost = self.losses(len(payloads))
        return lost, erase(payloads, lost)

    def expected_loss_rate(self, bits_per_packet: int = 0) -> float:
        """The share of 1s over the whole trace (its long-run rate under wrap-around)."""
        return float(self._pattern.mean())
