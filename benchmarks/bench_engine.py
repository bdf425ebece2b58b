"""Engine throughput: simulated packets per wall-clock second, codec excluded.

A fake codec stands in for quantizer + entropy coder: ``code_cells`` returns precomputed
zero bytes (``--bytes-per-cell`` per cell), ``decode_cells`` and ``dequantize`` return
cached zeros. What is timed is everything ``sim.engine.transmit`` does with packets made
once per image, as the runner does (``packets=``): the SimPy processes, link arrival
times, channel draws, receiver parsing (header fields, CRC32), NACK/ACK packets, payload
hand-off to the codec and the final assembly. Packetizing (headers, CRC32, MTU checks) is
timed on its own line. The engine does not repair (the runner's repair stage does), so no
model or fill runs here.

    python benchmarks/bench_engine.py                  # all policies, bernoulli loss 0.1
    python benchmarks/bench_engine.py --loss 0.2 --transfers 400 --channel gilbert_elliott

Prints one line per policy and a JSON summary (``--json PATH`` to save it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels import Link, make_channel  # noqa: E402
from sim.engine import ReceiverConfig, transmit  # noqa: E402
from sim.packets import PacketizerConfig, packetize  # noqa: E402
from sim.policies import make_policy  # noqa: E402


class FakeCodec:
    """Precomputed payloads: every cell codes to ``bytes_per_cell`` zero bytes."""

    def __init__(self, symbols_per_cell: int, bytes_per_cell: int):
        self.s, self.b = symbols_per_cell, bytes_per_cell
        self._payload: dict[int, bytes] = {}
        self._symbols: dict[int, np.ndarray] = {}

    def code_cells(self, prep, cells):
        n = len(cells)
        if n not in self._payload:
            self._payload[n] = bytes(self.b * n)
        return self._payload[n]

    def decode_cells(self, data, n, side):
        if n not in self._symbols:
            self._symbols[n] = np.zeros((self.s, n), np.int64)
        return self._symbols[n]

    def dequantize(self, symbols, side):
        return np.zeros(symbols.shape, np.float32)


class FakePrep:
    def __init__(self, c: int, h: int, w: int, side_bytes: int):
        self.symbols = np.zeros((c, h, w), np.int64)
        self.side = bytes(side_bytes)
        self.shape = (c, h, w)


POLICIES = {
    "resend": ("resend", {}),
    "none": ("none", {}),
    "complement": ("complement", {"method": "interp"}),
    "hybrid-deadline": ("hybrid", {"mode": "deadline", "deadline_s": 0.5}),
    "hybrid-threshold": ("hybrid", {"mode": "threshold", "max_missing": 0.05}),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                    help="latent cells (default 64 64: a 512×512 image)")
    ap.add_argument("--tile", type=int, default=4, help="packetizer tile (default 4: 256 data packets)")
    ap.add_argument("--layout", default="tile")
    ap.add_argument("--bytes-per-cell", type=int, default=2)
    ap.add_argument("--channel", default="bernoulli", choices=["bernoulli", "gilbert_elliott"])
    ap.add_argument("--loss", type=float, default=0.1)
    ap.add_argument("--transfers", type=int, default=200, help="transfers per policy")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)

    h, w = args.latent
    codec, prep = FakeCodec(4, args.bytes_per_cell), FakePrep(4, h, w, 300)
    pcfg = PacketizerConfig(layout=args.layout, tile=args.tile)
    link = Link(rate_bps=10e6, delay_s=0.02)
    kw = {"loss": args.loss} if args.channel == "bernoulli" else {"loss": args.loss, "burst": 4}
    channel = make_channel(args.channel, **kw)
    receiver = ReceiverConfig(timeout_s=0.05)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs (other jobs slow the wall-clock figures)")
    out = {"load_average": load, "latent": [h, w], "tile": args.tile, "layout": args.layout, "channel": args.channel,
           "loss": args.loss, "transfers": args.transfers, "policies": {}}
    # Packetizing, timed on its own: the runner cuts an image once and hands the packets to
    # every transmit of that image (all policies, repeats and sweep points of the link/channel).
    packetize(codec, prep, 0, pcfg, limit=link.max_payload)  # warm-up (layout cache)
    reps = max(1, args.transfers // 4)
    t0 = time.perf_counter()
    for i in range(reps):
        packets = packetize(codec, prep, i, pcfg, limit=link.max_payload)
    dt = time.perf_counter() - t0
    out["packetize"] = {"packets": packets.total * reps, "s": dt, "packets_per_s": packets.total * reps / dt}
    print(f"{'packetize':17s} {packets.total * reps / dt:>10,.0f} packets/s wall  "
          f"({packets.total} packets per image, {reps} images)", flush=True)
    packets = packetize(codec, prep, 0, pcfg, limit=link.max_payload)  # the transfers' image, id 0
    for name in args.policies:
        kind, pkw = POLICIES[name]
        policy = make_policy(kind, **pkw)
        seeds = np.random.SeedSequence(1234).spawn(args.transfers)
        transmit(codec, prep, image_id=0, packetizer=pcfg, link=link, channel=channel, policy=policy,
                 receiver=receiver, rng=np.random.default_rng(seeds[0]), packets=packets)  # warm-up
        sent = engine = 0.0
        rounds = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i, ss in enumerate(seeds):
            t = transmit(codec, prep, image_id=0, packetizer=pcfg, link=link, channel=channel,
                         policy=policy, receiver=receiver, rng=np.random.default_rng(ss), packets=packets)
            sent += t.stats["packets_sent"]
            engine += t.wall["engine_s"]
            rounds.append(t.stats["rounds"])
        total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        row = {"packets_sent": int(sent), "engine_s": engine, "total_s": total,
               "cpu_s": cpu, "packets_per_s": sent / engine, "packets_per_cpu_s": sent / cpu,
               "mean_rounds": float(np.mean(rounds))}
        out["policies"][name] = row
        print(f"{name:17s} {row['packets_per_s']:>10,.0f} packets/s engine wall  "
              f"{row['packets_per_cpu_s']:>10,.0f} packets/CPU-s  "
              f"({int(sent):,} packets, engine {engine:.2f} s, "
              f"mean rounds {row['mean_rounds']:.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
