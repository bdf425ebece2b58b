"""The results file (``results.jsonl``: one JSON record per transmission) and its summary.

Records are written with sorted keys, floats in Python's shortest round-trip form (``repr``)
and non-finite numbers as ``null`` (an infinite PSNR: identical images). Everything measured
on the wall clock sits in the record's ``wall`` mapping, so ``jq -c 'del(.wall)'`` of two
runs of the same scenario and seed gives identical files. A record with an ``error`` key
marks a transmission that failed (no metrics); a later record with the same ``key``
supersedes it. See ``docs/scenario.md`` for every field.

:func:`summarize` turns a results file into ``summary.csv`` rows: mean, standard deviation
and a Student-t 95 % confidence interval of every numeric field, and of the derived metrics
of :func:`derived_fields`, per sweep point × policy; the wall-clock ``wall.*`` fields get the
same statistics in their own file, ``timings.csv``, so ``summary.csv`` is deterministic. The
runner and the report both write the two files with :func:`write_summaries`, so they agree.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from sim.errors import InputError

__all__ = [
    "RESULTS_FILE", "SUMMARY_FILE", "TIMINGS_FILE", "IDENTITY_KEYS", "SUMMARY_COLUMNS", "DERIVED_FIELDS", "record_line",
    "ResultsWriter", "read_records", "latest_records", "derived_fields", "summarize", "write_summary",
    "write_summaries", "mean_stats", "image_means",
    "numeric_fields",
]

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
RESOLVED_FILE = "scenario.resolved.yaml"   # the scenario as run (sim.runner)
PROVENANCE_FILE = "provenance.json"        # one entry per run (sim.provenance)
SUMMARY_FILE = "summary.csv"   # deterministic metrics
TIMINGS_FILE = "timings.csv"   # wall-clock metrics (the records' wall.*), same columns
# fields that identify a record rather than measure it (never summarised)
IDENTITY_KEYS = ("key", "point", "repeat", "image", "image_id", "policy", "policy_kind",
                 "sweep", "seed", "error", "wall")
SUMMARY_COLUMNS = ("point", "policy", "metric", "n", "n_null", "mean", "std", "ci95",
                   "ci95_low", "ci95_high")
# fields every record must have (identity of the transmission)
RECORD_KEYS = ("key", "point", "policy")
# per-record metrics computed from the logged fields (derived_fields), summarised like them
DERIVED_FIELDS = ("wire_bytes", "overhead", "psnr_per_kB", "ssim_per_kB", "packet_loss_rate")


def _plain(value):
    """JSON-ready copy: numpy scalars/arrays → Python, non-finite floats → None, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def record_line(record: dict) -> str:
    """One record as its results-file line (no newline): sorted keys, floats as ``repr``."""
    return json.dumps(_plain(record), sort_keys=True, allow_nan=False, ensure_ascii=False)


class ResultsWriter:
    """Appends records to a results file: each call's lines are flushed and fsynced before it
    returns, so a record written survives a kill of the process (or of the machine)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: list[dict]) -> None:
        if not records:
            return
        self._fh.write("".join(record_line(r) + "\n" for r in records))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_records(path: str | Path, *, repair: bool = False, skip_bad: bool = False,
                 skipped: list | None = None) -> list[dict]:
    """All records of a results file, in file order.

    A record is a JSON object with at least ``key``, ``point`` and ``policy``, one per line.
    A last line cut short (a run killed while writing it) is ignored; with ``repair=True``
    it is also removed from the file, so that appending can go on. Any other bad line is an
    :class:`InputError` naming the file and line, unless ``skip_bad``.

    Parameters
    ----------
    path : path — the results file; a missing file has no records
    repair : bool — drop a torn last line from the file (and finish a last line without newline)
    skip_bad : bool — skip every bad line (the torn last line included) with a warning on
        this module's logger naming ``path:LINE`` and the reason, instead of failing
    skipped : list, optional — with ``skip_bad``, gets ``(line number, reason)`` per skipped line
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read the results file ({err.__class__.__name__})") from None
    records, pos, lines = [], 0, data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        if raw.strip():
            reason = None
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError):
                if last:
                    if repair:  # a torn last line: drop it
                        with open(path, "r+b") as fh:
                            fh.truncate(pos)
                    if not skip_bad:
                        break
                    reason = "cut short (last line, run interrupted?)"
                else:
                    reason = "not a JSON object"
            else:
                if not all(k in rec for k in RECORD_KEYS):
                    reason = "record without key/point/policy"
            if reason is not None:
                if not skip_bad:
                    raise InputError(f"{path}:{number}: not a results record ({reason}; expected a JSON "
                                     f"object with key, point and policy per line)") from None
                log.warning("%s:%d: skipped: %s", path, number, reason)
                if skipped is not None:
                    skipped.append((number, reason))
            else:
                if last and repair:  # complete record without its newline: finish the line
                    with open(path, "ab") as fh:
                        fh.write(b"\n")
                records.append(rec)
        pos += len(raw) + 1
    return records


