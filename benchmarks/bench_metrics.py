"""Quality-metric time per 512×512 image: the former per-pair numpy path, the batched torch path, LPIPS.

    .venv/bin/python benchmarks/bench_metrics.py [--threads 1] [--batch 8] [--repeat 3]

One reference (the astronaut sample) against ``--batch`` noisy copies of it (the cost does not
depend on the content). Prints the median over ``--repeat`` runs, per image, of:

* the former path, pair by pair: numpy PSNR + scikit-image SSIM + the numpy/scipy MS-SSIM
  (a copy of the code ``sim.metrics`` had before it became torch code);
* :func:`sim.metrics.quality_batch` on the whole batch (PSNR, SSIM, MS-SSIM);
* LPIPS ``load_lpips().distances([ref], images)`` on the same batch (skipped when the weights
  cannot be had);

then the time of one learned complement repair (the shipped ``tiny`` weights at their default
steps, 10 % of the 64 × 64 latent cells lost) and the ratio of the new per-image metric time
to it; the target is ≤ 10 %. Times are wall-clock seconds and, in parentheses, process CPU
seconds, with ``--threads`` torch threads (default 1, as in the runner's workers).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

from sim.images import load_sample, resize_center_crop
from sim.metrics import MS_SSIM_WEIGHTS, ms_ssim_scales, quality_batch

TARGET = 0.10  # metrics per image in a batch of 8, as a fraction of one learned repair


# ---- the former per-pair path (sim/metrics.py before the torch rewrite), kept for the comparison


def _old_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def _old_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255.0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def _old_filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    y = correlate1d(correlate1d(x, g, axis=0, mode="reflect"), g, axis=1, mode="reflect")
    return y[5:-5, 5:-5]


def _old_ssim_cs(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mx, my = _old_filter_valid(x, g), _old_filter_valid(y, g)
    sxx = _old_filter_valid(x * x, g) - mx * mx
    syy = _old_filter_valid(y * y, g) - my * my
    sxy = _old_filter_valid(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def _old_ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    m = ms_ssim_scales(a.shape[0], a.shape[1])
    w = np.asarray(MS_SSIM_WEIGHTS[:m], dtype=np.float64)
    w = w / w.sum()
    x0 = np.arange(11, dtype=np.float64) - 5
    g = np.exp(-(x0 ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    total = 0.0
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        value = 1.0
        for j in range(m):
            s, cs = _old_ssim_cs(x, y, g)
            value *= max(s if j == m - 1 else cs, 0.0) ** w[j]
            if j < m - 1:
                h2, w2 = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
                x = x[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
                y = y[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
        total += value
    return float(total / 3.0)


def _old_quality(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {"psnr": _old_psnr(a, b), "ssim": _old_ssim(a, b), "ms_ssim": _old_ms_ssim(a, b)}


# ---- timing


def _median_s(fn, repeat: int) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of ``fn()`` over ``repeat`` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _fmt(seconds: tuple[float, float]) -> str:
    return f"{seconds[0]:.3f} ({seconds[1]:.3f})"


def _per_image(seconds: tuple[float, float], n: int) -> tuple[float, float]:
    return seconds[0] / n, seconds[1] / n


def _repair_s(image: np.ndarray, repeat: int) -> tuple[float, float]:
    """One learned complement repair of ``image``'s latent with 10 % of its cells lost."""
    from sim.codec import load_codec
    from sim.complement import make_method

    codec = load_codec(model="tiny")
    method = make_method("learned", codec)
    latent = codec.encode(image)
    method.warmup(latent.shape)
    missing = np.random.default_rng(1).random(latent.shape[1:]) < 0.1

    def repair():
        try:
            return method(latent, missing, np.random.default_rng(0))
        except TypeError:  # a signature that takes the channel noise level
            return method(latent, missing, np.random.default_rng(0), noise_std=0.0)

    return _median_s(repair, repeat)


def main() -> None:
    from sim.lpips import load_lpips

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = resize_center_crop(load_sample("astronaut"), args.size)
    rng = np.random.default_rng(0)
    images = [np.clip(ref + rng.normal(0, 2.0 * (i + 1), ref.shape), 0, 255).astype(np.uint8)
              for i in range(args.batch)]
    n = args.batch
    print(f"{args.size}×{args.size}, batch of {n}, {args.threads} threads, median of {args.repeat}, "
          f"wall s (CPU s) per image:")
    old = _per_image(_median_s(lambda: [_old_quality(ref, im) for im in images], args.repeat), n)
    print(f"  former per-pair path (numpy PSNR + skimage SSIM + numpy MS-SSIM): {_fmt(old)}")
    new = _per_image(_median_s(lambda: quality_batch(ref, images), args.repeat), n)
    print(f"  quality_batch (PSNR + SSIM + MS-SSIM): {_fmt(new)}  ({old[0] / new[0]:.1f}× faster)")
    lpips = load_lpips()
    if lpips is None:
        print("  LPIPS: skipped (no weights: see sim.lpips.load_lpips)")
        total = new
    else:
        lp = _per_image(_median_s(lambda: lpips.distances([ref], images), args.repeat), n)
        print(f"  LPIPS distances([ref], images): {_fmt(lp)}")
        total = (new[0] + lp[0], new[1] + lp[1])
    print(f"  new path total (quality_batch{' + LPIPS' if lpips is not None else ''}): {_fmt(total)}")
    repair = _repair_s(ref, args.repeat)
    print(f"learned complement repair (tiny weights, default steps, 10 % of cells lost): {_fmt(repair)}")
    ratio = total[0] / repair[0]
    print(f"metrics per image / repair: {ratio:.1%} wall ({total[1] / repair[1]:.1%} CPU); "
          f"target ≤ {TARGET:.0%}: {'met' if ratio <= TARGET else 'not met'} "
          f"(quality_batch alone {new[0] / repair[0]:.1%})")


if __name__ == "__main__":
    main()
