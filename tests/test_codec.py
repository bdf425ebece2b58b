"""The codec contract end to end with the tiny model: shapes, bytes, bpp, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sim.cli import main
from sim.codec import load_codec
from sim.codec.tiny import SHIPPED_WEIGHTS, TinyModel, load_tiny, save_tiny
from sim.errors import ModelLoadError

from helpers import random_tiny_autoencoder


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A seeded random tiny autoencoder saved as the shipped format (fast, deterministic)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny_codec.safetensors"
    save_tiny(random_tiny_autoencoder(), path, {"scaling_factor": 0.5})
    return path


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    base = np.stack([x * 2, y * 3, (x + y)], -1) + rng.integers(0, 20, (64, 96, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


QUANTIZERS = [{"kind": "uniform", "bits": 6}, {"kind": "uniform", "bits": 3},
              {"kind": "palette", "colors": 16}]


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=lambda q: f"{q['kind']}")
@pytest.mark.parametrize("entropy", ["range", "zlib"])
def test_round_trip_shapes_dtypes_and_exact_symbols(random_weights, image, quantizer, entropy):
    codec = load_codec("tiny", quantizer, entropy, str(random_weights))
    z = codec.encode(image)
    assert z.shape == (4, 8, 12) and z.dtype == np.float32
    comp = codec.compress(image)
    assert all(isinstance(s, bytes) for s in comp["strings"]) and isinstance(comp["side"], bytes)
    out = codec.decompress(comp)
    assert out["x_hat"].shape == image.shape and out["x_hat"].dtype == np.uint8
    # the decoded latent is exactly the dequantized symbols of the sender
    prep = codec.prepare(z)
    expected = codec.dequantize(prep.symbols, prep.side)
    np.testing.assert_array_equal(out["latent"], expected)
    # and the image equals decoding that latent
    np.testing.assert_array_equal(out["x_hat"], codec.decode(expected))


def test_bpp_is_eight_bits_per_byte_over_pixels(random_weights, image):
    codec = load_codec("tiny", {"kind": "uniform", "bits": 6}, "range", str(random_weights))
    comp = codec.compress(image)
    nbytes = len(comp["strings"][0]) + len(comp["side"])
    assert codec.bpp(comp, 64, 96) == 8 * nbytes / (64 * 96)


def test_same_input_same_bytes(random_weights, image):
    a = load_codec("tiny", {"kind": "palette", "colors": 16}, "range", str(random_weights)).compress(image)
    b = load_codec("tiny", {"kind": "palette", "colors": 16}, "range", str(random_weights)).compress(image)
    assert a["strings"] == b["strings"] and a["side"] == b["side"]


def test_subsets_of_cells_decode_on_their_own(random_weights, image):
    codec = load_codec("tiny", {"kind": "uniform", "bits": 5}, "range", str(random_weights))
    prep = codec.prepare(codec.encode(image))
    flat = prep.symbols.reshape(prep.symbols.shape[0], -1)
    rng = np.random.default_rng(1)
    for cells in (rng.choice(prep.n_cells, 17, replace=False), np.arange(5), np.array([42])):
        data = codec.code_cells(prep, cells)
        np.testing.assert_array_equal(codec.decode_cells(data, len(cells), prep.side), flat[:, cells])


def test_loaded_weights_reproduce_the_network(random_weights):
    model = load_tiny(random_weights)
    assert isinstance(model, TinyModel) and model.scaling_factor == 0.5
    net = random_tiny_autoencoder().eval()
    x = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), net.encode(x), rtol=0, atol=0)


def test_missing_or_bad_weights_are_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="tiny codec weights not found"):
        load_tiny(tmp_path / "nope")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a tiny codec weights file"):
        load_tiny(bad)


@pytest.mark.skipif(not SHIPPED_WEIGHTS.exists(), reason="shipped weights not built")
def test_shipped_weights_have_a_training_card():
    model = load_tiny()
    card = model.training
    assert card["steps"] > 0 and card["scaling_factor"] > 0
    assert not set(card["train_images"]) & {"astronaut", "coffee", "chelsea", "rocket"}
    assert SHIPPED_WEIGHTS.stat().st_size < 25e6


# -- bad input through the CLI: one line, no traceback ---------------------------------
def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def _folder(tmp_path, name, img):
    d = tmp_path / name
    d.mkdir()
    if isinstance(img, bytes):
        (d / "x.png").write_bytes(img)
    else:
        img.save(d / "x.png")
    return d


def test_codec_eval_bad_inputs(tmp_path, capsys, random_weights):
    w = ["--weights", str(random_weights), "--no-baselines"]
    err = _cli_error(capsys, ["codec-eval", "--images", str(_folder(tmp_path, "t", b"hello")), *w])
    assert "x.png" in err and "not a readable image" in err
    err = _cli_error(capsys, ["codec-eval", "--images", str(_folder(tmp_path, "g", Image.new("L", (64, 64)))), *w])
    assert "mode 'L'" in err and "RGB" in err
    err = _cli_error(capsys, ["codec-eval", "--images", str(_folder(tmp_path, "a", Image.new("RGBA", (64, 64)))), *w])
    assert "mode 'RGBA'" in err
    odd = _folder(tmp_path, "o", Image.new("RGB", (60, 52)))
    err = _cli_error(capsys, ["codec-eval", "--images", str(odd), "--size", "0", *w])
    assert "52×60" in err and "multiple of 8" in err
    err = _cli_error(capsys, ["codec-eval", "--images", str(odd), "--size", "100", *w])
    assert "size = 100" in err
    err = _cli_error(capsys, ["codec-eval", "--images", str(tmp_path / "missing"), *w])
    assert "image folder not found" in err
    err = _cli_error(capsys, ["codec-eval", "--images", str(odd), "--weights", str(tmp_path / "nodir")])
    assert "nodir" in err and "weights not found" in err


def test_codec_eval_hub_id_without_network_is_one_line(capsys, hf_offline, tmp_path):
    odd = _folder(tmp_path, "img", Image.new("RGB", (64, 64)))
    err = _cli_error(capsys, ["codec-eval", "--images", str(odd), "--model", "sd-vae",
                              "--weights", "nobody/no-such-vae"])
    assert "nobody/no-such-vae" in err


def test_codec_eval_json(tmp_path, capsys, random_weights):
    d = _folder(tmp_path, "rgb", Image.fromarray(np.full((64, 64, 3), 120, np.uint8)))
    assert main(["codec-eval", "--images", str(d), "--size", "64", "--weights", str(random_weights), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    row = res["images"][0]
    assert row["image"] == "x" and row["bpp"] > 0 and {"jpeg_psnr", "webp_psnr"} <= set(row)
    assert res["mean"]["bpp"] == row["bpp"]
