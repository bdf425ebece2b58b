"""Encode + decode time of one 512×512 image with a codec (default: the shipped tiny one).

    .venv/bin/python benchmarks/bench_codec.py [--model tiny] [--threads 2] [--repeat 10]

Prints the median over ``--repeat`` runs of: model encode, model decode, quantize + entropy
code (prepare + code_cells), entropy decode + dequantize, and the totals.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sim.codec import load_codec
from sim.images import load_sample, resize_center_crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--quantizer", default="uniform")
    ap.add_argument("--entropy", default="range")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec(args.model, {"kind": args.quantizer}, args.entropy, args.weights)
    img = resize_center_crop(load_sample("astronaut"), 512)
    times: dict[str, list[float]] = {k: [] for k in ("encode", "decode", "code", "uncode")}
    for i in range(args.repeat + 2):
        t0 = time.perf_counter()
        z = codec.encode(img)
        t1 = time.perf_counter()
        prep = codec.prepare(z)
        data = codec.code_cells(prep, np.arange(prep.n_cells))
        t2 = time.perf_counter()
        sym = codec.decode_cells(data, prep.n_cells, prep.side)
        zq = codec.dequantize(sym.reshape(prep.symbols.shape), prep.side)
        t3 = time.perf_counter()
        codec.decode(zq)
        t4 = time.perf_counter()
        if i >= 2:  # two warm-up runs
            for k, dt in zip(times, (t1 - t0, t4 - t3, t2 - t1, t3 - t2)):
                times[k].append(dt)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"model {args.model}, 512×512, {args.threads} threads, median of {args.repeat} (ms):")
    print(f"  model encode {med['encode']:.1f}  model decode {med['decode']:.1f}  "
          f"-> encode+decode {med['encode'] + med['decode']:.1f}")
    print(f"  quantize+entropy code {med['code']:.1f}  entropy decode+dequantize {med['uncode']:.1f}")
    print(f"  total image -> bytes -> image {sum(med.values()):.1f}")


if __name__ == "__main__":
    main()
