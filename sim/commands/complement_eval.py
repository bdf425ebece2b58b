"""``latentcast complement-eval``: complement methods against each other and against resend.

Every image is encoded and quantized by the codec (the latent as sent); for each loss rate a
packet-loss-shaped mask drops whole packets of the packetizer's cell groups
(:func:`sim.packets.cell_groups`, one packet per group): exactly ``round(rate × packets)``
packets, drawn without replacement from a seeded generator, so ``--loss 0.1 --layout tile``
means 10 % of the tile packets lost. Each method repairs the same masks (common random
numbers); the result is decoded and scored against the original image. The ``resend`` row is
the loss-free decode: what resend eventually delivers.

Columns: the share of latent cells lost, PSNR / SSIM / LPIPS against the original (LPIPS left
out, after one warning, where its weights cannot be had), the EEN's edge F1 against Canny
(σ = 2) of the original for methods that estimate edges (2-pixel tolerance; at the one
threshold of 0.01 … 0.5 that is best over the row's images and masks, BSDS's ODS, shown after
``@``: :func:`sim.complement.een.ods_f1`), and the method's wall time per image (latent in →
latent out, the decode excluded; after one warm-up call per method). Means over the images
and, with ``--masks N``, over N mask draws per image and rate (those of seeds SEED … SEED+N−1).

Paired differences: with a reference method among ``--methods`` (``--versus``; by default
``interp`` where it is among them), every other method also gets its mean PSNR and LPIPS
difference to the reference on the same (image, mask) pairs, with a 95 % t-interval over those
pairs — the numbers to read before saying one method beats another.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
import zlib

import numpy as np

from sim.errors import ConfigError

NAME = "complement-eval"
HELP = ("compare complement methods (and resend) on packet-loss masks: PSNR, SSIM, LPIPS, EEN edge F1, "
        "compute time per image")

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("zero", "interp", "pixel-telea", "pixel-diffusion", "learned", "learned-noedge",
                   "learned-denoise")
GRID_COLUMNS = ("original", "received", "edges", "complement", "resend")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default="samples", help="'samples' (scikit-image colour samples) or a folder")
    p.add_argument("--size", type=int, default=512, help="resize + center-crop to SIZE×SIZE (default 512)")
    p.add_argument("--loss", default="0.05,0.1,0.2", metavar="RATES",
                   help="packet-loss rates, comma-separated, each in [0, 1] (default 0.05,0.1,0.2)")
    p.add_argument("--layout", default="tile", help="packetizer layout: tile | row | interleave (default tile)")
    p.add_argument("--tile", type=int, default=8, help="packetizer tile k (default 8)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="NAMES",
                   help=f"complement methods, comma-separated (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and the methods' noise (default 0)")
    p.add_argument("--masks", type=int, default=1,
                   help="mask draws per image and loss rate, those of seeds SEED … SEED+N−1 (default 1)")
    p.add_argument("--versus", default=None, metavar="NAME",
                   help="reference method of the paired differences, one of --methods (default: interp where "
                        "it is among them)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--grid", default=None, metavar="PATH",
                   help="write a PNG grid (original | received | edges | complement | resend per image) "
                        "at the middle loss rate")
    p.add_argument("--grid-method", default=None, metavar="NAME",
                   help="the grid's complement column (default: the first of --methods that estimates "
                        "edges, else the last)")
    p.add_argument("--codec", default="tiny", help="codec model: tiny | sd-vae | taesd (default tiny)")
    p.add_argument("--codec-weights", default=None, help="codec weights file/dir (default: the shipped tiny codec)")
    p.add_argument("--bits", type=int, default=6, help="uniform quantizer bits per latent value (default 6)")
    p.add_argument("--weights", default="tiny", help="complement weight set: tiny | sd15 | a folder (default tiny)")
    p.add_argument("--een", default=None, help="EEN weights file (default: the weight set's)")
    p.add_argument("--steps", type=int, default=None,
                   help="DDIM steps of the learned methods (default: the weight set's, 2 for tiny)")
    p.add_argument("--device", default="cpu", help="torch device of the complement models (default cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1; 0 keeps torch's default)")
    p.add_argument("--no-lpips", action="store_true", help="leave LPIPS out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- arguments ----------------------------------------------------------------------------------

def parse_losses(text: str) -> list[float]:
    """``"0.05,0.1"`` → sorted distinct rates in [0, 1]; ConfigError naming ``--loss`` otherwise."""
    try:
        rates = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        rates = None
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates) or len(set(rates)) != len(rates):
        raise ConfigError(f"--loss = {text!r}: expected distinct packet-loss rates in [0, 1], comma-separated "
                          f"(e.g. 0.05,0.1,0.2)")
    return sorted(rates)


def parse_methods(text: str) -> list[str]:
    """``"zero,learned"`` → method names, each registered once; ConfigError naming ``--methods``."""
    from sim.complement import complement_method

    names = [x.strip() for x in str(text).split(",") if x.strip()]
    if not names:
        raise ConfigError(f"--methods = {text!r}: expected at least one complement method")
    for name in names:
        complement_method(name, "--methods")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--methods: each method once; repeated: {', '.join(dup)}")
    return names


def method_options(name: str, args) -> dict:
    """``make_method`` options of ``name`` from the command line (model keys only where they apply)."""
    from sim.complement import CODEC_METHODS

    if name not in CODEC_METHODS or name == "pixel-telea":
        return {}
    opts = {"weights": args.weights, "device": args.device}
    if args.een:
        opts["een"] = args.een
    if args.steps is not None:
        opts["steps"] = args.steps
    return opts


# -- masks --------------------------------------------------------------------------------------

def packet_loss_mask(layout: str, tile: int, h: int, w: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w) bool, True = lost: ``round(rate × packets)`` of the layout's packets (non-empty cell
    groups of :func:`sim.packets.cell_groups`), drawn without replacement."""
    from sim.packets import cell_groups

    groups = [g for g in cell_groups(layout, tile, h, w) if len(g)]
    lost = rng.choice(len(groups), size=int(round(rate * len(groups))), replace=False)
    mask = np.zeros(h * w, dtype=bool)
    for g in lost:
        mask[groups[g]] = True
    return mask.reshape(h, w)


