"""Executors: where a run's work units (:mod:`sim.units`) run. Each yields one
:class:`sim.worker.UnitResult` per unit, in the order units finish; the parent writes them.

``serial``  one :class:`~sim.worker.Worker` in this process (the reference; ``--jobs 1``)
``local``   a process pool of ``jobs`` workers (``fork`` start with one torch thread, else
            ``spawn``: :func:`_start_method`), each loading the models once; a worker that dies (killed, out of memory) takes the units it held
            with it: they are retried once in a fresh pool, then come back as error records
``ray``     Ray tasks on actors that hold the models (:mod:`sim.executor_ray`; optional extra)

Results are identical whichever executor and worker count ran them (wall-clock fields aside):
a unit is a pure function of its spec.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from sim.errors import ConfigError

__all__ = ["EXECUTORS", "default_jobs", "check_jobs", "unit_results", "dead_worker_result"]

log = logging.getLogger(__name__)

EXECUTORS = ("serial", "local", "ray")
RETRIES = 1  # a unit whose worker died is run once more, then recorded as an error


def default_jobs() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_jobs(jobs) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs = {jobs!r}: expected an integer ≥ 1 (worker processes; 1 runs serially)")
    return jobs


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def dead_worker_result(unit, reason: str):
    """Error records for every policy of ``unit`` whose worker died ``RETRIES + 1`` times."""
    from sim.stages import Sent, make_records
    from sim.worker import UnitResult

    err = RuntimeError(f"worker died {RETRIES + 1} times running this unit ({reason})")
    return UnitResult(unit, records=make_records(unit, [Sent(error=err) for _ in unit.scenario.policies]))


# -- serial ------------------------------------------------------------------------------
def _chunks(units: list, batch: int) -> list[list]:
    return [units[i:i + batch] for i in range(0, len(units), batch)]


def _serial(units, source: str, lpips, batch: int):
    from sim.worker import Worker

    worker = Worker(source, lpips)
    for chunk in _chunks(units, batch):
        yield from worker.run_batch(chunk)


# -- local process pool ------------------------------------------------------------------
_WORKER = None


def _watch_parent(parent: int) -> None:
    """End this worker when its parent is gone (a killed parent must not leave workers behind)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(source: str, lpips: bool, threads: int | None, parent: int) -> None:
    global _WORKER
    from sim.worker import Worker

    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    _set_threads(threads)
    _WORKER = Worker(source, lpips)


def _run_units(units):
    return _WORKER.run_batch(units)


def _start_method(threads: int | None) -> str:
    """``fork`` where it is safe, ``spawn`` elsewhere.

    A forked worker starts with this process's imports (torch, diffusers: seconds per worker
    otherwise); this process runs no model, and with one torch thread it has never opened an
    OpenMP team that a fork would leave broken. With more threads, or without ``fork``, workers
    start fresh (``spawn``).
    """
    import multiprocessing

    if threads == 1 and "fork" in multiprocessing.get_all_start_methods():
        import sim.complement.models  # noqa: F401  (the workers' heavy imports, done once here)
        import sim.worker  # noqa: F401

        return "fork"
    return "spawn"


def _pool(jobs: int, source: str, lpips: bool, threads: int | None) -> ProcessPoolExecutor:
    import multiprocessing

    ctx = multiprocessing.get_context(_start_method(threads))
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                               initargs=(source, lpips, threads, os.getpid()))


def _local(units, jobs: int, source: str, lpips: bool, threads: int | None, batch: int):
    """Chunks of ``batch`` units through a pool of ``jobs`` processes, at most ``2 × jobs`` chunks in flight."""
    todo = list(enumerate(_chunks(units, batch)))[::-1]   # popped from the end: run order
    tries = {i: 0 for i, _ in todo}
    jobs = min(jobs, len(todo))
    pool = _pool(jobs, source, lpips, threads)
    running: dict = {}
    try:
        while todo or running:
            while todo and len(running) < 2 * jobs:
                i, chunk = todo.pop()
                running[pool.submit(_run_units, chunk)] = (i, chunk)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            lost = []
            for fut in done:
                item = running.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    lost.append(item)
                    continue
                yield from results
            if lost:  # every unit still running went down with the pool: retry them in a new one
                lost += running.values()
                running.clear()
                for i, chunk in lost:
                    tries[i] += 1
                    if tries[i] > RETRIES:
                        yield from (dead_worker_result(unit, "its process pool broke") for unit in chunk)
                    else:
                        todo.append((i, chunk))
                todo.sort(key=lambda item: -item[0])
                log.warning("a worker process died; %d unit(s) to go in a new pool", len(todo))
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _pool(jobs, source, lpips, threads)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def unit_results(units: list, *, executor: str = "local", jobs: int = 1, source: str = "<scenario>",
                 lpips=None, threads: int | None = 1, ray_address: str | None = None, batch: int = 1):
    """Run ``units``; yields a :class:`sim.worker.UnitResult` per unit as each finishes.

    ``executor``: ``serial``, ``local`` (``jobs`` = 1 runs serially in this process) or ``ray``;
    ``lpips``: the parent's LPIPS model (the serial worker uses it; other workers load their own)
    or None (not scored);
    ``threads``: torch threads per worker (the serial executor leaves this process's setting
    to the caller); ``ray_address``: an existing Ray cluster to join (``ray`` only); ``batch``: units
    per worker call, their repairs batched together (:meth:`sim.worker.Worker.run_batch`).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor = {executor!r}: expected one of {', '.join(EXECUTORS)}")
    check_jobs(jobs)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--batch = {batch!r}: expected an integer ≥ 1 (units per worker call)")
    if ray_address is not None and executor != "ray":
        raise ConfigError(f"--ray-address = {ray_address!r}: only with --executor ray")
    if executor == "ray":
        from sim.executor_ray import ray_results

        return ray_results(units, jobs=jobs, source=source, lpips=lpips is not None, threads=threads,
                           address=ray_address, batch=batch)
    if executor == "serial" or jobs == 1 or len(units) <= 1:
        return _serial(units, source, lpips if lpips is not None else False, batch)
    return _local(units, jobs, source, lpips is not None, threads, batch)
