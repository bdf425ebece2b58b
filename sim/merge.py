"""Join the output folders of a run's shards (``latentcast run --shard I/N``) into one run.

The shards must come from one scenario (identical ``scenario.resolved.yaml``) and one set of
model weights (the SHA-256 fingerprints in their ``provenance.json``). Their records are joined
by key: a measured record supersedes an error of its key, and two measured records of one key
that disagree (wall-clock fields aside) stop the merge (:func:`sim.results.latest_records`).
The merged ``results.jsonl`` is written atomically, then ``summary.csv``, ``timings.csv``,
``provenance.json`` (every shard's run entries) and the shards' example pictures.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sim.errors import ConfigError, InputError
from sim.provenance import fingerprints
from sim.results import (PROVENANCE_FILE, RESOLVED_FILE, RESULTS_FILE, latest_records, read_records, record_line,
                         write_summaries)

__all__ = ["merge_runs"]


def _resolved(folder: Path) -> str:
    path = folder / RESOLVED_FILE
    if not folder.is_dir() or not path.is_file():
        raise InputError(f"merge: {folder}: not a run's output folder (no {RESOLVED_FILE})")
    return path.read_text(encoding="utf-8")


def _runs(folder: Path) -> list[dict]:
    path = folder / PROVENANCE_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("runs", []))
    except (ValueError, AttributeError):
        raise InputError(f"merge: {path}: not valid provenance JSON") from None


def _check_weights(folders: list[Path], runs: dict) -> None:
    """One SHA-256 per weights label across every shard; ConfigError naming both shards otherwise."""
    seen: dict[str, tuple[str, Path]] = {}
    for folder in folders:
        for entry in runs[folder]:
            for label, sha in fingerprints(entry).items():
                if label in seen and seen[label][0] != sha:
                    raise ConfigError(f"merge: {folder} and {seen[label][1]} used other model weights ({label}: "
                                      f"sha256 {sha[:12]}… vs {seen[label][0][:12]}…); shards must share the weights")
                seen.setdefault(label, (sha, folder))


def merge_runs(out: str | Path, shards: list) -> dict:
    """Merge the ``shards`` folders into ``out`` (made if missing; records already there are kept).

    Returns ``{"records": n, "errors": n, "shards": n}``.

    Raises
    ------
    ConfigError
        Shards of different scenarios or weights, or ``out`` holding another scenario's run.
    InputError
        A folder that is not a run's, or records of one key that disagree.
    """
    from sim.runner import _owned

    out, folders = Path(out), [Path(s) for s in shards]
    if not folders:
        raise ConfigError("merge: no shard folders given; expected OUT SHARD_DIR [SHARD_DIR …]")
    resolved = _resolved(folders[0])
    for folder in folders[1:]:
        if _resolved(folder) != resolved:
            raise ConfigError(f"merge: {folder}/{RESOLVED_FILE} differs from {folders[0]}'s: shards of different "
                              f"scenarios (or seeds) cannot be merged")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"merge: {out}: is a file; expected a folder (made if missing)")
    out.mkdir(parents=True, exist_ok=True)
    with _owned(out):
        sources = [f for f in folders if f.resolve() != out.resolve()]
        if (out / RESULTS_FILE).exists():
            if (out / RESOLVED_FILE).exists() and _resolved(out) != resolved:
                raise ConfigError(f"merge: {out} holds a run of another scenario; choose another OUT")
            sources = [out, *sources]
        runs = {f: _runs(f) for f in dict.fromkeys([out, *folders])}
        _check_weights(list(runs), runs)
        records = []
        for folder in sources:
            records += read_records(folder / RESULTS_FILE)
        merged = latest_records(records, "merge")
        _write_text(out / RESULTS_FILE, "".join(record_line(r) + "\n" for r in merged))
        _write_text(out / RESOLVED_FILE, resolved)
        all_runs = [e for f in runs for e in runs[f]]
        _write_text(out / PROVENANCE_FILE, json.dumps({"runs": all_runs}, indent=2, sort_keys=True) + "\n")
        for folder in folders:
            if (folder / "examples").is_dir() and folder.resolve() != out.resolve():
                shutil.copytree(folder / "examples", out / "examples", dirs_exist_ok=True)
        write_summaries(merged, out)
    errors = sum("error" in r for r in merged)
    return {"records": len(merged) - errors, "errors": errors, "shards": len(folders)}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
