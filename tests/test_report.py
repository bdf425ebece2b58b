"""Loss-rate reports against hand-made results (tests/data/report, values in its README).

Three report builds in all (a few seconds each): the complete fixture (twice, for
determinism) and a damaged copy (partial + corrupt line), the latter through the CLI.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from reports.analysis import build_stats, crossover, find_crossovers, median_ci, quantile
from channels.base import run_lengths
from reports.channel import point_channel, run_length_pmf, theory_loss
from reports.data import load_report_data
from helpers import FakeLPIPS
from reports.examples import HOLE_RGB, find_examples, save_examples
from sim.errors import InputError
from sim.results import derived_fields, image_means, read_records

DATA = Path(__file__).parent / "data" / "report"
T5 = 2.5705818366147395  # Student t, 0.975 quantile, 5 degrees of freedom
T1 = 12.706204736174698  # … 1 degree of freedom


@pytest.fixture
def handmade(tmp_path):
    out = tmp_path / "handmade"
    shutil.copytree(DATA, out)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture's report, with example images saved through the runner hook."""
    out = tmp_path_factory.mktemp("built") / "handmade"
    shutil.copytree(DATA, out)
    _save_fake_examples(out)
    from reports import build_report

    return out, build_report(out)


def _save_fake_examples(out):
    img = np.full((16, 16, 3), 100, np.uint8)
    miss = np.zeros((2, 2), bool)
    miss[0, 1] = True
    for point in range(3):
        for image_id, name in enumerate(("a", "b")):
            save_examples(out, point, 0, image_id, name, img, img + 10,
                          [("resend", np.zeros((2, 2), bool), img + 10), ("complement", miss, img + 5)])


# ----------------------------------------------------------------------------- numbers


def test_stats_match_hand_values(handmade):
    data = load_report_data(handmade)
    assert data.axis_key == "channel.loss" and [p.x for p in data.points] == [0.0, 0.1, 0.2]
    assert data.policies == ["resend", "complement"] and data.expected[(2, "complement")] == 6
    st = build_stats(data)
    row = st.get(2, "complement", "psnr")
    assert row["n"] == 6 and row["mean"] == pytest.approx(23.0)
    assert row["ci95"] == pytest.approx(T5 * math.sqrt(0.4) / math.sqrt(6))
    assert st.get(1, "resend", "psnr_per_kB")["mean"] == pytest.approx(25.0)
    assert st.get(2, "resend", "overhead")["mean"] == pytest.approx(0.5)        # 1500 / 1000 − 1
    assert st.get(1, "resend", "packet_loss_rate")["mean"] == pytest.approx(2 / 24)
    lat = st.latency[(1, "resend")]
    assert (lat["median"], lat["low"], lat["high"]) == pytest.approx((0.1, 0.05, 0.15))
    assert lat["coverage"] == pytest.approx(1 - 2 / 64)
    assert lat["p95"] == pytest.approx(0.15)


def test_crossovers_match_hand_values(handmade):
    data = load_report_data(handmade)
    cs = {c.metric: c for c in find_crossovers(data, build_stats(data))}
    q = cs["psnr_per_kB"]
    assert (q.challenger, q.baseline, q.status) == ("complement", "resend", "crosses")
    assert [r["diff"] for r in q.rows] == pytest.approx([0.0, -1.0, 3.0])
    assert q.interpolated == pytest.approx(0.125)
    assert q.confident == 0.2
    half = T5 * math.sqrt(0.4) / math.sqrt(6)
    assert (q.rows[2]["diff_low"], q.rows[2]["diff_high"]) == pytest.approx((3 - half, 3 + half))
    assert q.rows[2]["rel"] == pytest.approx(3 / 20)
    # over images: per-image means a (2, 3, 3) → 8/3 and b (3, 4, 3) → 10/3; n = 2, so t(0.975, 1)
    # · sd / √2 = 12.706 · (√2/3) / √2 = 12.706 / 3: far wider than the pairs' interval
    assert image_means([("a", 2.0), ("b", 3.0), ("a", 3.0), ("b", 4.0)]) == [2.5, 3.5]
    half_images = T1 / 3
    assert q.rows[2]["images"] == 2
    assert (q.rows[2]["diff_images_low"], q.rows[2]["diff_images_high"]) == pytest.approx((3 - half_images,
                                                                                            3 + half_images))
    assert (q.rows[1]["diff_images_low"] + q.rows[1]["diff_images_high"]) / 2 == pytest.approx(-1.0)
    t = cs["time_to_image_s"]
    assert [r["diff"] for r in t.rows] == pytest.approx([0.0, 0.05, 0.1])
    assert t.status == "crosses" and t.interpolated == 0.0       # tied at 0, ahead from 0.1
    assert t.confident == 0.2                                    # [0, 0.1] at 0.1 is not above 0
    assert (t.rows[2]["diff_low"], t.rows[2]["diff_high"]) == pytest.approx((0.1, 0.2))
    assert t.rows[2]["diff_images_low"] is None                  # medians: no interval over images


