"""The report's numbers: per point × policy statistics and the resend/complement crossovers.

Means, standard deviations and Student-t 95 % intervals come from
:func:`sim.results.summarize` (the same code as ``summary.csv``). Two statistics it does not
have live here: the median with its distribution-free confidence interval (order
statistics of the binomial sign test) and the p95 (linear interpolation between order
statistics, NumPy's default). Definitions: ``docs/reports.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from sim.results import image_means, mean_stats, summarize

__all__ = ["QUALITY_METRICS", "CRITERIA", "median_ci", "quantile", "Stats", "build_stats",
           "Crossover", "crossover", "find_crossovers", "mean_ci", "CHALLENGER_KINDS", "BASELINE_KINDS"]

# (field, label, +1 higher is better / −1 lower is better); plotted and tabled where present
QUALITY_METRICS = (
    ("psnr", "PSNR vs original (dB)", +1),
    ("ssim", "SSIM vs original", +1),
    ("ms_ssim", "MS-SSIM vs original", +1),
    ("lpips", "LPIPS vs original (lower is better)", -1),
    ("ssim_lossfree", "SSIM vs loss-free decode", +1),
    ("ms_ssim_lossfree", "MS-SSIM vs loss-free decode", +1),
    ("lpips_lossfree", "LPIPS vs loss-free decode (lower is better)", -1),
)
# crossover criteria: (name, field, statistic, orientation, unit)
CRITERIA = (
    ("quality per byte (PSNR per kB)", "psnr_per_kB", "mean", +1, "dB/kB"),
    ("quality per byte (SSIM per kB)", "ssim_per_kB", "mean", +1, "1/kB"),
    ("latency (median time-to-image)", "time_to_image_s", "median", -1, "s"),
)
CHALLENGER_KINDS = ("complement", "hybrid")
BASELINE_KINDS = ("resend",)


def median_ci(values, level: float = 0.95) -> tuple[float | None, float | None, float | None, float | None]:
    """``(median, low, high, coverage)`` of the finite ``values``.

    The interval is ``[x_(k), x_(n−k+1)]`` (order statistics, 1-based) with the largest k
    such that ``P(B ≤ k−1) ≤ (1−level)/2`` for ``B ~ Binomial(n, 1/2)``; its exact coverage
    ``1 − 2·P(B ≤ k−1)`` is returned. It needs n ≥ 6 for level 0.95; below, low, high and
    coverage are None. No resampling: the same values give the same interval.
    """
    x = np.sort(np.asarray([float(v) for v in values if v is not None and math.isfinite(v)]))
    n = x.size
    if n == 0:
        return None, None, None, None
    med = float(np.median(x))
    alpha = (1.0 - level) / 2.0
    k = 0
    while k + 1 <= n and stats.binom.cdf(k, n, 0.5) <= alpha:
        k += 1
    if k == 0:
        return med, None, None, None
    tail = float(stats.binom.cdf(k - 1, n, 0.5))
    return med, float(x[k - 1]), float(x[n - k]), 1.0 - 2.0 * tail


def quantile(values, q: float) -> float | None:
    """The ``q`` quantile of the finite ``values`` (linear interpolation, NumPy's default)."""
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.quantile(np.asarray(x), q)) if x else None


@dataclass
class Stats:
    """Statistics of one report: summary rows by (point, policy, metric), latency by (point, policy)."""

    rows: list[dict]
    by_key: dict
    latency: dict
    n: dict  # (point, policy) → records

    def get(self, point, policy, metric) -> dict | None:
        return self.by_key.get((point, policy, metric))

    def value(self, point, policy, metric, statistic="mean"):
        """``(value, low, high)`` of a metric: mean with its t interval, or median with its
        order-statistic interval (``time_to_image_s`` only)."""
        if statistic == "median":
            lat = self.latency.get((point, policy))
            return (None, None, None) if lat is None else (lat["median"], lat["low"], lat["high"])
        row = self.get(point, policy, metric)
        if row is None:
            return None, None, None
        return row["mean"], row["ci95_low"], row["ci95_high"]


def build_stats(data) -> Stats:
    """Summary rows of the report's records (derived fields included) and latency statistics."""
    rows = summarize(data.records)
    by_key = {(r["point"], r["policy"], r["metric"]): r for r in rows}
    latency, n = {}, {}
    for (point, policy), recs in data.by_point_policy().items():
        n[(point, policy)] = len(recs)
        t = [r.get("time_to_image_s") for r in recs]
        med, lo, hi, cov = median_ci(t)
        latency[(point, policy)] = {"median": med, "low": lo, "high": hi, "coverage": cov,
                                    "p95": quantile(t, 0.95), "n": sum(v is not None for v in t)}
    return Stats(rows, by_key, latency, n)


def mean_ci(values) -> tuple[float | None, float | None, float | None]:
    """``(mean, low, high)``: :func:`sim.results.mean_stats`' Student-t 95 % interval of a plain
    list (None entries are left out; low/high None below two values)."""
    row = mean_stats(list(values))
    return row["mean"], row["ci95_low"], row["ci95_high"]


