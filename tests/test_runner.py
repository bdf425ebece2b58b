"""Runner: determinism, resume after Ctrl-C, one failing image, outputs, and the summary maths."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

import sim.engine as engine
from sim.cli import main
from sim.errors import ConfigError, InputError
from sim.results import read_records, record_line, summarize, write_summary
from sim.runner import run_scenario
from sim.units import transmission_rng
from sim.scenario import load_scenario

from helpers import FakeLPIPS, random_tiny_autoencoder, write_tiny_scenario


pytestmark = pytest.mark.usefixtures("no_lpips")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny random codec (widths 8, 8, 8) saved the way the shipped weights are."""
    from sim.codec.tiny import save_tiny

    path = tmp_path_factory.mktemp("codec") / "tiny_random.safetensors"
    save_tiny(random_tiny_autoencoder(), path, {"note": "random, for tests"})
    return path


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory, weights) -> Path:
    return write_tiny_scenario(tmp_path_factory.mktemp("scenario"), weights=weights)


@pytest.fixture(scope="module")
def reference(scenario_file, tmp_path_factory) -> Path:
    """The output folder of one uninterrupted run of ``scenario_file`` (do not modify)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    rep = run_scenario(load_scenario(scenario_file), out)
    assert rep.total == rep.written == 2 * 2 * 3 and rep.errors == 0
    return out


def copy_of(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def lines_without_wall(path: Path) -> list[str]:
    return [record_line({k: v for k, v in json.loads(line).items() if k != "wall"})
            for line in path.read_text().splitlines()]


def run(path, out, **kw):
    return run_scenario(load_scenario(path, **kw), out)


def example_files(out: Path) -> dict:
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted((out / "examples").rglob("*.png"))}


def test_records_are_complete_and_deterministic(scenario_file, reference, tmp_path):
    a, b = reference, tmp_path / "b"
    run(scenario_file, b)
    assert lines_without_wall(a / "results.jsonl") == lines_without_wall(b / "results.jsonl")
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()   # no wall clock in it
    timings = [row["metric"] for row in csv.DictReader(open(a / "timings.csv"))]
    assert timings and all(m.startswith("wall.") for m in timings) and "wall.decode_s" in timings
    assert "wall." not in (a / "summary.csv").read_text()
    recs = read_records(a / "results.jsonl")
    r = recs[0]
    for field in ("key", "point", "repeat", "image", "policy", "policy_kind", "sweep", "seed",
                  "packets_sent", "packets_lost", "packets_retransmitted", "bytes_forward", "bytes_reverse",
                  "rounds", "time_to_image_s", "missing_share", "psnr", "ssim", "ms_ssim",
                  "psnr_lossfree", "ssim_lossfree", "ms_ssim_lossfree", "loss_runs"):
        assert field in r, field
    assert not any("lpips" in x or "lpips_lossfree" in x for x in recs)  # LPIPS unavailable: left out
    assert set(r["wall"]) >= {"transmit_s", "decode_s", "compute_s", "metrics_s"}
    assert [x["key"] for x in recs] == [[p, 0, im, pol] for p in ("channel.loss=0", "channel.loss=0.3")
                                        for im in ("astronaut", "coffee") for pol in ("resend", "complement", "none")]
    assert [x["point"] for x in recs] == [x["key"][0] for x in recs]
    assert recs[-1]["sweep"] == {"channel.loss": 0.3}
    # loss-free point: every policy reproduces the loss-free decode (null = infinite PSNR)
    for x in recs[:6]:
        assert x["psnr_lossfree"] is None and x["ssim_lossfree"] == 1.0 and x["missing_share"] == 0.0
    # the lossy point lost packets; resend repaired every loss by sending again, "none" did not
    lossy = recs[6:]
    assert any(x["packets_lost"] > 0 for x in lossy)
    assert all(x["missing_share"] == 0.0 for x in lossy if x["policy"] == "resend")
    assert any(x["missing_share"] > 0.0 for x in lossy if x["policy"] == "none")
    assert (sum(x["packets_retransmitted"] for x in lossy if x["policy"] == "resend")
            > sum(x["packets_retransmitted"] for x in lossy if x["policy"] == "none"))
    assert (a / "scenario.resolved.yaml").read_text() == load_scenario(scenario_file).to_yaml()
    prov = json.loads((a / "provenance.json").read_text())["runs"][0]
    assert prov["seed"] == 5 and prov["codecs"][0]["training"] == {"note": "random, for tests"}
    assert "numpy" in prov["packages"] and "hardware" in prov
    # example images of repeat 0 of the first image, every point (artifacts: not in the records)
    assert sorted(example_files(a)) == sorted(f"examples/point{p:04d}/astronaut/{f}.png" for p in (0, 1) for f in
                                              ("original", "received", "policy-resend", "policy-complement",
                                               "policy-none"))
    assert example_files(a) == example_files(b)


def test_common_random_numbers_and_seed_changes_results(scenario_file, reference, tmp_path):
    p = "channel.loss=0.3"
    g1, g2 = transmission_rng(5, p, 0, "coffee"), transmission_rng(5, p, 0, "coffee")
    assert g1.random() == g2.random()
    assert transmission_rng(5, p, 0, "coffee").random() != transmission_rng(5, p, 1, "coffee").random()
    run(scenario_file, tmp_path / "b", seed=6)
    assert lines_without_wall(reference / "results.jsonl") != lines_without_wall(tmp_path / "b" / "results.jsonl")
    # first-pass losses are the same for every policy of a group
    recs = read_records(reference / "results.jsonl")
    groups = {}
    for r in recs:
        groups.setdefault((r["point"], r["image"]), set()).add(r["missing_share"] if r["policy"] != "resend"
                                                               else None)
    assert all(len(v - {None}) == 1 for v in groups.values())


def test_interrupt_then_resume_gives_the_uninterrupted_file(scenario_file, reference, tmp_path, monkeypatch):
    ref = reference
    out = tmp_path / "out"
    real = engine.transmit
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside the second group: its first policy's record is not written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "transmit", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(scenario_file, out)
    monkeypatch.setattr(engine, "transmit", real)
    assert len(read_records(out / "results.jsonl")) == 3
    assert (out / "summary.csv").exists()  # written for what finished
    rep = run(scenario_file, out)
    assert rep.skipped == 3 and rep.written == 9
    assert lines_without_wall(out / "results.jsonl") == lines_without_wall(ref / "results.jsonl")
    assert example_files(out) == example_files(ref)  # same files, same bytes
    rep = run(scenario_file, out)  # nothing left to do
    assert rep.written == 0 and rep.skipped == 12


def test_torn_last_line_is_dropped_on_resume(scenario_file, reference, tmp_path):
    out = copy_of(reference, tmp_path / "out")
    full = (out / "results.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:4]) + lines[4][:30])
    rep = run(scenario_file, out)
    assert rep.written == 8
    assert lines_without_wall(out / "results.jsonl") == [record_line({k: v for k, v in json.loads(x).items()
                                                                      if k != "wall"}) for x in lines]


def test_a_failing_image_is_logged_recorded_and_retried(scenario_file, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    real = engine.transmit

    def broken(codec, prep, *, image_id, **kw):
        if image_id == 1:
            raise RuntimeError("boom")
        return real(codec, prep, image_id=image_id, **kw)

    monkeypatch.setattr(engine, "transmit", broken)
    rep = run(scenario_file, out)
    assert rep.errors == 6 and rep.written == 12
    errs = [r for r in read_records(out / "results.jsonl") if "error" in r]
    assert {r["image"] for r in errs} == {"coffee"} and errs[0]["error"] == "RuntimeError: boom"
    assert any("image coffee" in m and "boom" in m for m in caplog.messages)
    assert {r["policy"] for r in summarize(out / "results.jsonl")} == {"resend", "complement", "none"}
    assert all(r["n"] <= 1 for r in summarize(out / "results.jsonl"))
    monkeypatch.setattr(engine, "transmit", real)
    rep = run(scenario_file, out)
    assert rep.errors == 0 and rep.written == 6 and rep.skipped == 6
    assert {r["n"] for r in summarize(out / "results.jsonl") if r["metric"] == "psnr"} == {2}


def test_other_scenario_in_the_same_folder_is_refused(scenario_file, reference, tmp_path):
    out = copy_of(reference, tmp_path / "out")
    with pytest.raises(ConfigError, match="different scenario"):
        run(scenario_file, out, overrides=["link.delay_s=0.5"])


def test_resume_with_other_codec_weights_is_refused_but_a_finished_run_is_not(scenario_file, weights,
                                                                               tmp_path):
    import torch

    from sim.codec.tiny import save_tiny

    codec = tmp_path / "codec.safetensors"
    shutil.copy(weights, codec)
    sc = tmp_path / "sc.yaml"
    data = yaml.safe_load(scenario_file.read_text())
    sc.write_text(yaml.safe_dump({**data, "codec": {"weights": str(codec)}}))
    out = tmp_path / "out"
    assert run(sc, out).written == 12
    run(sc, out)  # finished: nothing to add, nothing checked beyond the scenario
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:6]))
    other = random_tiny_autoencoder()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    save_tiny(other, codec, {"note": "retrained in place"})
    with pytest.raises(ConfigError, match=r"its 6 record\(s\) were made with other model weights \(codec tiny "):
        run(sc, out)
    assert len(read_records(out / "results.jsonl")) == 6  # nothing lost
    shutil.copy(weights, codec)  # the weights of the records: resumes
    assert run(sc, out).written == 6


def test_resume_with_other_complement_weights_is_refused(learned_file, tiny_complement_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_complement_dir, tmp_path / "set")
    data = yaml.safe_load(learned_file.read_text())
    data["policies"] = ["resend", {"kind": "complement", "method": "learned",
                                   "method_options": {"weights": str(folder), "steps": 1}}]
    learned_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert run(learned_file, out).written == 4
    prov = json.loads((out / "provenance.json").read_text())["runs"]
    assert [len(c["sha256"]) for c in prov[0]["complement"]] == [64]
    (out / "results.jsonl").write_text("".join((out / "results.jsonl").read_text().splitlines(True)[:2]))
    null = load_file(folder / "null_embedding.safetensors")
    save_file({k: v + 1e-3 for k, v in null.items()}, folder / "null_embedding.safetensors")
    with pytest.raises(ConfigError, match="made with other model weights \\(complement weights tiny "):
        run(learned_file, out)
    save_file(null, folder / "null_embedding.safetensors")
    assert run(learned_file, out).written == 2


def test_cli_run_writes_outputs_and_summary_regenerates(scenario_file, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["run", str(scenario_file), "--out", str(out), "--set", "sweep.channel.loss=[0.2]",
                 "--seed", "9", "--no-progress", "--jobs", "1"]) == 0
    assert {p.name for p in out.iterdir()} >= {"results.jsonl", "summary.csv", "timings.csv",
                                               "scenario.resolved.yaml", "provenance.json"}
    recs = read_records(out / "results.jsonl")
    assert len(recs) == 6 and all(r["seed"] == 9 and r["sweep"] == {"channel.loss": 0.2} for r in recs)
    before = (out / "summary.csv").read_text()
    write_summary(out / "results.jsonl", tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == before
    header = before.splitlines()[0].split(",")
    assert header[:3] == ["point", "channel.loss", "policy"] and "ci95_low" in header
    assert ",resend,psnr_per_kB," in before and ",none,packet_loss_rate," in before  # derived metrics


def test_cli_bad_image_is_one_line(tmp_path, weights, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"\xff\xd8\xffnot a jpeg")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"images": {"source": "imgs", "size": 32}, "codec": {"weights": str(weights)},
                                    "link": {"rate_bps": 1.0e6, "delay_s": 0.0},
                                    "channel": {"kind": "bernoulli", "loss": 0.1}, "policies": ["none"]}))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jpg" in err[0] and "images.source" in err[0] and str(path) in err[0]


# --------------------------------------------------------------------------- summary maths


def test_summary_against_hand_computation(tmp_path):
    recs = []
    values = {"resend": [30.0, 32.0, 34.0], "none": [20.0, 20.0, None]}
    for pol, vals in values.items():
        for rep, v in enumerate(vals):
            recs.append({"key": [0, rep, "a", pol], "point": 0, "repeat": rep, "image": "a", "policy": pol,
                         "policy_kind": pol, "sweep": {"channel.loss": 0.1}, "seed": 1, "psnr": v,
                         "complemented": pol == "none", "rounds": rep, "wall": {"decode_s": 0.5}})
    recs.append({"key": [0, 2, "a", "resend"], "point": 0, "error": "RuntimeError: x", "policy": "resend"})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(record_line(r) + "\n" for r in recs))
    rows = {(r["policy"], r["metric"]): r for r in summarize(path)}
    assert rows[("resend", "psnr")]["n"] == 3  # a measured record is never superseded by an error of its key
    path.write_text("".join(record_line(r) + "\n" for r in [recs[-1]] + recs[:2] + recs[3:-1]))
    rows = {(r["policy"], r["metric"]): r for r in summarize(path)}
    r = rows[("resend", "psnr")]
    assert r["n"] == 2 and r["mean"] == 31.0  # repeat 2 failed only
    assert r["std"] == pytest.approx(math.sqrt(2.0))
    half = stats.t.ppf(0.975, 1) * math.sqrt(2.0) / math.sqrt(2)
    assert r["ci95"] == pytest.approx(half) and r["ci95_low"] == pytest.approx(31.0 - half)
    n = rows[("none", "psnr")]
    assert n["n"] == 2 and n["n_null"] == 1 and n["mean"] == 20.0 and n["std"] == 0.0 and n["ci95"] == 0.0
    assert rows[("none", "complemented")]["mean"] == 1.0
    assert rows[("none", "rounds")]["mean"] == 1.0
    assert rows[("none", "psnr")]["channel.loss"] == 0.1
    assert not any(m.startswith("wall.") for _, m in rows)                      # deterministic metrics only
    timings = {(r["policy"], r["metric"]): r for r in summarize(path, timings=True)}
    assert set(timings) == {("resend", "wall.decode_s"), ("none", "wall.decode_s")}
    assert timings[("resend", "wall.decode_s")]["mean"] == 0.5 and timings[("resend", "wall.decode_s")]["n"] == 2
    write_summary(path, tmp_path / "s.csv")
    with open(tmp_path / "s.csv") as fh:
        table = list(csv.DictReader(fh))
    row = next(t for t in table if t["policy"] == "none" and t["metric"] == "psnr")
    assert row["mean"] == "20.0" and row["n_null"] == "1"
    with pytest.raises(InputError, match=r"^results: two records of key \[0, 0, \"a\", \"resend\"\] disagree"):
        summarize(recs + [{**recs[0], "psnr": 1.0}])
    one = summarize([{**recs[0], "key": [9]}])
    assert one[0]["n"] == 1 and one[0]["std"] is None


def test_record_line_is_canonical():
    line = record_line({"b": np.float32(0.5), "a": np.int64(3), "c": float("inf"), "d": (1, 2),
                        "e": np.bool_(True), "f": 0.1})
    assert line == '{"a": 3, "b": 0.5, "c": null, "d": [1, 2], "e": true, "f": 0.1}'


def test_missing_images_folder_is_an_input_error(tmp_path):
    from sim.runner import load_images
    from sim.scenario import ImagesConfig

    with pytest.raises(InputError, match="images.source"):
        load_images(ImagesConfig(str(tmp_path / "nope"), None, 32), "s.yaml")


def test_sweeping_image_size_and_quantizer(scenario_file, tmp_path):
    rep = run(scenario_file, tmp_path / "o", overrides=[
        "policies=[none]", "images.names=[coffee]", "packetizer.tile=4", "channel.loss=0.2",
        "sweep.images.size=[32, 48]", "sweep.codec.quantizer.bits=[3, 8]"])
    assert rep.written == 4 and rep.errors == 0
    recs = read_records(tmp_path / "o" / "results.jsonl")
    assert [r["sweep"] for r in recs] == [{"images.size": s, "codec.quantizer.bits": b}
                                          for s in (32, 48) for b in (3, 8)]
    assert [r["data_packets"] for r in recs] == [1, 1, 4, 4]  # 4 × 4 and 6 × 6 latents, 4 × 4 tiles
    payload = [r["bytes_payload"] for r in recs]
    assert payload[0] < payload[1] and payload[2] < payload[3] and payload[0] < payload[2]


def test_sweeping_a_policy_option(scenario_file, tmp_path):
    rep = run(scenario_file, tmp_path / "o", overrides=[
        "policies=[resend]", "images.names=[astronaut]", "channel.loss=0.5",
        "sweep.policies.0.max_rounds=[1, 8]"])
    assert rep.written == 2 and rep.errors == 0
    one, eight = read_records(tmp_path / "o" / "results.jsonl")
    assert one["sweep"] == {"policies.0.max_rounds": 1} and one["missing_share"] > 0
    assert eight["rounds"] > one["rounds"] and eight["missing_share"] < one["missing_share"]


# ------------------------------------------------------------------------------- LPIPS


def test_lpips_is_loaded_once_and_logged_beside_psnr(scenario_file, reference, tmp_path, monkeypatch, caplog):
    model, loads = FakeLPIPS(), []
    monkeypatch.setattr("sim.lpips.load_lpips", lambda cache_dir=None: loads.append(1) or model)
    rep = run(scenario_file, tmp_path / "o")
    assert rep.errors == 0 and loads == [1]
    recs = read_records(tmp_path / "o" / "results.jsonl")
    assert all(isinstance(r["lpips"], float) and isinstance(r["lpips_lossfree"], float) for r in recs)
    # identical to the loss-free decode (the loss-free point; resend, which repaired every loss): 0 against
    # it, and the loss-free decode's own distance to the original
    for r in recs:
        if r["missing_share"] == 0.0:
            ref = next(x for x in recs if x["image"] == r["image"] and x["point"] == "channel.loss=0")
            assert r["lpips_lossfree"] == 0.0 and r["lpips"] == ref["lpips"] > 0
    assert any(r["lpips_lossfree"] > 0 for r in recs if r["policy"] == "none" and r["missing_share"] > 0)
    # the features of each image and its loss-free decode once, then one batch per unit with new
    # reconstructions (the lossy point: complement and none; resend repaired everything), compared
    # with those two references
    assert model.calls == [("features", 2), ("from", 1, 1)] * 2 + [("features", 2), ("from", 2, 2)] * 2
    assert lines_without_wall(tmp_path / "o" / "results.jsonl") != lines_without_wall(reference / "results.jsonl")
    rows = {(r["point"], r["policy"], r["metric"]) for r in summarize(tmp_path / "o" / "results.jsonl")}
    assert ("channel.loss=0.3", "none", "lpips") in rows and ("channel.loss=0.3", "none", "lpips_lossfree") in rows
    # resuming a run written without LPIPS: said once, and the new records have it
    out = copy_of(reference, tmp_path / "resumed")
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:6]))
    rep = run(scenario_file, out)
    assert rep.written == 6 and loads == [1, 1]
    assert "6 of the 6 records already there have no lpips" in caplog.text
    assert [("lpips" in r) for r in read_records(out / "results.jsonl")] == [False] * 6 + [True] * 6


# -- learned complement methods: built once per run, warmed up once, denoising without loss ----------


@pytest.fixture
def learned_file(tmp_path, weights, tiny_complement_dir) -> Path:
    opts = {"weights": str(tiny_complement_dir), "steps": 1}
    data = {
        "name": "learned", "seed": 5,
        "images": {"names": ["astronaut"], "size": 32},
        "codec": {"weights": str(weights)},
        "packetizer": {"tile": 1},
        "link": {"rate_bps": 1.0e6, "delay_s": 0.01},
        "channel": {"kind": "bernoulli"},
        "policies": ["resend",
                     {"name": "learned", "kind": "complement", "method": "learned", "method_options": opts},
                     {"name": "noedge", "kind": "hybrid", "method": "learned-noedge", "method_options": opts,
                      "max_rounds": 1},
                     {"name": "denoise", "kind": "complement", "method": "learned-denoise",  # fixed start:
                      "method_options": {**opts, "denoise_steps": 1, "denoise_strength": 0.2}}],  # runs without noise
        "sweep": {"channel.loss": [0.0, 0.3]},
    }
    path = tmp_path / "learned.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_learned_methods_are_built_once_warmed_once_and_denoise_without_loss(learned_file, tmp_path,
                                                                             monkeypatch):
    import torch

    import sim.complement.models as models
    from sim.complement.learned import LearnedComplement

    calls = {"load": 0, "warmup": 0, "threads": set()}
    real_load, real_warmup, real_call = models.load_complement_models, LearnedComplement.warmup, LearnedComplement.run

    def load(**kw):
        calls["load"] += 1
        return real_load(**kw)

    def warmup(self, shape):
        calls["warmup"] += 1
        assert shape == (4, 4, 4)
        return real_warmup(self, shape)

    def run_(self, *a):
        calls["threads"].add(torch.get_num_threads())
        return real_call(self, *a)

    monkeypatch.setattr(models, "load_complement_models", load)
    monkeypatch.setattr(LearnedComplement, "warmup", warmup)
    monkeypatch.setattr(LearnedComplement, "run", run_)
    torch.set_num_threads(2)
    try:
        rep = run(learned_file, tmp_path / "out")
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)
    assert rep.errors == 0 and rep.written == 8 and rep.stages["warmup"] > 0
    assert calls["load"] == 1 and calls["warmup"] == 3 and calls["threads"] == {1}  # one thread by default
    recs = {(int(r["point"] != "channel.loss=0"), r["policy"]): r
            for r in read_records(tmp_path / "out" / "results.jsonl")}
    assert not recs[0, "learned"]["complemented"] and recs[0, "learned"]["psnr_lossfree"] is None
    assert recs[0, "denoise"]["complemented"] and recs[0, "denoise"]["psnr_lossfree"] is not None
    lost = recs[1, "learned"]["missing_share"]
    assert lost > 0 and recs[1, "noedge"]["missing_share"] == lost and recs[1, "learned"]["complemented"]
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())["runs"][0]
    assert prov["hardware"]["torch_threads"] == 1


def test_missing_complement_weights_stop_the_run_with_one_line(learned_file, tmp_path, monkeypatch, capsys):
    import sim.complement.models as models

    monkeypatch.setattr(models, "SHIPPED_TINY", tmp_path / "not-installed")
    data = yaml.safe_load(learned_file.read_text())
    data["policies"] = ["resend", {"kind": "complement", "method": "learned"}]
    learned_file.write_text(yaml.safe_dump(data))
    assert main(["run", str(learned_file), "--out", str(tmp_path / "out"), "--no-progress", "--jobs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "policies[1].method = 'learned'" in err[0] and "not installed yet" in err[0], err
    assert not (tmp_path / "out" / "results.jsonl").exists() or not read_records(tmp_path / "out" / "results.jsonl")
    assert main(["run", str(learned_file), "--threads", "-1", "--no-progress", "--jobs", "1"]) == 2
    assert "threads = -1" in capsys.readouterr().err


def test_example_grid_carries_the_learned_methods_edges(learned_file, tmp_path):
    from PIL import Image

    run(learned_file, tmp_path / "out")
    lossy = tmp_path / "out" / "examples" / "point0001" / "astronaut"
    edges = np.asarray(Image.open(lossy / "edges.png"))
    assert edges.shape[:2] == (32, 32)                      # image resolution, from the EEN
    assert not (tmp_path / "out" / "examples" / "point0000" / "astronaut" / "edges.png").exists()  # nothing lost
