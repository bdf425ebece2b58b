"""Build a run's report: ``report.html``, ``report.md``, ``figures/*.png``, ``summary.csv`` and ``timings.csv``.

Everything is computed from the files of the output folder (``results.jsonl``,
``scenario.resolved.yaml``, ``provenance.json``, ``examples/``); nothing is simulated or
decoded again. The same folder gives the same ``report.md``, ``summary.csv`` and PNGs,
byte for byte (same library versions).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sim.results import write_summaries

from reports.analysis import build_stats, find_crossovers
from reports.data import load_report_data
from reports.figures import FIGURE_FILES
from reports.render import to_html, to_markdown

__all__ = ["build_report", "FORMATS"]

log = logging.getLogger(__name__)

FORMATS = ("html", "md")
FIGURES_DIR = "figures"

# metric → (column label, scale, decimals)
_FMT = {
    "psnr": ("PSNR dB", 1.0, 2), "ssim": ("SSIM", 1.0, 4), "ms_ssim": ("MS-SSIM", 1.0, 4),
    "lpips": ("LPIPS", 1.0, 4), "ssim_lossfree": ("SSIM vs loss-free", 1.0, 4),
    "lpips_lossfree": ("LPIPS vs loss-free", 1.0, 4),
    "wire_bytes": ("wire kB", 1e-3, 3), "overhead": ("overhead %", 100.0, 1),
    "psnr_per_kB": ("PSNR/kB", 1.0, 3), "ssim_per_kB": ("SSIM/kB", 1.0, 4),
    "time_to_image_s": ("time ms", 1e3, 1), "missing_share": ("missing %", 100.0, 1),
    "rounds": ("rounds", 1.0, 2), "packet_loss_rate": ("loss", 1.0, 4),
}
_TABLE_METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "ssim_lossfree", "lpips_lossfree", "wire_bytes",
                  "overhead", "psnr_per_kB", "missing_share", "rounds")


def _num(v, metric, with_unit=False) -> str:
    if v is None:
        return "—"
    _, scale, dec = _FMT.get(metric, (metric, 1.0, 4))
    return f"{v * scale:.{dec}f}"


def _mean_ci(row, metric) -> str:
    if row is None or row["mean"] is None:
        return "—"
    s = _num(row["mean"], metric)
    if row["ci95"] is not None:
        s += " ± " + _num(row["ci95"], metric)
    return s + (f" ({row['n_null']} null)" if row.get("n_null") else "")


def _x(data, x) -> str:
    if x is None:
        return "—"
    return f"{x:g}" if data.axis_key is not None else f"{x:.4f}"


def _n(n, one, many=None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _present(data, metric) -> bool:
    return any(r.get(metric) is not None for r in data.records)


# ------------------------------------------------------------------------------ sections


def _status(data) -> tuple[str, list[str]]:
    planned = sum(v for v in data.expected.values() if v is not None)
    have = len(data.records)
    lines = []
    missing = []
    for p in data.points:
        for pol in data.policies:
            n = sum(1 for r in data.records if r["point"] == p.index and r["policy"] == pol)
            exp = data.expected.get((p.index, pol))
            if exp is not None and n < exp:
                missing.append(f"{_x(data, p.x)}{' (' + data.facet_label(p.facet) + ')' if data.facet_keys else ''}"
                               f" {pol}: {n}/{exp}")
    if planned and have >= planned and not missing:
        status = f"complete: all {have} planned records"
    elif planned:
        status = f"**partial**: {have} of {planned} planned records"
    else:
        status = f"{have} records (planned count unknown)"
    if missing:
        lines.append("Points with records missing (x policy: present/planned): " + "; ".join(missing))
    if data.errors:
        errs = sorted({str(r.get("error")) for r in data.errors})
        lines.append(f"{len(data.errors)} failed transmission(s) (error records, left out): " + "; ".join(errs[:5])
                     + (" …" if len(errs) > 5 else ""))
    for number, reason in data.skipped:
        lines.append(f"`results.jsonl:{number}`: skipped ({reason})")
    return status, lines


def _crossover_text(data, c) -> tuple[str, str]:
    xs = [r["x"] for r in c.rows]
    if c.status == "no_data":
        inter = "no data"
    elif c.status == "ahead_from_start":
        inter = f"ahead at every swept value (from {_x(data, xs[0])})"
    elif c.status == "never":
        inter = f"not within {_x(data, xs[0])}–{_x(data, xs[-1])}"
    else:
        k = next(i for i, r in enumerate(c.rows) if r["diff"] > 0)
        if c.rows[k - 1]["diff"] == 0:
            inter = f"{_x(data, c.interpolated)} (tied there, ahead from {_x(data, xs[k])})"
        else:
            inter = f"≈ {c.interpolated:.4g} (between {_x(data, xs[k - 1])} and {_x(data, xs[k])})"
    if c.behind_again:
        inter += "; behind again at " + ", ".join(_x(data, x) for x in c.behind_again)
    conf = _x(data, c.confident) if c.confident is not None else "no swept value"
    return inter, conf


def _diff(c, r, ci=True) -> str:
    if r is None or r["diff"] is None:
        return "—"
    scale, dec = (1e3, 1) if c.unit == "s" else (1.0, 4 if c.metric == "ssim_per_kB" else 3)
    unit = "ms" if c.unit == "s" else c.unit
    s = f"{r['diff'] * scale:+.{dec}f}"
    if ci and r["diff_low"] is not None:
        s += f" [{r['diff_low'] * scale:+.{dec}f}, {r['diff_high'] * scale:+.{dec}f}]"
    rel = f" ({r['rel'] * 100:+.1f} %)" if r["rel"] is not None else ""
    return f"{s} {unit}{rel}"


def _over_images(c, r) -> str:
    """The paired difference's interval over images (means only; "—" below two images)."""
    if r is None or r.get("diff_images_low") is None:
        return "—"
    dec = 4 if c.metric == "ssim_per_kB" else 3
    return f"[{r['diff_images_low']:+.{dec}f}, {r['diff_images_high']:+.{dec}f}] {c.unit} (n = {r['images']})"


