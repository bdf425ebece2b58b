"""Scenario model: YAML → validated objects → YAML, sweeps, overrides and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sim.cli import main
from sim.scenario import (ScenarioError, apply_overrides, load_scenario, parse_scenario,
                          parse_yaml_value, read_yaml)

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"

BASE = {
    "name": "t", "seed": 3,
    "images": {"names": ["astronaut", "coffee"], "size": 32},
    "packetizer": {"tile": 2},
    "link": {"rate_bps": 1.0e6, "delay_s": 0.01},
    "channel": {"kind": "bernoulli", "loss": 0.1},
    "policies": ["resend", "none"],
}


def write(tmp_path: Path, data, name="s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def errors_of(path, **kw) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, **kw)
    return info.value.errors


def test_quickstart_is_valid_and_compares_three_policies_at_five_loss_rates():
    sc = load_scenario(QUICKSTART)
    assert {p.kind for p in sc.policies} >= {"resend", "complement", "none"}
    assert len(sc.points) >= 5 and sc.repeats >= 3
    assert sc.sweep_keys == ["channel.loss"]
    assert [p.scenario.channel.loss for p in sc.points] == list(sc.sweep[0][1])


@pytest.mark.parametrize("extra", [
    {},
    {"channel": {"kind": "gilbert_elliott", "p": 0.05, "r": 0.5, "h": 0.1},
     "policies": ["resend", {"name": "resend-1", "kind": "resend", "max_rounds": 1}, {"kind": "none"}],
     "sweep": {"link.delay_s": [0.0, 0.05], "codec.quantizer.bits": [4, 6], "policies.1.max_rounds": [2, 3]},
     "repeats": 2,
     "out": "elsewhere/x"},
])
def test_round_trip_yaml_object_dict_yaml(tmp_path, extra):
    sc = load_scenario(write(tmp_path, {**BASE, **extra}))
    text = sc.to_yaml()
    again = load_scenario(write(tmp_path, text, "again.yaml"))
    assert again == sc
    assert again.to_dict() == sc.to_dict()
    assert again.to_yaml() == text
    assert [p.scenario for p in again.points] == [p.scenario for p in sc.points]


def test_round_trip_keeps_swept_field_out_of_its_section(tmp_path):
    sc = load_scenario(write(tmp_path, {**BASE, "sweep": {"channel.loss": [0.0, 0.5]}}))
    d = sc.to_dict()
    assert "loss" not in d["channel"] and d["sweep"] == {"channel.loss": [0.0, 0.5]}


def test_defaults_are_resolved(tmp_path):
    sc = load_scenario(write(tmp_path, BASE))
    d = sc.to_dict()
    assert d["codec"] == {"model": "tiny", "weights": None, "quantizer": {"kind": "uniform", "bits": 6},
                          "entropy": "range", "device": "cpu", "dtype": "float32"}
    assert d["out"] == "out/t" and d["repeats"] == 1 and d["sweep"] == {}
    assert d["receiver"]["timeout_s"] > 0
    assert [p["name"] for p in d["policies"]] == ["resend", "none"]


def test_sweep_is_cartesian_product_last_key_fastest(tmp_path):
    sc = load_scenario(write(tmp_path, {**BASE, "sweep": {"channel.loss": [0.0, 0.1, 0.2],
                                                          "link.delay_s": [0.01, 0.1]}}))
    assert [p.values_dict() for p in sc.points] == [
        {"channel.loss": a, "link.delay_s": b} for a in (0.0, 0.1, 0.2) for b in (0.01, 0.1)]
    assert [p.index for p in sc.points] == list(range(6))
    assert [(p.scenario.channel.loss, p.scenario.link.delay_s) for p in sc.points] == [
        (a, b) for a in (0.0, 0.1, 0.2) for b in (0.01, 0.1)]
    assert all(p.scenario.sweep == () for p in sc.points)
    assert sc.channel.loss == 0.0  # the top-level sections hold point 0


def test_sweep_over_a_policy_option(tmp_path):
    data = {**BASE, "policies": ["none", {"name": "resend-n", "kind": "resend"}],
            "sweep": {"policies.1.max_rounds": [1, 2, 4]}}
    sc = load_scenario(write(tmp_path, data))
    assert [p.scenario.policies[1].policy.max_rounds for p in sc.points] == [1, 2, 4]
    assert "max_rounds" not in sc.to_dict()["policies"][1]
    errs = errors_of(write(tmp_path, {**data, "sweep": {"policies.2.max_rounds": [1]}}, "bad.yaml"))
    assert len(errs) == 1 and "sweep.policies.2.max_rounds" in errs[0] and "list of 2" in errs[0]


def test_sweep_can_supply_a_required_field(tmp_path):
    data = {**BASE, "channel": {"kind": "gilbert_elliott", "burst": 2}, "sweep": {"channel.loss": [0.0, 0.2]}}
    sc = load_scenario(write(tmp_path, data))
    assert [p.scenario.channel.loss for p in sc.points] == [0.0, 0.2]


def test_overrides_set_and_seed(tmp_path):
    path = write(tmp_path, {**BASE, "sweep": {"channel.loss": [0.0, 0.2]}})
    sc = load_scenario(path, overrides=["link.rate_bps=5.0e5", "channel.loss=0.3", "policies.1.fill=mean",
                                        "sweep.link.delay_s=[0, 0.1]"], seed=11)
    assert sc.seed == 11 and sc.link.rate_bps == 5.0e5
    assert sc.sweep_keys == ["link.delay_s"]  # setting a swept key fixes it
    assert all(p.scenario.channel.loss == 0.3 for p in sc.points)
    assert sc.policies[1].policy.fill == "mean"
    with pytest.raises(ScenarioError, match="expected KEY=VALUE"):
        load_scenario(path, overrides=["channel.loss"])
    with pytest.raises(ScenarioError, match=r"policies.* list of 2"):
        load_scenario(path, overrides=["policies.5.fill=mean"])


def test_yaml_values_scientific_notation_and_duplicates(tmp_path):
    assert parse_yaml_value("1e-3") == 0.001 and parse_yaml_value("2e6") == 2e6
    assert parse_yaml_value("[0, 0.1]") == [0, 0.1] and parse_yaml_value("") is None
    path = write(tmp_path, "name: a\nseed: 1\nseed: 2\n")
    [line] = errors_of(path)
    assert line.startswith(f"{path}:3:1: malformed YAML") and "duplicate key 'seed'" in line


# ---------------------------------------------------------------- bad input, one line each


def one_line(path, **kw) -> str:
    errs = errors_of(path, **kw)
    assert len(errs) == 1, errs
    assert errs[0].startswith(str(path)), errs
    return errs[0]


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "name: x\nchannel: {kind: bernoulli, loss: 0.1\nlink: 3\n")
    line = one_line(path)
    assert line.startswith(f"{path}:3:") and "malformed YAML" in line
    assert "\n" not in line
    assert one_line(write(tmp_path, "- a\n- b\n", "list.yaml")).endswith("got list")
    assert "not found" in one_line(tmp_path / "missing.yaml")


def test_probability_out_of_range(tmp_path):
    line = one_line(write(tmp_path, {**BASE, "channel": {"kind": "bernoulli", "loss": 1.3}}))
    assert "channel.loss = 1.3: expected a probability in [0, 1]" in line


def test_probability_out_of_range_in_a_sweep(tmp_path):
    line = one_line(write(tmp_path, {**BASE, "sweep": {"channel.loss": [0.1, 1.3]}}))
    assert "channel.loss = 1.3" in line and "sweep point 1" in line


def test_negative_rate(tmp_path):
    line = one_line(write(tmp_path, {**BASE, "link": {"rate_bps": -1.0, "delay_s": 0.0}}))
    assert "link.rate_bps = -1.0" in line and "> 0" in line


def test_unknown_channel_with_did_you_mean(tmp_path):
    line = one_line(write(tmp_path, {**BASE, "channel": {"kind": "bernouli", "loss": 0.1}}))
    assert "channel.kind = 'bernouli'" in line and "did you mean 'bernoulli'" in line


def test_unknown_keys_with_did_you_mean(tmp_path):
    errs = errors_of(write(tmp_path, {**BASE, "chanel": 1, "link": {"rate_bps": 1.0e6, "delay_s": 0, "jiter_s": 0}}))
    assert any("chanel: unknown key (did you mean 'channel'?)" in e for e in errs)
    assert any("link.jiter_s: unknown key (did you mean 'jitter_s'?)" in e for e in errs)


def test_missing_trace_file_resolved_against_the_scenario_folder(tmp_path):
    line = one_line(write(tmp_path, {**BASE, "channel": {"kind": "trace", "path": "traces/none.txt"}}))
    assert "channel.path" in line and str(tmp_path / "traces" / "none.txt") in line
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "none.txt").write_text("0\n1\n0\n")
    sc = load_scenario(tmp_path / "s.yaml")
    assert Path(sc.channel.path) == tmp_path / "traces" / "none.txt"


def test_empty_image_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    line = one_line(write(tmp_path, {**BASE, "images": {"source": "imgs", "size": 32}}))
    assert "images.source = 'imgs'" in line and "no images" in line


def test_corrupt_image_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "imgs" / "good.png")
    (tmp_path / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    path = write(tmp_path, {**BASE, "images": {"source": "imgs", "size": 32}})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images.source" in err[0] and "bad.png" in err[0], err
    assert str(path) in err[0]


def test_every_error_is_collected(tmp_path, capsys):
    bad = {"name": "x", "seed": -1, "images": {"names": ["astronot"], "size": 60},
           "codec": {"model": "tinyy", "quantizer": {"kind": "uniform", "bits": 99}},
           "packetizer": {"layout": "tiles"}, "link": {"rate_bps": -5, "delay_s": 0.0},
           "channel": {"kind": "bernoulli", "loss": 2}, "receiver": {"timeout": 1},
           "policies": ["resend", "resend", "resnd"], "repeats": 0, "sweep": {"name": [1]}}
    path = write(tmp_path, bad)
    errs = errors_of(path)
    for needle in ["seed = -1", "images.names[0] = 'astronot'", "images.size = 60", "codec.model = 'tinyy'",
                   "codec.quantizer.bits = 99", "packetizer.layout = 'tiles'", "link.rate_bps = -5",
                   "channel.loss = 2", "receiver.timeout: unknown key", "policies[1].name = 'resend'",
                   "policies[2].kind = 'resnd'", "repeats = 0", "sweep.name: cannot sweep"]:
        assert sum(needle in e for e in errs) == 1, (needle, errs)
    assert all(e.startswith(f"{path}: ") for e in errs)
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == len(errs)


def test_validate_prints_resolved_yaml(tmp_path, capsys):
    path = write(tmp_path, BASE)
    assert main(["validate", str(path), "--set", "channel.loss=0.2", "--seed", "5", "--no-images"]) == 0
    out = capsys.readouterr().out
    d = yaml.safe_load(out)
    assert d["channel"] == {"kind": "bernoulli", "loss": 0.2} and d["seed"] == 5
    assert parse_scenario(d, "x") == load_scenario(path, overrides=["channel.loss=0.2"], seed=5)


@pytest.mark.parametrize("module", ["sim", "sim.cli"])
def test_module_entry_points_run_the_cli(tmp_path, module):
    """``python -m sim`` and ``python -m sim.cli`` are the ``latentcast`` command."""
    import subprocess
    import sys

    path = write(tmp_path, BASE)
    proc = subprocess.run([sys.executable, "-m", module, "validate", str(path), "--no-images"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["channel"]["kind"] == "bernoulli"


def test_read_yaml_and_apply_overrides_do_not_mutate(tmp_path):
    raw = read_yaml(write(tmp_path, BASE))
    before = yaml.safe_dump(raw)
    apply_overrides(raw, ["channel.loss=0.5"], seed=1)
    assert yaml.safe_dump(raw) == before


def test_one_mtu_the_links(tmp_path):
    old = {**BASE, "packetizer": {"tile": 2, "mtu": 1200}}
    errs = errors_of(write(tmp_path, old))
    assert len(errs) == 1 and "packetizer.mtu: no longer a packetizer key" in errs[0]
    assert "the link's MTU is the only MTU: set link.mtu" in errs[0] and "link.header_bytes" in errs[0]
    # swept or --set the same way: one line, not one per sweep point
    assert len(errors_of(write(tmp_path, BASE), overrides=["sweep.packetizer.mtu=[500, 1200]"])) == 1
    sc = load_scenario(write(tmp_path, {**BASE, "link": {"rate_bps": 1.0e6, "delay_s": 0.0, "mtu": 1500}}))
    assert sc.link.max_payload == 1472 and "mtu" not in sc.to_dict()["packetizer"]
    errs = errors_of(write(tmp_path, {**BASE, "link": {"rate_bps": 1.0e6, "delay_s": 0.0, "mtu": 64,
                                                       "header_bytes": 40}}))
    assert errs == [f"{tmp_path / 's.yaml'}: link.mtu = 64 with link.header_bytes = 40 leaves 24 bytes per packet; "
                    f"the packetizer needs 34 to 65535 (its 19-byte header, a 14-byte geometry record and at "
                    f"least 1 byte)"]


def test_method_options_round_trip_resolve_paths_and_sweep(tmp_path):
    (tmp_path / "set").mkdir()
    pols = ["resend", {"name": "l", "kind": "complement", "method": "learned",
                       "method_options": {"weights": "set", "steps": 4}},
            {"kind": "hybrid", "method": "pixel-telea", "method_options": {"radius": 2}}]
    sc = load_scenario(write(tmp_path, {**BASE, "policies": pols,
                                        "sweep": {"policies.1.method_options.steps": [2, 8]}}))
    assert sc.policies[1].policy.method_options == {"weights": str(tmp_path / "set"), "steps": 2}
    assert [p.scenario.policies[1].policy.method_options["steps"] for p in sc.points] == [2, 8]
    d = sc.to_dict()
    assert d["policies"][1]["method_options"] == {"weights": str(tmp_path / "set")}  # steps: swept
    assert d["policies"][2] == {"name": "hybrid", "kind": "hybrid", "mode": "deadline", "deadline_s": 0.5,
                                "max_missing": 0.05, "method": "pixel-telea", "method_options": {"radius": 2},
                                "max_rounds": 8}
    again = load_scenario(write(tmp_path, sc.to_yaml(), "again.yaml"))
    assert again == sc and [p.scenario for p in again.points] == [p.scenario for p in sc.points]


def test_bad_method_options_name_the_field(tmp_path, capsys):
    pols = ["resend", {"kind": "complement", "method": "learned", "method_options": {"steps": 0}},
            {"kind": "hybrid", "method": "interp", "method_options": {"radius": 3}},
            {"name": "c2", "kind": "complement", "method": "learned", "method_options": {"weights": "nowhere"}},
            {"name": "c3", "kind": "complement", "method": "learned", "method_options": {"sd15": {"unets": "x"}}}]
    path = write(tmp_path, {**BASE, "policies": pols})
    errs = errors_of(path)
    assert [e[len(str(path)) + 2:].split(":")[0].split(" =")[0] for e in errs] == [
        "policies[1].method_options.steps", "policies[2].method_options.radius",
        "policies[3].method_options.weights", "policies[4].method_options.sd15.unets"], errs
    assert str(tmp_path / "nowhere") in errs[2]   # resolved against the scenario's folder
    assert main(["validate", str(path), "--no-images"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 4


def test_complement_defaults_to_learned_and_validate_warns_without_learned_weights(tmp_path, capsys, monkeypatch):
    import sim.complement.models as models

    path = write(tmp_path, {**BASE, "policies": ["resend", "complement",
                                                 {"name": "i", "kind": "complement", "method": "interp"}]})
    sc = load_scenario(path)
    assert [p.policy.method for p in sc.policies[1:]] == ["learned", "interp"]
    monkeypatch.setattr(models, "SHIPPED_TINY", tmp_path / "not-installed")
    assert main(["validate", str(path), "--no-images"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("latentcast validate: warning: ") and "policies[1].method" in err[0]
    assert "not installed" in err[0] and err[1].endswith("transmissions per image")
    (tmp_path / "not-installed").mkdir()
    (tmp_path / "not-installed" / "complement.json").write_text("{}")
    assert main(["validate", str(path), "--no-images"]) == 0
    assert "warning" not in capsys.readouterr().err
