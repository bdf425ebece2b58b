"""Run a scenario: its work units (:mod:`sim.units`) through an executor (:mod:`sim.executors`),
one record per transmission appended to ``results.jsonl`` by this process only.

A unit is one (sweep point values, repeat, image) group with every policy; its records are a
pure function of its spec, so results do not depend on the executor, the worker count, the
order units finish in, or a shard: transmission ``(point values, repeat, image named n)`` gets
:func:`sim.units.transmission_rng` (``SeedSequence([seed, sha256(point_id), repeat, crc32(n)])``),
a fresh generator per policy from that same seed: all policies of a unit face the same channel
realisation on the first pass (common random numbers), and adding an image, a policy or a sweep
value does not change the other transmissions' streams. No global RNG is used.

The run owns its folder: an exclusive lock on ``out/.lock`` (``flock``: it dies with the process,
so a stale lock never blocks) refuses a second run on the same ``--out`` with one line.

Resume: records already in ``results.jsonl`` (same scenario: ``scenario.resolved.yaml`` must
match; same model weights: the SHA-256 of the codec weights and of each complement weight set
in ``provenance.json``, checked before the first record is added) are skipped; a unit with some
records is recomputed whole and only its missing records are written. Each unit's records are
flushed and fsynced as it finishes, so a kill of any process loses no finished record.
Failure on one transmission is logged as one line naming the image, policy and error, written
as an ``error`` record, and the run goes on; error records are retried by the next run.

Example images (for the report, which decodes nothing): workers return the pictures of the
units :func:`reports.examples.keeps` keeps, and this process writes them under ``out/examples/``.
They are artifacts, not records; a unit recomputed on resume writes the same bytes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim import errors
from sim.errors import ConfigError, LatentcastError
from sim.provenance import append_run, check_weights, run_entry
from sim.results import RESOLVED_FILE, RESULTS_FILE, ResultsWriter, read_records, write_summaries
from sim.scenario import ImagesConfig, Scenario
from sim.units import key_text, plan_units, shard_units
from sim.worker import STAGES

__all__ = ["run_scenario", "RunReport", "load_images", "LOCK_FILE"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


@dataclass
class RunReport:
    """What a call of :func:`run_scenario` did. Times are wall-clock seconds."""

    out: Path
    total: int = 0            # transmissions in the scenario (in the shard, with one)
    skipped: int = 0          # already in results.jsonl when the run started
    written: int = 0          # records written by this run (errors included)
    errors: int = 0           # error records written by this run
    wall_s: float = 0.0       # whole call
    transmit_s: float = 0.0   # inside sim.engine.transmit, summed over workers
    stages: dict = field(default_factory=dict)  # seconds per stage, summed over workers (sim.worker.STAGES),
    #   and this process's "write"


def load_images(images: ImagesConfig, source: str = "<scenario>") -> list[tuple[str, np.ndarray]]:
    """``[(name, (size, size, 3) uint8)]``: every image read, resized and center-cropped.

    Raises
    ------
    InputError
        One line naming the scenario file, ``images.source`` and the bad image file.
    """
    from sim.worker import image_files, load_image

    return [(name, load_image(images, name, path, source)) for name, path in image_files(images, source).items()]


@contextmanager
def _owned(out: Path):
    """Hold ``out/.lock`` for the run; ConfigError (one line) if another live run holds it."""
    import fcntl

    fh = open(out / LOCK_FILE, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise ConfigError(f"--out {out}: another latentcast run (pid {pid}) is writing there; wait for it "
                              f"to end or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def _check_out(out: Path, resolved: str) -> list[dict]:
    """Existing records of ``out`` if they belong to this scenario; refuse otherwise."""
    results = out / RESULTS_FILE
    records = read_records(results, repair=True)
    if any(isinstance(r.get("key"), list) and r["key"] and isinstance(r["key"][0], int) for r in records):
        raise ConfigError(f"{out}: holds results of an older latentcast (records keyed by sweep position, "
                          f"whose channel draws differ); choose another --out or delete {results} to start again")
    if records:
        prev = out / RESOLVED_FILE
        old = prev.read_text(encoding="utf-8") if prev.exists() else None
        if old != resolved:
            raise ConfigError(f"{out}: holds results of a different scenario ({RESOLVED_FILE} "
                              f"{'differs' if old is not None else 'missing'}); choose another "
                              f"--out or delete {results} to start again")
    return records


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load_lpips(out: Path, units, existing: list[dict]):
    """The LPIPS model (``sim.lpips.load_lpips``: None after one warning where it cannot be had);
    warns when records already in ``out`` were scored otherwise."""
    from sim.lpips import MIN_SIZE, load_lpips

    model = load_lpips()
    available = model is not None
    big = {u.point_id for u in units if u.scenario.images.size >= MIN_SIZE}
    old = [r for r in existing if r.get("point") in big]
    with_lpips = sum("lpips" in r for r in old)
    if not available and with_lpips:
        log.warning("%s: %d of the %d records already there have lpips; the new ones will not (LPIPS is not "
                    "available now)", out / RESULTS_FILE, with_lpips, len(old))
    elif available and with_lpips < len(old):
        log.warning("%s: %d of the %d records already there have no lpips (LPIPS was not available then); "
                    "the new ones have it", out / RESULTS_FILE, len(old) - with_lpips, len(old))
    return model


def _fatal(message: str) -> LatentcastError:
    """A worker's fatal error line as the error class it names (``ClassName: message``)."""
    name, _, text = message.partition(": ")
    cls = getattr(errors, name, None)
    return cls(text) if isinstance(cls, type) and issubclass(cls, LatentcastError) else LatentcastError(message)