def test_crossover_cases():
    rows = lambda diffs, conf=(): [{"x": float(i), "diff": d, "confident": i in conf} for i, d in enumerate(diffs)]
    assert crossover(rows([1.0, 2.0]))[:3] == ("ahead_from_start", 0.0, None)
    assert crossover(rows([-1.0, -2.0]))[:2] == ("never", None)
    status, x, conf, behind = crossover(rows([-2.0, 2.0, -1.0, 1.0], conf=(3,)))
    assert (status, x, conf, behind) == ("crosses", 0.5, 3.0, [2.0])
    assert crossover([])[0] == "no_data"


def test_median_ci_and_quantile():
    x = list(range(1, 10))                          # n = 9: [x(2), x(8)], 1 − 2·10/512
    med, lo, hi, cov = median_ci(x)
    assert (med, lo, hi) == (5.0, 2.0, 8.0) and cov == pytest.approx(1 - 20 / 512)
    assert median_ci([1, 2, 3, 4, 5])[1:] == (None, None, None)   # n < 6: no 95 % interval
    assert median_ci([None, float("nan")]) == (None, None, None, None)
    assert quantile([0, 10], 0.95) == pytest.approx(9.5) and quantile([], 0.5) is None


def test_derived_fields():
    d = derived_fields({"bytes_forward": 1200, "bytes_reverse": 50, "bytes_retransmitted": 200, "psnr": 25.0,
                        "ssim": None, "packets_lost": 1, "packets_sent": 4})
    assert d == pytest.approx({"wire_bytes": 1250.0, "overhead": 0.25, "psnr_per_kB": 20.0, "ssim_per_kB": None,
                               "packet_loss_rate": 0.25})
    assert derived_fields({"psnr": 30.0, "wire_bytes": 7}).get("wire_bytes") is None  # a logged field wins
    assert derived_fields({"key": [0], "point": 0, "policy": "a", "psnr": 30.0}) == {}  # inputs absent: no field


# ---------------------------------------------------------------------- channel theory


def test_channel_theory():
    from channels import make_channel

    ge = make_channel("gilbert_elliott", p=0.05, r=0.3, h=0.2, k=0.99)
    pmf = run_length_pmf(ge, 400)
    assert pmf.sum() == pytest.approx(1.0) and (np.arange(1, 401) * pmf).sum() == pytest.approx(ge.mean_burst())
    assert run_length_pmf(make_channel("gilbert_elliott", loss=0.1, burst=2), 3) == pytest.approx([0.5, 0.25, 0.125])
    assert run_length_pmf(make_channel("bernoulli", loss=0.2), 2) == pytest.approx([0.8, 0.16])
    assert run_length_pmf(make_channel("awgn", snr_db=10.0)) is None
    assert run_lengths([1, 1, 0, 1, 0, 0, 1, 1, 1, 0]) == {"1": 1, "2": 1, "3": 1}
    sc = {"channel": {"kind": "gilbert_elliott", "burst": 2}}
    assert theory_loss(point_channel(sc, {"channel.loss": 0.1})) == pytest.approx(0.1)
    assert point_channel(sc, {"channel.loss": 2.0}) is None     # invalid: no theory, no crash


def test_trace_theory_reads_the_trace(tmp_path):
    from channels import make_channel

    f = tmp_path / "t.txt"
    f.write_text("# c\n1\n1\n0\n1\n0\n0\n")
    pmf = run_length_pmf(make_channel("trace", path=str(f)), 3)
    assert pmf == pytest.approx([0.5, 0.5, 0.0])   # runs (cyclic): 1,1 | 1 → lengths 2 and 1


