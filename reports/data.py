"""What a report is built from: the records of ``results.jsonl``, the resolved scenario and
the provenance, organised by sweep point, policy and facet.

Nothing here simulates: every number comes from the files in the output folder.
``results.jsonl`` is read with ``sim.results.read_records(skip_bad=True)``: a line that is
not a record is skipped with a warning naming ``results.jsonl:LINE`` (and listed in the
report) instead of failing. Each record gets the derived metrics of
:func:`sim.results.derived_fields` (the same ones ``summary.csv`` has). The report then marks
what is missing against what the resolved scenario planned (points × repeats × images per
policy).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sim.errors import InputError
from sim.results import PROVENANCE_FILE, RESOLVED_FILE, RESULTS_FILE, derived_fields, latest_records, read_records

__all__ = ["ReportData", "PointInfo", "load_report_data", "LOSS_AXIS_KEYS", "fmt_value"]


# swept channel parameters that can serve as the report's x axis, in order of preference
LOSS_AXIS_KEYS = ("channel.loss", "channel.ber", "channel.ebn0_db", "channel.snr_db",
                  "channel.p", "channel.r", "channel.k", "channel.h")


@dataclass
class PointInfo:
    """One sweep point: index, swept values, x-axis value and facet (other swept values)."""

    index: int
    sweep: dict
    x: float | None = None
    facet: tuple = ()
    planned: bool = True       # in the resolved scenario (False: only seen in records)


@dataclass
class ReportData:
    """Everything a report shows, read from one output folder."""

    out: Path
    records: list[dict]                      # latest record per key, no errors, derived fields added;
    #                                          point = the index of its values among the points
    read: list[dict]                         # the readable records of results.jsonl, as written
    errors: list[dict]                       # latest record per key that is an error record
    skipped: list[tuple[int, str]]           # corrupt lines of results.jsonl
    scenario: dict | None                    # scenario.resolved.yaml, parsed
    scenario_text: str | None
    provenance: dict | None
    points: list[PointInfo]
    policies: list[str]
    policy_kinds: dict
    axis_key: str | None                     # swept key used as x, or None: measured loss share
    facet_keys: list[str]
    expected: dict = field(default_factory=dict)   # (point, policy) → planned records (or None)
    notes: list[str] = field(default_factory=list)

    @property
    def axis_label(self) -> str:
        if self.axis_key is None:
            return "measured loss share (cells lost on the first pass)"
        return f"{self.axis_key} (swept)"

    @property
    def axis_kind(self) -> str:
        return "swept" if self.axis_key is not None else "measured"

    def facets(self) -> list[tuple]:
        seen: list[tuple] = []
        for p in self.points:
            if p.facet not in seen:
                seen.append(p.facet)
        return seen

    def facet_label(self, facet: tuple) -> str:
        return ", ".join(f"{k}={fmt_value(_thaw(v))}" for k, v in zip(self.facet_keys, facet)) or "all points"

    def by_point_policy(self) -> dict:
        out: dict = {}
        for rec in self.records:
            out.setdefault((rec["point"], rec["policy"]), []).append(rec)
        return out


def fmt_value(v) -> str:
    """A swept value as a short label: numbers as written, mappings as ``kind k=v``."""
    if isinstance(v, dict):
        parts = [str(v["kind"])] if "kind" in v else []
        parts += [f"{k}={fmt_value(x)}" for k, x in v.items() if k != "kind"]
        return " ".join(parts)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def _load_yaml(path: Path, notes: list[str]) -> tuple[dict | None, str | None]:
    if not path.exists():
        notes.append(f"{path.name} not found: planned points, repeats and images are inferred "
                     f"from the records, and the channel check has no theory")
        return None, None
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        notes.append(f"{path.name} is not valid YAML; ignored")
        return None, text
    return (data if isinstance(data, dict) else None), text


def _planned_points(scenario: dict | None) -> list[dict] | None:
    """Swept values of every planned point, in index order (cartesian product, last key fastest)."""
    if scenario is None:
        return None
    sweep = scenario.get("sweep") or {}
    if not isinstance(sweep, dict):
        return None
    keys = list(sweep)
    combos = itertools.product(*[sweep[k] for k in keys]) if keys else [()]
    return [dict(zip(keys, c)) for c in combos]


def _point_indices(records: list[dict], planned: list[dict] | None) -> list[dict]:
    """Copies of ``records`` whose ``point`` is the index of their swept values among the planned
    points (records name a point by its values, :func:`sim.units.point_id`); values not planned
    get the next indices, in order of appearance."""
    from sim.units import point_id

    index = {point_id(sw): i for i, sw in enumerate(planned or [])}
    out = []
    for r in records:
        pid = point_id(r.get("sweep") or {}) if isinstance(r.get("sweep") or {}, dict) else str(r.get("point"))
        out.append({**r, "point": index.setdefault(pid, len(index))})
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_report_data(out: str | Path) -> ReportData:
    """Read ``out/results.jsonl``, ``scenario.resolved.yaml`` and ``provenance.json``.

    Raises
    ------
    InputError
        ``out`` is not a folder, or holds no readable record and no resolved scenario.
    """
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: not a folder (expected a run's output folder with {RESULTS_FILE})")
    notes: list[str] = []
    skipped: list[tuple[int, str]] = []
    raw = read_records(out / RESULTS_FILE, skip_bad=True, skipped=skipped)
    scenario, scenario_text = _load_yaml(out / RESOLVED_FILE, notes)
    if not raw and scenario is None:
        raise InputError(f"{out}: no records in {RESULTS_FILE} and no {RESOLVED_FILE}; nothing to report")
    provenance = None
    prov = out / PROVENANCE_FILE
    if prov.exists():
        try:
            provenance = json.loads(prov.read_text(encoding="utf-8"))
        except ValueError:
            notes.append(f"{PROVENANCE_FILE} is not valid JSON; provenance left out")
    planned = _planned_points(scenario)
    latest = _point_indices(latest_records(raw, str(out / RESULTS_FILE)), planned)
    records = [dict(r, **derived_fields(r)) for r in latest if "error" not in r]
    errors = [r for r in latest if "error" in r]

    # policies: the scenario's order, then any others in order of appearance
    policies, kinds = [], {}
    for p in (scenario or {}).get("policies") or []:
        name = p.get("name", p.get("kind")) if isinstance(p, dict) else str(p)
        kind = p.get("kind", name) if isinstance(p, dict) else str(p)
        policies.append(name)
        kinds[name] = kind
    for r in latest:
        if r["policy"] not in kinds:
            policies.append(r["policy"])
            kinds[r["policy"]] = r.get("policy_kind", r["policy"])
        elif r.get("policy_kind"):
            kinds[r["policy"]] = r["policy_kind"]

    # points: planned ones, then any seen only in records
    points: dict[int, PointInfo] = {}
    for i, sw in enumerate(planned or []):
        points[i] = PointInfo(i, sw)
    for r in latest:
        if r["point"] not in points:
            points[r["point"]] = PointInfo(r["point"], dict(r.get("sweep") or {}), planned=planned is None)
            if planned is not None:
                notes.append(f"point {r['point']} is in the records but not in {RESOLVED_FILE}")
    sweep_keys: list[str] = []
    for p in points.values():
        for k in p.sweep:
            if k not in sweep_keys:
                sweep_keys.append(k)

    # x axis: a swept channel parameter if any, else the measured loss share
    axis_key = next((k for k in LOSS_AXIS_KEYS if k in sweep_keys
                     and all(_is_number(p.sweep.get(k)) for p in points.values())), None)
    if axis_key is not None:
        facet_keys = [k for k in sweep_keys if k != axis_key]
    else:
        facet_keys = [k for k in sweep_keys if not k.startswith("channel")]
    share: dict[int, list] = {}
    for r in records:
        v = r.get("first_pass_lost_share")
        if _is_number(v):
            share.setdefault(r["point"], []).append(float(v))
    for p in points.values():
        if axis_key is not None:
            p.x = float(p.sweep[axis_key])
        elif p.index in share:
            p.x = math.fsum(share[p.index]) / len(share[p.index])
        p.facet = tuple(_freeze_back(p.sweep.get(k)) for k in facet_keys)

    # planned records per (point, policy)
    expected = {}
    n_images = None
    repeats = None
    if scenario is not None:
        repeats = scenario.get("repeats", 1)
        imgs = scenario.get("images") or {}
        if imgs.get("source", "samples") == "samples" and imgs.get("names"):
            n_images = len(imgs["names"])
    if n_images is None:
        n_images = len({r.get("image") for r in latest}) or None
    if repeats is None:
        repeats = (max((r.get("repeat", 0) for r in latest), default=-1) + 1) or None
    for p in points.values():
        for pol in policies:
            expected[(p.index, pol)] = repeats * n_images if repeats and n_images else None

    ordered = sorted(points.values(), key=lambda p: p.index)
    return ReportData(out=out, records=records, read=raw, errors=errors, skipped=skipped, scenario=scenario,
                      scenario_text=scenario_text, provenance=provenance, points=ordered,
                      policies=policies, policy_kinds=kinds, axis_key=axis_key, facet_keys=facet_keys,
                      expected=expected, notes=notes)


class _Frozen(str):
    """A mapping or list swept value as its canonical JSON (facet values must be hashable)."""


def _freeze_back(v):
    return _Frozen(json.dumps(v, sort_keys=True)) if isinstance(v, (dict, list)) else v


def _thaw(v):
    return json.loads(v) if isinstance(v, _Frozen) else v
