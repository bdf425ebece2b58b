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
    p.add_argument("--jobs", type=_int_arg("--jobs"), default=None, metavar="N",
                   help="worker processes (local executor) or Ray actors (default: one per core; 1 runs "
                        "serially in this process, the reference)")
    p.add_argument("--batch", type=_int_arg("--batch"), default=1, metavar="N",
                   help="work units per worker call, their repairs batched into one model call per method (for "
                        "GPUs; default 1: records identical for any split, N > 1: equal within float tolerance)")
    p.add_argument("--executor", choices=("local", "serial", "ray"), default="local",
                   help="local: a process pool on this machine (default); serial: this process; ray: Ray tasks "
                        "on actors (pip install 'latentcast[ray]'), a local Ray or --ray-address")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this running Ray cluster (e.g. ray://head:10001 or auto); with --executor ray")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run every N-th work unit from the I-th (for batch schedulers); join the shards' folders "
                        "with `latentcast merge`")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads per worker process (default 1; 2 threads ran the complement models "
                        "5-8x slower on a shared CPU); 0 keeps torch's default (all cores)")
    p.add_argument("--report", action="store_true",
                   help="then write the loss-rate report (report.html, report.md, figures/), as `latentcast report` does")


def _int_arg(option: str):
    """argparse type: an integer, else one line naming ``option``, the value and what is allowed."""
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} = {text!r}: expected an integer ≥ 1") from None
    return parse


def run(args) -> int:
    from sim.commands.validate import print_errors
    from sim.errors import LatentcastError
    from sim.executors import default_jobs
    from sim.runner import run_scenario
    from sim.scenario import load_scenario
    from sim.units import parse_shard

    try:
        shard = parse_shard(args.shard)
        scenario = load_scenario(args.scenario, args.overrides, args.seed)
        jobs = default_jobs() if args.jobs is None else args.jobs
        report = run_scenario(scenario, args.out, progress=not args.no_progress, threads=args.threads, jobs=jobs,
                              executor=args.executor, shard=shard, ray_address=args.ray_address,
                              batch=args.batch)
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
