"""The report's figures (matplotlib, Agg backend), one PNG each, written deterministically.

Every figure has one column per facet (the values of the swept keys other than the x
axis). Points: filled markers where every planned record is there, hollow where some are
missing (partial), an ``x`` on the axis where a point has no record. Bands: 95 %
confidence intervals (Student t for means, order statistics for medians). PNGs carry no
time stamp or version (``metadata={"Software": None}``), so regenerating from the same
``results.jsonl`` with the same matplotlib gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["make_figures", "FIGURE_FILES"]

FIGURE_FILES = ("crossover.png", "quality.png", "quality_lossfree.png", "bytes.png", "latency.png", "pareto.png",
                "channel.png")
_DPI = 96
_RC = {"font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8,
       "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "svg.hashsalt": "latentcast",
       "path.simplify": False, "figure.max_open_warning": 0}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(policies):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {p: cmap(i % 10) for i, p in enumerate(policies)}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    _plt().close(fig)
    return path


def _facet_points(data, facet):
    return sorted((p for p in data.points if p.facet == facet), key=lambda p: (p.x is None, p.x or 0.0, p.index))


def _series(data, st, facet, policy, metric, statistic="mean", scale=1.0):
    """xs, values, lows, highs, partial flags, missing xs of one policy's curve."""
    xs, v, lo, hi, partial, missing = [], [], [], [], [], []
    for p in _facet_points(data, facet):
        n = st.n.get((p.index, policy), 0)
        val, l, h = st.value(p.index, policy, metric, statistic) if n else (None, None, None)
        if p.x is None:
            continue
        if val is None:
            if n == 0:
                missing.append(p.x)
            continue
        exp = data.expected.get((p.index, policy))
        xs.append(p.x)
        v.append(val * scale)
        lo.append(l * scale if l is not None else np.nan)
        hi.append(h * scale if h is not None else np.nan)
        partial.append(exp is not None and n < exp)
    return np.array(xs), np.array(v), np.array(lo, dtype=float), np.array(hi, dtype=float), partial, missing


def _curve(ax, data, st, facet, metric, statistic="mean", scale=1.0, band=True):
    colors = _colors(data.policies)
    drawn = False
    for pol in data.policies:
        xs, v, lo, hi, partial, missing = _series(data, st, facet, pol, metric, statistic, scale)
        c = colors[pol]
        if xs.size:
            drawn = True
            ax.plot(xs, v, "-", color=c, lw=1.2, label=pol)
            if band and np.isfinite(lo).any():
                ax.fill_between(xs, lo, hi, color=c, alpha=0.18, lw=0)
            full = ~np.array(partial, dtype=bool)
            ax.plot(xs[full], v[full], "o", color=c, ms=3.5)
            if (~full).any():
                ax.plot(xs[~full], v[~full], "o", mfc="white", mec=c, ms=4.5)
        if missing:
            drawn = True
            ax.plot(missing, [0.03] * len(missing), "x", color=c, ms=6, mew=1.5,
                    transform=ax.get_xaxis_transform(), clip_on=False)
    return drawn


class _Panels:
    """Panels indexed ``[row][facet]``: rows × facets, or, with one facet, the rows laid out
    side by side (at most three per line) and each titled by its row label."""

    def __init__(self, data, rows, title, width=3.4, height=2.4):
        plt = _plt()
        self.facets = data.facets()
        nr, nf = len(rows), len(self.facets)
        if nf == 1:
            nc = min(3, nr)
            gr = math.ceil(nr / nc)
            self.fig, ax = plt.subplots(gr, nc, figsize=(width * nc + 0.4, height * gr + 1.0), squeeze=False)
            flat = [a for line in ax for a in line]
            for a in flat[nr:]:
                a.axis("off")
            self.axes = [[flat[i]] for i in range(nr)]
            for i, row in enumerate(rows):
                self.axes[i][0].set_title(row.replace("\n", " "))
                self.axes[i][0].set_xlabel(data.axis_label)
        else:
            self.fig, ax = plt.subplots(nr, nf, figsize=(width * nf + 0.6, height * nr + 1.0), squeeze=False)
            self.axes = ax
            for j, facet in enumerate(self.facets):
                ax[0][j].set_title(data.facet_label(facet))
                ax[-1][j].set_xlabel(data.axis_label)
            for i, row in enumerate(rows):
                ax[i][0].set_ylabel(row)
        self.fig.suptitle(title, fontsize=10)