def _content(rec: dict) -> dict:
    """What a record measured: everything but its wall-clock ``wall`` mapping."""
    return {k: v for k, v in rec.items() if k != "wall"}


def latest_records(records: list[dict], source: str = "results") -> list[dict]:
    """One record per ``key``, in the order the keys first appear: the measured record where
    there is one (an ``error`` record is superseded by any other), else the last error.

    Raises
    ------
    InputError
        Two measured records of one key disagree (wall-clock fields aside): runs of other
        seeds or scenarios were mixed in one file. One line naming ``source`` and the key.
    """
    first: dict = {}
    best: dict = {}
    for i, rec in enumerate(records):
        k = json.dumps(rec.get("key"), sort_keys=True)
        first.setdefault(k, i)
        old = best.get(k)
        if old is not None and "error" not in old and "error" not in rec and _content(old) != _content(rec):
            raise InputError(f"{source}: two records of key {k} disagree (other seeds or scenarios mixed in one "
                             f"file?); keep one run per folder, or join shards with `latentcast merge`")
        if old is None or "error" in old:
            best[k] = rec
    return [best[k] for k in sorted(first, key=first.get)]


def derived_fields(rec: dict) -> dict:
    """Per-record metrics computed from a record's logged fields (``DERIVED_FIELDS``).

    ``wire_bytes`` = bytes_forward + bytes_reverse (packets + link ``header_bytes``, both
    directions); ``overhead`` = wire_bytes / first-pass forward bytes − 1, the first pass
    being bytes_forward − bytes_retransmitted (what a loss-free transfer sends);
    ``psnr_per_kB`` / ``ssim_per_kB`` = psnr (ssim) against the original / (wire_bytes / 1000);
    ``packet_loss_rate`` = packets_lost / packets_sent (all passes).

    Returns the fields the record does not already have. A field is ``None`` where it is
    undefined (a null input, a division by zero) and left out where an input field is absent.
    """
    def num(k):
        v = rec.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    out = {}
    if "bytes_forward" in rec and "bytes_reverse" in rec:
        fwd, rev = num("bytes_forward"), num("bytes_reverse")
        wire = fwd + rev if fwd is not None and rev is not None else None
        out["wire_bytes"] = wire
        if "bytes_retransmitted" in rec:
            re_ = num("bytes_retransmitted")
            first = fwd - re_ if fwd is not None and re_ is not None else None
            out["overhead"] = wire / first - 1.0 if wire is not None and first else None
        for q in ("psnr", "ssim"):
            if q in rec:
                v = num(q)
                out[f"{q}_per_kB"] = v / (wire / 1000.0) if v is not None and wire else None
    if "packets_lost" in rec and "packets_sent" in rec:
        lost, sent = num("packets_lost"), num("packets_sent")
        out["packet_loss_rate"] = lost / sent if lost is not None and sent else None
    return {k: v for k, v in out.items() if k not in rec}


def numeric_fields(record: dict, *, timings: bool = False) -> dict:
    """The record's summarisable numbers: its top-level numeric/bool/null fields that are not
    identity fields (deterministic); with ``timings``, instead its wall-clock ones, as
    ``wall.<name>``."""
    if timings:
        wall = record.get("wall") if isinstance(record.get("wall"), dict) else {}
        return {f"wall.{k}": v for k, v in wall.items() if v is None or isinstance(v, (bool, int, float))}
    return {k: v for k, v in record.items()
            if k not in IDENTITY_KEYS and (v is None or isinstance(v, (bool, int, float)))}


def mean_stats(values: list) -> dict:
    """``{n, n_null, mean, std, ci95, ci95_low, ci95_high}`` of ``values`` (None entries left out
    and counted in ``n_null``): the mean, the sample std (ddof = 1) and the Student-t 95 %
    interval ``mean ± t(0.975, n−1)·std/√n``; None where n is too small (mean n ≥ 1, the rest
    n ≥ 2). The one implementation of these statistics: ``summary.csv``, the report's paired
    differences and ``complement-eval``'s all use it."""
    from scipy import stats

    finite = [float(v) for v in values if v is not None]
    n = len(finite)
    row = {"n": n, "n_null": len(values) - n, "mean": None, "std": None, "ci95": None,
           "ci95_low": None, "ci95_high": None}
    if n == 0:
        return row
    mean = math.fsum(finite) / n
    row["mean"] = mean
    if n >= 2:
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in finite) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        row.update(std=std, ci95=half, ci95_low=mean - half, ci95_high=mean + half)
    return row


