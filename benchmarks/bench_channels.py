"""Packets per second of each channel model and of the link.

    .venv/bin/python -m benchmarks.bench_channels [--packets 1000000] [--burst 64] [--size 1172]

For each model, over ``--packets`` packets (one fresh state each):

- ``losses``: one call for all packets (the loss pattern only);
- ``transmit``: payloads of ``--size`` bytes sent in calls of ``--burst`` packets;
- ``per-packet``: ``transmit`` one packet per call, over 1 % of the packets
  (the worst case: an engine sending packet by packet).

Numbers are best of ``--repeat`` runs; the engine needs ≥ 100 000 packets/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from channels import make_channel, make_link


def rate(fn, packets: int, repeat: int) -> float:
    best = min(_timed(fn) for _ in range(repeat))
    return packets / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--burst", type=int, default=64)
    ap.add_argument("--size", type=int, default=1172, help="payload bytes")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, burst, repeat = args.packets, args.burst, args.repeat

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.txt"
        pattern = np.random.default_rng(0).random(100_000) < 0.05
        trace.write_text("\n".join("1" if x else "0" for x in pattern) + "\n")
        models = {
            "bernoulli loss=0.05": make_channel("bernoulli", loss=0.05),
            "gilbert_elliott loss=0.1 burst=4": make_channel("gilbert_elliott", loss=0.1, burst=4),
            "gilbert_elliott p=.05 r=.3 h=.2 k=.97": make_channel("gilbert_elliott", p=0.05, r=0.3, h=0.2, k=0.97),
            "trace (100k entries)": make_channel("trace", path=str(trace)),
            "bsc ber=1e-5 crc": make_channel("bsc", ber=1e-5),
            "bsc ber=1e-5 no crc": make_channel("bsc", ber=1e-5, crc=False),
            "bsc ebn0=4dB no crc": make_channel("bsc", ebn0_db=4.0, crc=False),
            "awgn snr=10dB": make_channel("awgn", snr_db=10.0),
        }
        payloads = [bytes(np.random.default_rng(1).integers(0, 256, args.size, dtype=np.uint8))] * burst
        bits = 8 * args.size
        print(f"{'model':40s} {'losses':>12s} {'transmit/' + str(burst):>14s} {'per-packet':>12s}   packets/s")
        for name, ch in models.items():
            def bulk():
                ch.start(np.random.default_rng(2)).losses(n, bits_per_packet=bits)

            def bursts():
                state = ch.start(np.random.default_rng(3))
                for _ in range(n // burst):
                    state.transmit(payloads)

            def single():
                state = ch.start(np.random.default_rng(4))
                one = payloads[:1]
                for _ in range(n // 100):
                    state.transmit(one)

            print(f"{name:40s} {rate(bulk, n, repeat):12,.0f} "
                  f"{rate(bursts, n // burst * burst, repeat):14,.0f} "
                  f"{rate(single, n // 100, 1):12,.0f}", flush=True)

    link = make_link(rate_bps=1e8, delay_s=0.02, jitter_s=0.001)
    sizes = np.full(burst, args.size)

    def arrivals():
        g = np.random.default_rng(5)
        t = 0.0
        for _ in range(n // burst):
            t = link.arrival_times(t, sizes, g)[-1]

    print(f"{'link arrival_times (jitter)':40s} {'':12s} {rate(arrivals, n // burst * burst, repeat):14,.0f}")


if __name__ == "__main__":
    main()
