"""The ``ray`` executor: same records as the serial run, a dead actor's unit retried once then an
error record, and one-line errors for a missing ``ray`` package and an address nothing answers at."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from sim.errors import ConfigError, LatentcastError
from sim.executors import unit_results
from sim.results import read_records
from sim.runner import run_scenario
from sim.scenario import load_scenario
from sim.units import plan_units

from helpers import write_tiny_scenario

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("no_lpips")


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    """2 sweep points × 2 images (32 × 32) × 3 policies on a tiny random codec: 4 units."""
    return write_tiny_scenario(tmp_path_factory.mktemp("ray-scenario"))


def records_without_wall(path: Path) -> set[str]:
    return {json.dumps({k: v for k, v in r.items() if k != "wall"}, sort_keys=True) for r in read_records(path)}


def test_ray_run_gives_the_serial_records_and_summary(scenario_file, tmp_path):
    serial, distributed = tmp_path / "serial", tmp_path / "ray"
    run_scenario(load_scenario(scenario_file), serial, executor="serial")
    rep = run_scenario(load_scenario(scenario_file), distributed, jobs=2, executor="ray")
    assert rep.written == 12 and rep.errors == 0
    assert not ray.is_initialized()  # the local Ray started for the run is shut down
    assert records_without_wall(distributed / "results.jsonl") == records_without_wall(serial / "results.jsonl")
    assert (distributed / "summary.csv").read_bytes() == (serial / "summary.csv").read_bytes()


@pytest.fixture(scope="module")
def shared_ray():
    """One local Ray for the tests with stand-in workers (ray_results uses it and leaves it up)."""
    import logging

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def dying_worker(marker: Path):
    """A stand-in for :class:`sim.worker.Worker` (no models): repeat 1 kills its actor's process
    every time, repeat 2 only the first time (``marker`` remembers it across processes)."""

    class Dying:
        def __init__(self, source, lpips):
            pass

        def run(self, unit):
            from sim.worker import UnitResult

            if unit.repeat == 2 and not marker.exists():
                marker.touch()
                os._exit(1)
            if unit.repeat == 1:
                os._exit(1)
            return UnitResult(unit, records=[{"key": [unit.point_id, unit.repeat, unit.image, pol.name]}
                                             for pol in unit.scenario.policies])

        def run_batch(self, units):
            return [self.run(u) for u in units]

    return Dying


@pytest.fixture
def six_units(scenario_file, tmp_path) -> list:
    """Six units of one image (repeats 0–5), no sweep."""
    data = yaml.safe_load(scenario_file.read_text())
    del data["sweep"]
    data.update(images={"names": ["astronaut"], "size": 32}, channel={"kind": "bernoulli", "loss": 0.1}, repeats=6)
    (tmp_path / "six.yaml").write_text(yaml.safe_dump(data))
    units = plan_units(load_scenario(tmp_path / "six.yaml"), lambda images: [n for n, _ in images.items()])
    assert [u.repeat for u in units] == [0, 1, 2, 3, 4, 5]
    return units


def test_a_dead_actors_unit_is_retried_once_then_recorded_as_an_error(shared_ray, six_units, tmp_path,
                                                                      monkeypatch, caplog):
    marker = tmp_path / "died-once"
    monkeypatch.setattr("sim.worker.Worker", dying_worker(marker))
    results = list(unit_results(six_units, executor="ray", jobs=2))
    assert ray.is_initialized()  # a Ray it did not start is left up
    assert sorted(r.unit.repeat for r in results) == [0, 1, 2, 3, 4, 5]
    by_repeat = {r.unit.repeat: r.records for r in results}
    assert marker.exists()
    for repeat, records in by_repeat.items():
        assert len(records) == 3
        if repeat == 1:  # died twice: an error record per policy, the run went on
            assert all(re.match(r"RuntimeError: worker died 2 times running this unit \(its Ray actor died: "
                                r"pid \d+ on \S+: .+\)$", r["error"]) for r in records), records
        else:            # died once (repeat 2), or was in flight on an actor that died: the retry ran it
            assert all("error" not in r for r in records), (repeat, records)
    assert sum("a Ray actor died" in m for m in caplog.messages) == 3


def test_an_actor_that_cannot_start_ends_the_run_with_one_line(shared_ray, six_units, monkeypatch):
    class Broken:
        def __init__(self, source, lpips):
            raise RuntimeError("no weights here")

    monkeypatch.setattr("sim.worker.Worker", Broken)
    with pytest.raises(LatentcastError) as err:
        list(unit_results(six_units, executor="ray", jobs=2))
    assert str(err.value) == ("--executor ray: a worker actor could not start (its __init__ raised RuntimeError: "
                              "no weights here)")


def test_missing_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        unit_results([object()], executor="ray", jobs=1)
    assert str(err.value) == ("--executor ray: the ray package is not installed; pip install 'latentcast[ray]' "
                              "(or use --executor local)")


def test_an_address_nothing_answers_at_is_one_line_within_seconds():
    # A fresh process, as the CLI's: Ray reads its connect limits when `ray` is first imported in a process.
    code = ("import sim.executor_ray as er\n"
            "er.CONNECT_TIMEOUT_S = 1\n"
            "from sim.errors import ConfigError\n"
            "try:\n"
            "    next(er.ray_results([None], jobs=1, source='x', lpips=False, threads=1, address='127.0.0.1:1'))\n"
            "except ConfigError as err:\n"
            "    print('ConfigError:', err)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert time.perf_counter() - t0 < 30
    lines = [x for x in proc.stdout.splitlines() if x.startswith("ConfigError:")]
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    assert lines[0].startswith("ConfigError: --ray-address = '127.0.0.1:1': no Ray cluster answers there (")
    assert "\n" not in lines[0]