def image_means(values) -> list[float]:
    """Each image's mean of ``values`` ``[(image, value)]``, images in sorted order: the sample
    of an interval *over images* (n = the images), which an interval over all the values is not
    when an image holds several (repeats, mask draws of one image are not new images). Used by
    the report's crossovers and ``complement-eval --masks``."""
    by_image: dict = {}
    for image, v in values:
        by_image.setdefault(str(image), []).append(float(v))
    return [math.fsum(by_image[k]) / len(by_image[k]) for k in sorted(by_image)]


def summarize(source, *, timings: bool = False) -> list[dict]:
    """Summary rows of a results file (or list of records): ``summary.csv``, or with
    ``timings`` the wall-clock ``wall.*`` metrics instead (``timings.csv``).

    Without ``timings`` every value is deterministic: two runs of one scenario and seed give
    the same rows, whatever order their records were written in. One row per sweep point ×
    policy × metric, points in the order of their swept values (numbers by value; the
    sweep's keys sorted), then policies in the order they first appear, then metrics (sorted). Columns:
    ``point``, one column per swept field (its dotted name), ``policy``, ``metric``, ``n``
    (records with a value), ``n_null`` (records where it is null, e.g. an infinite PSNR;
    left out of the statistics), ``mean``, ``std`` (sample, ddof = 1), ``ci95`` (half-width
    of the Student-t 95 % interval of the mean, ``t_{0.975, n−1} · std / √n``),
    ``ci95_low``, ``ci95_high``. Statistics need n ≥ 1 (mean) or n ≥ 2 (std, CI); missing
    ones are empty. Failed transmissions (``error`` records) are left out; a measured record
    supersedes an error of its key, and two measured records of one key that disagree are an
    :class:`InputError` (:func:`latest_records`). Metrics are the records' numeric fields and their
    :func:`derived_fields` (a field a record already has is kept).
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "results"
    records = read_records(source) if isinstance(source, (str, os.PathLike)) else list(source)
    latest = latest_records(records, name)
    policy_order: dict = {}
    for rec in latest:  # error records too: a unit's records come in policy order
        policy_order.setdefault(rec.get("policy"), len(policy_order))
    records = [{**r, **derived_fields(r)} for r in latest if "error" not in r]
    sweep_keys: list[str] = []
    groups: dict = {}
    for rec in records:
        for k in rec.get("sweep") or {}:
            if k not in sweep_keys:
                sweep_keys.append(k)
        g = groups.setdefault((rec.get("point"), rec.get("policy")), {"sweep": rec.get("sweep") or {}, "recs": []})
        g["recs"].append(rec)
    def order(key):
        sweep = groups[key]["sweep"]
        return ([_value_order(sweep.get(k)) for k in sweep_keys], _value_order(key[0]), policy_order[key[1]])

    rows = []
    for (point, policy) in sorted(groups, key=order):
        g = groups[(point, policy)]
        values: dict[str, list] = {}
        for rec in g["recs"]:
            for k in numeric_fields(rec, timings=timings):
                values.setdefault(k, [])
        for rec in g["recs"]:
            nums = numeric_fields(rec, timings=timings)
            for k in values:
                values[k].append(nums.get(k))
        for metric in sorted(values):
            row = {"point": point, **{k: g["sweep"].get(k) for k in sweep_keys},
                   "policy": policy, "metric": metric, **mean_stats(values[metric])}
            rows.append(row)
    return rows


def _value_order(v) -> tuple:
    """Sort key of a swept value or point: numbers by value, then None, text, anything else as JSON."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    if v is None:
        return (1, 0.0, "")
    if isinstance(v, str):
        return (2, 0.0, v)
    return (3, 0.0, json.dumps(v, sort_keys=True))


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def write_summary(source, path: str | Path, *, timings: bool = False) -> list[dict]:
    """:func:`summarize` ``source`` and write the rows as CSV to ``path``; returns the rows."""
    rows = summarize(source, timings=timings)
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    if not columns:
        columns = list(SUMMARY_COLUMNS)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
    tmp = Path(path).with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return rows


def write_summaries(source, out: str | Path) -> dict:
    """Write ``out/summary.csv`` (deterministic metrics) and ``out/timings.csv`` (wall clock)
    from one read of ``source`` (a results file or list of records); returns their paths.

    The runner and the report both call this, so their files agree.
    """
    out = Path(out)
    records = read_records(source) if isinstance(source, (str, os.PathLike)) else list(source)
    write_summary(records, out / SUMMARY_FILE)
    write_summary(records, out / TIMINGS_FILE, timings=True)
    return {"summary": out / SUMMARY_FILE, "timings": out / TIMINGS_FILE}
