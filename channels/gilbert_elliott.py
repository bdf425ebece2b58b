"""Gilbert–Elliott channel: a two-state (Good/Bad) Markov chain with a loss probability per state.

Parameters (Hasslinger & Hohlfeld 2008; Linux netem ``loss gemodel``):

- ``p`` = P(Good → Bad), ``r`` = P(Bad → Good) per packet,
- ``k`` = P(no loss | Good), ``h`` = P(no loss | Bad).

Per packet, **the state transition comes first and the loss is then drawn in the new
state**, as in Linux netem. The chain starts in Good *before* the first packet, so with
``p = 1`` the first packet is already in Bad.

Closed forms (stationary): π_B = p/(p+r), π_G = r/(p+r);
loss rate p_E = (1−k)·π_G + (1−h)·π_B. Simple Gilbert (k = 1, h = 0): mean loss burst
1/r, mean gap 1/p. Gilbert (k = 1): mean loss run 1/(1 − (1−r)(1−h)).

Simulation draws whole sojourns at once (``rng.geometric``), not one packet at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from channels.base import check_probability, check_real, check_rng, erase
from sim.errors import ConfigError

__all__ = ["GilbertElliott", "GilbertElliottState"]


@dataclass(frozen=True, kw_only=True)
class GilbertElliott:
    """Bursty packet loss. Give exactly one of two parameter forms.

    Parameters
    ----------
    p, r : float
        Transition probabilities per packet, in [0, 1]: p = P(Good → Bad),
        r = P(Bad → Good). Both needed in this form.
    h : float, optional
        P(no loss | Bad) in [0, 1]; default 0 (every packet in Bad is lost).
    k : float, optional
        P(no loss | Good) in [0, 1]; default 1 (no packet in Good is lost).
    loss : float
        Alternative form, simple Gilbert (h = 0, k = 1): target mean loss rate L in [0, 1).
    burst : float
        Alternative form: mean loss-burst length B ≥ 1 (packets). Then r = 1/B and
        p = L·r/(1−L), which must be ≤ 1, i.e. L ≤ B/(B+1).

    Notes
    -----
    A ``p = 0`` chain never leaves Good (it starts there); ``r = 0`` makes Bad absorbing.
    """

    kind: ClassVar[str] = "gilbert_elliott"
    p: float | None = None
    r: float | None = None
    h: float | None = None
    k: float | None = None
    loss: float | None = None
    burst: float | None = None

    def __post_init__(self):
        raw = {n: getattr(self, n) for n in ("p", "r", "h", "k") if getattr(self, n) is not None}
        short = {n: getattr(self, n) for n in ("loss", "burst") if getattr(self, n) is not None}
        if raw and short:
            given = ", ".join(f"{n} = {v!r}" for n, v in {**raw, **short}.items())
            raise ConfigError(f"channel: gilbert_elliott takes either p, r (and optionally h, k) "
                              f"or loss, burst, not both; got {given}")
        if not raw and not short:
            raise ConfigError("channel: gilbert_elliott needs either p and r (optionally h, k) "
                              "or loss and burst")
        if raw:
            for name in ("p", "r"):
                if name not in raw:
                    raise ConfigError(f"channel.{name} missing: the (p, r, h, k) form needs both p and r")
            p = check_probability("channel.p", self.p)
            r = check_probability("channel.r", self.r)
            h = 0.0 if self.h is None else check_probability("channel.h", self.h)
            k = 1.0 if self.k is None else check_probability("channel.k", self.k)
        else:
            for name in ("loss", "burst"):
                if name not in short:
                    raise ConfigError(f"channel.{name} missing: the (loss, burst) form needs both")
            loss = check_real("channel.loss", self.loss, 0.0, 1.0, hi_open=True,
                              what="a probability in [0, 1) (loss 1 needs an endless burst)")
            burst = check_real("channel.burst", self.burst, 1.0, None,
                               what="a mean burst length ≥ 1 (packets)")
            r = 1.0 / burst
            p = loss * r / (1.0 - loss)
            if p > 1.0:
                raise ConfigError(
                    f"channel.loss = {self.loss!r} with channel.burst = {self.burst!r}: needs "
                    f"p = L/(B·(1−L)) = {p:.4g} > 1; with this burst the loss can be at most "
                    f"B/(B+1) = {burst / (burst + 1):.4g}")
            h, k = 0.0, 1.0
        object.__setattr__(self, "_params", (p, r, h, k))

    def parameters(self) -> tuple[float, float, float, float]:
        """The resolved ``(p, r, h, k)`` whichever form was given."""
        return self._params

    def bad_probability(self) -> float:
        """Stationary π_B = p/(p+r); 0 if p = 0 (the chain starts in Good and stays)."""
        p, r, _, _ = self._params
        return 0.0 if p == 0 else p / (p + r)

    def stationary_loss(self) -> float:
        """Long-run packet loss p_E = (1−k)·r/(p+r) + (1−h)·p/(p+r)."""
        _, _, h, k = self._params
        pi_b = self.bad_probability()
        return (1.0 - k) * (1.0 - pi_b) + (1.0 - h) * pi_b

    def mean_burst(self) -> float:
        """Mean length (packets) of a run of consecutive losses, in the stationary regime.

        Exact for any (p, r, h, k): p_E / (p_E − P(loss at t and t+1)). It is 1/r for simple
        Gilbert and 1/(1 − (1−r)(1−h)) for Gilbert (k = 1). NaN if the channel never
        loses, inf if it always does.
        """
        p, r, h, k = self._params
        pi = np.array([1.0 - self.bad_probability(), self.bad_probability()])
        e = np.array([1.0 - k, 1.0 - h])
        trans = np.array([[1.0 - p, p], [r, 1.0 - r]])
        p_loss = float(pi @ e)
        p_two = float((pi * e) @ trans @ e)
        if p_loss == 0.0:
            return math.nan
        if p_loss - p_two <= 0.0:
            return math.inf
        return p_loss / (p_loss - p_two)

    def start(self, rng: np.random.Generator) -> "GilbertElliottState":
        """A state in Good (before the first packet) drawing from ``rng``."""
        return GilbertElliottState(self, check_rng(rng))


class GilbertElliottState:
    """Live Gilbert–Elliott channel; see :class:`channels.base.ChannelState`.

    ``bad`` is the state of the last packet sent (False before the first one). The state
    also keeps how many of the next packets stay in it (drawn when it was entered), so
    one sample path of sojourns runs through all calls, and a call that ends inside a
    sojourn draws no sojourn at all (cheap when the engine sends packet by packet).
    """

    _CAP = 2**53  # sojourns are capped at ~9·10¹⁵ packets, beyond any simulation
    _BUFFER = 64

    def __init__(self, channel: GilbertElliott, rng: np.random.Generator):
        p, r, h, k = channel.parameters()
        self.channel = channel
        self.bad = False
        self._left = None  # packets still to come in state `bad`; None = not drawn yet
        self._buffers = ([], [])  # pre-drawn sojourns in Good, Bad (for small calls)
        self._rng = rng
        self._leave = (p, r)  # leave probability from Good (0) and from Bad (1)
        self._e = np.array([1.0 - k, 1.0 - h])  # loss probability in Good, Bad
        self._certain = bool(np.all((self._e == 0.0) | (self._e == 1.0)))
        self._simple = k == 1.0 and h == 0.0  # lost exactly when in Bad
        self._constant = (np.zeros(1, dtype=bool), np.ones(1, dtype=bool))
        mean_g = math.inf if p == 0 else 1.0 / p
        mean_b = math.inf if r == 0 else 1.0 / r
        self._cycle = mean_g + mean_b  # mean packets per Good+Bad cycle

    def _sojourns(self, state: int, size: int) -> np.ndarray:
        """Sojourn lengths (packets, ≥ 1) in ``state``; a never-left state gets ``_CAP``."""
        q = self._leave[state]
        if q == 0.0:
            return np.full(size, self._CAP, dtype=np.int64)
        return np.minimum(self._rng.geometric(q, size), self._CAP)

    def _next_sojourn(self, state: int) -> int:
        """One sojourn length in ``state``, from a buffer refilled 64 at a time."""
        buf = self._buffers[state]
        if not buf:
            buf.extend(self._sojourns(state, self._BUFFER).tolist())
            buf.reverse()
        return buf.pop()

    def states(self, n: int) -> np.ndarray:
        """(n,) bool, True = Bad: the chain's state for each of the next ``n`` packets."""
        n = int(n)
        cur = int(self.bad)
        if n <= 0:
            return np.zeros(0, dtype=bool)
        if self._left is None:
            # The last packet (or the start) was in `cur`: a Geometric(q) number of
            # transitions until leaving, the last of which lands in the other state.
            self._left = self._next_sojourn(cur) - 1
        if self._left >= n:  # the whole call stays in the current sojourn
            self._left -= n
            return self._constant[cur].repeat(n)
        if n <= self._BUFFER:  # few packets: a short Python loop beats numpy's call overhead
            lengths, labels, total, state = [self._left], [cur], self._left, cur
            while total < n:
                state = 1 - state
                lengths.append(self._next_sojourn(state))
                labels.append(state)
                total += lengths[-1]
            lengths, labels = np.array(lengths), np.array(labels, dtype=bool)
        else:
            pairs = int(min(n, math.ceil(1.2 * n / self._cycle))) + 2
            chunks, total = [np.array([self._left], dtype=np.int64)], self._left
            while total < n:
                seg = np.empty(2 * pairs, dtype=np.int64)
                seg[0::2] = self._sojourns(1 - cur, pairs)
                seg[1::2] = self._sojourns(cur, pairs)
                chunks.append(seg)
                total += int(seg.sum())
            lengths = np.concatenate(chunks)  # segment i is in state (cur + i) % 2
            last = int(np.searchsorted(np.cumsum(lengths), n))  # the segment of packet n-1
            lengths = lengths[: last + 1]
            labels = ((np.arange(last + 1) + cur) % 2).astype(bool)
            total = int(lengths.sum())
        left = total - n  # the rest of the last sojourn carries over to the next call
        lengths[-1] -= left
        self.bad = bool(labels[-1])
        self._left = left
        return np.repeat(labels, lengths)

    def losses(self, n: int, *, bits_per_packet=None) -> np.ndarray:
        """(n,) bool, True = lost; transition first, then the loss draw in the new state."""
        bad = self.states(n)
        if self._simple:
            return bad
        if self._certain:
            return (self._e == 1.0)[bad.astype(np.intp)]
        return self._rng.random(bad.size) < self._e[bad.astype(np.intp)]

    def transmit(self, payloads: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
        lost = self.losses(len(payloads))
        return lost, erase(payloads, lost)

    def expected_loss_rate(self, bits_per_packet: int = 0) -> float:
        """The stationary loss (the start in Good is a transient of ~1/(p+r) packets)."""
        return self.channel.stationary_loss()
