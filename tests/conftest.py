"""Shared test fixtures: tiny seeded diffusers models (saved once per session) and an offline hub.

The tiny models are built as diffusers' own tests build them: random weights from
``torch.manual_seed(0)`` (inside ``fork_rng``, so the global RNG of other tests is untouched),
latent stride 2 (a 64 × 64 image ↔ a 4 × 32 × 32 latent).
"""

from __future__ import annotations

import socket

import pytest
import torch
from helpers import wake_controlnet


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (restored after it): tiny models and small
    convolutions on a shared 2-core CPU run faster and steadier on one thread than on two.
    Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def no_lpips():
    """LPIPS unavailable for a module's tests (as on a machine without its weights): no network,
    no AlexNet; a run's workers are told not to score it. Modules use it with
    ``pytestmark = pytest.mark.usefixtures("no_lpips")``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sim.lpips.load_lpips", lambda cache_dir=None: None)
        yield


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


# -- complement (EEN + latent UNet + ControlNets): tiny seeded random models ---------------------

@pytest.fixture(scope="session")
def random_tiny_codec():
    """A :class:`~sim.codec.Codec` around a seeded random ``TinyAutoencoder`` (stride 8), 6-bit uniform + range."""
    from sim.codec import Codec
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer
    from sim.codec.tiny import TinyModel
    from sim.codec.tiny_net import TinyAutoencoder

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyAutoencoder(widths=(8, 8, 8))
    return Codec(TinyModel(net, scaling_factor=0.5), make_quantizer("uniform", bits=6), make_entropy_coder("range"))


@pytest.fixture(scope="session")
def tiny_complement_dir(tmp_path_factory):
    """A seeded random ``tiny`` complement weight set saved as a folder (the shipped sizes, with a
    plain UNet and an [edges, latent] ControlNet; the inpainting-UNet layout the shipped set uses
    is built and tested in tests/test_latent_inpaint.py).

    UNet + one [edges, latent] ControlNet with woken zero convolutions, a random null
    embedding, and a small random EEN (width 8, ×8).
    """
    from sim.complement.een import EdgeEstimationNetwork, save_een
    from sim.complement.models import SD15_SCHEDULER, ControlSpec, save_weight_set, tiny_controlnet, tiny_unet

    folder = tmp_path_factory.mktemp("tiny-complement")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = tiny_unet()
        controlnet = tiny_controlnet(unet)
        wake_controlnet(controlnet)
        null = torch.randn(1, 1, unet.config.cross_attention_dim)
        een = EdgeEstimationNetwork(width=8, upscale=8)
    save_een(een, folder / "een.safetensors", {"codec": "tiny", "scaling_factor": 0.5})
    save_weight_set(folder, unet, [ControlSpec(controlnet, ("edges", "latent"))], null, SD15_SCHEDULER,
                    {"note": "random test weights"})
    return folder


@pytest.fixture(scope="session")
def tiny_sd15_dirs(tmp_path_factory):
    """SD-1.5-shaped tiny random models on disk, as diffusers' tests build them (stride 2).

    ``{"unet": pipeline folder with unet/ + scheduler/, "inpaint": ControlNet folder,
    "canny": ControlNet folder, "empty_prompt": (1, 77, 32) safetensors, "een": EEN ×2}``.
    """
    import json

    from diffusers import ControlNetModel, UNet2DConditionModel

    from sim.complement.een import EdgeEstimationNetwork, save_een
    from sim.complement.models import SD15_SCHEDULER, save_prompt_embeds

    root = tmp_path_factory.mktemp("tiny-sd15")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        )
        nets = {}
        for kind in ("inpaint", "canny"):
            nets[kind] = ControlNetModel(
                block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32,
                conditioning_embedding_out_channels=(16, 32),
            )
            wake_controlnet(nets[kind])
        prompt = torch.randn(1, 77, 32)
        een = EdgeEstimationNetwork(width=8, upscale=2)
    unet.save_pretrained(root / "pipeline" / "unet", safe_serialization=True)
    (root / "pipeline" / "scheduler").mkdir()
    (root / "pipeline" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "PNDMScheduler", **SD15_SCHEDULER}))
    for kind, net in nets.items():
        net.save_pretrained(root / kind, safe_serialization=True)
    save_prompt_embeds(root / "empty_prompt.safetensors", prompt)
    save_een(een, root / "een.safetensors", {"codec": "sd-vae", "scaling_factor": 0.18215})
    return {"unet": root / "pipeline", "inpaint": root / "inpaint", "canny": root / "canny",
            "empty_prompt": root / "empty_prompt.safetensors", "een": root / "een.safetensors"}