def run_scenario(scenario: Scenario, out: str | Path | None = None, *, progress: bool = False,
                 threads: int | None = 1, jobs: int = 1, executor: str = "local", shard: tuple | None = None,
                 ray_address: str | None = None, batch: int = 1) -> RunReport:
    """Run every transmission of ``scenario`` (of its ``shard``) not yet in ``out``'s results.

    Writes ``out/scenario.resolved.yaml`` and appends to ``out/provenance.json`` at the
    start, appends to ``out/results.jsonl`` as each unit finishes, and writes
    ``out/summary.csv`` and ``out/timings.csv`` at the end (also after Ctrl-C or an error,
    for what is finished).

    Parameters
    ----------
    scenario : Scenario
        A validated scenario (:func:`sim.scenario.load_scenario`).
    out : path, optional
        Output folder; default ``scenario.out``.
    progress : bool
        Show a progress bar (records done / total) on stderr.
    threads : int or None
        ``torch.set_num_threads`` in each worker (this process's setting is restored after a
        serial run). Default 1: one thread per worker process; None or 0 keeps torch's default.
    jobs : int ≥ 1
        Worker processes of the ``local`` executor, Ray actors of ``ray``; 1 runs serially here.
    executor : {"local", "serial", "ray"}
        :mod:`sim.executors`.
    shard : (I, N), optional
        Run every N-th unit from the I-th (:func:`sim.units.shard_units`); ``latentcast merge``
        joins the shards' folders.
    ray_address : str, optional
        A running Ray cluster to join (``executor="ray"``); default: a local Ray for the run.
    batch : int ≥ 1
        Units per worker call, their repairs batched together (one model call per method). 1 (the
        default): records identical for any split; more: equal within float tolerance, since a
        batch's composition depends on how the units were split.

    Returns
    -------
    RunReport

    Raises
    ------
    ConfigError
        ``out`` holds results of another scenario, or of other model weights (codec or
        complement: their SHA-256 in ``provenance.json``); another run holds ``out``; a bad
        ``threads``, ``jobs``, ``executor`` or ``shard``.
    InputError, ModelLoadError
        An image, the codec weights or a complement method's weights cannot be read.
    """
    import torch

    from sim.executors import check_jobs

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ConfigError(f"threads = {threads!r}: expected an integer ≥ 1 (torch threads), or 0 for torch's default")
    check_jobs(jobs)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    out = Path(out if out is not None else scenario.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder (made if missing)")
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _owned(out):
            return _run(scenario, out, progress, threads, jobs, executor, shard, ray_address, batch)
    finally:
        torch.set_num_threads(before)


def _run(scenario: Scenario, out: Path, progress: bool, threads, jobs: int, executor: str, shard,
         ray_address, batch: int) -> RunReport:
    from tqdm import tqdm

    from sim.executors import unit_results

    t_start = time.perf_counter()
    report = RunReport(out=out, stages={**dict.fromkeys(STAGES, 0.0), "write": 0.0})
    resolved = scenario.to_yaml()
    existing = [r for r in _check_out(out, resolved) if "error" not in r]
    done = {key_text(r.get("key")) for r in existing}
    names: dict = {}

    def names_of(images: ImagesConfig) -> list[str]:
        if images not in names:
            names[images] = [n for n, _ in images.items()]
        return names[images]

    units = shard_units(plan_units(scenario, names_of), shard)
    report.total = sum(len(u.scenario.policies) for u in units)
    todo = [u for u in units if not all(k in done for k in u.keys())]
    report.skipped = sum(k in done for u in units for k in u.keys())
    _write_atomic(out / RESOLVED_FILE, resolved)
    if not todo:
        append_run(out, run_entry(scenario, [], []))
    lpips = _load_lpips(out, units, existing) if todo else None
    bar = tqdm(total=report.total, initial=report.skipped, disable=not progress, file=sys.stderr,
               unit="tx", desc=scenario.name, dynamic_ncols=True)
    writer = ResultsWriter(out / RESULTS_FILE)
    started = False
    try:
        for result in unit_results(todo, executor=executor, jobs=jobs, source=scenario.source, lpips=lpips,
                                   threads=threads, ray_address=ray_address, batch=batch):
            if result.fatal:
                raise _fatal(result.fatal)
            if not started:  # the weights are known once a worker has loaded them
                run = run_entry(scenario, result.cards.get("codecs", []), result.cards.get("complement", []))
                if existing:
                    check_weights(out, len(existing), run)
                append_run(out, run)
                started = True
            t0 = time.perf_counter()
            _write_unit(out, writer, result, done, report)
            report.stages["write"] += time.perf_counter() - t0
            for k, v in result.stages.items():
                report.stages[k] = report.stages.get(k, 0.0) + v
            bar.update(sum(1 for r in result.records if "error" not in r))
    finally:
        writer.close()
        bar.close()
        t0 = time.perf_counter()
        write_summaries(out / RESULTS_FILE, out)
        report.stages["write"] += time.perf_counter() - t0
        report.transmit_s = report.stages["transmit"]
        report.wall_s = time.perf_counter() - t_start
    if report.errors:
        log.error("%d of %d transmissions failed (error records in %s); run again to retry them",
                  report.errors, report.written, out / RESULTS_FILE)
    return report


def _write_unit(out: Path, writer: ResultsWriter, result, done: set, report: RunReport) -> None:
    """One unit's example pictures, then its records not already there (fsynced together)."""
    from reports.examples import save_examples

    ex = result.example
    if ex is not None:
        save_examples(out, ex.point_index, ex.repeat, ex.image_id, ex.name, ex.original, ex.lossfree, ex.outputs,
                      edges=ex.edges)
    new = [r for r in result.records if key_text(r["key"]) not in done]
    writer.write_many(new)
    for rec in new:
        report.written += 1
        if "error" in rec:
            report.errors += 1
        else:
            done.add(key_text(rec["key"]))