def _val(c, v, lo, hi) -> str:
    if v is None:
        return "—"
    scale, dec = (1e3, 1) if c.unit == "s" else (1.0, 4 if c.metric == "ssim_per_kB" else 3)
    s = f"{v * scale:.{dec}f}"
    if lo is not None and hi is not None:
        s += f" [{lo * scale:.{dec}f}, {hi * scale:.{dec}f}]"
    return s


def _glance(data, crossovers, st) -> list:
    items = []
    for c in crossovers:
        if c.metric == "ssim_per_kB":  # in the tables; the glance keeps PSNR per kB and latency
            continue
        where = f" ({data.facet_label(c.facet)})" if data.facet_keys else ""
        if c.status == "no_data":
            items.append(f"**{c.criterion}**{where}: no paired records of `{c.challenger}` and `{c.baseline}` yet.")
            continue
        inter, conf = _crossover_text(data, c)
        last = c.last()
        by = ""
        if last:
            images = _over_images(c, last)
            by = (f" At {data.axis_key or 'loss'} = {_x(data, last['x'])}: {c.challenger} "
                  f"{_val(c, last['a'], None, None)} vs {c.baseline} {_val(c, last['b'], None, None)} "
                  f"{'ms' if c.unit == 's' else c.unit}, paired difference {_diff(c, last)}"
                  + ("" if images == "—" else f"; over images {images}") + ".")
        items.append(f"**{c.criterion}**{where}: `{c.challenger}` overtakes `{c.baseline}` at "
                     f"{inter}; confidently (95 % CI of the paired difference above 0) from {conf}.{by}")
    # the quality cost of not resending, at the highest x
    for facet in data.facets():
        pts = [p for p in data.points if p.facet == facet and p.x is not None]
        if not pts:
            continue
        top = max(pts, key=lambda p: (p.x, p.index))
        vals = []
        for pol in data.policies:
            row = st.get(top.index, pol, "psnr")
            if row is not None and row["mean"] is not None:
                vals.append(f"{pol} {_mean_ci(row, 'psnr')} dB")
        if vals:
            where = f" ({data.facet_label(facet)})" if data.facet_keys else ""
            items.append(f"**PSNR at {data.axis_key or 'loss'} = {_x(data, top.x)}**{where}: " + "; ".join(vals) + ".")
    return items


