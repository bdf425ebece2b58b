"""``latentcast validate``: check a scenario and print it resolved, or every problem in it."""

from __future__ import annotations

import argparse
import sys

NAME = "validate"
HELP = "check a scenario file; print it resolved (YAML) or list every problem, one per line"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", metavar="FILE", help="scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field by its dotted path, value parsed as YAML "
                        "(e.g. --set channel.loss=0.1); repeatable")
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--no-images", action="store_true",
                   help="do not open the images (by default every image is read, to catch corrupt files)")


def print_errors(command: str, err) -> int:
    """One ``latentcast COMMAND: error: ...`` line per problem on stderr; exit status 2."""
    for line in getattr(err, "errors", None) or str(err).splitlines() or [err.__class__.__name__]:
        print(f"latentcast {command}: error: {line}", file=sys.stderr)
    return 2


def weights_warnings(scenario) -> list[str]:
    """One line per policy whose complement method needs the shipped ``tiny`` weights while they
    are not installed: the scenario is valid, but ``latentcast run`` would stop (nothing is loaded)."""
    from sim.complement.learned import CODEC_METHODS
    from sim.complement.models import MANIFEST, SHIPPED_TINY

    if (SHIPPED_TINY / MANIFEST).is_file():
        return []
    out = []
    for point in scenario.points or ():
        for i, pol in enumerate(point.scenario.policies):
            method = getattr(pol.policy, "method", None)
            options = getattr(pol.policy, "method_options", None) or {}
            if method in CODEC_METHODS and method != "pixel-telea" and options.get("weights", "tiny") == "tiny":
                line = (f"{scenario.source}: policies[{i}].method = {method!r} ({pol.name}) needs the shipped tiny "
                        f"complement weights, which are not installed ({SHIPPED_TINY} has no {MANIFEST}): "
                        f"`latentcast run` will stop; set method: interp, or method_options.weights: a folder")
                if line not in out:
                    out.append(line)
    return out


def run(args) -> int:
    from sim.errors import LatentcastError
    from sim.runner import load_images
    from sim.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario, args.overrides, args.seed)
        if not args.no_images:
            seen = set()
            for point in scenario.points:
                if point.scenario.images not in seen:
                    seen.add(point.scenario.images)
                    load_images(point.scenario.images, scenario.source)
    except LatentcastError as err:
        return print_errors("validate", err)
    sys.stdout.write(scenario.to_yaml())
    for line in weights_warnings(scenario):
        print(f"latentcast validate: warning: {line}", file=sys.stderr)
    n = len(scenario.points) * scenario.repeats * len(scenario.policies)
    print(f"{args.scenario}: ok: {len(scenario.points)} sweep point(s) × {scenario.repeats} repeat(s) "
          f"× {len(scenario.policies)} polic{'y' if len(scenario.policies) == 1 else 'ies'} "
          f"= {n} transmissions per image", file=sys.stderr)
    return 0
