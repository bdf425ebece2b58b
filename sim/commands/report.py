"""``latentcast report OUT_DIR``: loss-rate report of a finished (or interrupted) run."""

from __future__ import annotations

import argparse
import sys

NAME = "report"
HELP = ("build a run's loss-rate report from its results.jsonl: report.html, report.md, "
        "figures/*.png, summary.csv, timings.csv (nothing is re-simulated)")


def _formats(text: str) -> list[str]:
    from reports import FORMATS

    out = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(FORMATS)}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT_DIR", help="a run's output folder (holds results.jsonl)")
    p.add_argument("--format", dest="formats", type=_formats, default=["html", "md"], metavar="html,md",
                   help="which reports to write (default: html,md); figures, summary.csv and timings.csv are always written")


def run(args) -> int:
    from reports import build_report
    from sim.commands.validate import print_errors
    from sim.errors import LatentcastError

    try:
        written = build_report(args.out, args.formats)
    except LatentcastError as err:
        return print_errors("report", err)
    for key in ("html", "md", "summary", "timings"):
        if key in written:
            print(written[key], file=sys.stderr)
    print(f"{len(written['figures'])} figure(s) in {written['summary'].parent / 'figures'}", file=sys.stderr)
    return 0
