"""Transmissions per second of one scenario at several worker counts, in one invocation.

    .venv/bin/python -m benchmarks.bench_sweep [--scenario scenarios/quickstart.yaml]
        [--jobs 1 2] [--set KEY=VALUE ...] [--executor local] [--json]

Each worker count runs ``latentcast run SCENARIO --jobs N`` from scratch into a fresh temporary
folder, as a user would (a separate process, the models loaded by its workers), and reports:

- ``wall_s`` and ``tx_per_s`` (transmissions / wall seconds, start-up included);
- ``ratio``: each count's ``tx_per_s`` over the first count's;
- ``peak_rss_mb``: the peak resident memory (``VmHWM``) of each process that ran units — the
  run's own process at ``--jobs 1``, each pool worker otherwise — sampled every 0.1 s;
- ``same_records``: whether the run's records equal the first count's (wall-clock fields
  aside) and its ``summary.csv`` is byte-identical.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _is_worker(pid: int) -> bool:
    """A pool worker (forked or spawned), not multiprocessing's resource tracker."""
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def run_once(scenario: str, jobs: int, out: Path, overrides: list[str], executor: str) -> dict:
    """One ``latentcast run`` with ``--jobs jobs``; wall seconds and peak RSS per unit-running process."""
    cmd = [sys.executable, "-m", "sim", "run", scenario, "--out", str(out), "--jobs", str(jobs), "--no-progress",
           "--executor", executor]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    while proc.poll() is None:
        pids = [p for p in _children(proc.pid) if _is_worker(p)] if jobs > 1 else [proc.pid]
        for p in pids:
            rss = _peak_rss_mb(p)
            if rss is not None:
                peaks[p] = max(peaks.get(p, 0.0), rss)
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_sweep: --jobs {jobs} failed (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": sorted(peaks.values(), reverse=True)}


def _records(out: Path) -> set[str]:
    from sim.results import read_records, record_line

    return {record_line({k: v for k, v in r.items() if k != "wall"}) for r in read_records(out / "results.jsonl")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "quickstart.yaml"))
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts, the first the baseline")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--executor", default="local", choices=("local", "ray"))
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)

    from sim.scenario import load_scenario

    sc = load_scenario(args.scenario, args.overrides)
    n_tx = sum(len(p.scenario.policies) * len(list(p.scenario.images.items())) for p in sc.points) * sc.repeats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in args.jobs:
            out = Path(tmp) / f"jobs{jobs}"
            row = {"jobs": jobs, **run_once(args.scenario, jobs, out, args.overrides, args.executor)}
            row["tx_per_s"] = n_tx / row["wall_s"]
            base = Path(tmp) / f"jobs{args.jobs[0]}"
            row["same_records"] = (_records(out) == _records(base)
                                   and (out / "summary.csv").read_bytes() == (base / "summary.csv").read_bytes())
            rows.append(row)
    for row in rows:
        row["ratio"] = row["tx_per_s"] / rows[0]["tx_per_s"]
    if args.json:
        print(json.dumps({"scenario": sc.name, "transmissions": n_tx, "runs": rows}, indent=2))
        return 0
    print(f"{sc.name}: {n_tx} transmissions per run, executor {args.executor}")
    for row in rows:
        rss = ", ".join(f"{v:.0f}" for v in row["peak_rss_mb"])
        print(f"  --jobs {row['jobs']}: {row['wall_s']:6.1f} s  {row['tx_per_s']:6.2f} tx/s  ratio {row['ratio']:.2f}  "
              f"peak RSS per worker [{rss}] MB  same records: {row['same_records']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
