"""The ``ray`` executor: a run's work units (:mod:`sim.units`) as Ray tasks on actors that hold the models.

``jobs`` actors each wrap one :class:`sim.worker.Worker` (models loaded once per actor) and run
whole units; the parent feeds them through a bounded window (:data:`WINDOW` units in flight per
actor, :func:`ray.wait` for the next to finish), so however many units a run has, only
``WINDOW × jobs`` of them are submitted and their results in flight at a time. Where the cluster has GPUs, each actor takes one (``num_gpus=1``; at most one actor per
GPU). An actor that dies (killed, out of memory, its node gone) is replaced by a fresh one, which
runs the units it held once more; a unit whose actor died twice comes back as error records
(:func:`sim.executors.dead_worker_result`) and the run goes on.

Without an address a local Ray is started for the run (and shut down after it); with one, the
run joins that cluster (``ray start --head`` / ``ray start --address=...``; ``auto``: the
cluster started on this machine; ``ray://head:10001``: Ray Client). Ray is an optional extra:
``pip install 'latentcast[ray]'``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from contextlib import contextmanager

from sim.errors import ConfigError, LatentcastError

__all__ = ["CONNECT_TIMEOUT_S", "WINDOW", "ray_results"]

log = logging.getLogger(__name__)

WINDOW = 2             # units in flight per actor: one running, one queued behind it
CONNECT_TIMEOUT_S = 5  # per step of joining a cluster (GCS connect, cluster id, Ray Client attempt)


class UnitActor:
    """One :class:`sim.worker.Worker` in a Ray actor process (wrapped with ``ray.remote`` at run time).

    ``worker_cls`` is the driver's ``sim.worker.Worker`` (shipped by reference; a test may
    ship a stand-in); ``threads``: ``torch.set_num_threads`` in this actor, when given.
    """

    def __init__(self, worker_cls, source: str, lpips: bool, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.worker = worker_cls(source, lpips)

    def run(self, units: list) -> list:
        return self.worker.run_batch(units)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray: the ray package is not installed; pip install 'latentcast[ray]' "
                          "(or use --executor local)") from None
    return ray


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0].strip() if text else ''}".rstrip(": ")


def _death(err) -> str:
    """One line on why an actor died, from Ray's multi-line :class:`~ray.exceptions.RayActorError`."""
    text = str(err)
    if err.actor_init_failed:  # the creation task's traceback: its last line names the exception
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        return f"its __init__ raised {lines[-1] if lines else '?'}"
    pid, ip = re.search(r"\bpid: (\d+)", text), re.search(r"\bip: (\S+)", text)
    detail = re.search(r"Worker exit detail: ([^.]*)", text)
    where = " ".join(([f"pid {pid[1]}"] if pid else []) + ([f"on {ip[1]}"] if ip else []))
    why = "its node was preempted" if err.preempted else detail[1].strip() if detail else _first_line(err)
    return f"{where}: {why}" if where else why


