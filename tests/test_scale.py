"""Scale-out: units and seeds from values, executors, shards + merge, the run's lock, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.errors import ConfigError, InputError
from sim.merge import merge_runs
from sim.results import latest_records, read_records, record_line
from sim.runner import run_scenario
from sim.scenario import load_scenario
from sim.units import canonical_value, parse_shard, point_id, shard_units, transmission_rng

from helpers import write_tiny_scenario

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("no_lpips")


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    """3 loss rates × 2 repeats × 2 images: 12 units of 3 policies."""
    return write_tiny_scenario(tmp_path_factory.mktemp("scale"), "scale", sweep={"channel.loss": [0.0, 0.1, 0.3]},
                               repeats=2)


@pytest.fixture(scope="module")
def serial(scenario_file, tmp_path_factory) -> Path:
    """One serial run (``jobs=1``): the reference every other split is compared with."""
    out = tmp_path_factory.mktemp("serial") / "out"
    rep = run_scenario(load_scenario(scenario_file), out, jobs=1)
    assert rep.total == rep.written == 3 * 2 * 2 * 3 and rep.errors == 0
    return out


def record_set(out: Path) -> set[str]:
    return {record_line({k: v for k, v in r.items() if k != "wall"}) for r in read_records(out / "results.jsonl")}


def test_point_id_is_canonical_and_seeds_come_from_values():
    assert point_id({}) == "-"
    assert point_id({"channel.loss": 0.2, "a.b": [1, 2.0]}) == "a.b=[1, 2], channel.loss=0.2"
    assert point_id({"channel.loss": 0}) == point_id({"channel.loss": 0.0}) == "channel.loss=0"
    assert canonical_value({"kind": "bsc", "ber": 1e-3}) == {"kind": "bsc", "ber": 0.001}
    a = transmission_rng(5, "channel.loss=0.2", 0, "coffee").random()
    assert a == transmission_rng(5, "channel.loss=0.2", 0, "coffee").random()
    others = [transmission_rng(6, "channel.loss=0.2", 0, "coffee"), transmission_rng(5, "channel.loss=0.1", 0, "coffee"),
              transmission_rng(5, "channel.loss=0.2", 1, "coffee"), transmission_rng(5, "channel.loss=0.2", 0, "chelsea")]
    assert all(g.random() != a for g in others)


def test_shard_parsing_and_selection():
    assert parse_shard(None) is None and parse_shard("2/3") == (2, 3)
    for bad in ("3/2", "0/2", "x", "1/0", "1-2"):
        with pytest.raises(ConfigError, match=r"^--shard = .*expected I/N with 1 ≤ I ≤ N"):
            parse_shard(bad)
    units = list(range(10))
    parts = [shard_units(units, (i, 3)) for i in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]] and shard_units(units, None) == units


def test_jobs_give_the_same_records_and_summary(scenario_file, serial, tmp_path):
    for jobs in (2, 4):
        out = tmp_path / f"jobs{jobs}"
        rep = run_scenario(load_scenario(scenario_file), out, jobs=jobs)
        assert rep.written == 36 and rep.errors == 0
        assert record_set(out) == record_set(serial)
        assert (out / "summary.csv").read_bytes() == (serial / "summary.csv").read_bytes()


def test_shards_and_merge_equal_one_run(scenario_file, serial, tmp_path):
    shards = []
    for i in (1, 2, 3):
        out = tmp_path / f"shard{i}"
        rep = run_scenario(load_scenario(scenario_file), out, jobs=1, shard=(i, 3))
        assert rep.total == 12
        shards.append(out)
    assert merge_runs(tmp_path / "merged", shards) == {"records": 36, "errors": 0, "shards": 3}
    assert record_set(tmp_path / "merged") == record_set(serial)
    assert (tmp_path / "merged" / "summary.csv").read_bytes() == (serial / "summary.csv").read_bytes()
    # concatenated shards are one run too: no key repeats, report and summary agree
    cat = b"".join((s / "results.jsonl").read_bytes() for s in shards)
    (tmp_path / "cat.jsonl").write_bytes(cat)
    assert len(latest_records(read_records(tmp_path / "cat.jsonl"))) == 36


def test_merge_refuses_other_scenarios_and_disagreeing_records(scenario_file, serial, tmp_path):
    other = tmp_path / "seed6"
    run_scenario(load_scenario(scenario_file, overrides=["sweep={channel.loss: [0.3]}"], seed=6), other, jobs=1)
    with pytest.raises(ConfigError, match=r"^merge: .*scenario.resolved.yaml differs from .*cannot be merged$"):
        merge_runs(tmp_path / "m1", [serial, other])
    # the same scenario file with a record whose measurement was changed: refused, one line
    forged = tmp_path / "forged"
    forged.mkdir()
    for name in ("scenario.resolved.yaml", "provenance.json"):
        (forged / name).write_bytes((serial / name).read_bytes())
    recs = read_records(serial / "results.jsonl")
    recs[0]["psnr"] = 1.0
    (forged / "results.jsonl").write_text(record_line(recs[0]) + "\n")
    with pytest.raises(InputError, match=r"^merge: two records of key .* disagree"):
        merge_runs(tmp_path / "m2", [serial, forged])


def test_dropping_a_sweep_value_leaves_the_other_records_unchanged(scenario_file, serial, tmp_path):
    out = tmp_path / "drop"
    run_scenario(load_scenario(scenario_file, overrides=["sweep={channel.loss: [0.3, 0.0]}"]), out, jobs=1)
    kept = record_set(out)
    assert len(kept) == 24 and kept < record_set(serial)


def test_a_second_run_on_one_out_is_refused(scenario_file, tmp_path):
    import fcntl

    out = tmp_path / "locked"
    out.mkdir()
    with open(out / ".lock", "a+") as fh:  # a live run holds the lock
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("12345\n")
        fh.flush()
        with pytest.raises(ConfigError, match=r"^--out .*: another latentcast run \(pid 12345\) is writing there"):
            run_scenario(load_scenario(scenario_file), out, jobs=1)
    # a stale lock file (its process gone) never blocks
    assert run_scenario(load_scenario(scenario_file, overrides=["repeats=1"]), out, jobs=1).errors == 0


def test_bad_jobs_and_executor_are_one_line(scenario_file, tmp_path):
    with pytest.raises(ConfigError, match=r"^--jobs = 0: expected an integer ≥ 1"):
        run_scenario(load_scenario(scenario_file), tmp_path / "a", jobs=0)
    with pytest.raises(ConfigError, match=r"^--executor = 'gpu': expected one of serial, local, ray$"):
        run_scenario(load_scenario(scenario_file), tmp_path / "b", jobs=2, executor="gpu")
    with pytest.raises(ConfigError, match=r"^--out .*: is a file"):
        (tmp_path / "f").write_text("x")
        run_scenario(load_scenario(scenario_file), tmp_path / "f", jobs=1)


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "sim", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _workers(pid: int) -> list[int]:
    """The pool's worker processes of run ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            found.append(child)
    return found


