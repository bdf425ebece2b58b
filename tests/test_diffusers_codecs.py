"""Real-weights codecs through diffusers, on tiny seeded models saved to disk (no network)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from sim.codec.diffusers_backends import (
    CONFIG_NAME, WEIGHTS_NAME, SDVAEModel, TAESDModel, load_sd_vae, load_taesd,
)
from sim.errors import ConfigError, InputError, ModelLoadError

# latent[0, 0, :3, :3] of the seeded tiny models for ``_images()``; regenerate only on purpose
# (a failing test prints the new values).
EXPECTED_SD_VAE_SLICE = [
    [-0.312199, -0.13272, -0.203123],
    [-0.305662, -0.27298, -0.233518],
    [-0.392304, -0.07077, -0.291644],
]
EXPECTED_TAESD_SLICE = [
    [-0.00551, 0.004146, 0.034877],
    [0.01444, 0.014501, 0.019785],
    [0.022309, 0.017629, 0.006141],
]


def _images(batch: int = 2, size: int = 32) -> torch.Tensor:
    """Seeded images in [-1, 1], (batch, 3, size, size)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def _check_slice(latent: torch.Tensor, expected: list) -> None:
    got = latent[0, 0, :3, :3]
    assert torch.allclose(got, torch.tensor(expected), rtol=1e-3, atol=1e-5), (
        f"pinned slice changed; if on purpose, paste: {[[round(v, 6) for v in row] for row in got.tolist()]}")


@pytest.fixture(scope="module")
def pipeline_dir(tiny_sd_vae_dir, tiny_taesd_dir, tmp_path_factory):
    """A pipeline-style folder: model_index.json at the root, the SD VAE under vae/."""
    root = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(tiny_sd_vae_dir, root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "vae": ["diffusers", "AutoencoderKL"]}))
    return root


# -- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("loader, fixture, name", [
    (load_sd_vae, "tiny_sd_vae_dir", "sd-vae"),
    (load_taesd, "tiny_taesd_dir", "taesd"),
])
def test_round_trip_shapes_and_dtypes(loader, fixture, name, request):
    model = loader(request.getfixturevalue(fixture))
    assert model.name == name and model.downscale == 2
    x = _images(2, 32)
    z = model.encode(x)
    assert z.shape == (2, 4, 16, 16) and z.dtype == torch.float32
    y = model.decode(z)
    assert y.shape == (2, 3, 32, 32) and y.dtype == torch.float32
    assert torch.equal(model.encode(x), z)  # deterministic: the posterior mode, no sampling


def test_loaded_models_equal_the_saved_ones(tiny_sd_vae, tiny_sd_vae_dir, tiny_taesd, tiny_taesd_dir):
    x = _images(1, 32)
    for loaded, reference in [(load_sd_vae(tiny_sd_vae_dir), SDVAEModel(tiny_sd_vae)),
                              (load_taesd(tiny_taesd_dir), TAESDModel(tiny_taesd))]:
        z = loaded.encode(x)
        assert torch.equal(z, reference.encode(x))
        assert torch.equal(loaded.decode(z), reference.decode(z))


def test_sd_vae_encode_is_the_posterior_mean(tiny_sd_vae):
    x = _images(1, 32)
    with torch.no_grad():
        mean = tiny_sd_vae.encode(x).latent_dist.mean
    assert torch.equal(SDVAEModel(tiny_sd_vae).encode(x), mean)


def test_pinned_latent_slices(tiny_sd_vae, tiny_taesd):
    x = _images(1, 32)
    _check_slice(SDVAEModel(tiny_sd_vae).encode(x), EXPECTED_SD_VAE_SLICE)
    _check_slice(TAESDModel(tiny_taesd).encode(x), EXPECTED_TAESD_SLICE)


def test_scaling_factors_come_from_the_config(tiny_sd_vae, tiny_taesd):
    assert SDVAEModel(tiny_sd_vae).scaling_factor == pytest.approx(0.18215)  # AutoencoderKL default (SD 1.x)
    assert TAESDModel(tiny_taesd).scaling_factor == 1.0  # TAESD latents are already SD-scaled


