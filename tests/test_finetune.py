"""Stage 3 of the complement recipe (sim.training.finetune) with tiny seeded random models: the
training chain is the receiver's chain, the run trains what it says, resumes, is seeded, and
refuses bad settings before any work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sim.complement.learned import LearnedComplement
from sim.complement.models import inpainting_unet, load_weight_set
from sim.errors import ConfigError
from sim.complement.chain import conditioning, inpaint
from sim.training.finetune import finetune_complement

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path, random_tiny_codec):
    """(images folder, keyword arguments for finetune_complement with the random tiny codec)."""
    from PIL import Image

    from sim.codec.tiny import save_tiny

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(images / "a.png")
    save_tiny(random_tiny_codec.model.net, tmp_path / "codec.safetensors", {"scaling_factor": 0.5})
    return images, dict(codec="tiny", codec_weights=str(tmp_path / "codec.safetensors"), batch=2, crop=64,
                        save_every=1, loop_steps=2)


def _l2_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in for VGG-LPIPS: per-sample mean squared error."""
    return (a - b).pow(2).mean(dim=(1, 2, 3))


def _models(tiny_complement_dir, inpainting):
    """The test weight set; with ``inpainting`` its UNet widened to an inpainting UNet on interp context."""
    models = load_weight_set(tiny_complement_dir)
    if inpainting:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            unet = inpainting_unet(models.unet)
            torch.nn.init.normal_(unet.conv_in.weight, std=0.05)  # the new inputs matter
        models = dataclasses.replace(models, unet=unet.eval(), context="interp")
    return models


def _case():
    latent = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    missing = np.zeros((8, 8), dtype=bool)
    missing[2:5, 1:6] = True
    return latent, missing


@pytest.mark.parametrize("inpainting", [False, True])
def test_training_chain_is_the_methods_chain(random_tiny_codec, tiny_complement_dir, inpainting):
    """The calls stage 3 makes (conditioning under no_grad, then inpaint with the trained null
    embedding) give the ``learned`` method's lost cells for the same generator seed: plain UNet +
    masked context, and inpainting UNet + interp context."""
    models = _models(tiny_complement_dir, inpainting)
    latent, missing = _case()
    method = LearnedComplement(random_tiny_codec, models, steps=2)
    expected = method.run(latent, missing, torch.Generator().manual_seed(7))["latent"]
    codec = random_tiny_codec.model
    z = torch.from_numpy(latent)[None]
    lost = torch.from_numpy(missing)[None, None].float()
    with torch.no_grad():
        edges, image = conditioning(models, codec, z, lost)
        got = inpaint(models, z, lost, edges, image, torch.Generator().manual_seed(7),
                      scaling_factor=codec.scaling_factor, stride=8, steps=2,
                      prompt_embeds=models.prompt_embeds.clone())[0] / codec.scaling_factor
    assert np.allclose(got.numpy()[:, missing], expected[:, missing], atol=1e-5)
    assert np.allclose(got.numpy()[:, ~missing], latent[:, ~missing], atol=1e-6)  # known cells blended back
    assert not np.allclose(expected[:, missing], 0)


@pytest.mark.parametrize("inpainting", [False, True])
def test_training_chain_carries_gradients_to_what_stage3_trains(random_tiny_codec, tiny_complement_dir, inpainting):
    """inpaint is differentiable in the UNet, the ControlNet and the null embedding through the
    lost cells; the known cells are blended back exactly, so they carry no gradient."""
    models = _models(tiny_complement_dir, inpainting)
    latent, missing = _case()
    codec = random_tiny_codec.model
    z = torch.from_numpy(np.stack([latent, latent[:, ::-1].copy()]))
    lost = torch.from_numpy(np.stack([missing, missing.T]))[:, None].float()
    null = torch.nn.Parameter(models.prompt_embeds.detach().clone())
    nets = (models.unet, models.controlnets[0].net)
    for net in nets:
        net.requires_grad_(True)
    with torch.no_grad():
        edges, image = conditioning(models, codec, z, lost)
    out = inpaint(models, z, lost, edges, image, torch.Generator().manual_seed(1), scaling_factor=codec.scaling_factor,
                  stride=8, steps=2, prompt_embeds=null)
    (out * lost).square().sum().backward()
    assert null.grad is not None and null.grad.abs().sum() > 0
    for net in nets:
        assert sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None) > 0
    for net in nets:
        net.zero_grad(set_to_none=True)
    null.grad = None
    out = inpaint(models, z, lost, edges, image, torch.Generator().manual_seed(1), scaling_factor=codec.scaling_factor,
                  stride=8, steps=2, prompt_embeds=null)
    (out * (1 - lost)).sum().backward()
    assert null.grad.abs().sum() == 0
    for net in nets:
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.parameters())


