"""Latent codecs: model (tiny | sd-vae | taesd) + quantizer (uniform | palette) + entropy coder
(range | zlib). ``load_codec`` builds one from scenario-style arguments."""

from __future__ import annotations

import difflib

from sim.codec.base import Codec, Prepared
from sim.errors import ConfigError

__all__ = ["Codec", "Prepared", "CODEC_MODELS", "DTYPES", "check_dtype", "load_model", "load_codec"]

CODEC_MODELS = ("tiny", "sd-vae", "taesd")
DTYPES = ("float32", "float16", "bfloat16")  # codec.dtype: half precision for the SD VAE / TAESD on CUDA


def check_dtype(model: str, device: str, dtype: str) -> str | None:
    """What is wrong with ``codec.dtype`` for this model and device (None: nothing)."""
    if dtype not in DTYPES:
        return f"expected one of {', '.join(DTYPES)}"
    if dtype != "float32" and not str(device).startswith("cuda"):
        return f"half precision needs codec.device: cuda (device is {device!r}); expected float32 there"
    if dtype != "float32" and model == "tiny":
        return "the tiny codec runs in float32 only; half precision is for sd-vae and taesd"
    return None


def load_model(name: str, weights: str | None = None, device: str = "cpu", dtype: str = "float32"):
    """A ``LatentModel`` by name; ``weights`` is a file/dir (tiny) or a local dir / hub id."""
    problem = check_dtype(name, device, dtype)
    if problem:
        raise ConfigError(f"codec.dtype = {dtype!r}: {problem}")
    if name == "tiny":
        from sim.codec.tiny import load_tiny

        return load_tiny(weights, device)
    if name in ("sd-vae", "taesd"):
        if not weights:
            raise ConfigError(f"codec.model = {name!r} needs codec.weights: a local directory or a hub id")
        from sim.codec import diffusers_backends as db

        load = db.load_sd_vae if name == "sd-vae" else db.load_taesd
        return load(weights, device, dtype=dtype)
    hint = difflib.get_close_matches(name, CODEC_MODELS, n=1)
    raise ConfigError(f"codec.model = {name!r}: expected one of {', '.join(CODEC_MODELS)}"
                      + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def load_codec(model: str = "tiny", quantizer: dict | None = None, entropy: str = "range",
               weights: str | None = None, device: str = "cpu", dtype: str = "float32") -> Codec:
    """Build a :class:`Codec`; ``quantizer`` is ``{"kind": "uniform", "bits": 6}``-style."""
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer

    q = dict(quantizer or {"kind": "uniform", "bits": 6})
    kind = q.pop("kind", "uniform")
    return Codec(load_model(model, weights, device, dtype), make_quantizer(kind, **q), make_entropy_coder(entropy),
                 device)