def _crossover_blocks(data, crossovers) -> list:
    blocks = []
    if not crossovers:
        blocks.append(("p", "No crossover: it needs a policy of kind `resend` and one of kind `complement` "
                            "or `hybrid` in the records."))
        return blocks
    header = ["criterion", "challenger vs baseline"] + (["facet"] if data.facet_keys else []) + [
        "crossover (interpolated)", "confident from", "at highest x: challenger", "baseline", "paired difference"]
    rows = []
    for c in crossovers:
        inter, conf = _crossover_text(data, c)
        last = c.last()
        rows.append([c.criterion, f"{c.challenger} vs {c.baseline}"]
                    + ([data.facet_label(c.facet)] if data.facet_keys else [])
                    + [inter, conf,
                       _val(c, last["a"], last["a_low"], last["a_high"]) if last else "—",
                       _val(c, last["b"], last["b_low"], last["b_high"]) if last else "—",
                       _diff(c, last)])
    blocks.append(("table", header, rows))
    # per x detail: one table per (facet, challenger, baseline)
    groups: dict = {}
    for c in crossovers:
        groups.setdefault((c.facet, c.challenger, c.baseline), []).append(c)
    for (facet, ch, base), cs in groups.items():
        if not any(c.rows for c in cs):
            continue
        title = f"{ch} vs {base}" + (f", {data.facet_label(facet)}" if data.facet_keys else "")
        blocks.append(("p", f"**{title}** — each policy's value [95 % CI] per "
                            f"{data.axis_key or 'measured loss share'}, and the paired difference [95 % CI] "
                            f"(> 0: `{ch}` is better; ✓: its interval is above 0), and for the means the "
                            f"difference's interval over images (the t-interval of the per-image mean "
                            f"differences: what to expect of other images like these; the paired interval "
                            f"holds for these images only)."))
        header = [data.axis_key or "loss share"]
        for c in cs:
            unit = "ms" if c.unit == "s" else c.unit
            short = c.criterion.split("(")[-1].rstrip(")")
            header += [f"{short}: {ch} ({unit})", base, "paired difference", "✓"]
            if c.statistic == "mean":
                header.append("over images")
        xs = sorted({r["x"] for c in cs for r in c.rows})
        rows = []
        for x in xs:
            row = [_x(data, x)]
            for c in cs:
                r = c.at(x)
                if r is None:
                    row += ["—", "—", "—", ""]
                else:
                    row += [_val(c, r["a"], r["a_low"], r["a_high"]), _val(c, r["b"], r["b_low"], r["b_high"]),
                            _diff(c, r), "✓" if r["confident"] else ""]
                if c.statistic == "mean":
                    row.append(_over_images(c, r))
            rows.append(row)
        blocks.append(("table", header, rows))
    return blocks


def _metric_tables(data, st) -> list:
    blocks = []
    metrics = [m for m in _TABLE_METRICS if _present(data, m)]
    for facet in data.facets():
        if data.facet_keys:
            blocks.append(("h", 3, data.facet_label(facet)))
        header = [data.axis_key or "loss share", "policy", "n"] + [_FMT[m][0] for m in metrics] + [
            "time ms median [95 % CI]", "time ms p95"]
        rows = []
        pts = sorted((p for p in data.points if p.facet == facet), key=lambda p: (p.x is None, p.x or 0.0, p.index))
        for p in pts:
            for pol in data.policies:
                n = st.n.get((p.index, pol), 0)
                exp = data.expected.get((p.index, pol))
                ncell = str(n) if exp is None or n >= exp else f"{n}/{exp} {'missing' if n == 0 else 'partial'}"
                xcell = _x(data, p.x) if p.x is not None else f"point {p.index}"
                if n == 0:
                    rows.append([xcell, pol, ncell] + ["—"] * (len(metrics) + 2))
                    continue
                lat = st.latency.get((p.index, pol)) or {}
                med = "—" if lat.get("median") is None else f"{lat['median'] * 1e3:.1f}"
                if lat.get("low") is not None:
                    med += f" [{lat['low'] * 1e3:.1f}, {lat['high'] * 1e3:.1f}]"
                p95 = "—" if lat.get("p95") is None else f"{lat['p95'] * 1e3:.1f}"
                rows.append([xcell, pol, ncell] + [_mean_ci(st.get(p.index, pol, m), m) for m in metrics] + [med, p95])
        blocks.append(("table", header, rows))
    return blocks


def _channel_blocks(data, st) -> list:
    import numpy as np

    from reports.channel import merge_runs, point_channel, run_length_pmf, theory_loss

    by = data.by_point_policy()
    header = [data.axis_key or "loss share"] + (["facet"] if data.facet_keys else []) + [
        "model loss"] + [f"measured: {p}" for p in data.policies] + ["model mean run", "measured mean run (runs)"]
    rows = []
    for facet in data.facets():
        for p in sorted((p for p in data.points if p.facet == facet), key=lambda p: (p.x is None, p.x or 0.0, p.index)):
            ch = point_channel(data.scenario, p.sweep)
            th = theory_loss(ch)
            pmf = run_length_pmf(ch, 1000) if ch is not None else None
            mean_run = None
            if pmf is not None and pmf.sum() > 0:
                mean_run = float((np.arange(1, pmf.size + 1) * pmf).sum() / pmf.sum())
            runs = None
            best = None
            for pol in data.policies:
                m = merge_runs(by.get((p.index, pol), []))
                if m is not None and (best is None or sum(m.values()) > sum(best[1].values())):
                    best = (pol, m)
            if best is not None:
                total = sum(best[1].values())
                runs = (f"{sum(k * v for k, v in best[1].items()) / total:.2f} ({total}, {best[0]})" if total
                        else "no losses")
            rows.append([_x(data, p.x)] + ([data.facet_label(facet)] if data.facet_keys else [])
                        + ["—" if th is None else f"{th:.4f}"]
                        + [_mean_ci(st.get(p.index, pol, "packet_loss_rate"), "packet_loss_rate")
                           for pol in data.policies]
                        + ["—" if mean_run is None else f"{mean_run:.2f}", runs or "not logged"])
    return [("table", header, rows)]