def test_finetune_trains_resumes_and_loads(setup, random_tiny_codec, tiny_complement_dir, tmp_path):
    images, kw = setup
    base = load_weight_set(tiny_complement_dir)
    out = tmp_path / "run"
    finetune_complement(images, out, weights=tiny_complement_dir, steps=1, perceptual=_l2_loss, **kw)
    finetune_complement(images, out, weights=tiny_complement_dir, steps=2, perceptual=_l2_loss, **kw)  # resumes
    ckpt = torch.load(out / "checkpoint_finetune.pt", weights_only=True)
    assert ckpt["step"] == 2 and len(ckpt["history_loss"]) == 2  # the first run's losses survive the resume
    tuned = load_weight_set(out)
    # every trained part moved: the UNet, the ControlNet (through its zero convolutions) and the null embedding
    for a, b in ((tuned.unet, base.unet), (tuned.controlnets[0].net, base.controlnets[0].net)):
        changed = [k for k, v in a.state_dict().items() if not torch.equal(v, b.state_dict()[k])]
        assert changed
    assert not torch.equal(tuned.prompt_embeds, base.prompt_embeds)
    assert tuned.steps == 2 and tuned.context == base.context and tuned.een is not None
    assert base.een_file == tiny_complement_dir / "een.safetensors" and tuned.een_file == out / "een.safetensors"
    assert tuned.een_file.read_bytes() == base.een_file.read_bytes()  # the base's EEN, copied
    assert tuned.controlnets[0].inputs == base.controlnets[0].inputs
    assert tuned.card["stage"] == "finetune" and tuned.card["base_training"] == base.card
    assert tuned.card["lpips_net"] == "vgg" and set(tuned.card["loss_first_last_20"]) == {"loss", "l1", "lpips"}
    latent = np.random.default_rng(1).standard_normal((4, 8, 8)).astype(np.float32)
    missing = np.zeros((8, 8), dtype=bool)
    missing[3:6, 2:7] = True
    res = LearnedComplement(random_tiny_codec, tuned)(latent, missing, np.random.default_rng(0))
    assert np.array_equal(res[:, ~missing], latent[:, ~missing]) and np.isfinite(res).all()


def test_finetune_is_seeded(setup, tiny_complement_dir, tmp_path):
    images, kw = setup
    a = load_weight_set(finetune_complement(images, tmp_path / "a", weights=tiny_complement_dir, steps=1,
                                            lpips_weight=0.0, **kw))
    b = load_weight_set(finetune_complement(images, tmp_path / "b", weights=tiny_complement_dir, steps=1,
                                            lpips_weight=0.0, **kw))
    c = load_weight_set(finetune_complement(images, tmp_path / "c", weights=tiny_complement_dir, steps=1,
                                            lpips_weight=0.0, seed=1, **kw))
    sa, sb, sc = (m.unet.state_dict() for m in (a, b, c))
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())
    assert not all(torch.equal(v, sc[k]) for k, v in sa.items())
    assert a.card["lpips_net"] is None


def test_denoise_weight_also_trains_the_denoising_step(setup, tiny_complement_dir, tmp_path):
    """With denoise_weight the CDS output's loss joins the objective: same seed, other weights."""
    images, kw = setup
    runs = {w: load_weight_set(finetune_complement(images, tmp_path / f"w{w}", weights=tiny_complement_dir, steps=2,
                                                   lpips_weight=0.0, denoise_weight=w, **kw)) for w in (0.0, 1.0)}
    plain, both = runs[0.0].unet.state_dict(), runs[1.0].unet.state_dict()
    assert not all(torch.equal(v, both[k]) for k, v in plain.items())
    card = runs[1.0].card
    assert card["denoise_weight"] == 1.0 and runs[0.0].card["denoise_weight"] == 0.0
    first, last = card["loss_first_last_20"]["denoise"]
    assert np.isfinite([first, last]).all() and first > 0
    assert "denoise" not in runs[0.0].card["loss_first_last_20"]
    ckpt = torch.load(tmp_path / "w1.0" / "checkpoint_finetune.pt", weights_only=True)
    assert len(ckpt["history_denoise"]) == 2 and len(ckpt["history_loss"]) == 2


def test_finetune_refuses_bad_settings(setup, tiny_complement_dir, tmp_path, monkeypatch):
    images, kw = setup
    with pytest.raises(ConfigError, match="not both 0"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, l1_weight=0, lpips_weight=0, **kw)
    with pytest.raises(ConfigError, match="steps = 0"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, steps=0, **kw)
    with pytest.raises(ConfigError, match="edge_dropout"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, edge_dropout=2.0, **kw)
    with pytest.raises(ConfigError, match="denoise_weight = -1"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, denoise_weight=-1, **kw)
    with pytest.raises(ConfigError, match="crop = 40"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, perceptual=_l2_loss,
                            **{**kw, "crop": 40})
    with pytest.raises(ConfigError, match="image_size = 32: expected at least the crop"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, perceptual=_l2_loss, image_size=32,
                            **kw)
    monkeypatch.setattr("sim.lpips.load_lpips", lambda **_: None)  # as on a machine without the VGG weights
    with pytest.raises(ConfigError, match="--build --net vgg"):
        finetune_complement(images, tmp_path / "x", weights=tiny_complement_dir, **kw)
    no_een = tmp_path / "no_een"
    no_een.mkdir()
    for f in tiny_complement_dir.iterdir():
        if f.name != "een.safetensors":
            (no_een / f.name).symlink_to(f)
    with pytest.raises(ConfigError, match="no een.safetensors"):
        finetune_complement(images, tmp_path / "x", weights=no_een, lpips_weight=0.0, **kw)
    assert not (tmp_path / "x").exists()  # nothing written before the settings are checked


def test_train_finetune_command(setup, tiny_complement_dir, tmp_path):
    from sim.cli import main

    images, kw = setup
    common = ["--images", str(images), "--codec-weights", kw["codec_weights"], "--crop", "64", "--batch", "1",
              "--weights", str(tiny_complement_dir)]
    assert main(["train", "finetune", *common, "--out", str(tmp_path / "run"), "--steps", "1",
                 "--lpips-weight", "0", "--loop-steps", "1", "--augment", "--image-size", "64",
                 "--denoise-weight", "0.5"]) == 0
    models = load_weight_set(tmp_path / "run")
    assert models.steps == 1 and models.card["steps"] == 1 and models.card["lr"] == 5e-5
    assert models.card["augment"] is True and models.card["image_size"] == 64
    assert models.card["denoise_weight"] == 0.5
