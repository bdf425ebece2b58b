"""Reading scenario YAML and applying dotted ``--set`` overrides (:mod:`sim.scenario`).

:func:`read_yaml` reads a scenario file's top-level mapping (YAML 1.2 floats such as
``1e-3``, duplicate keys refused, errors with file, line and column);
:func:`parse_yaml_value` parses one ``--set`` value; :func:`set_dotted` sets a dotted field
path (``channel.loss``, ``policies.1.max_rounds``) and :func:`apply_overrides` applies
``--set KEY=VALUE`` items and ``--seed`` to a copy of a scenario mapping.
``sim.scenario`` re-exports the public names.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from sim.errors import ConfigError
from sim.scenario_checks import ScenarioError

__all__ = ["SECTIONS", "read_yaml", "parse_yaml_value", "set_dotted", "apply_overrides"]

# The top-level keys of a scenario file, in their documented order.
SECTIONS = ("name", "seed", "images", "codec", "packetizer", "link", "channel", "receiver",
            "policies", "sweep", "repeats", "out")


# ------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` as a float (YAML 1.2) and refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml_error(where: str, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is not None:
        return f"{where}:{mark.line + 1}:{mark.column + 1}: malformed YAML: {problem}"
    return f"{where}: malformed YAML: {problem}"


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a scenario file; ScenarioError (file, line, column) if malformed."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError([f"{where}: scenario file not found"]) from None
    except IsADirectoryError:
        raise ScenarioError([f"{where}: is a directory, expected a scenario YAML file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError([f"{where}: cannot read the scenario file ({err.__class__.__name__})"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
    except yaml.YAMLError as err:
        raise ScenarioError([_yaml_error(where, err)]) from None
    if data is None:
        raise ScenarioError([f"{where}: the scenario file is empty"])
    if not isinstance(data, dict):
        raise ScenarioError([f"{where}: expected a mapping of sections ({', '.join(SECTIONS)}) "
                             f"at the top level, got {type(data).__name__}"])
    return data


def parse_yaml_value(text: str):
    """A ``--set`` value: parsed as YAML (``0.1`` → float, ``[a, b]`` → list, ``null`` → None)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(f"value {text!r}", err)) from None


# ------------------------------------------------------------------------- dotted paths


def _split(key: str) -> list[str]:
    return [p for p in str(key).split(".")]


def set_dotted(raw: dict, key: str, value) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating missing mappings.

    A purely numeric part indexes a list (``policies.1.max_rounds``).
    """
    parts = _split(key)
    if not all(parts):
        raise ConfigError(f"{key!r}: expected a dotted field path such as channel.loss")
    node = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{key}: {'.'.join(parts[:i]) or 'top level'} is a list of "
                                  f"{len(node)}; expected an index 0..{len(node) - 1} at {part!r}")
            idx = int(part)
            if last:
                node[idx] = value
            else:
                if isinstance(node[idx], str):  # "resend" → {"kind": "resend"}
                    node[idx] = {"kind": node[idx]}
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{key}: {'.'.join(parts[:i])} = {node!r} is not a mapping, "
                              f"cannot set {where}")


def _pop_dotted(d: dict, key: str) -> None:
    """Remove ``key`` (dotted, numeric parts index lists) from ``d`` if it is there."""
    parts = _split(key)
    node = d
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def apply_overrides(raw: dict, overrides=(), seed: int | None = None) -> dict:
    """A copy of ``raw`` with ``--set KEY=VALUE`` overrides and ``--seed`` applied.

    ``KEY`` is a dotted path (``channel.loss``); ``VALUE`` is parsed as YAML. Setting a key
    that the scenario sweeps fixes it: it is removed from ``sweep``. ``sweep.<dotted key>``
    sets (or adds) a sweep list, e.g. ``--set 'sweep.channel.loss=[0.1, 0.2]'``.
    """
    raw = copy.deepcopy(raw)
    errors = []
    for item in overrides or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            errors.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set channel.loss=0.1")
            continue
        try:
            value = parse_yaml_value(text.strip())
            if key.startswith("sweep."):
                sweep = raw.get("sweep")
                if sweep is None:
                    sweep = raw["sweep"] = {}
                if not isinstance(sweep, dict):
                    raise ConfigError(f"sweep = {sweep!r}: expected a mapping")
                sweep[key[len("sweep."):]] = value
                continue
            if isinstance(raw.get("sweep"), dict):
                raw["sweep"].pop(key, None)
            set_dotted(raw, key, value)
        except ConfigError as err:
            errors.append(f"--set {key}: {err}")
    if seed is not None:
        raw["seed"] = seed
    if errors:
        raise ScenarioError(errors)
    return raw

