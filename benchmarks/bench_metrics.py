"""Quality-metric time per 512×512 image: the batched torch path and LPIPS, against one learned repair.

    .venv/bin/python benchmarks/bench_metrics.py [--threads 1] [--batch 8] [--repeat 3]

One reference (the astronaut sample) against ``--batch`` noisy copies of it (the cost does not
depend on the content). Prints the median over ``--repeat`` runs, per image, of:

* :func:`sim.metrics.quality_batch` on the whole batch (PSNR, SSIM, MS-SSIM);
* LPIPS ``distances_from(reference features, images)`` on the same batch, the reference's
  features computed once as the runner does (skipped when the weights cannot be had);

then the time of one learned complement repair (the shipped ``tiny`` weights at their default
steps, 10 % of the 64 × 64 latent cells lost) and the ratio of the new per-image metric time
to it; the target is ≤ 10 %. Times are wall-clock seconds and, in parentheses, process CPU
seconds, with ``--threads`` torch threads (default 1, as in the runner's workers).
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import numpy as np
import torch

from sim.images import load_sample, resize_center_crop
from sim.metrics import quality_batch

TARGET = 0.10  # metrics per image in a batch of 8, as a fraction of one learned repair


def _median_s(fn, repeat: int) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of ``fn()`` over ``repeat`` runs each, after a warm-up."""
    fn()
    runs = {clock: timeit.repeat(fn, timer=clock, number=1, repeat=repeat)
            for clock in (time.perf_counter, time.process_time)}
    return statistics.median(runs[time.perf_counter]), statistics.median(runs[time.process_time])


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

    return _median_s(lambda: method(latent, missing, np.random.default_rng(0)), repeat)


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
    new = _per_image(_median_s(lambda: quality_batch(ref, images), args.repeat), n)
    print(f"  quality_batch (PSNR + SSIM + MS-SSIM): {_fmt(new)}")
    lpips = load_lpips()
    if lpips is None:
        print("  LPIPS: skipped (no weights: see sim.lpips.load_lpips)")
        total = new
    else:
        kept = lpips.unit_features([ref])  # the runner keeps a reference's features (once per image)
        lp = _per_image(_median_s(lambda: lpips.distances_from(kept, images), args.repeat), n)
        print(f"  LPIPS distances_from(reference features, images): {_fmt(lp)}")
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