def _streams(seed: int, image: str, rate: float) -> tuple[np.random.Generator, np.random.SeedSequence]:
    """(mask generator, the methods' seed) of one (image, loss rate); adding a rate or image shifts nothing."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(image.encode("utf-8")), int(round(rate * 1e6))])
    mask_ss, method_ss = ss.spawn(2)
    return np.random.default_rng(mask_ss), method_ss


# -- evaluation ---------------------------------------------------------------------------------

def _finite(v):
    return float(v) if v is not None and math.isfinite(v) else None


def _mean(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def evaluate(codec, images, losses, methods: dict, layout: str = "tile", tile: int = 8, seed: int = 0,
             lpips=None, grid_method: str | None = None, progress: bool = False, masks: int = 1,
             versus: str | None = None) -> dict:
    """Score complement ``methods`` (name → built :class:`~sim.complement.method.ComplementMethod`) and
    resend on ``[(name, uint8 image)]``. Each method is told the quantization noise (``noise_std``),
    as the runner tells it the noise of the received values; its time per image is its call
    alone (its EEN edges, :meth:`~sim.complement.method.ComplementMethod.estimate_edges`, are
    computed apart).

    Returns ``{"rows": [...], "images": [...], "grid": [...]}``: ``rows`` one per (loss, method)
    with means over the images and ``masks`` mask draws (seeds ``seed`` … ``seed + masks − 1``;
    ``resend`` first at each loss) and, where ``versus`` names one of ``methods``, the paired
    differences to it (:func:`paired_difference`): ``d_psnr``, ``d_lpips`` over the (image, mask)
    pairs (an interval for these images), and with ``masks`` > 1 ``d_psnr_images``,
    ``d_lpips_images`` over the per-image means (n = the images: an interval for images like
    them); ``images`` the per-(image, mask) values;
    ``grid`` the pictures of ``grid_method`` at the middle loss rate, first mask (for
    :func:`write_grid`).
    """
    from tqdm import tqdm

    from sim.complement.een import EDGE_THRESHOLDS, canny_edges, edge_counts, f1_from_counts, ods_f1
    from sim.engine import received_noise_std
    from sim.images import to_tensor
    from sim.lpips import MIN_SIZE
    from sim.metrics import psnr, ssim
    from sim.results import image_means

    grid_loss = losses[len(losses) // 2]
    per_image, grid = [], []
    warmed = False
    if not isinstance(masks, int) or masks < 1:
        raise ConfigError(f"--masks = {masks!r}: expected an integer ≥ 1")
    bar = tqdm(total=len(images) * len(losses) * masks, desc=NAME, unit="mask", disable=not progress,
               file=sys.stderr)
    for name, img in images:
        symbols, side = _prepared(codec, img)
        sent = np.asarray(codec.dequantize(symbols, side), dtype=np.float32)
        noise_std = received_noise_std(codec, side)  # quantization only: no channel noise here
        c, h, w = sent.shape
        if not warmed:  # one-off set-up (kernels, imports) kept out of the timings
            for fn in methods.values():
                fn.warmup((c, h, w))
            warmed = True
        resend = codec.decode(sent)
        target = canny_edges(to_tensor(img))[0, 0].numpy()
        scored = lpips is not None and min(img.shape[:2]) >= MIN_SIZE
        for rate, draw in itertools.product(losses, range(masks)):
            mask_rng, method_ss = _streams(seed + draw, name, rate)
            missing = packet_loss_mask(layout, tile, h, w, rate, mask_rng)
            outs = {"resend": (resend, None, None)}
            for mname, fn in methods.items():
                t0 = time.perf_counter()
                latent = fn(sent, missing, np.random.default_rng(method_ss), noise_std)
                dt = time.perf_counter() - t0
                outs[mname] = (codec.decode(latent), fn.estimate_edges(sent, missing), dt)
            dists = (lpips.distances([img], [o[0] for o in outs.values()])[0] if scored else [None] * len(outs))
            for (mname, (out, edges, dt)), d in zip(outs.items(), dists):
                per_image.append({
                    "image": name, "loss": rate, "mask": draw, "method": mname,
                    "lost_share": float(missing.mean()), "psnr": _finite(psnr(img, out)),
                    "ssim": float(ssim(img, out)), "lpips": None if d is None else float(d),
                    "edge_f1": None, "time_s": dt,
                    "_edges": None if edges is None else edge_counts(edges, target, thresholds=EDGE_THRESHOLDS)})
            if rate == grid_loss and draw == 0 and grid_method is not None:
                out, edges, _ = outs[grid_method]
                grid.append({"image": name, "original": img, "received": _holes(resend, missing),
                             "edges": edges, "complement": out, "resend": resend})
            bar.update(1)
    bar.close()
    order = ["resend", *methods]
    rows = []
    for rate in losses:
        ref = {(r["image"], r["mask"]): r for r in per_image if r["loss"] == rate and r["method"] == versus}
        for mname in order:
            sel = [r for r in per_image if r["loss"] == rate and r["method"] == mname]
            counts = [r.pop("_edges") for r in sel]
            ods = ods_f1(counts) if counts and all(c is not None for c in counts) else None
            if ods is not None:  # each draw's F1 at the row's threshold
                k = EDGE_THRESHOLDS.index(ods["threshold"])
                for r, c in zip(sel, counts):
                    r["edge_f1"] = f1_from_counts(c[k])["f1"]
            row = {"loss": rate, "method": mname, "n": len(sel),
                   **{k: _mean([r[k] for r in sel]) for k in ("lost_share", "psnr", "ssim", "lpips", "time_s")},
                   "edge_f1": ods and ods["f1"], "edge_threshold": ods and ods["threshold"]}
            if versus in methods and mname not in ("resend", versus):
                row["versus"] = versus
                for k in ("psnr", "lpips"):
                    pairs = [(r["image"], r[k], ref[r["image"], r["mask"]][k]) for r in sel]
                    row[f"d_{k}"] = d = paired_difference([p[1:] for p in pairs])
                    if masks > 1:
                        row[f"d_{k}_images"] = None if d is None else _interval(
                            image_means((image, a - b) for image, a, b in pairs))
            rows.append(row)
    return {"rows": rows, "images": per_image, "grid": grid}


def paired_difference(pairs) -> dict | None:
    """Mean of a − b over ``pairs`` [(a, b)] with a 95 % t-interval (``None`` where a value is missing).

    ``{"mean", "lo", "hi", "n"}``; with one pair the interval is unbounded (``lo``/``hi`` None).
    """
    d = [float(a) - float(b) for a, b in pairs if a is not None and b is not None]
    if len(d) < len(pairs) or not d:
        return None
    return _interval(d)


def _interval(values) -> dict:
    """``{"mean", "lo", "hi", "n"}``: :func:`sim.results.mean_stats`' Student-t 95 % interval."""
    from sim.results import mean_stats

    row = mean_stats(values)
    return {"mean": row["mean"], "lo": row["ci95_low"], "hi": row["ci95_high"], "n": row["n"]}