def _grid(data, rows, title):
    p = _Panels(data, rows, title)
    return p.fig, p.axes, p.facets


def _legend(fig, data, extra=()):
    from matplotlib.lines import Line2D

    colors = _colors(data.policies)
    handles = [Line2D([], [], color=colors[p], marker="o", ms=3.5, lw=1.2, label=p) for p in data.policies]
    handles += [Line2D([], [], color="grey", marker="o", mfc="white", lw=0, label="partial (records missing)"),
                Line2D([], [], color="grey", marker="x", lw=0, mew=1.5, label="no records")]
    handles += list(extra)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4 if len(handles) > 5 else 5), frameon=False)


def _finish(fig, bottom=1.0, top=0.75, left=0.8, right=0.2, wspace=0.9, hspace=0.75):
    """Fixed margins in inches (``tight_layout`` costs as much as drawing): room for the
    suptitle above, the legend below, two-line y labels left; gaps between panels."""
    w, h = fig.get_size_inches()
    ncols = max(1, fig.axes[0].get_subplotspec().get_gridspec().ncols) if fig.axes else 1
    nrows = max(1, fig.axes[0].get_subplotspec().get_gridspec().nrows) if fig.axes else 1
    pw = max(0.1, (w - left - right - wspace * (ncols - 1)) / ncols)
    ph = max(0.1, (h - top - bottom - hspace * (nrows - 1)) / nrows)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace / pw, hspace=hspace / ph)


def _has(data, metric):
    return any(r.get(metric) is not None for r in data.records)


def crossover_figure(data, crossovers, path):
    """Paired differences challenger − baseline (> 0: challenger better) with 95 % CI bands;
    dotted: the interpolated crossover; ringed: points whose interval lies above 0."""
    from matplotlib.lines import Line2D

    crits = []
    for c in crossovers:
        if c.rows and c.criterion not in crits and not c.metric.startswith("ssim"):
            crits.append(c.criterion)
    if not crits:
        return None
    units = {c.criterion: ("ms" if c.unit == "s" else c.unit) for c in crossovers}
    rows = [f"{k.split('(')[0].strip()}: difference\n({k.split('(')[-1].rstrip(')')}, {units[k]})" for k in crits]
    p = _Panels(data, rows, "Challenger − resend, paired (same first-pass losses) · > 0: challenger better")
    pairs = []
    for c in crossovers:
        if (c.challenger, c.baseline) not in pairs:
            pairs.append((c.challenger, c.baseline))
    colors = _colors(data.policies)
    styles = ["-", "--", ":", "-."]
    for c in crossovers:
        if c.criterion not in crits or not c.rows:
            continue
        ax = p.axes[crits.index(c.criterion)][p.facets.index(c.facet)]
        k = pairs.index((c.challenger, c.baseline))
        scale = 1e3 if c.unit == "s" else 1.0
        x = np.array([r["x"] for r in c.rows])
        y = np.array([r["diff"] for r in c.rows]) * scale
        lo = np.array([np.nan if r["diff_low"] is None else r["diff_low"] * scale for r in c.rows])
        hi = np.array([np.nan if r["diff_high"] is None else r["diff_high"] * scale for r in c.rows])
        col = colors[c.challenger]
        ls = styles[data.policies.index(c.baseline) % len(styles)]
        ax.plot(x, y, ls, marker="o", ms=3.5, color=col, lw=1.2)
        ax.fill_between(x, lo, hi, color=col, alpha=0.18, lw=0)
        conf = np.array([r["confident"] for r in c.rows])
        if conf.any():
            ax.plot(x[conf], y[conf], "o", mfc="none", mec="black", ms=8, mew=0.8)
        if c.interpolated is not None:
            ax.axvline(c.interpolated, color=col, ls=":", lw=1)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[ch], ls=styles[data.policies.index(b) % len(styles)], marker="o", ms=3.5,
                      label=f"{ch} − {b}") for ch, b in pairs]
    handles += [Line2D([], [], color="black", marker="o", mfc="none", lw=0, ms=8, label="95 % CI above 0"),
                Line2D([], [], color="grey", ls=":", label="interpolated crossover")]
    p.fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    _finish(p.fig)
    return _save(p.fig, path)


