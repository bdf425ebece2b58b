"""Test doubles and data shared by several test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from sim.errors import InputError


class ByteCodec:
    """Fake codec: one byte per symbol, S = C channels, dequantize = float(symbol)."""

    def code_cells(self, prep, cells):
        return prep.symbols.reshape(prep.symbols.shape[0], -1)[:, cells].astype(np.uint8).tobytes()

    def decode_cells(self, data, n, side):
        if len(data) % max(n, 1):
            raise InputError("fake codec: payload length is not a multiple of the cell count")
        return np.frombuffer(data, np.uint8).reshape(-1, n).astype(np.int64)

    def dequantize(self, symbols, side):
        return symbols.astype(np.float32)


class Prep:
    """A prepared image for :class:`ByteCodec`: symbols (c, h, w) in 0..250 and side info ``side``."""

    def __init__(self, c=1, h=1, w=4, side=b"abc"):
        self.symbols = (np.arange(c * h * w).reshape(c, h, w) * 5 + 1) % 251
        self.side, self.shape = side, (c, h, w)


class Script:
    """Channel state with scripted losses: one bool list per burst, in order."""

    def __init__(self, *bursts):
        self.bursts = [np.array(b, bool) for b in bursts]

    def start(self, rng):
        return self

    def transmit(self, payloads):
        lost = self.bursts.pop(0)
        assert len(lost) == len(payloads), f"burst of {len(payloads)} packets, script has {len(lost)}"
        return lost, [b"" if gone else p for p, gone in zip(payloads, lost)]


def synthetic_latent(rng: np.random.Generator, c: int = 4, h: int = 32, w: int = 32) -> np.ndarray:
    """SD-like latent: smooth field + Laplacian detail, channels mixed, std ≈ 5."""
    smooth = np.stack([gaussian_filter(rng.standard_normal((h, w)), 2.0, mode="wrap") for _ in range(c)])
    smooth /= smooth.std(axis=(1, 2), keepdims=True)
    z = 0.8 * smooth + 0.6 * rng.laplace(size=(c, h, w)) / np.sqrt(2)
    z = np.einsum("ij,jhw->ihw", np.eye(c) + 0.4 * rng.standard_normal((c, c)), z)
    return (5.0 * (z + rng.normal(0, 1, (c, 1, 1)))).astype(np.float32)


def random_tiny_autoencoder(widths=(8, 8, 8)):
    """The seeded random ``TinyAutoencoder`` of the tests (``torch.manual_seed(0)`` inside
    ``fork_rng``, so the global RNG of other tests is untouched), in training mode."""
    import torch

    from sim.codec.tiny_net import TinyAutoencoder

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyAutoencoder(widths=widths)


def wake_controlnet(net) -> None:
    """Give a fresh ControlNet non-zero 'zero convolutions' so its residuals (and its control image) matter."""
    import torch

    zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
    for conv in zero_convs:
        torch.nn.init.normal_(conv.weight, std=0.05)


class FakeLPIPS:
    """Stands in for sim.lpips.LPIPS (no AlexNet): mean absolute difference / 255. ``calls``
    lists ``("features", n)`` per backbone batch and ``("from", refs, images)`` per comparison."""

    def __init__(self):
        self.calls = []

    def unit_features(self, images):
        self.calls.append(("features", len(images)))
        return [np.stack([np.asarray(a, dtype=float) for a in images])]

    def distances_from(self, ref_features, images, image_features=None):
        feats = image_features if image_features is not None else self.unit_features(images)
        self.calls.append(("from", len(ref_features[0]), len(feats[0])))
        return np.array([[np.abs(a - b).mean() / 255 for b in feats[0]] for a in ref_features[0]])

    def distances(self, refs, images):
        return self.distances_from(self.unit_features(refs), images)


def write_tiny_scenario(folder, name: str = "tiny", weights=None, **changes):
    """A scenario YAML in ``folder`` on a tiny random codec (saved there unless ``weights`` names
    one): 2 images of 32 × 32, tile packets, a bernoulli channel swept over 0 and 0.3 loss,
    resend / interp complement / none, one repeat; ``changes`` replace top-level sections."""
    import yaml

    from sim.codec.tiny import save_tiny

    if weights is None:
        weights = folder / f"{name}_codec.safetensors"
        save_tiny(random_tiny_autoencoder(), weights, {"note": "random, for tests"})
    data = {
        "name": name, "seed": 5,
        "images": {"names": ["astronaut", "coffee"], "size": 32},
        "codec": {"weights": str(weights)},
        "packetizer": {"tile": 1},
        "link": {"rate_bps": 1.0e6, "delay_s": 0.01},
        "channel": {"kind": "bernoulli"},
        "policies": ["resend", {"kind": "complement", "method": "interp"}, "none"],
        "sweep": {"channel.loss": [0.0, 0.3]},
        "repeats": 1,
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