def _prepared(codec, img):
    prep = codec.prepare(codec.encode(img))
    return prep.symbols, prep.side


def _holes(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """The image with the lost cells' pixels painted magenta (as the report's ``received.png``)."""
    from reports.examples import HOLE_RGB

    stride = image.shape[0] // missing.shape[0]
    out = image.copy()
    out[np.kron(missing, np.ones((stride, stride), dtype=bool))] = HOLE_RGB
    return out


def write_grid(path, grid: list[dict], loss: float, method: str) -> None:
    """One row per image: original | received (holes magenta) | edges | complement | resend, with a
    header line naming the columns, the method and the loss rate."""
    from PIL import Image, ImageDraw

    if not grid:
        raise ConfigError("--grid: no images to draw")
    size, gap, head = grid[0]["original"].shape[0], 4, 16
    cols = len(GRID_COLUMNS)
    canvas = Image.new("RGB", (cols * size + (cols - 1) * gap, head + len(grid) * (size + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    labels = {"complement": f"{method} @ {loss:g} loss", "edges": "EEN edges"}
    for j, col in enumerate(GRID_COLUMNS):
        draw.text((j * (size + gap) + 2, 2), labels.get(col, col), fill="black")
    for i, row in enumerate(grid):
        for j, col in enumerate(GRID_COLUMNS):
            pic = row[col]
            if pic is None:  # a method without edges: grey
                pic = np.full((size, size, 3), 128, dtype=np.uint8)
            elif pic.ndim == 2:
                pic = np.repeat(np.clip(np.rint(pic * 255), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            canvas.paste(Image.fromarray(pic), (j * (size + gap), head + i * (size + gap)))
    canvas.save(path, format="PNG")


# -- output -------------------------------------------------------------------------------------

def _fmt(v, nd=2, scale=1.0):
    return "–" if v is None else f"{v * scale:.{nd}f}"


def _fmt_diff(d, nd) -> str:
    """``+0.012 [−0.003, +0.027]`` (the 95 % interval in brackets), ``–`` where there is none."""
    if d is None:
        return "–"
    if d["lo"] is None:
        return f"{d['mean']:+.{nd}f}"
    return f"{d['mean']:+.{nd}f} [{d['lo']:+.{nd}f}, {d['hi']:+.{nd}f}]"


def _fmt_edges(row) -> str:
    """``0.452 @0.10``: the ODS edge F1 and its threshold, ``–`` for a method without edges."""
    return "–" if row["edge_f1"] is None else f"{row['edge_f1']:.3f} @{row['edge_threshold']:.2f}"


def format_table(result: dict) -> str:
    versus = next((r["versus"] for r in result["rows"] if "versus" in r), None)
    over_images = any("d_psnr_images" in r for r in result["rows"])
    head = "| loss | method | cells lost | PSNR dB | SSIM | LPIPS | edge F1 | ms/image |"
    if versus:
        head += f" ΔPSNR vs {versus} | ΔLPIPS vs {versus} |"
    if over_images:
        head += " ΔPSNR, over images | ΔLPIPS, over images |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        cells = [f"{r['loss']:g}", r["method"], _fmt(r["lost_share"], 1, 100) + " %", _fmt(r["psnr"]),
                 _fmt(r["ssim"], 3), _fmt(r["lpips"], 3), _fmt_edges(r), _fmt(r["time_s"], 0, 1000)]
        if versus:
            cells += [_fmt_diff(r.get("d_psnr"), 2), _fmt_diff(r.get("d_lpips"), 4)]
        if over_images:
            cells += [_fmt_diff(r.get("d_psnr_images"), 2), _fmt_diff(r.get("d_lpips_images"), 4)]
        lines.append("| " + " | ".join(cells) + " |")
    if versus:
        n = {r["n"] for r in result["rows"]}
        lines.append(f"\nΔ: mean paired difference to {versus} over the same (image, mask) pairs (n = "
                     f"{'/'.join(map(str, sorted(n)))}), 95 % t-interval in brackets; LPIPS: lower is better.")
        if over_images:
            k = {r["d_psnr_images"]["n"] for r in result["rows"] if r.get("d_psnr_images")}
            lines.append(f"The (image, mask) interval holds for these images under random masks; \"over images\" "
                         f"is the t-interval of the per-image mean differences (n = "
                         f"{'/'.join(map(str, sorted(k)))} images): what to expect of other images like them.")
    if any(r["edge_f1"] is not None for r in result["rows"]):
        lines.append(("" if versus else "\n") + "edge F1: the EEN's edges against Canny edges of the original "
                     "(2 px tolerance) at one threshold for the row's draws, the best of 0.01 … 0.5 (after @).")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from sim.codec import load_codec
    from sim.complement import make_method
    from sim.errors import LatentcastError
    from sim.images import load_image_set
    from sim.packets import LAYOUTS

    losses = parse_losses(args.loss)
    names = parse_methods(args.methods)
    if args.layout not in LAYOUTS:
        raise ConfigError(f"--layout = {args.layout!r}: expected one of {', '.join(LAYOUTS)}")
    if args.tile < 1:
        raise ConfigError(f"--tile = {args.tile}: expected an integer ≥ 1 (cells)")
    if args.threads < 0:
        raise ConfigError(f"--threads = {args.threads}: expected an integer ≥ 1, or 0 for torch's default")
    if args.masks < 1:
        raise ConfigError(f"--masks = {args.masks}: expected an integer ≥ 1 (mask draws per image and rate)")
    if args.versus is not None and args.versus not in names:
        raise ConfigError(f"--versus = {args.versus!r}: expected one of --methods ({', '.join(names)})")
    versus = args.versus or ("interp" if "interp" in names else None)
    if args.grid_method is not None and args.grid_method not in names:
        raise ConfigError(f"--grid-method = {args.grid_method!r}: expected one of --methods ({', '.join(names)})")
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        images = load_image_set(args.images, args.size)
        codec = load_codec(args.codec, {"kind": "uniform", "bits": args.bits}, "range", args.codec_weights)
        cache, methods = {}, {}
        for name in names:
            try:
                methods[name] = make_method(name, codec, cache=cache, **method_options(name, args))
            except LatentcastError as err:
                raise err.__class__(f"--methods {name}: {err}") from None
        grid_method = args.grid_method or next(
            (n for n in names if getattr(methods[n], "edges", False)), names[-1])
        lpips = None
        if not args.no_lpips:
            from sim.lpips import load_lpips

            lpips = load_lpips()  # None after one warning where its weights cannot be had
        result = evaluate(codec, images, losses, methods, args.layout, args.tile, args.seed, lpips,
                          grid_method if args.grid else None, progress=not args.no_progress, masks=args.masks,
                          versus=versus)
    finally:
        torch.set_num_threads(before)
    grid = result.pop("grid")
    if args.grid:
        write_grid(args.grid, grid, losses[len(losses) // 2], grid_method)
        print(f"{args.grid}: grid of {len(grid)} image(s) at loss {losses[len(losses) // 2]:g} ({grid_method})",
              file=sys.stderr)
    result["settings"] = {"images": str(args.images), "size": args.size, "loss": losses, "layout": args.layout,
                          "tile": args.tile, "methods": names, "seed": args.seed, "masks": args.masks,
                          "versus": versus, "codec": args.codec,
                          "codec_weights": args.codec_weights, "bits": args.bits, "weights": args.weights,
                          "een": args.een, "steps": args.steps, "device": args.device,
                          "threads": args.threads, "lpips": lpips is not None}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