def quality_figure(data, st, path, lossfree=False):
    from reports.analysis import QUALITY_METRICS

    metrics = [(m, label) for m, label, _ in QUALITY_METRICS
               if m.endswith("_lossfree") == lossfree and _has(data, m)]
    if not metrics:
        return None
    title = ("Quality against the loss-free decode (loss damage only)" if lossfree
             else "Quality against the original image") + " · mean, 95 % CI band"
    fig, axes, facets = _grid(data, [lab for _, lab in metrics], title)
    for i, (m, _) in enumerate(metrics):
        for j, facet in enumerate(facets):
            _curve(axes[i][j], data, st, facet, m)
            axes[i][j].grid(alpha=0.3)
    _legend(fig, data)
    _finish(fig)
    return _save(fig, path)


def bytes_figure(data, st, path):
    if not _has(data, "wire_bytes"):
        return None
    rows = ["bytes on the wire per image (kB)\nforward + reverse", "overhead over one loss-free\npass (%)"]
    fig, axes, facets = _grid(data, rows, "Bytes on the wire · mean, 95 % CI band")
    for j, facet in enumerate(facets):
        _curve(axes[0][j], data, st, facet, "wire_bytes", scale=1e-3)
        _curve(axes[1][j], data, st, facet, "overhead", scale=100.0)
        for i in range(2):
            axes[i][j].grid(alpha=0.3)
    _legend(fig, data)
    _finish(fig)
    return _save(fig, path)


def latency_figure(data, st, path):
    if not _has(data, "time_to_image_s"):
        return None
    rows = ["median time-to-image (ms)\nband: 95 % CI of the median", "p95 time-to-image (ms)"]
    fig, axes, facets = _grid(data, rows, "Time to image (simulated)")
    for j, facet in enumerate(facets):
        _curve(axes[0][j], data, st, facet, "time_to_image_s", "median", scale=1e3)
        colors = _colors(data.policies)
        for pol in data.policies:
            pts = [(p.x, st.latency[(p.index, pol)]["p95"]) for p in _facet_points(data, facet)
                   if p.x is not None and st.latency.get((p.index, pol), {}).get("p95") is not None]
            if pts:
                x, y = zip(*pts)
                axes[1][j].plot(x, np.array(y) * 1e3, "-o", color=colors[pol], ms=3.5, lw=1.2)
        for i in range(2):
            axes[i][j].grid(alpha=0.3)
    _legend(fig, data)
    _finish(fig)
    return _save(fig, path)


