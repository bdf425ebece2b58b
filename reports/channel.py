"""The channel check: measured loss against the configured model's closed forms.

Theory comes from the channel objects the resolved scenario describes (built with
:func:`channels.make_channel`, nothing drawn from them); measurements come from the
records: ``packets_lost / packets_sent`` and ``loss_runs`` (``{"run length": count}`` of
consecutive losses in wire order over all passes, logged by the engine with
:func:`channels.base.run_lengths`; records of older runs may lack it).
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from channels.base import run_lengths

__all__ = ["point_channel", "theory_loss", "run_length_pmf", "merge_runs"]

log = logging.getLogger(__name__)


def point_channel(scenario: dict | None, sweep: dict):
    """The channel object of one sweep point, or ``None`` (with the reason logged) if it
    cannot be built (no resolved scenario, a trace file that moved, ...)."""
    from channels import make_channel
    from sim.scenario_yaml import set_dotted

    if scenario is None:
        return None
    raw = {"channel": copy.deepcopy(scenario.get("channel") or {})}
    try:
        for key, value in sweep.items():
            if key == "channel" or key.startswith("channel."):
                set_dotted(raw, key, copy.deepcopy(value))
        return make_channel(**raw["channel"])
    except (ValueError, TypeError) as err:
        log.info("channel check: no theory for %s: %s", sweep, err)
        return None


def theory_loss(channel, bits_per_packet: float | None = None) -> float | None:
    """The model's long-run packet loss probability (``expected_loss_rate``)."""
    if channel is None:
        return None
    bits = int(round(bits_per_packet)) if bits_per_packet else 0
    try:
        return float(channel.start(np.random.default_rng(0)).expected_loss_rate(bits))
    except (ValueError, TypeError):
        return None


def _geometric(q: float, n: int) -> np.ndarray:
    """P(run = m) = q^(m−1)(1−q), m = 1…n (runs continue with probability q)."""
    m = np.arange(1, n + 1)
    return q ** (m - 1) * (1 - q)


def run_length_pmf(channel, n: int = 12, bits_per_packet: float | None = None) -> np.ndarray | None:
    """P(a run of consecutive losses has length m), m = 1…n, in the model's stationary regime.

    - bernoulli (and bsc with ``crc: true``, at ``bits_per_packet``): Geometric, continuing
      with the loss probability;
    - gilbert_elliott (any p, r, h, k; transition first, then the loss draw): exact, from
      the hidden Markov chain — the state at a run's start, then (T·D)^(m−1)·T·(I−D);
    - trace: the run lengths of the trace itself, read cyclically;
    - otherwise (awgn, bsc without CRC: nothing is lost): None.
    """
    kind = getattr(channel, "kind", None)
    if kind == "bernoulli":
        q = theory_loss(channel)
        return None if not q else _geometric(q, n)
    if kind == "bsc":
        q = theory_loss(channel, bits_per_packet)
        return None if not q else _geometric(q, n)
    if kind == "gilbert_elliott":
        p, r, h, k = channel.parameters()
        T = np.array([[1 - p, p], [r, 1 - r]])
        loss = np.array([1 - k, 1 - h])
        if p + r == 0:
            pi = np.array([1.0, 0.0])
        else:
            pi = np.array([r, p]) / (p + r)
        start = (pi * (1 - loss)) @ T * loss   # previous packet delivered, this one lost
        if start.sum() <= 0:
            return None
        start = start / start.sum()
        D, ND = np.diag(loss), np.diag(1 - loss)
        out, v = [], start
        for _ in range(n):
            out.append(float(v @ T @ ND @ np.ones(2)))
            v = v @ T @ D
        return np.asarray(out)
    if kind == "trace":
        from channels.trace import read_trace

        pattern = np.asarray(read_trace(channel.path), dtype=bool)
        hist = run_lengths(np.roll(pattern, -int(np.argmin(pattern))) if not pattern.all() else pattern)
        total = sum(hist.values())
        return None if not total else np.array([hist.get(str(m), 0) / total for m in range(1, n + 1)])
    return None


def merge_runs(records) -> dict[int, int] | None:
    """Sum of the records' ``loss_runs`` histograms, ``None`` if no record has the field."""
    total: dict[int, int] = {}
    seen = False
    for rec in records:
        runs = rec.get("loss_runs")
        if not isinstance(runs, dict):
            continue
        seen = True
        for k, c in runs.items():
            try:
                m = int(k)
            except (TypeError, ValueError):
                continue
            if isinstance(c, int) and m >= 1:
                total[m] = total.get(m, 0) + c
    return total if seen else None