def _wait_for(cond, timeout=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_kills_lose_nothing_and_resume_equals_one_run(scenario_file, tmp_path):
    """kill -9 of a worker (its units retried), then of the parent mid-run; then resume."""
    out, ref = tmp_path / "killed", tmp_path / "ref"
    # 24 px: below LPIPS's smallest size, so the CLI and this process score alike; 240 units: seconds
    small = ["images.size=24", "repeats=40"]
    run_scenario(load_scenario(scenario_file, overrides=small), ref, jobs=1)
    args = ["run", str(scenario_file), "--out", str(out), "--jobs", "2", "--no-progress",
            "--set", small[0], "--set", small[1]]
    proc = _cli(*args)
    assert _wait_for(lambda: len(_workers(proc.pid)) == 2 and (out / "results.jsonl").exists()
                     and (out / "results.jsonl").stat().st_size > 0)
    os.kill(_workers(proc.pid)[0], signal.SIGKILL)
    n = len(read_records(out / "results.jsonl"))
    assert _wait_for(lambda: len(read_records(out / "results.jsonl")) > n + 3)
    assert proc.poll() is None, "the run ended before the kill: make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recs = read_records(out / "results.jsonl", repair=True)
    keys = [json.dumps(r["key"]) for r in recs if "error" not in r]
    assert len(keys) == len(set(keys))                    # no duplicates
    assert _wait_for(lambda: not _workers(proc.pid), 10)  # the workers ended with their parent
    done = subprocess.run([sys.executable, "-m", "sim", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = read_records(out / "results.jsonl")
    assert len(final) > len(recs) and len(recs) < 720  # the resumed run had work left
    assert {json.dumps(r["key"]) for r in recs if "error" not in r} <= {json.dumps(r["key"]) for r in final}
    assert record_set(out) == record_set(ref)
    assert (out / "summary.csv").read_bytes() == (ref / "summary.csv").read_bytes()


def test_batched_units_equal_unbatched_within_float_tolerance(scenario_file, tiny_complement_dir, tmp_path):
    """``batch=3``: the learned method's repairs of three units in one model call per method."""
    policies = ["resend", {"kind": "complement", "method": "learned",
                           "method_options": {"weights": str(tiny_complement_dir), "steps": 1}},
                {"name": "interp", "kind": "complement", "method": "interp"}]
    learned = "policies=" + json.dumps(policies)
    a, b = tmp_path / "one", tmp_path / "three"
    run_scenario(load_scenario(scenario_file, overrides=[learned]), a, jobs=1)
    rep = run_scenario(load_scenario(scenario_file, overrides=[learned]), b, jobs=1, batch=3)
    assert rep.errors == 0 and rep.written == 36
    one = {json.dumps(r["key"]): r for r in read_records(a / "results.jsonl")}
    three = {json.dumps(r["key"]): r for r in read_records(b / "results.jsonl")}
    assert one.keys() == three.keys()
    repaired = 0
    for k, r in one.items():
        s = three[k]
        assert {f for f in r if f != "wall"} == {f for f in s if f != "wall"}
        for f, v in r.items():
            if isinstance(v, float):
                assert s[f] == pytest.approx(v, rel=1e-4, abs=1e-5), (k, f)
            elif f != "wall":
                assert s[f] == v, (k, f)
        repaired += r["complemented"] and r["missing_share"] > 0
    assert repaired > 3
    with pytest.raises(ConfigError, match=r"^--batch = 0: expected an integer ≥ 1"):
        run_scenario(load_scenario(scenario_file), tmp_path / "c", jobs=1, batch=0)


def test_results_keyed_by_position_are_refused(scenario_file, serial, tmp_path):
    """Records of an older latentcast (key [point index, …]) would double-count beside new ones."""
    out = tmp_path / "old"
    out.mkdir()
    (out / "scenario.resolved.yaml").write_bytes((serial / "scenario.resolved.yaml").read_bytes())
    rec = {**read_records(serial / "results.jsonl")[0], "point": 0}
    rec["key"] = [0, *rec["key"][1:]]
    (out / "results.jsonl").write_text(record_line(rec) + "\n")
    with pytest.raises(ConfigError, match=r"holds results of an older latentcast \(records keyed by sweep position"):
        run_scenario(load_scenario(scenario_file), out, jobs=1)


def test_half_precision_codec_needs_cuda(scenario_file):
    from sim.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"codec.dtype = 'float16': half precision needs codec.device: cuda"):
        load_scenario(scenario_file, overrides=["codec.dtype=float16"])
    with pytest.raises(ScenarioError, match=r"codec.dtype = 'half': expected one of float32, float16, bfloat16"):
        load_scenario(scenario_file, overrides=["codec.dtype=half"])