def _provenance_blocks(data) -> list:
    blocks = []
    runs = (data.provenance or {}).get("runs") or []
    if not runs:
        return [("p", "No `provenance.json` in the output folder.")]
    seeds = sorted({str(r.get("seed")) for r in runs})
    rows = []
    for r in runs:
        git = r.get("git") or {}
        commit = (git.get("commit") or "—") + (" (uncommitted changes)" if git.get("dirty") else "")
        hw = r.get("hardware") or {}
        rows.append([r.get("started", "—"), commit, str(r.get("seed")), f"`{' '.join(r.get('argv') or [])}`",
                     r.get("python", "—"), f"{hw.get('platform', '—')}, {hw.get('cpu_count', '—')} CPUs, "
                     f"torch threads {hw.get('torch_threads', '—')}, GPU {hw.get('cuda') or 'none'}"])
    blocks.append(("p", f"Seed {', '.join(seeds)}; {len(runs)} run(s) wrote this folder (a resumed run adds one)."))
    blocks.append(("table", ["started", "git commit", "seed", "command", "python", "hardware"], rows))
    pk = runs[-1].get("packages") or {}
    blocks.append(("table", ["package", "version (last run)"], [[k, str(v)] for k, v in sorted(pk.items())]))
    cards = []
    for r in runs:
        for c in r.get("codecs") or []:
            wfile = c.get("weights_file")
            card = None
            if wfile:
                mc = Path(wfile).with_name("MODEL_CARD.md")
                card = str(mc) if mc.exists() else None
            tr = c.get("training") or {}
            train = ", ".join(f"{k} {tr[k]}" for k in ("steps", "batch", "crop", "lr", "seed") if k in tr)
            if isinstance(tr.get("train_images"), list):
                train += f", {len(tr['train_images'])} training images"
            row = [c.get("model", "—"), str(c.get("weights") or "shipped"), wfile or "—",
                   (c.get("weights_sha256") or "—")[:16], str(c.get("quantizer")), str(c.get("entropy")),
                   train or "—", card or "—"]
            if row not in cards:
                cards.append(row)
    if cards:
        blocks.append(("table", ["model", "weights", "file", "sha256 (16)", "quantizer", "entropy", "training",
                                 "model card"], cards))
    sets = []
    for r in runs:
        for c in r.get("complement") or []:
            row = [str(c.get("name")), str(c.get("options")), str(c.get("sha256") or "—")[:16]]
            if row not in sets:
                sets.append(row)
    if sets:
        blocks.append(("table", ["complement weights", "loaded with", "sha256 of the tensors (16)"], sets))
    return blocks


# ------------------------------------------------------------------------------- report


def _clean_figures(folder: Path) -> None:
    if folder.is_dir():
        for f in folder.glob("*.png"):
            if f.name.startswith("examples_") or f.name in FIGURE_FILES:
                f.unlink()