@dataclass
class Crossover:
    """Where ``challenger`` overtakes ``baseline`` on one criterion, within one facet.

    ``rows``: per x (ascending) ``{x, point, a, a_low, a_high, b, b_low, b_high, diff,
    diff_low, diff_high, pairs, images, diff_images_low, diff_images_high, rel, confident}``:
    ``a``/``b`` each policy's own value (mean or median) with its 95 % interval; ``diff`` the
    mean (or median) of the *paired* differences — same point, repeat and image, so both
    policies saw the same first-pass losses — oriented so that > 0 means the challenger is
    better, with its 95 % interval; ``diff_images_*`` (means only) the t-interval of the
    per-image mean differences (n = ``images``): what to expect of other images like these;
    ``rel = diff / |b|``; ``confident`` when the interval of ``diff`` lies above 0.

    ``interpolated``: the x where ``diff`` first turns positive (linear between the two x
    around the sign change; the lower x itself if ``diff`` is 0 there); ``status``:
    ``ahead_from_start`` / ``crosses`` / ``never`` / ``no_data``. ``confident`` (x): the
    smallest x whose row is confident. ``behind_again``: x above the crossover where diff ≤ 0.
    """

    facet: tuple
    criterion: str
    metric: str
    statistic: str
    unit: str
    challenger: str
    baseline: str
    rows: list = field(default_factory=list)
    status: str = "no_data"
    interpolated: float | None = None
    confident: float | None = None
    behind_again: list = field(default_factory=list)

    def last(self) -> dict | None:
        """The row at the largest x (how far apart the two are at the highest loss)."""
        return self.rows[-1] if self.rows else None

    def at(self, x) -> dict | None:
        return next((r for r in self.rows if r["x"] == x), None)


def crossover(rows: list[dict]) -> tuple[str, float | None, float | None, list]:
    """``(status, interpolated x, confident x, behind_again)`` of rows ``{x, diff, confident}``
    sorted by x (rows with ``diff`` None are ignored). See :class:`Crossover`."""
    rows = [r for r in rows if r["diff"] is not None]
    if not rows:
        return "no_data", None, None, []
    confident = next((r["x"] for r in rows if r["confident"]), None)
    if rows[0]["diff"] > 0:
        status, x_star, k = "ahead_from_start", rows[0]["x"], 0
    else:
        k = next((i for i, r in enumerate(rows) if r["diff"] > 0), None)
        if k is None:
            return "never", None, confident, []
        lo, hi = rows[k - 1], rows[k]
        x_star = lo["x"] + (hi["x"] - lo["x"]) * (0.0 - lo["diff"]) / (hi["diff"] - lo["diff"])
        status = "crosses"
    behind = [r["x"] for r in rows[k + 1:] if r["diff"] <= 0]
    return status, x_star, confident, behind


def _pairs(recs_a, recs_b, metric, orientation) -> list[tuple[tuple, float]]:
    """Oriented paired differences a − b, matched on (repeat, image): ``[((repeat, image), d)]``."""
    a = {(r.get("repeat"), r.get("image")): r.get(metric) for r in recs_a}
    b = {(r.get("repeat"), r.get("image")): r.get(metric) for r in recs_b}
    out = []
    for k in sorted(set(a) & set(b), key=lambda k: (str(k[0]), str(k[1]))):
        if a[k] is not None and b[k] is not None:
            out.append((k, orientation * (float(a[k]) - float(b[k])) + 0.0))  # + 0.0: no -0.0
    return out


def find_crossovers(data, st: Stats) -> list[Crossover]:
    """Every (facet, challenger, resend baseline, criterion) crossover, in that order.

    Challengers are the policies of kind ``complement`` or ``hybrid``; baselines those of
    kind ``resend``. Points without an x (no records to measure the loss share) are left out.
    """
    challengers = [p for p in data.policies if data.policy_kinds.get(p) in CHALLENGER_KINDS]
    baselines = [p for p in data.policies if data.policy_kinds.get(p) in BASELINE_KINDS]
    by = data.by_point_policy()
    out = []
    for facet in data.facets():
        pts = sorted((p for p in data.points if p.facet == facet and p.x is not None), key=lambda p: (p.x, p.index))
        for ch in challengers:
            for base in baselines:
                for name, metric, statistic, orient, unit in CRITERIA:
                    rows = []
                    for p in pts:
                        a = st.value(p.index, ch, metric, statistic)
                        b = st.value(p.index, base, metric, statistic)
                        pairs = _pairs(by.get((p.index, ch), []), by.get((p.index, base), []), metric, orient)
                        if not pairs:
                            continue
                        d = [v for _, v in pairs]
                        per_image = image_means((image, v) for (_, image), v in pairs)
                        if statistic == "median":
                            diff, lo, hi, _ = median_ci(d)
                            ilo = ihi = None
                        else:
                            diff, lo, hi = mean_ci(d)
                            _, ilo, ihi = mean_ci(per_image)
                        rows.append({"x": p.x, "point": p.index, "a": a[0], "a_low": a[1], "a_high": a[2],
                                     "b": b[0], "b_low": b[1], "b_high": b[2], "diff": diff, "diff_low": lo,
                                     "diff_high": hi, "pairs": len(d), "images": len(per_image),
                                     "diff_images_low": ilo, "diff_images_high": ihi,
                                     "rel": diff / abs(b[0]) if diff is not None and b[0] else None,
                                     "confident": lo is not None and lo > 0})
                    status, x_star, conf, behind = crossover(rows)
                    out.append(Crossover(facet, name, metric, statistic, unit, ch, base, rows, status,
                                         x_star, conf, behind))
    return out
