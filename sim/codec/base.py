"""The codec contract: latent model + quantizer + entropy coder → real bytes.

``LatentModel``  image tensor (B, 3, H, W) in [-1, 1]  ↔  latent (B, 4, H/8, W/8), float32.
``Quantizer``    latent (C, h, w) → side info bytes + integer symbols (S, h, w), S symbols
                 per latent cell (S = C for ``uniform``, 1 for ``palette``) and back.
``EntropyCoder`` symbols of any subset of cells (S, n) ↔ bytes, with a model (bytes) fitted
                 once per image and sent once as side info.

A *cell* is one latent position (y, x); cells are indexed in raster order ``y * w + x``.
Packets carry independently decodable chunks of cells: :meth:`Codec.code_cells` and
:meth:`Codec.decode_cells`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sim.errors import InputError
from sim.images import check_size, to_tensor, to_uint8

__all__ = ["LatentModel", "Quantizer", "EntropyCoder", "Prepared", "Codec"]


class LatentModel(Protocol):
    name: str
    scaling_factor: float  # latent × scaling_factor ≈ unit variance (SD convention)

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


class Quantizer(Protocol):
    kind: str
    alphabet_size: int

    def symbols_per_cell(self, channels: int) -> int: ...
    def fit(self, latent: np.ndarray) -> bytes: ...
    def quantize(self, latent: np.ndarray, side: bytes) -> np.ndarray: ...
    def dequantize(self, symbols: np.ndarray, side: bytes) -> np.ndarray: ...


class EntropyCoder(Protocol):
    name: str

    def fit(self, symbols: np.ndarray, alphabet_size: int) -> bytes: ...
    def encode(self, symbols: np.ndarray, model: bytes) -> bytes: ...
    def decode(self, data: bytes, n_cells: int, model: bytes) -> np.ndarray: ...


@dataclass(frozen=True)
class Prepared:
    """One image's quantized latent, ready to be cut into packets.

    symbols : (S, h, w) int64 quantizer symbols
    side : bytes — quantizer side info + entropy model, sent once per image
    shape : (C, h, w) latent shape
    """

    symbols: np.ndarray
    side: bytes
    shape: tuple[int, int, int]

    @property
    def n_cells(self) -> int:
        return self.shape[1] * self.shape[2]


def _pack(*parts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


def _unpack(blob: bytes, count: int) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(blob):
            raise InputError("side info truncated")
        (n,) = struct.unpack_from("<I", blob, pos)
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


class Codec:
    """A latent model with a quantizer and an entropy coder (CompressAI-style contract)."""

    def __init__(self, model: LatentModel, quantizer: Quantizer, entropy: EntropyCoder,
                 device: str = "cpu"):
        self.model, self.quantizer, self.entropy, self.device = model, quantizer, entropy, device

    # -- model: image ↔ float latent -------------------------------------------------
    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → latent (4, H/8, W/8) float32."""
        check_size(image.shape[0], image.shape[1])
        return self.model.encode(to_tensor(image).to(self.device))[0].float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Latent (4, h, w) or batch (B, 4, h, w) → (H, W, 3) uint8 image (or list of them)."""
        z = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32)).to(self.device)
        if z.dim() == 3:
            return to_uint8(self.model.decode(z[None]))
        return [to_uint8(x) for x in self.model.decode(z)]

    # -- quantizer + entropy coder: latent ↔ bytes ----------------------------------
    def prepare(self, latent: np.ndarray) -> Prepared:
        """Quantize a latent and fit the entropy model; the side info is sent once."""
        qside = self.quantizer.fit(latent)
        symbols = self.quantizer.quantize(latent, qside)
        emodel = self.entropy.fit(symbols, self.quantizer.alphabet_size)
        return Prepared(symbols.astype(np.int64), _pack(qside, emodel), tuple(latent.shape))

    def code_cells(self, prep: Prepared, cells: np.ndarray) -> bytes:
        """Bytes for the given raster cell indices, decodable on their own with the side info."""
        _, emodel = _unpack(prep.side, 2)
        sym = prep.symbols.reshape(prep.symbols.shape[0], -1)[:, cells]
        return self.entropy.encode(sym, emodel)

    def decode_cells(self, data: bytes, n_cells: int, side: bytes) -> np.ndarray:
        """Inverse of :meth:`code_cells`: (S, n_cells) symbols."""
        _, emodel = _unpack(side, 2)
        return self.entropy.decode(data, n_cells, emodel)

    def dequantize(self, symbols: np.ndarray, side: bytes) -> np.ndarray:
        """(S, ...) symbols → (C, ...) float32 latent values."""
        qside, _ = _unpack(side, 2)
        return self.quantizer.dequantize(symbols, qside)

    def quantization_noise_std(self, side: bytes) -> float | None:
        """The standard deviation of the quantizer's error for this side info, where the
        quantizer has a closed form for it (uniform: Δ/√12, RMS over channels); else None."""
        noise_std = getattr(self.quantizer, "noise_std", None)
        return None if noise_std is None else noise_std(_unpack(side, 2)[0])

    # -- whole image ---------------------------------------------------------------
    def compress(self, image: np.ndarray) -> dict:
        """Image → ``{"strings": [payload], "side": bytes, "shape": (C, h, w), "latent": z}``."""
        latent = self.encode(image)
        prep = self.prepare(latent)
        payload = self.code_cells(prep, np.arange(prep.n_cells))
        return {"strings": [payload], "side": prep.side, "shape": prep.shape, "latent": latent}

    def decompress(self, compressed: dict) -> dict:
        """Inverse of :meth:`compress`: ``{"x_hat": (H, W, 3) uint8, "latent": z'}``."""
        c, h, w = compressed["shape"]
        sym = self.decode_cells(compressed["strings"][0], h * w, compressed["side"])
        s = sym.shape[0]
        latent = self.dequantize(sym.reshape(s, h, w), compressed["side"])
        return {"x_hat": self.decode(latent), "latent": latent}

    @staticmethod
    def bpp(compressed: dict, height: int, width: int) -> float:
        """8 × (payload bytes + side bytes) / pixels."""
        nbytes = sum(len(s) for s in compressed["strings"]) + len(compressed["side"])
        return 8.0 * nbytes / (height * width)
