"""``latentcast run``: run a scenario; results go to ``out/<name>/`` (or ``--out``)."""

from __future__ import annotations

import argparse
import sys

NAME = "run"
HELP = "run a scenario: transmissions, results.jsonl, summary.csv, timings.csv (resumes an interrupted run)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the scenario's out, out/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field by its dotted path, value parsed as YAML "
                        "(e.g. --set channel.loss=0.1, --set 'sweep.channel.loss=[0, 0.1]'); repeatable")
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (default 1: one per worker process; 2 threads ran the complement "
                        "models 5-8x slower on a shared CPU); 0 keeps torch's default (all cores)")
    p.add_argument("--report", action="store_true",
                   help="then write the loss-rate report (report.html, report.md, figures/), as `latentcast report` does")


def run(args) -> int:
    from sim.commands.validate import print_errors
    from sim.errors import LatentcastError
    from sim.runner import run_scenario
    from sim.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario, args.overrides, args.seed)
        report = run_scenario(scenario, args.out, progress=not args.no_progress, threads=args.threads)
    except LatentcastError as err:
        return print_errors("run", err)
    print(f"{report.out}: {report.written} record(s) written, {report.skipped} already there, "
          f"{report.errors} failed; {report.wall_s:.1f} s", file=sys.stderr)
    if args.report:
        from reports import build_report

        try:
            written = build_report(report.out)
        except LatentcastError as err:
            return print_errors("run", err)
        print(f"{written['html']}: report (also report.md, figures/)", file=sys.stderr)
    return 1 if report.errors else 0
