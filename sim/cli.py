"""``latentcast`` command line: one sub-command per module in ``sim.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Errors derived from :class:`LatentcastError` are printed as one line
on stderr (exit status 2); nothing else is caught, so real bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sim import __version__
from sim.errors import LatentcastError

__all__ = ["main", "COMMANDS"]

# sub-command modules, in the order `latentcast --help` lists them
COMMANDS = ("run", "merge", "validate", "codec_eval", "train", "report", "complement_eval")


def _load(name: str):
    try:
        return importlib.import_module(f"sim.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"sim.commands.{name}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentcast", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"latentcast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args._run(args) or 0)
    except LatentcastError as err:
        print(f"latentcast {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentcast {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