def test_measured_axis_without_a_swept_loss(handmade):
    lines = (handmade / "results.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    for r in recs:
        r["sweep"] = {"channel.offset": r["point"] * 100}
        r["first_pass_lost_share"] = [0.0, 0.3, 0.1][r["point"]]
    (handmade / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (handmade / "scenario.resolved.yaml").unlink()
    data = load_report_data(handmade)
    assert data.axis_key is None and "measured loss share" in data.axis_label
    assert [p.x for p in data.points] == pytest.approx([0.0, 0.3, 0.1])
    assert data.facet_keys == [] and data.expected[(0, "resend")] == 6   # inferred: 3 repeats × 2 images
    q = next(c for c in find_crossovers(data, build_stats(data)) if c.metric == "psnr_per_kB")
    assert [r["x"] for r in q.rows] == pytest.approx([0.0, 0.1, 0.3])    # sorted by measured loss


# ------------------------------------------------------------------------------ report


def test_report_files_and_content(built):
    out, written = built
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "x axis: **channel.loss (swept)**" in md
    assert "≈ 0.125 (between 0.1 and 0.2)" in md and "0 (tied there, ahead from 0.1)" in md
    assert "+3.000 [+2.336, +3.664] dB/kB (+15.0 %); over images [-1.235, +7.235] dB/kB (n = 2)." in md
    assert "| 0.2 | complement | 6 | 23.00 ± 0.66 |" in md
    assert "complete: all 36 planned records" in md
    assert "0123456789abcdef" in md and "channel.loss: [0.0, 0.1, 0.2]" in md   # provenance, scenario
    assert "| tiny | [('weights', \"'tiny'\")] | fedcba9876543210 |" in md  # complement weights, hash
    figs = {p.name for p in written["figures"]}
    assert {"crossover.png", "quality.png", "bytes.png", "latency.png", "pareto.png", "channel.png",
            "examples_a.png"} <= figs and "examples_b.png" not in figs   # max_images=1: first image only
    for name in figs:
        assert f"figures/{name}" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<img ") == len(figs) and html.count('src="data:image/png;base64,') == len(figs)
    assert "data-image-check" in html and "http" not in re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("point,channel.loss,policy,metric,n,n_null,mean")
    row = next(x for x in summary if x.startswith("2,0.2,complement,psnr_per_kB,"))
    assert float(row.split(",")[6]) == pytest.approx(23.0)


def test_report_is_deterministic(built, tmp_path):
    out, written = built
    again = tmp_path / "handmade"
    shutil.copytree(DATA, again)
    _save_fake_examples(again)
    from reports import build_report

    second = build_report(again)
    for name in ("report.md", "summary.csv", "report.html"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert [p.name for p in second["figures"]] == [p.name for p in written["figures"]]
    for a, b in zip(written["figures"], second["figures"]):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_partial_and_corrupt_run_via_cli(handmade, caplog):
    from sim.cli import main

    lines = (handmade / "results.jsonl").read_text().splitlines()
    keep = [x for x in lines if not ('"point": 2' in x and '"complement"' in x)]        # point 2: none
    keep = [x for i, x in enumerate(keep) if not ('"point": 1' in x and '"resend"' in x and i % 4 == 0)]
    keep.insert(4, '{"this is": not json')
    keep.append('{"key": [0, 0, "a", "resend"], "point": 0')                              # cut short
    (handmade / "results.jsonl").write_text("\n".join(keep))
    with caplog.at_level(logging.WARNING, logger="sim.results"):
        assert main(["report", str(handmade), "--format", "md"]) == 0
    assert f"{handmade / 'results.jsonl'}:5: skipped: not a JSON object" in caplog.text
    assert not (handmade / "report.html").exists()
    md = (handmade / "report.md").read_text(encoding="utf-8")
    assert "**partial**" in md
    assert "| 0.2 | complement | 0/6 missing | — |" in md
    assert re.search(r"\| 0\.1 \| resend \| [345]/6 partial \|", md)
    assert "`results.jsonl:5`: skipped (not a JSON object)" in md
    assert f"`results.jsonl:{len(keep)}`: skipped (cut short" in md


def test_cli_refuses_a_missing_folder(tmp_path, capsys):
    from sim.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_read_records_skip_bad_keeps_good_lines(tmp_path, caplog):
    f = tmp_path / "results.jsonl"
    f.write_text('{"key": [0], "point": 0, "policy": "a"}\n[1, 2]\n\n{"no": "key"}\n'
                 '{"key": [1], "point": 0, "policy": "a"}\n{"key": [2], "po')
    skipped = []
    with caplog.at_level(logging.WARNING, logger="sim.results"):
        recs = read_records(f, skip_bad=True, skipped=skipped)
    assert [r["key"] for r in recs] == [[0], [1]]
    assert skipped == [(2, "not a JSON object"), (4, "record without key/point/policy"),
                       (6, "cut short (last line, run interrupted?)")]
    assert f"{f}:2: skipped: not a JSON object" in caplog.text and f"{f}:6: skipped: cut short" in caplog.text
    with pytest.raises(InputError, match=r"results.jsonl:2: not a results record"):
        read_records(f)                                              # strict: the first bad line fails
    f.write_text('{"key": [0], "point": 0, "policy": "a"}\n{"key": [2], "po')
    assert [r["key"] for r in read_records(f)] == [[0]]              # strict: a torn last line is ignored


# ---------------------------------------------------------------------------- examples


def test_save_examples_writes_what_is_asked(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    miss = np.zeros((2, 2), bool)
    miss[1, 0] = True
    t = miss
    e = np.eye(2)
    assert save_examples(tmp_path, 0, 1, 0, "x", img, img, [("p", t, img)], edges=e) == []  # repeat 1: not kept
    assert save_examples(tmp_path, 0, 0, 1, "x", img, img, [("p", t, img)], edges=e) == []  # second image
    files = save_examples(tmp_path, 3, 0, 0, "x", img, img, [("p", t, img)], edges=e)
    assert [f.name for f in files] == ["original.png", "received.png", "edges.png", "policy-p.png"]
    from PIL import Image

    rec = np.asarray(Image.open(tmp_path / "examples" / "point0003" / "x" / "received.png"))
    assert (rec[8:, :8] == HOLE_RGB).all() and (rec[:8] == 0).all() and (rec[8:, 8:] == 0).all()
    found = find_examples(tmp_path)
    assert set(found["x"][3]) == {"original", "received", "edges", ("policy", "p")}


# ------------------------------------------------------------------ run --report, end to end


def test_run_with_report_flag(tmp_path, monkeypatch):
    """A tiny random codec, 2 loss rates: ``latentcast run --report`` leaves a report behind,
    with LPIPS (a fake model) beside PSNR/SSIM."""
    import torch
    import yaml

    monkeypatch.setattr("sim.lpips.load_lpips", lambda cache_dir=None: FakeLPIPS())

    from sim.cli import main
    from sim.codec.tiny import save_tiny
    from sim.codec.tiny_net import TinyAutoencoder

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyAutoencoder(widths=(8, 8, 8))
    weights = tmp_path / "tiny_random.safetensors"
    save_tiny(net, weights, {"note": "random, for tests"})
    sc = {"name": "tiny", "seed": 5, "images": {"names": ["astronaut"], "size": 32},
          "codec": {"weights": str(weights)}, "packetizer": {"tile": 1},
          "link": {"rate_bps": 1.0e6, "delay_s": 0.01}, "channel": {"kind": "bernoulli"},
          "policies": ["resend", {"kind": "complement", "method": "interp"}], "sweep": {"channel.loss": [0.0, 0.3]}, "repeats": 2}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(sc, sort_keys=False))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "tiny.yaml"), "--out", str(out), "--no-progress", "--report"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert (out / "report.html").exists() and "complete: all 8 planned records" in md
    assert "| 0.3 | complement | 2 |" in md and (out / "figures" / "crossover.png").exists()
    assert "| LPIPS | SSIM vs loss-free | LPIPS vs loss-free |" in md          # the metric tables
    # one summary.csv (and timings.csv): the report rewrote the runner's with the same function and records
    from sim.results import write_summaries

    again = write_summaries(out / "results.jsonl", tmp_path)
    for name in ("summary", "timings"):
        assert (out / f"{name}.csv").read_text() == again[name].read_text()
    assert ",complement,psnr_per_kB," in again["summary"].read_text() and "wall." not in again["summary"].read_text()