def pareto_figure(data, st, path, metric="psnr"):
    from matplotlib.lines import Line2D

    if not (_has(data, metric) and _has(data, "wire_bytes")):
        return None
    plt = _plt()
    facets = data.facets()
    fig, axes = plt.subplots(1, len(facets), figsize=(max(6.8, 4.2 * len(facets) + 0.6), 4.4), squeeze=False)
    fig.suptitle("Quality against bytes · mean (bars: 95 % CI, clipped to the view), labels: loss rate\n"
                 "ringed: not dominated at its loss "
                 "rate (no other policy has fewer bytes and a higher PSNR there)", fontsize=9)
    colors = _colors(data.policies)
    for j, facet in enumerate(facets):
        ax = axes[0][j]
        pts = [p for p in _facet_points(data, facet) if p.x is not None]
        means_x, means_y = [], []
        for pol in data.policies:
            xs, ys = [], []
            for p in pts:
                b, blo, bhi = st.value(p.index, pol, "wire_bytes")
                q, qlo, qhi = st.value(p.index, pol, metric)
                if b is None or q is None:
                    continue
                xerr = None if blo is None else [[(b - blo) / 1e3], [(bhi - b) / 1e3]]
                yerr = None if qlo is None else [[q - qlo], [qhi - q]]
                ax.errorbar(b / 1e3, q, xerr=xerr, yerr=yerr, fmt="none", ecolor=colors[pol], lw=0.7, alpha=0.35)
                ax.plot(b / 1e3, q, "o", color=colors[pol], ms=3.5)
                ax.annotate(f"{p.x:g}", (b / 1e3, q), xytext=(3, 3), textcoords="offset points", fontsize=6,
                            color=colors[pol])
                xs.append(b / 1e3)
                ys.append(q)
            if xs:
                ax.plot(xs, ys, "-", color=colors[pol], lw=0.8, alpha=0.6)
                means_x += xs
                means_y += ys
        for p in pts:  # non-dominated policies at each loss rate
            cand = []
            for pol in data.policies:
                b, q = st.value(p.index, pol, "wire_bytes")[0], st.value(p.index, pol, metric)[0]
                if b is not None and q is not None:
                    cand.append((b, q))
            for b, q in cand:
                if not any((b2 <= b and q2 >= q) and (b2 < b or q2 > q) for b2, q2 in cand):
                    ax.plot(b / 1e3, q, "o", mfc="none", mec="black", ms=8, mew=0.8)
        if means_y:  # view the means; long CI bars are clipped (the tables have them)
            for lim, vals in ((ax.set_xlim, means_x), (ax.set_ylim, means_y)):
                lo, hi = min(vals), max(vals)
                pad = max((hi - lo) * 0.15, abs(hi) * 0.01, 1e-6)
                lim(lo - pad, hi + pad)
        ax.set_xlabel("bytes on the wire per image (kB)")
        ax.set_ylabel("PSNR vs original (dB)")
        if data.facet_keys:
            ax.set_title(data.facet_label(facet))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[p], marker="o", ms=3.5, lw=0.8, label=p) for p in data.policies]
    handles.append(Line2D([], [], color="black", marker="o", mfc="none", lw=0, ms=8, label="not dominated"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    _finish(fig, bottom=1.0, top=0.8)
    return _save(fig, path)


def channel_figure(data, st, path, max_hist=6):
    """Measured packet loss and loss-run lengths against the model; returns (path, notes)."""
    from matplotlib.lines import Line2D

    from reports.channel import merge_runs, point_channel, run_length_pmf, theory_loss

    plt = _plt()
    facets = data.facets()
    by = data.by_point_policy()
    header = 28
    if data.scenario and isinstance(data.scenario.get("link"), dict):
        header = data.scenario["link"].get("header_bytes", 28)
    notes = []
    hist_pts = {}
    for facet in facets:
        hist_pts[facet] = [p for p in _facet_points(data, facet) if p.x is not None
                           and merge_runs(r for pol in data.policies for r in by.get((p.index, pol), []))][:max_hist]
    ncols = 1 + max((len(v) for v in hist_pts.values()), default=0)
    fig, axes = plt.subplots(len(facets), ncols, figsize=(max(6.8, 3.6 + 2.2 * (ncols - 1)), 2.8 * len(facets) + 1.2),
                             squeeze=False)
    fig.suptitle("Channel check: measured against the configured model", fontsize=10)
    colors = _colors(data.policies)
    any_runs = False
    for i, facet in enumerate(facets):
        ax = axes[i][0]
        pts = [p for p in _facet_points(data, facet) if p.x is not None]
        _curve(ax, data, st, facet, "packet_loss_rate")
        tx, ty = [], []
        for p in pts:
            recs = [r for pol in data.policies for r in by.get((p.index, pol), [])]
            sizes = [r["bytes_forward"] / r["packets_sent"] for r in recs
                     if isinstance(r.get("bytes_forward"), (int, float)) and r.get("packets_sent")]
            bits = 8 * (sum(sizes) / len(sizes) - header) if sizes else None
            th = theory_loss(point_channel(data.scenario, p.sweep), bits)
            if th is not None:
                tx.append(p.x)
                ty.append(th)
        if tx:
            ax.plot(tx, ty, "k--", lw=1, marker="_", ms=8, label="model")
        else:
            notes.append(f"{data.facet_label(facet)}: no channel theory (resolved scenario or channel unavailable)")
        ax.set_xlabel(data.axis_label)
        ax.set_ylabel("packet loss rate\n(lost / sent, all passes)")
        ax.set_title(("packet loss: measured and model" if not data.facet_keys
                      else data.facet_label(facet)), fontsize=8)
        ax.grid(alpha=0.3)
        for j in range(1, ncols):
            axes[i][j].axis("off")
        for j, p in enumerate(hist_pts[facet], start=1):
            # pool the policy with the most packets sent (each policy shares the first pass)
            counts = {}
            for pol in data.policies:
                recs = by.get((p.index, pol), [])
                counts[pol] = sum(r.get("packets_sent") or 0 for r in recs if isinstance(r.get("loss_runs"), dict))
            pol = max(data.policies, key=lambda q: (counts.get(q, 0), -data.policies.index(q)))
            runs = merge_runs(by.get((p.index, pol), [])) or {}
            total = sum(runs.values())
            ax = axes[i][j]
            ax.axis("on")
            if not total:
                ax.text(0.5, 0.5, "no losses", ha="center", va="center", transform=ax.transAxes)
                continue
            any_runs = True
            m = max(max(runs), 8)
            ks = np.arange(1, m + 1)
            ax.bar(ks, [runs.get(int(k), 0) / total for k in ks], color=colors[pol], alpha=0.7,
                   label=f"{pol} ({total} runs)")
            pmf = run_length_pmf(point_channel(data.scenario, p.sweep), m)
            if pmf is not None:
                ax.plot(ks, pmf, "k_", ms=10, mew=1.5, label="model")
            ax.set_title(f"{data.axis_key or 'loss'} = {p.x:g}", fontsize=8)
            ax.set_xlabel("loss-run length (packets)")
            if j == 1:
                ax.set_ylabel("share of runs")
            ax.legend(frameon=False, fontsize=6)
    if not any_runs:
        logged = any(isinstance(r.get("loss_runs"), dict) for r in data.records)
        why = ("no packet was lost" if logged else
               "the records have no `loss_runs` field (written before the engine logged it)")
        notes.append(f"loss-run histograms: {why}, so only the loss rate is checked")
        if ncols == 1:
            fig.text(0.5, 0.1, f"loss-run histogram: {why.replace('`', '')}", ha="center", fontsize=7)
    _legend(fig, data, [Line2D([], [], color="black", ls="--", label="model")])
    _finish(fig, bottom=1.2, wspace=0.7)
    return _save(fig, path), notes


def examples_figures(data, folder: Path, max_images: int = 3) -> list[tuple[str, Path]]:
    """One grid per saved example image: rows = loss rates, columns = original | received |
    edges (if saved) | each policy. Returns ``[(image name, path)]``."""
    from reports.examples import find_examples

    plt = _plt()
    found = find_examples(data.out)
    out = []
    order = {p.index: (data.facets().index(p.facet), p.x is None, p.x or 0.0, p.index) for p in data.points}
    for name in sorted(found)[:max_images]:
        per_point = found[name]
        pts = sorted(per_point, key=lambda i: order.get(i, (1e9, True, 0.0, i)))
        cols = ["original", "received"]
        if any("edges" in per_point[i] for i in pts):
            cols.append("edges")
        pols = [p for p in data.policies if any(("policy", p) in per_point[i] for i in pts)]
        cols += [("policy", p) for p in pols]
        fig, axes = plt.subplots(len(pts), len(cols), figsize=(1.75 * len(cols), 1.85 * len(pts) + 0.5),
                                 squeeze=False)
        fig.suptitle(f"{name}: one transmission per loss rate (repeat 0)", fontsize=9)
        info = {p.index: p for p in data.points}
        for i, idx in enumerate(pts):
            for j, col in enumerate(cols):
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                f = per_point[idx].get(col)
                if f is not None:
                    from PIL import Image

                    with Image.open(f) as im:
                        ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "—", ha="center", va="center", transform=ax.transAxes)
                if i == 0:
                    label = (col[1] if isinstance(col, tuple)
                             else {"received": "received\n(holes magenta)"}.get(col, col))
                    ax.set_title(label, fontsize=7)
            p = info.get(idx)
            lab = f"{p.x:g}" if p is not None and p.x is not None else f"point {idx}"
            if p is not None and data.facet_keys:
                lab += "\n" + data.facet_label(p.facet)
            axes[i][0].set_ylabel(lab, fontsize=7)
        _finish(fig, bottom=0.1, top=0.7, left=0.5, right=0.1, wspace=0.1, hspace=0.15)
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
        out.append((name, _save(fig, folder / f"examples_{safe}.png")))
    return out


def make_figures(data, st, crossovers, folder: Path) -> tuple[dict, list[str]]:
    """Write every figure that the data supports into ``folder``; ``({name: path}, notes)``."""
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    figs, notes = {}, []
    with plt.rc_context(_RC):
        for name, fn in (("crossover", lambda p: crossover_figure(data, crossovers, p)),
                         ("quality", lambda p: quality_figure(data, st, p)),
                         ("quality_lossfree", lambda p: quality_figure(data, st, p, lossfree=True)),
                         ("bytes", lambda p: bytes_figure(data, st, p)),
                         ("latency", lambda p: latency_figure(data, st, p)),
                         ("pareto", lambda p: pareto_figure(data, st, p))):
            path = fn(folder / f"{name}.png")
            if path is not None:
                figs[name] = path
        if data.records:
            path, n = channel_figure(data, st, folder / "channel.png")
            figs["channel"] = path
            notes += n
        ex = examples_figures(data, folder)
        for name, path in ex:
            figs[f"examples:{name}"] = path
        if not ex:
            notes.append("example grids: no images under examples/ (the runner saves them through "
                          "reports.examples.save_examples)")
    return figs, notes