def test_stride_8_for_real_geometry():
    """Four blocks, as in the SD VAE and TAESD: stride 8, read from the config."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    with torch.random.fork_rng():
        torch.manual_seed(0)
        kl = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
                           down_block_types=("DownEncoderBlock2D",) * 4,
                           up_block_types=("UpDecoderBlock2D",) * 4)
        tiny = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                               num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
    for model in (SDVAEModel(kl), TAESDModel(tiny)):
        assert model.downscale == 8
        z = model.encode(_images(1, 16))
        assert z.shape == (1, 4, 2, 2) and model.decode(z).shape == (1, 3, 16, 16)


def test_taesd_images_are_in_minus_one_one(tiny_taesd):
    """diffusers' EncoderTiny feeds TAESD (x + 1) / 2 and DecoderTiny returns 2·y − 1."""
    seen = {}
    first, last = tiny_taesd.encoder.layers[0], tiny_taesd.decoder.layers[-1]
    hooks = [first.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0])),
             last.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))]
    try:
        model = TAESDModel(tiny_taesd)
        x = _images(1, 32)
        y = model.decode(model.encode(x))
    finally:
        for h in hooks:
            h.remove()
    assert torch.allclose(seen["in"], (x + 1) / 2)
    assert torch.allclose(y, seen["out"] * 2 - 1)


def test_bad_tensors_are_refused(tiny_sd_vae):
    model = SDVAEModel(tiny_sd_vae)
    with pytest.raises(InputError, match="not a multiple of 2"):
        model.encode(torch.zeros(1, 3, 31, 32))
    with pytest.raises(InputError, match=r"expected images \(B, 3, H, W\)"):
        model.encode(torch.zeros(3, 32, 32))
    with pytest.raises(InputError, match=r"expected latents \(B, 4, h, w\)"):
        model.decode(torch.zeros(1, 3, 16, 16))


def test_load_model_registry_reaches_the_loaders(tiny_sd_vae_dir, tiny_taesd_dir):
    from sim.codec import load_model

    assert isinstance(load_model("sd-vae", str(tiny_sd_vae_dir)), SDVAEModel)
    assert isinstance(load_model("taesd", str(tiny_taesd_dir)), TAESDModel)


# -- layouts -------------------------------------------------------------------------------

def test_pipeline_folder_with_vae_subfolder(pipeline_dir, tiny_sd_vae):
    x = _images(1, 32)
    expected = SDVAEModel(tiny_sd_vae).encode(x)
    assert torch.equal(load_sd_vae(pipeline_dir).encode(x), expected)  # detected
    assert torch.equal(load_sd_vae(pipeline_dir, subfolder="vae").encode(x), expected)  # named


def test_single_fp16_variant_file_loads_as_float32(tiny_sd_vae_dir, tmp_path):
    d = tmp_path / "variant"
    shutil.copytree(tiny_sd_vae_dir, d)
    (d / WEIGHTS_NAME).rename(d / "diffusion_pytorch_model.fp16.safetensors")
    model = load_sd_vae(d)
    assert model.encode(_images(1, 32)).dtype == torch.float32


def _put_in_hf_cache(cache, repo_id: str, model_dir, subfolder: str | None = None) -> None:
    """Lay a saved model out as huggingface_hub caches a download (refs/main → snapshots/<sha>/)."""
    commit = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot / subfolder if subfolder else snapshot)


def test_cached_hub_ids_load_offline(tiny_taesd_dir, tiny_taesd, tiny_sd_vae_dir, tiny_sd_vae, hf_offline):
    """Hub ids already in the HF cache load with the network off: a model repo, and a pipeline's vae/."""
    attempts, cache = hf_offline
    _put_in_hf_cache(cache, "someone/tiny-taesd", tiny_taesd_dir)
    _put_in_hf_cache(cache, "someone/tiny-pipeline", tiny_sd_vae_dir, subfolder="vae")
    x = _images(1, 32)
    assert torch.equal(load_taesd("someone/tiny-taesd").encode(x), TAESDModel(tiny_taesd).encode(x))
    assert torch.equal(load_sd_vae("someone/tiny-pipeline").encode(x), SDVAEModel(tiny_sd_vae).encode(x))
    assert attempts == []


