"""The shipped ``tiny`` codec model: :class:`TinyAutoencoder` with weights in the package."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sim.codec.tiny_net import TinyAutoencoder
from sim.errors import ModelLoadError

__all__ = ["TinyModel", "load_tiny", "save_tiny", "SHIPPED_WEIGHTS"]

SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "tiny_codec.safetensors"


class TinyModel:
    """``LatentModel`` around a :class:`TinyAutoencoder` (stride 8, 4 latent channels)."""

    name = "tiny"
    downscale = 8

    def __init__(self, net: TinyAutoencoder, scaling_factor: float = 1.0, training: dict | None = None):
        self.net = net.eval()
        self.scaling_factor = scaling_factor
        self.training = training or {}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)


def load_tiny(weights: str | Path | None = None, device: str = "cpu") -> TinyModel:
    """Load tiny-codec weights (default: the shipped file) from safetensors."""
    path = Path(weights) if weights else SHIPPED_WEIGHTS
    if path.is_dir():
        path = path / "tiny_codec.safetensors"
    if not path.is_file():
        raise ModelLoadError(f"{path}: tiny codec weights not found"
                             + ("; reinstall latentcast or run `latentcast train codec`" if not weights else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        config = json.loads(meta["config"])
        training = json.loads(meta.get("training", "{}"))
        net = TinyAutoencoder(config["latent_channels"], tuple(config["widths"]))
        net.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as err:
        raise ModelLoadError(f"{path}: not a tiny codec weights file ({err.__class__.__name__}: "
                             f"{str(err).splitlines()[0][:120]})") from None
    return TinyModel(net.to(device), float(training.get("scaling_factor", 1.0)), training)


def save_tiny(net: TinyAutoencoder, path: str | Path, training: dict) -> None:
    """Write weights + config + training card (``training``, JSON) as one safetensors file."""
    meta = {"config": json.dumps(net.config), "training": json.dumps(training)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
