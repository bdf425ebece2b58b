"""Edge Estimation Network: output range and shape, seeded output, weights files, Canny targets,
edge F1, and the training recipe end to end (a few steps, resumed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sim.codec.tiny import save_tiny
from sim.complement.een import (
    EDGE_THRESHOLDS, EdgeEstimationNetwork, PatchDiscriminator, canny_edges, edge_counts, edge_f1, een_input,
    f1_from_counts, load_een, ods_f1, save_een,
)
from sim.errors import ConfigError, InputError, ModelLoadError

from helpers import random_tiny_autoencoder

# een(x)[0, 0, :3, :3] for the seeded net and input below; regenerate only on purpose.
EXPECTED_SLICE = [
    [0.508604, 0.507599, 0.508709],
    [0.504274, 0.506015, 0.500294],
    [0.510772, 0.507383, 0.510364],
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _net(upscale: int = 8, width: int = 8) -> EdgeEstimationNetwork:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return EdgeEstimationNetwork(4, width, upscale).eval()


def _input(h: int = 8, w: int = 8, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, h, w, generator=g) * scale
    lost = torch.zeros(2, 1, h, w)
    lost[:, :, 2:4, 2:6] = 1
    return een_input(z, lost, 0.5)


@pytest.mark.parametrize("upscale, h, w", [(8, 8, 8), (8, 6, 10), (2, 16, 16), (1, 5, 7)])
def test_output_shape_and_range(upscale, h, w):
    net = _net(upscale)
    with torch.no_grad():
        for scale in (1.0, 1e3):  # even extreme latents give probabilities
            y = net(_input(h, w, scale))
            assert y.shape == (2, 1, h * upscale, w * upscale)
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_seeded_output_slice():
    with torch.no_grad():
        y = _net()(_input())
    got = y[0, 0, :3, :3]
    assert torch.allclose(got, torch.tensor(EXPECTED_SLICE), atol=1e-5), (
        f"pinned slice changed; if on purpose, paste: {[[round(v, 6) for v in r] for r in got.tolist()]}")


def test_een_input_zeroes_lost_cells_and_adds_the_mask():
    z = torch.ones(1, 4, 4, 4)
    lost = torch.zeros(1, 1, 4, 4)
    lost[..., 0, 0] = 1
    x = een_input(z, lost, 2.0)
    assert x.shape == (1, 5, 4, 4)
    assert x[0, :4, 0, 0].eq(0).all() and x[0, :4, 1, 1].eq(2).all() and x[0, 4].sum() == 1
    with pytest.raises(InputError, match="do not match"):
        een_input(z, torch.zeros(1, 1, 4, 5), 1.0)


def test_bad_upscale_is_refused():
    with pytest.raises(ConfigError, match="power of two"):
        EdgeEstimationNetwork(upscale=6)


def test_weights_round_trip(tmp_path):
    net = _net()
    save_een(net, tmp_path / "een.safetensors", {"codec": "tiny", "scaling_factor": 0.5})
    loaded = load_een(tmp_path)  # a folder finds een.safetensors
    with torch.no_grad():
        assert torch.equal(loaded(_input()), net(_input()))
    assert loaded.training_card == {"codec": "tiny", "scaling_factor": 0.5}
    assert not loaded.training


def test_weights_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_een(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not an EEN weights file"):
        load_een(bad)


def test_discriminator_is_a_patch_gan():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        d = PatchDiscriminator(5)
    out = d(_input(32, 32), torch.rand(2, 1, 256, 256))
    assert out.shape == (2, 1, 30, 30)  # 70 × 70 receptive fields on a 256 × 256 map


def test_canny_edges_of_a_square():
    img = -torch.ones(1, 3, 64, 64)
    img[..., 16:48, 16:48] = 1.0
    e = canny_edges(img, sigma=1.0)
    assert e.shape == (1, 1, 64, 64) and set(e.unique().tolist()) <= {0.0, 1.0}
    ys, xs = torch.nonzero(e[0, 0], as_tuple=True)
    assert ys.numel() > 60
    near_border = ((ys - 16).abs() <= 1) | ((ys - 47).abs() <= 1) | ((xs - 16).abs() <= 1) | ((xs - 47).abs() <= 1)
    assert near_border.all()


def test_edge_f1_tolerance():
    t = np.zeros((32, 32))
    t[10, 5:25] = 1
    assert edge_f1(t, t)["f1"] == 1.0
    shifted = np.roll(t, 1, axis=0)
    assert edge_f1(shifted, t, tolerance=2)["f1"] == 1.0
    assert edge_f1(shifted, t, tolerance=0)["f1"] == 0.0
    assert edge_f1(np.zeros_like(t), np.zeros_like(t))["f1"] == 1.0
    assert edge_f1(np.zeros_like(t), t)["recall"] == 0.0
    with pytest.raises(InputError, match="differ in shape"):
        edge_f1(t, t[:16])


def test_ods_pools_counts_then_picks_one_threshold():
    """Two soft maps of a 16-pixel vertical edge (column 8). A: the edge at 0.32 and a false one
    (column 0, > 2 px away) at 0.22 — alone its best is 1.0 at 0.3. B: the edge at 0.12.
    Pooled: ≤ 0.1 → P 32/48, R 1, F1 0.8; 0.15–0.2 → P ½, R ½; 0.3 → P 1, R ½ (2/3); above: 0."""
    target = np.zeros((16, 16))
    target[:, 8] = 1
    a, b = np.zeros((16, 16)), np.zeros((16, 16))
    a[:, 8], a[:, 0], b[:, 8] = 0.32, 0.22, 0.12
    ca, cb = (edge_counts(x, target, thresholds=EDGE_THRESHOLDS) for x in (a, b))
    assert EDGE_THRESHOLDS[6:] == (0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
    assert ca[0].tolist() == [16, 32, 16, 16] and ca[9].tolist() == [16, 16, 16, 16]
    assert ca[10].tolist() == [0, 0, 0, 16]
    assert ods_f1([ca]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "threshold": 0.3}
    got = ods_f1([ca, cb])                                                   # a tie: the lowest threshold
    assert got["threshold"] == 0.01 and got["f1"] == pytest.approx(0.8) and got["precision"] == pytest.approx(2 / 3)
    pooled = ca + cb                                                         # counts add up over images
    assert [f1_from_counts(r)["f1"] for r in pooled[6:12]] == pytest.approx([0.8, 0.5, 0.5, 2 / 3, 0, 0])
    assert edge_f1(a, target, threshold=0.3) == f1_from_counts(ca[9])       # one threshold: the same counts


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("een-train")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        arr = np.zeros((80, 96, 3), np.uint8)
        arr[rng.integers(0, 40):, rng.integers(0, 40):] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(images / f"{i}.png")
    save_tiny(random_tiny_autoencoder(), root / "codec.safetensors", {"scaling_factor": 0.5})
    return images, root / "codec.safetensors", root


def test_training_runs_and_resumes(train_setup):
    from sim.training.een import train_een

    images, codec, root = train_setup
    out = root / "run"
    kw = dict(codec="tiny", codec_weights=str(codec), batch=2, crop=32, width=8, save_every=1, evaluate=False)
    train_een(images, out, steps=2, **kw)
    assert torch.load(out / "checkpoint_een.pt", weights_only=True)["step"] == 2
    path = train_een(images, out, steps=3, **kw)  # resumes at step 2
    assert torch.load(out / "checkpoint_een.pt", weights_only=True)["step"] == 3
    net = load_een(path)
    assert net.config == {"latent_channels": 4, "width": 8, "upscale": 8}
    card = json.loads((out / "een_training.json").read_text())
    assert card["codec"] == "tiny" and card["scaling_factor"] == 0.5 and card["rec_weight"] == 100.0
    assert set(card["train_ema"]) >= {"l1", "adv", "d", "f1"}
    with pytest.raises(ValueError, match="crop"):
        train_een(images, out, steps=3, **{**kw, "crop": 40})
