"""Shared test fixtures: tiny seeded diffusers models (saved once per session) and an offline hub.

The tiny models are built as diffusers' own tests build them: random weights from
``torch.manual_seed(0)`` (inside ``fork_rng``, so the global RNG of other tests is untouched),
latent stride 2 (a 64 × 64 image ↔ a 4 × 32 × 32 latent).
"""

from __future__ import annotations

import socket

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_sd_vae():
    """A seeded random :class:`diffusers.AutoencoderKL`: 32/64 channels, stride 2, 4 latent channels."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        )
    return vae.eval()


@pytest.fixture(scope="session")
def tiny_sd_vae_dir(tiny_sd_vae, tmp_path_factory):
    """``tiny_sd_vae`` saved with ``save_pretrained`` (config.json + safetensors)."""
    path = tmp_path_factory.mktemp("tiny-sd-vae")
    tiny_sd_vae.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_taesd():
    """A seeded random :class:`diffusers.AutoencoderTiny`: 16 channels, stride 2, 4 latent channels."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderTiny(
            in_channels=3, out_channels=3, latent_channels=4,
            encoder_block_out_channels=(16, 16), num_encoder_blocks=(1, 1),  # one stride-2 conv
            decoder_block_out_channels=(16, 16), num_decoder_blocks=(1, 1),  # one 2× upsample
            upsampling_scaling_factor=2,
        )
    return vae.eval()


@pytest.fixture(scope="session")
def tiny_taesd_dir(tiny_taesd, tmp_path_factory):
    """``tiny_taesd`` saved with ``save_pretrained`` (config.json + safetensors)."""
    path = tmp_path_factory.mktemp("tiny-taesd")
    tiny_taesd.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    """Hugging Face hub calls fail fast and offline, against an empty cache; records socket use.

    ``huggingface_hub.constants.HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` are computed when
    huggingface_hub is imported, so setting the environment variables alone is not enough:
    both are patched too. Yields the list of attempted network connections (should stay empty)
    and the cache folder (``<tmp>/hf-cache``).
    """
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))

    attempts: list = []

    def refuse_connect(sock, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in tests")

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    yield attempts, cache
