"""``latentcast complement-eval``: table structure, JSON, the grid, packet-shaped masks, bad arguments.

Tiny random models (codec widths 8, the ``tiny_complement_dir`` weight set), 64 × 64 images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim.cli import main
from sim.commands.complement_eval import format_table, packet_loss_mask
from sim.complement.een import EDGE_THRESHOLDS

from helpers import random_tiny_autoencoder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec_weights(tmp_path_factory) -> Path:
    from sim.codec.tiny import save_tiny

    path = tmp_path_factory.mktemp("codec") / "tiny_random.safetensors"
    save_tiny(random_tiny_autoencoder(), path, {"note": "random, for tests", "scaling_factor": 0.5})
    return path


@pytest.fixture(scope="module")
def smooth_images(tmp_path_factory) -> Path:
    """Two smooth 64 × 64 images (gradients): interpolation should beat zeros on them."""
    folder = tmp_path_factory.mktemp("smooth")
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    for i, (a, b) in enumerate(((2.0, 1.0), (1.0, 3.0))):
        img = np.stack([a * yy + 40, b * xx + 30, (yy + xx) + 20], axis=-1)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"smooth{i}.png")
    return folder


def args(images, weights, *extra) -> list[str]:
    return ["complement-eval", "--images", str(images), "--size", "64", "--loss", "0.1,0.3", "--layout", "tile",
            "--tile", "2", "--methods", "zero,interp", "--codec-weights", str(weights), "--no-lpips",
            "--no-progress", *extra]


def test_table_has_a_row_per_loss_and_method_and_interp_beats_zeros(smooth_images, codec_weights, capsys):
    assert main(args(smooth_images, codec_weights)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("| loss | method | cells lost | PSNR dB | SSIM | LPIPS | edge F1 | ms/image | "
                        "ΔPSNR vs interp | ΔLPIPS vs interp |")
    assert lines[-1].startswith("Δ: mean paired difference to interp over the same (image, mask) pairs (n = 2)")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:-2]]
    assert [(r[0], r[1]) for r in rows] == [(loss, m) for loss in ("0.1", "0.3") for m in ("resend", "zero", "interp")]
    assert all(r[5] == "–" and r[6] == "–" for r in rows)        # no LPIPS asked for; no edges from fills
    assert rows[0][7] == "–" and rows[1][7] != "–"               # resend has no compute time
    # only zero has a difference to interp: a mean and its interval, PSNR lower than interp's
    assert [r[8] != "–" for r in rows] == [False, True, False] * 2 and all(r[9] == "–" for r in rows)
    assert rows[1][8].startswith("-") and " [" in rows[1][8]
    psnr = {(r[0], r[1]): float(r[3]) for r in rows}
    for loss in ("0.1", "0.3"):
        assert psnr[loss, "zero"] <= psnr[loss, "interp"] <= psnr[loss, "resend"]
    assert rows[3][2] == rows[4][2] != "0.0 %"                   # same masks for every method


def test_json_is_complete_and_deterministic(smooth_images, codec_weights, capsys):
    assert main(args(smooth_images, codec_weights, "--json", "--seed", "3")) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(args(smooth_images, codec_weights, "--json", "--seed", "3")) == 0
    b = json.loads(capsys.readouterr().out)
    strip = lambda d: [{k: v for k, v in r.items() if k != "time_s"} for r in d["images"]]  # noqa: E731
    assert strip(a) == strip(b)
    assert a["settings"]["methods"] == ["zero", "interp"] and a["settings"]["loss"] == [0.1, 0.3]
    assert len(a["rows"]) == 6 and len(a["images"]) == 2 * 2 * 3
    r = a["rows"][1]
    assert set(r) == {"loss", "method", "n", "lost_share", "psnr", "ssim", "lpips", "edge_f1", "edge_threshold",
                      "time_s", "versus", "d_psnr", "d_lpips"}
    assert r["edge_f1"] is None and r["edge_threshold"] is None and all(x["edge_f1"] is None for x in a["images"])
    assert r["n"] == 2 and r["lpips"] is None and r["time_s"] > 0
    # 16 tile packets of 2 × 2 cells: 10 % → 2 packets, 30 % → 5 packets lost
    shares = {x["loss"]: x["lost_share"] for x in a["rows"]}
    assert shares == {0.1: 2 / 16, 0.3: 5 / 16}


def test_more_masks_are_the_runs_of_the_next_seeds_and_pair_up(smooth_images, codec_weights, capsys):
    """--masks 2 at seed 3 = the rows of --seed 3 and --seed 4; the paired PSNR difference is the
    mean over (image, mask) pairs of zero − interp, with its t-interval."""
    from scipy.stats import t

    runs = []
    for extra in (("--seed", "3", "--masks", "2"), ("--seed", "3"), ("--seed", "4")):
        assert main(args(smooth_images, codec_weights, "--json", *extra)) == 0
        runs.append(json.loads(capsys.readouterr().out))
    both, first, second = runs
    key = lambda r: (r["image"], r["loss"], r["method"])  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time_s", "mask")}  # noqa: E731
    assert len(both["images"]) == 2 * len(first["images"])
    for draw, run in enumerate((first, second)):
        got = {key(r): strip(r) for r in both["images"] if r["mask"] == draw}
        assert got == {key(r): strip(r) for r in run["images"]}
    row = next(r for r in both["rows"] if r["loss"] == 0.3 and r["method"] == "zero")
    assert row["n"] == 4 and row["versus"] == "interp" and row["d_lpips"] is None  # no LPIPS asked for
    psnr = {(r["image"], r["mask"], r["method"]): r["psnr"] for r in both["images"] if r["loss"] == 0.3}
    d = np.array([psnr[i, m, "zero"] - psnr[i, m, "interp"] for i, m, name in psnr if name == "zero"])
    half = t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert row["d_psnr"] == pytest.approx({"mean": d.mean(), "lo": d.mean() - half, "hi": d.mean() + half, "n": 4})
    # over images: the t-interval of the two per-image mean differences (1 degree of freedom)
    e = np.array([np.mean([psnr[i, m, "zero"] - psnr[i, m, "interp"] for m in (0, 1)])
                  for i in dict.fromkeys(i for i, _, _ in psnr)])
    half = t.ppf(0.975, 1) * e.std(ddof=1) / np.sqrt(2)
    assert row["d_psnr_images"] == pytest.approx({"mean": e.mean(), "lo": e.mean() - half, "hi": e.mean() + half,
                                                  "n": 2})
    assert row["d_lpips_images"] is None and "d_psnr_images" not in first["rows"][1]  # one mask: none
    assert both["settings"]["masks"] == 2 and both["settings"]["versus"] == "interp"
    assert main(args(smooth_images, codec_weights, "--seed", "3", "--masks", "2")) == 0
    table = capsys.readouterr().out
    assert "ΔPSNR, over images |" in table and "(n = 2 images)" in table


def test_paired_difference_closed_form():
    from sim.commands.complement_eval import paired_difference

    got = paired_difference([(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)])  # d = 1, 2, 3: sd 1, t(0.975, 2) = 4.3027
    assert got["mean"] == 2.0 and got["n"] == 3
    assert got["hi"] - 2.0 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert got["lo"] == pytest.approx(4 - got["hi"])
    assert paired_difference([(0.5, 0.25)]) == {"mean": 0.25, "lo": None, "hi": None, "n": 1}
    assert paired_difference([(1.0, None), (1.0, 0.0)]) is None  # a missing value: no difference claimed


def test_learned_methods_edges_grid_and_lpips_unavailable(smooth_images, codec_weights, tiny_complement_dir,
                                                      tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setattr("sim.lpips.load_lpips", lambda: None)  # as on a machine without its weights
    grid = tmp_path / "grid.png"
    argv = args(smooth_images, codec_weights, "--json", "--grid", str(grid), "--weights", str(tiny_complement_dir),
                "--steps", "1")
    argv[argv.index("--methods") + 1] = "interp,learned"
    argv.remove("--no-lpips")
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    learned = [r for r in res["rows"] if r["method"] == "learned"]
    assert all(r["edge_f1"] is not None and 0 <= r["edge_f1"] <= 1 for r in learned)
    for row in learned:  # the row's F1 is the pooled one at its threshold; each draw is scored at that threshold
        assert row["edge_threshold"] in EDGE_THRESHOLDS
        draws = [r["edge_f1"] for r in res["images"] if r["method"] == "learned" and r["loss"] == row["loss"]]
        assert len(draws) == 2 and all(0 <= f <= 1 for f in draws) and "_edges" not in res["images"][0]
    table = format_table(res).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table if "| learned |" in line]
    assert [c[6] for c in cells] == [f"{r['edge_f1']:.3f} @{r['edge_threshold']:.2f}" for r in learned]
    assert table[-1].startswith("edge F1: the EEN's edges against Canny edges")
    assert all(r["lpips"] is None for r in res["rows"]) and res["settings"]["lpips"] is False
    with Image.open(grid) as im:
        assert im.size == (5 * 64 + 4 * 4, 16 + 2 * 64 + 4)      # 5 columns, 2 images, header strip
        px = np.asarray(im.convert("RGB"))
    received = px[16:80, 68:132]
    assert ((received == [255, 0, 255]).all(axis=-1)).any()        # the holes are painted


def test_packet_loss_mask_drops_whole_packets():
    from sim.packets import cell_groups

    rng = np.random.default_rng(0)
    for layout in ("tile", "row", "interleave"):
        m = packet_loss_mask(layout, 2, 8, 8, 0.25, rng)
        groups = cell_groups(layout, 2, 8, 8)
        whole = [bool(m.ravel()[g].all()) for g in groups if len(g)]
        assert sum(whole) == 4 and all(m.ravel()[g].all() or not m.ravel()[g].any() for g in groups)
    assert not packet_loss_mask("tile", 2, 8, 8, 0.0, rng).any() and packet_loss_mask("tile", 2, 8, 8, 1.0, rng).all()


@pytest.mark.parametrize("extra, needle", [
    (["--loss", "0.1,1.5"], "--loss = '0.1,1.5': expected distinct packet-loss rates in [0, 1]"),
    (["--loss", "a"], "--loss = 'a'"),
    (["--methods", "zero,lerned"], "--methods = 'lerned'"),
    (["--methods", "zero,zero"], "repeated: zero"),
    (["--layout", "tiles"], "--layout = 'tiles': expected one of tile, row, interleave"),
    (["--tile", "0"], "--tile = 0"),
    (["--grid-method", "learned"], "--grid-method = 'learned'"),
    (["--size", "60"], "size = 60"),
    (["--masks", "0"], "--masks = 0: expected an integer ≥ 1"),
    (["--versus", "mean"], "--versus = 'mean': expected one of --methods (zero, interp)"),
])
def test_bad_arguments_are_one_line(smooth_images, codec_weights, capsys, extra, needle):
    assert main(args(smooth_images, codec_weights, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentcast complement-eval: error: ") and needle in err[0], err


def test_missing_complement_weights_are_one_line(smooth_images, codec_weights, tmp_path, capsys, monkeypatch):
    import sim.complement.models as models

    monkeypatch.setattr(models, "SHIPPED_TINY", tmp_path / "not-installed")
    argv = args(smooth_images, codec_weights)
    argv[argv.index("--methods") + 1] = "zero,learned"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--methods learned" in err[0] and "not installed yet" in err[0], err
