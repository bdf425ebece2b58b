"""Wall time of the quickstart scenario and the engine's share of it.

    .venv/bin/python -m benchmarks.bench_quickstart [--scenario scenarios/quickstart.yaml]
        [--set KEY=VALUE ...] [--out DIR] [--json]

Runs the scenario from scratch into a fresh folder (a temporary one unless ``--out``), as
``latentcast run`` does, and measures:

- ``total_s``: loading and validating the scenario + the whole run (models, encodes,
  transmissions, decodes, metrics, writing results and summary);
- ``transmit_s``: time spent inside ``sim.engine.transmit`` (the runner's ``transmit`` stage;
  the engine no longer repairs: the complement models' compute is the ``repair`` stage), and
  ``packetize_s``: cutting each image into packets (done once per image and handed to
  ``transmit``; counted as engine time);
- ``engine_share = (transmit_s + packetize_s) / total_s``, which must stay below
  ``--max-share`` (default 0.10), and ``total_s`` below ``--max-total`` (default 120 s).

Runs serially in this process (``jobs=1``, the reference executor): ``benchmarks/bench_sweep.py``
compares worker counts. Exit status 1 if either bound is exceeded. Python and library imports
happen before the clock starts (they are the same for any command).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "quickstart.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="output folder (must not hold results; default: a temp dir)")
    ap.add_argument("--max-share", type=float, default=0.10)
    ap.add_argument("--max-total", type=float, default=120.0)
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)

    import torch  # noqa: F401  (imports before the clock)

    from sim.errors import LatentcastError
    from sim.runner import run_scenario
    from sim.scenario import load_scenario

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "out"
        t0 = time.perf_counter()
        try:
            scenario = load_scenario(args.scenario, args.overrides)
            report = run_scenario(scenario, out, progress=False, jobs=1)
        except LatentcastError as err:
            for line in getattr(err, "errors", None) or [str(err)]:
                print(f"bench_quickstart: error: {line}", file=sys.stderr)
            return 2
        total = time.perf_counter() - t0
    if report.skipped:
        print(f"{out}: already held {report.skipped} records; use an empty --out", file=sys.stderr)
        return 2
    packetize, transmit = report.stages.get("packetize", 0.0), report.stages.get("transmit", 0.0)
    engine_s = transmit + packetize
    share = engine_s / total
    result = {
        "scenario": scenario.name, "transmissions": report.total, "records": report.written,
        "errors": report.errors, "total_s": total, "transmit_s": transmit,
        "repair_s": report.stages.get("repair", 0.0), "packetize_s": packetize, "engine_s": engine_s,
        "engine_share": share, "stages_s": report.stages,
        "ok": share < args.max_share and total < args.max_total,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{scenario.name}: {report.total} transmissions, {report.written} records, "
              f"{report.errors} errors")
        print(f"  total wall time      {total:8.2f} s   (bound {args.max_total:.0f} s)")
        for k, v in report.stages.items():
            print(f"    {k:<18} {v:8.2f} s   {100 * v / total:5.1f} %")
        print(f"  engine (transmit + packetize) {engine_s:.3f} s = {100 * share:.2f} % "
              f"of the total (bound {100 * args.max_share:.0f} %)")
        print("  OK" if result["ok"] else "  FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
