"""``latentcast merge OUT SHARD_DIR…``: join the folders of a run's shards into one run."""

from __future__ import annotations

import argparse
import sys

NAME = "merge"
HELP = ("join the output folders of `run --shard I/N` into one run (same scenario and weights, checked): "
        "results.jsonl, summary.csv, timings.csv, provenance.json, examples/")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="the merged run's folder (made if missing)")
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="the shards' output folders")


def run(args) -> int:
    from sim.commands.validate import print_errors
    from sim.errors import LatentcastError
    from sim.merge import merge_runs

    try:
        n = merge_runs(args.out, args.shards)
    except LatentcastError as err:
        return print_errors("merge", err)
    print(f"{args.out}: {n['records']} record(s) and {n['errors']} error record(s) from {n['shards']} shard(s)",
          file=sys.stderr)
    return 0