def build_report(out: str | Path, formats=FORMATS) -> dict:
    """Write the report of the run in ``out``; returns ``{"md"|"html"|"summary"|"timings"|"figures": path(s)}``.

    Parameters
    ----------
    out : path — a run's output folder (``results.jsonl`` and, normally,
        ``scenario.resolved.yaml`` and ``provenance.json``)
    formats : iterable of ``"html"``, ``"md"``

    Raises
    ------
    InputError
        No such folder, or nothing in it to report.
    ValueError
        An unknown format.
    """
    formats = list(formats)
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"format {f!r}: expected html or md")
    out = Path(out)
    data = load_report_data(out)
    st = build_stats(data)
    crossovers = find_crossovers(data, st)
    written: dict = {}
    written.update(write_summaries(data.read, out))  # what the runner writes: same function, same records

    from reports.figures import make_figures

    figdir = out / FIGURES_DIR
    _clean_figures(figdir)
    figs, fig_notes = make_figures(data, st, crossovers, figdir)
    written["figures"] = sorted(figs.values())

    name = (data.scenario or {}).get("name") or out.name
    status, status_lines = _status(data)
    n_pts = sum(1 for p in data.points)
    reps = (data.scenario or {}).get("repeats")
    blocks = [("h", 1, f"Loss-rate report: {name}"),
              ("p", f"From `{out.name}/results.jsonl`: {_n(len(data.records), 'record')}, "
                    f"{_n(len(data.policies), 'policy', 'policies')} "
                    f"({', '.join(f'`{p}` ({data.policy_kinds.get(p)})' for p in data.policies)}), "
                    f"{_n(n_pts, 'sweep point')}" + (f", {_n(reps, 'repeat')}" if reps else "")
                    + f". Status: {status}."),
              ("p", f"x axis: **{data.axis_label}**"
                    + (". It is the swept channel parameter as configured." if data.axis_kind == "swept" else
                       ". No loss-rate parameter is swept, so each point is placed at the mean share of latent "
                       "cells whose packets the channel erased on the first pass (`first_pass_lost_share`).")
                    + (f" Facets (one figure column each): {', '.join(f'`{k}`' for k in data.facet_keys)}."
                       if data.facet_keys else "")),
              ("h", 2, "At a glance")]
    glance = _glance(data, crossovers, st)
    blocks.append(("ul", glance) if glance else ("p", "No resend/complement pair to compare."))
    if crossovers:
        blocks.append(("p", "Quality per byte = PSNR (or SSIM) against the original ÷ kB on the wire (forward + "
                        "reverse, link headers included), mean over transmissions; latency = median simulated "
                        "time-to-image. Differences are paired: the two policies' transmissions of the same point, "
                        "repeat and image saw the same first-pass losses; mean (latency: median) of the differences "
                        "with its 95 % CI. Interpolated crossover: where the difference first turns positive, "
                        "linear between swept points. Confident: the smallest swept value where the difference's "
                        "95 % CI lies above 0. See docs/reports.md."))
    blocks += [("h", 2, "Crossover")] + _crossover_blocks(data, crossovers)
    blocks.append(("h", 2, "Figures"))
    captions = {"crossover": "Paired difference challenger − resend: quality per byte and median latency, 95 % CI",
                "quality": "Quality against the original, per policy, mean and 95 % CI band",
                "quality_lossfree": "Quality against the loss-free decode (isolates loss damage from codec damage)",
                "bytes": "Bytes on the wire and overhead over one loss-free pass",
                "latency": "Time to image: median (95 % CI band) and p95",
                "pareto": "Quality against bytes (Pareto)",
                "channel": "Channel check: measured loss rate and loss-run lengths against the model"}
    for key, path in sorted(figs.items(), key=lambda kv: (kv[0].startswith("examples:"), list(captions).index(kv[0])
                                                          if kv[0] in captions else 0, kv[0])):
        cap = captions.get(key) or f"Examples, {key.split(':', 1)[1]}: original | received (holes magenta) | " \
                                   f"edges if any | each policy, one row per loss rate"
        blocks.append(("img", f"{FIGURES_DIR}/{path.name}", cap))
    blocks += [("h", 2, "Per policy and loss rate: mean ± 95 % CI"),
               ("p", "Student-t interval half-widths from `sim.results.summarize` (as in `summary.csv`, which "
                     "has every deterministic field; wall-clock times are in `timings.csv`); time-to-image: median with its order-statistic interval, and p95. "
                     "n = transmissions; `partial`/`missing` = fewer than planned.")]
    blocks += _metric_tables(data, st)
    blocks += [("h", 2, "Channel check"),
               ("p", "Model loss: the configured channel's long-run loss probability; measured: packets lost ÷ "
                     "packets sent over all passes (mean ± CI per policy; the first pass is shared by all "
                     "policies). Mean run: consecutive losses in wire order (`loss_runs`).")]
    blocks += _channel_blocks(data, st)
    notes = status_lines + data.notes + fig_notes
    blocks += [("h", 2, "Data notes"), ("ul", notes) if notes else ("p", "None: every planned record is present.")]
    blocks += [("h", 2, "Scenario (resolved)")]
    blocks.append(("pre", data.scenario_text, "yaml") if data.scenario_text else ("p", "Not available."))
    blocks += [("h", 2, "Provenance")] + _provenance_blocks(data)

    if "md" in formats:
        (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
        written["md"] = out / "report.md"
    if "html" in formats:
        (out / "report.html").write_text(to_html(blocks, f"Loss-rate report: {name}", out), encoding="utf-8")
        written["html"] = out / "report.html"
    return written
