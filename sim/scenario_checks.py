"""Checking machinery shared by the scenario section parsers (:mod:`sim.scenario`).

:class:`ScenarioError` carries every problem found, one line each; ``_Checker`` collects
those lines as ``file: field.path = value: what is allowed`` (with a did-you-mean for
unknown keys), and ``_build`` calls another module's constructor with a section's keys,
reporting unknown or missing keys and the errors the constructor raises under the
section's path. ``sim.scenario`` re-exports :class:`ScenarioError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
from pathlib import Path

from sim.errors import ConfigError, LatentcastError

__all__ = ["ScenarioError"]


class ScenarioError(ConfigError):
    """Every problem found in a scenario, one line each (``errors``); ``str`` joins them."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# ---------------------------------------------------------------------------- checking


def _show(value) -> str:
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _hint(key, allowed) -> str:
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Collects problems as ``file: path = value: allowed`` lines."""

    def __init__(self, source: str):
        self.source = source
        self.errors: list[str] = []

    def bad(self, path: str, value, allowed: str) -> None:
        self.errors.append(f"{self.source}: {path} = {_show(value)}: {allowed}")

    def line(self, text: str) -> None:
        self.errors.append(f"{self.source}: {text}")

    def keys(self, path: str, given: dict, allowed, required=()) -> bool:
        """Unknown keys (with did-you-mean) and missing required keys; True if all fine."""
        ok = True
        for key in given:
            if key not in allowed:
                ok = False
                self.line(f"{path + '.' if path else ''}{key}: unknown key{_hint(key, allowed)}; "
                          f"expected one of: {', '.join(allowed)}")
        for key in required:
            if key not in given:
                ok = False
                self.line(f"{path + '.' if path else ''}{key}: missing (required)")
        return ok

    def mapping(self, path: str, value) -> dict | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(path, value, "expected a mapping of keys to values")
            return None
        return value

    def foreign(self, path: str, err: Exception, params=()) -> None:
        """Report an error raised by another module's constructor under ``path``."""
        msg = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        m = re.match(r"^([A-Za-z_][\w.\[\]]*)(\s*(?:=|:|\s).*)$", msg)
        if msg.startswith(path + ".") or msg.startswith(path + " ") or msg.startswith(path + ":"):
            self.line(msg)
        elif m and "." in m.group(1) and m.group(1).rsplit(".", 1)[1] in params:
            self.line(f"{path}.{m.group(1).rsplit('.', 1)[1]}{m.group(2)}")
        elif m and any(part in params for part in m.group(1).split(".")[:-1]):  # a key inside a mapping option
            parts = m.group(1).split(".")
            i = next(i for i, part in enumerate(parts) if part in params)
            self.line(f"{path}.{'.'.join(parts[i:])}{m.group(2)}")
        elif m and m.group(1) in params:
            self.line(f"{path}.{msg}")
        elif isinstance(err, LatentcastError) or isinstance(err, ValueError):
            self.line(f"{path}: {msg}")
        else:
            self.line(f"{path}: {err.__class__.__name__}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _init_fields(cls) -> tuple[list[str], list[str]]:
    """(all keyword names, required names) of a dataclass or callable."""
    if dataclasses.is_dataclass(cls):
        fs = [f for f in dataclasses.fields(cls) if f.init]
        return ([f.name for f in fs],
                [f.name for f in fs if f.default is dataclasses.MISSING
                 and f.default_factory is dataclasses.MISSING])
    params = [p for p in inspect.signature(cls).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


def _defaults(cls) -> dict:
    """Declared keyword defaults of a class or callable (what an omitted key means)."""
    out = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty:
            out[p.name] = p.default
    return out


def _build(chk: _Checker, path: str, cls, params: dict, factory=None):
    """``(factory or cls)(**params)`` with unknown/missing keys and raised errors reported."""
    names, required = _init_fields(cls)
    ok = chk.keys(path, params, names, required)
    if any(r not in params for r in required):
        return None
    try:  # unknown keys left out, so that bad values of the known ones are reported too
        obj = (factory or cls)(**{k: v for k, v in params.items() if k in names})
    except (LatentcastError, ValueError, TypeError) as err:
        chk.foreign(path, err, params)
        return None
    return obj if ok else None


def _resolve_path(base: Path, value) -> str:
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())