@contextmanager
def _connect_limits():
    """Ray's own settings that bound joining a cluster: one connect attempt, :data:`CONNECT_TIMEOUT_S`
    per step (instead of 20 attempts of up to 30 s); what the user set in the environment wins.

    Ray reads the GCS timeouts when ``ray`` is first imported in a process and the Ray Client
    ones when it first uses Ray Client, so they apply in full only where this module is the first
    to import ``ray`` (as in ``latentcast run``); elsewhere the single attempt still bounds it.
    """
    limits = {
        "RAY_gcs_rpc_server_connect_timeout_s": CONNECT_TIMEOUT_S,
        "RAY_py_gcs_connect_timeout_s": CONNECT_TIMEOUT_S,
        "RAY_gcs_server_port_wait_time_s": 1,         # the number of 1-s-spaced connect attempts
        "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": CONNECT_TIMEOUT_S,
        "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": CONNECT_TIMEOUT_S,
    }
    added = [k for k in limits if k not in os.environ]
    os.environ.update({k: str(int(limits[k])) for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _start(ray, jobs: int, address: str | None) -> bool:
    """Connect this process to Ray; True when this call did (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if address is None:
        # "local": a Ray of its own, even where `ray start` runs one on this machine or RAY_ADDRESS is set
        ray.init(address="local", num_cpus=jobs, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        return True
    try:
        with _connect_limits():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError, OSError) as err:
        ray.shutdown()  # whatever a half-made connection left
        if _refused_token(err):
            raise ConfigError(f"--ray-address = {address!r}: the Ray cluster there refused this machine's "
                              f"authentication token; set RAY_AUTH_MODE=token and give this machine the head's "
                              f"token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
        raise ConfigError(f"--ray-address = {address!r}: no Ray cluster answers there ({_first_line(err)}); "
                          f"start one with `ray start --head`, or leave --ray-address out for a local Ray") from None
    return True


def _refused_token(err: BaseException) -> bool:
    """Whether a failed join failed on Ray's token authentication (somewhere in the cause chain)."""
    while err is not None:
        if "InvalidAuthToken" in str(err) or err.__class__.__name__ == "AuthenticationError":
            return True
        err = err.__cause__ or err.__context__
    return False


def _actor_count(ray, jobs: int, units: int) -> tuple[int, int]:
    """(actors, GPUs per actor): ``jobs`` actors, at most one per unit, per CPU and, on a cluster
    with GPUs, per GPU."""
    res = ray.cluster_resources()
    n = min(jobs, units)
    gpus = int(res.get("GPU", 0))
    if gpus >= 1:
        if n > gpus:
            log.warning("--jobs %d: the Ray cluster has %d GPU(s); running %d actors, one per GPU", jobs, gpus, gpus)
        return min(n, gpus), 1
    cpus = int(res.get("CPU", 0))
    if 1 <= cpus < n:
        log.warning("--jobs %d: the Ray cluster has %d CPU(s); running %d actors", jobs, cpus, cpus)
        n = cpus
    return n, 0


def ray_results(units, *, jobs: int, source: str, lpips: bool, threads: int | None, address: str | None,
                batch: int = 1):
    """Run ``units`` on Ray; yields a :class:`sim.worker.UnitResult` per unit as each finishes.

    Parameters
    ----------
    units : list of sim.units.Unit
    jobs : int — actors (one per GPU at most where the cluster has GPUs)
    source : str — the scenario file, named in error lines
    lpips : bool — score LPIPS
    threads : int or None — ``torch.set_num_threads`` in each actor; None or 0 keeps torch's default
    address : str or None — a running cluster to join; None starts a local Ray with ``jobs`` CPUs
        for the run. A process already connected to Ray (``ray.init`` called before) uses that.
    batch : int — units per actor call, their repairs batched (:meth:`sim.worker.Worker.run_batch`);
        the window, retries and error records then count such chunks

    Raises
    ------
    ConfigError
        Ray is not installed, or nothing answers at ``address`` (within seconds).
    """
    if address is None:
        ray = _import_ray()
    else:
        with _connect_limits():  # Ray reads most of them when it is imported
            ray = _import_ray()
    units = list(units)
    if not units:
        return iter(())
    chunks = [units[i:i + batch] for i in range(0, len(units), batch)]
    return _results(ray, chunks, jobs, source, lpips, threads, address)


def _results(ray, units: list, jobs: int, source: str, lpips: bool, threads, address):
    """``units``: chunks of units, one actor call each."""
    from ray.exceptions import RayActorError

    from sim.executors import RETRIES, dead_worker_result
    from sim.worker import Worker

    started = _start(ray, jobs, address)
    actors: list = []
    try:
        n, gpus = _actor_count(ray, jobs, len(units))
        remote = ray.remote(UnitActor).options(num_cpus=1, num_gpus=gpus, max_restarts=0, max_task_retries=0)

        def new_actor():
            return remote.remote(Worker, source, lpips, threads)

        actors = [new_actor() for _ in range(n)]
        load = [0] * n                      # units in flight on each slot's current actor
        retry = [deque() for _ in range(n)]  # units of a slot's dead actor, to run once more
        solo = [False] * n                  # a retried unit in flight: it runs alone on its fresh actor
        running: dict = {}                  # ObjectRef → (slot, actor, unit index, unit)
        todo = deque(enumerate(units))
        tries: dict = {}

        def submit(slot: int, i: int, unit) -> None:
            running[actors[slot].run.remote(unit)] = (slot, actors[slot], i, unit)
            load[slot] += 1

        while todo or running or any(retry):
            for slot in range(n):
                if retry[slot] and load[slot] == 0:
                    submit(slot, *retry[slot].popleft())
                    solo[slot] = True
            while todo:
                free = [s for s in range(n) if not (retry[s] or solo[s]) and load[s] < WINDOW]
                if not free:
                    break
                submit(min(free, key=load.__getitem__), *todo.popleft())
            (ref,), _ = ray.wait(list(running), num_returns=1)
            slot, actor, i, unit = running.pop(ref)
            current = actor is actors[slot]
            if current:
                load[slot] -= 1
                solo[slot] = False
            try:
                result = ray.get(ref)
            except RayActorError as err:
                reason = _death(err)
                if err.actor_init_failed:  # the same on every actor: the run cannot go on
                    raise LatentcastError(f"--executor ray: a worker actor could not start ({reason})") from None
                if current:  # the first of its units to come back: replace it
                    log.warning("a Ray actor died (%s); its units run once more on a fresh one", reason)
                    ray.kill(actor, no_restart=True)
                    actors[slot] = new_actor()
                    load[slot] = 0
                tries[i] = tries.get(i, 0) + 1
                if tries[i] > RETRIES:
                    yield from (dead_worker_result(u, f"its Ray actor died: {reason}") for u in unit)
                else:
                    retry[slot].append((i, unit))
                continue
            del ref
            yield from result
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as err:  # noqa: BLE001 - already gone, or Ray is shutting down
                log.debug("ray.kill: %s", err)
        if started:
            ray.shutdown()
