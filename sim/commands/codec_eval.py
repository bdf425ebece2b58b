"""``latentcast codec-eval``: rate and quality of a codec on images, beside JPEG and WebP."""

from __future__ import annotations

import argparse
import json
import sys
import time

NAME = "codec-eval"
HELP = "measure PSNR, SSIM, bpp (actual bytes) and speed of a codec, with JPEG/WebP at the same bpp"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default="samples", help="'samples' (scikit-image colour samples) or a folder")
    p.add_argument("--size", type=int, default=512, help="resize + center-crop to SIZE×SIZE (default 512; 0 keeps each image as it is)")
    p.add_argument("--model", default="tiny", help="tiny | sd-vae | taesd (default tiny)")
    p.add_argument("--weights", default=None, help="weights file/dir (tiny) or local dir / hub id (sd-vae, taesd)")
    p.add_argument("--quantizer", default="uniform", help="uniform | palette (default uniform)")
    p.add_argument("--bits", type=int, default=6, help="bits per latent value for uniform (default 6)")
    p.add_argument("--entropy", default="range", help="range | zlib (default range)")
    p.add_argument("--no-baselines", action="store_true", help="skip the JPEG/WebP comparison")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def evaluate(codec, images, baselines: bool = True, progress: bool = True) -> dict:
    """Per-image and mean metrics of ``codec`` on ``[(name, uint8 image)]``."""
    from tqdm import tqdm

    from sim.codec.baselines import encode_at_bpp
    from sim.metrics import psnr, ssim

    rows = []
    for name, img in tqdm(images, desc="codec-eval", unit="image", disable=not progress, file=sys.stderr):
        codec.compress(img)  # warm-up: first calls pay one-off allocation costs
        t0 = time.perf_counter()
        comp = codec.compress(img)
        t1 = time.perf_counter()
        out = codec.decompress(comp)
        t2 = time.perf_counter()
        x_hat = out["x_hat"]
        h, w = img.shape[:2]
        row = {"image": name, "psnr": psnr(img, x_hat), "ssim": ssim(img, x_hat),
               "bpp": codec.bpp(comp, h, w), "side_bytes": len(comp["side"]),
               "encode_ms": 1000 * (t1 - t0), "decode_ms": 1000 * (t2 - t1)}
        if baselines:
            for fmt in ("JPEG", "WEBP"):
                res = encode_at_bpp(img, fmt, row["bpp"])
                key = fmt.lower()
                if res is None:
                    row.update({f"{key}_psnr": None, f"{key}_ssim": None, f"{key}_bpp": None})
                else:
                    dec, bpp, q = res
                    row.update({f"{key}_psnr": psnr(img, dec), f"{key}_ssim": ssim(img, dec),
                                f"{key}_bpp": bpp, f"{key}_quality": q})
        rows.append(row)
    keys = [k for k in rows[0] if k != "image" and not k.endswith("_quality")]
    mean = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        mean[k] = sum(vals) / len(vals) if len(vals) == len(rows) else None
    return {"images": rows, "mean": mean}


def _fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def format_table(result: dict) -> str:
    head = ("| image | PSNR dB | SSIM | bpp | enc ms | dec ms | JPEG PSNR | JPEG SSIM | JPEG bpp "
            "| WebP PSNR | WebP SSIM | WebP bpp |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["images"] + [dict(result["mean"], image="**mean**")]:
        lines.append("| " + " | ".join([
            r["image"], _fmt(r["psnr"]), _fmt(r["ssim"], 3), _fmt(r["bpp"], 3),
            _fmt(r["encode_ms"], 0), _fmt(r["decode_ms"], 0),
            _fmt(r.get("jpeg_psnr")), _fmt(r.get("jpeg_ssim"), 3), _fmt(r.get("jpeg_bpp"), 3),
            _fmt(r.get("webp_psnr")), _fmt(r.get("webp_ssim"), 3), _fmt(r.get("webp_bpp"), 3)]) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from sim.codec import load_codec
    from sim.images import load_image_set

    images = load_image_set(args.images, args.size or None)
    quantizer = {"kind": args.quantizer}
    if args.quantizer == "uniform":
        quantizer["bits"] = args.bits
    codec = load_codec(args.model, quantizer, args.entropy, args.weights)
    result = evaluate(codec, images, baselines=not args.no_baselines)
    result["settings"] = {"model": args.model, "quantizer": quantizer, "entropy": args.entropy,
                          "size": args.size, "images": str(args.images)}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