# -- errors: one line, naming the problem ----------------------------------------------------

def _load_error(loader, *args, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        loader(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_directory(tmp_path):
    message = _load_error(load_sd_vae, tmp_path / "nowhere")
    assert message == f"{tmp_path / 'nowhere'}: no such directory"


def test_directory_without_config(tmp_path):
    assert _load_error(load_sd_vae, tmp_path) == (
        f"{tmp_path}: no config.json; expected a diffusers AutoencoderKL directory (or a pipeline with vae/)")
    assert "AutoencoderTiny" in _load_error(load_taesd, tmp_path)
    assert _load_error(load_sd_vae, tmp_path, subfolder="vae").startswith(f"{tmp_path / 'vae'}: no config.json")


def test_uncached_hub_id_fails_fast_offline(hf_offline):
    attempts, _ = hf_offline
    start = time.monotonic()
    message = _load_error(load_sd_vae, "latentcast-tests/no-such-vae")
    assert time.monotonic() - start < 2.0
    assert message == ("could not fetch hub id 'latentcast-tests/no-such-vae': no network or not in the local "
                       "cache; download it elsewhere and pass the local directory")
    assert "could not fetch hub id" in _load_error(load_taesd, "latentcast-tests/no-such-taesd")
    assert "not a valid hub id" in _load_error(load_sd_vae, "not a/valid id")
    assert attempts == []


def test_wrong_model_class(tiny_taesd_dir, tiny_sd_vae_dir):
    assert "describes AutoencoderTiny, not AutoencoderKL (use load_taesd" in _load_error(load_sd_vae, tiny_taesd_dir)
    assert "describes AutoencoderKL, not AutoencoderTiny (use load_sd_vae" in _load_error(load_taesd, tiny_sd_vae_dir)


def test_pickle_weights_are_not_loaded(tiny_sd_vae_dir, tmp_path):
    (tmp_path / CONFIG_NAME).write_bytes((tiny_sd_vae_dir / CONFIG_NAME).read_bytes())
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"never unpickled")
    message = _load_error(load_sd_vae, tmp_path)
    assert "no diffusion_pytorch_model.safetensors (found diffusion_pytorch_model.bin)" in message
    assert "safetensors weights only" in message


def test_corrupt_and_mismatched_weights(tiny_sd_vae_dir, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_sd_vae_dir, corrupt)
    (corrupt / WEIGHTS_NAME).write_bytes(b"truncated download")
    assert "could not load AutoencoderKL weights (SafetensorError" in _load_error(load_sd_vae, corrupt)

    other = tmp_path / "other-config"
    shutil.copytree(tiny_sd_vae_dir, other)
    config = json.loads((other / CONFIG_NAME).read_text())
    config["layers_per_block"] = 2  # more layers than the weights hold
    (other / CONFIG_NAME).write_text(json.dumps(config))
    assert "weights do not match config.json" in _load_error(load_sd_vae, other)


def test_a_file_is_not_a_model_directory(tiny_sd_vae_dir):
    assert "not a directory" in _load_error(load_sd_vae, tiny_sd_vae_dir / WEIGHTS_NAME)


def test_bad_device_is_a_config_error(tiny_sd_vae_dir):
    with pytest.raises(ConfigError, match="device = 'warp-drive'"):
        load_sd_vae(tiny_sd_vae_dir, device="warp-drive")


def test_sixteen_channel_vaes_are_refused():
    from diffusers import AutoencoderKL

    with torch.random.fork_rng():
        vae = AutoencoderKL(latent_channels=16, block_out_channels=(8,), norm_num_groups=8)
    with pytest.raises(ModelLoadError, match="latent_channels = 16"):
        SDVAEModel(vae)
