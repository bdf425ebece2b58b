"""Quantizers: float latent (C, h, w) ↔ integer symbols (S, h, w) plus side info bytes.

``uniform``  per-channel scalar quantizer, ``bits`` per value, S = C symbols per cell.
             Side info: C × (min, max) little-endian float32, 8·C bytes.
``palette``  joint vector quantization of each cell's C-vector into ``colors`` palette
             entries (k-means) with Floyd–Steinberg error diffusion over the h × w grid in
             raster order (Bühlmann 2022, "Stable Diffusion Based Image Compression"; Jin
             et al., "Post-processing Based Image Coding via Stable Diffusion"), large
             errors diffused at 3/4 as in libimagequant, S = 1.
             Side info: the palette, ``colors`` × C little-endian float16, 2·colors·C bytes.

Both are deterministic: the same latent gives the same side info and symbols, bit for bit.
The layout is documented in ``docs/codec-bitstream.md``.
"""

from __future__ import annotations

import difflib
import inspect

import numpy as np
from scipy.cluster.vq import vq

from sim.errors import ConfigError, InputError

__all__ = ["UniformQuantizer", "PaletteQuantizer", "QUANTIZERS", "make_quantizer"]

_F16_MAX = float(np.finfo(np.float16).max)


def _check_int(field: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"codec.quantizer.{field} = {value!r}: expected an integer in [{lo}, {hi}]")
    return int(value)


def _check_latent(latent: np.ndarray, who: str) -> np.ndarray:
    latent = np.asarray(latent)
    if latent.ndim != 3 or latent.shape[0] < 1 or latent.shape[1] * latent.shape[2] < 1:
        raise InputError(f"{who}: expected a latent of shape (C, h, w) with C, h, w >= 1, got {latent.shape}")
    if not np.issubdtype(latent.dtype, np.floating) and not np.issubdtype(latent.dtype, np.integer):
        raise InputError(f"{who}: expected a real-valued latent, got dtype {latent.dtype}")
    latent = latent.astype(np.float32, copy=False)
    if not np.isfinite(latent).all():
        raise InputError(f"{who}: latent has NaN or infinite values")
    return latent


def _check_symbols(symbols: np.ndarray, rows: int, alphabet: int, who: str) -> np.ndarray:
    symbols = np.asarray(symbols)
    if symbols.ndim < 1 or symbols.shape[0] != rows or not np.issubdtype(symbols.dtype, np.integer):
        raise InputError(f"{who}: expected integer symbols of shape ({rows}, ...), "
                         f"got {symbols.dtype} {symbols.shape}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise InputError(f"{who}: symbols outside [0, {alphabet})")
    return symbols


class UniformQuantizer:
    """Per-channel uniform scalar quantizer over this latent's own [min, max] range.

    Symbol ``q = round((x - min) / Δ)`` with ``Δ = (max - min) / (2**bits - 1)``; values are
    reconstructed as ``min + q·Δ`` (error ≤ Δ/2). A channel with ``max == min`` gets
    symbol 0 everywhere and is reconstructed exactly. Values of another latent outside the
    fitted range saturate at symbol 0 or ``2**bits - 1``.

    Parameters
    ----------
    bits : int in [2, 10]
        Bits per latent value; the alphabet has ``2**bits`` symbols.
    """

    kind = "uniform"

    def __init__(self, bits: int = 6):
        self.bits = _check_int("bits", bits, 2, 10)
        self.alphabet_size = 1 << self.bits

    def config(self) -> dict:
        """Constructor arguments plus ``kind``: ``make_quantizer(**q.config())`` rebuilds it."""
        return {"kind": self.kind, "bits": self.bits}

    def symbols_per_cell(self, channels: int) -> int:
        return channels

    def fit(self, latent: np.ndarray) -> bytes:
        """(C, h, w) latent → side info: C × (min, max) as ``<f4``, 8·C bytes."""
        latent = _check_latent(latent, "uniform quantizer")
        flat = latent.reshape(latent.shape[0], -1)
        return np.stack([flat.min(axis=1), flat.max(axis=1)], axis=1).astype("<f4").tobytes()

    def _ranges(self, side: bytes) -> tuple[np.ndarray, np.ndarray]:
        if len(side) == 0 or len(side) % 8:
            raise InputError(f"uniform quantizer: side info of {len(side)} bytes, expected 8 per channel")
        lo, hi = np.frombuffer(side, "<f4").astype(np.float64).reshape(-1, 2).T
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi >= lo).all()):
            raise InputError("uniform quantizer: side info has a non-finite or inverted range")
        return lo, (hi - lo) / (self.alphabet_size - 1)

    def noise_std(self, side: bytes) -> float:
        """RMS over channels of the rounding error's standard deviation, Δ/√12 (the error is
        uniform on [−Δ/2, Δ/2] when Δ is small against the latent's spread)."""
        _, delta = self._ranges(side)
        return float(np.sqrt(np.mean(np.square(delta)) / 12.0))

    def quantize(self, latent: np.ndarray, side: bytes) -> np.ndarray:
        """(C, h, w) latent → (C, h, w) int64 symbols in [0, 2**bits)."""
        latent = _check_latent(latent, "uniform quantizer")
        lo, delta = self._ranges(side)
        if len(lo) != latent.shape[0]:
            raise InputError(f"uniform quantizer: side info for {len(lo)} channels, latent has {latent.shape[0]}")
        step = np.where(delta > 0, delta, 1.0)[:, None, None]
        q = np.rint((latent.astype(np.float64) - lo[:, None, None]) / step)
        return np.clip(q, 0, self.alphabet_size - 1).astype(np.int64)

    def dequantize(self, symbols: np.ndarray, side: bytes) -> np.ndarray:
        """(C, ...) symbols → (C, ...) float32 values ``min + q·Δ``."""
        lo, delta = self._ranges(side)
        symbols = _check_symbols(symbols, len(lo), self.alphabet_size, "uniform quantizer")
        shape = (-1,) + (1,) * (symbols.ndim - 1)
        return (lo.reshape(shape) + symbols * delta.reshape(shape)).astype(np.float32)


class PaletteQuantizer:
    """Joint vector quantizer: each cell's C-vector → one of ``colors`` palette entries.

    The palette is fitted by k-means (k-means++ seeding from ``default_rng(0)``, then Lloyd
    iterations until the assignment stops changing, at most 30) on this latent's cells,
    and stored as float16. With ``dither`` the cells are then quantized in raster order
    with Floyd–Steinberg error diffusion (7/16 right, 3/16 down-left, 5/16 down, 1/16
    down-right; error leaving the grid is dropped), which keeps the local mean of the
    latent closer to the original at the cost of per-cell error. As in libimagequant
    (pngquant's palette remapper), an error whose squared norm exceeds 2.4 ×
    the mean squared nearest-colour error of this latent is diffused at 3/4 strength:
    k-means centres lie inside the hull of the data, so tail cells cannot be matched and
    their full error would otherwise smear across the neighbourhood.

    Parameters
    ----------
    colors : int in [2, 1024]
        Palette size = alphabet size (256 in the papers).
    dither : bool
        Floyd–Steinberg error diffusion (True) or plain nearest colour (False).
    """

    kind = "palette"
    max_iter = 30  # Lloyd iterations at most
    damp_above = 2.4  # dithering: errors above this × mean squared error diffuse at 3/4

    def __init__(self, colors: int = 256, dither: bool = True):
        self.colors = _check_int("colors", colors, 2, 1024)
        if not isinstance(dither, (bool, np.bool_)):
            raise ConfigError(f"codec.quantizer.dither = {dither!r}: expected true or false")
        self.dither = bool(dither)
        self.alphabet_size = self.colors

    def config(self) -> dict:
        """Constructor arguments plus ``kind``: ``make_quantizer(**q.config())`` rebuilds it."""
        return {"kind": self.kind, "colors": self.colors, "dither": self.dither}

    def symbols_per_cell(self, channels: int) -> int:
        return 1

    # -- palette ---------------------------------------------------------------------
    def fit(self, latent: np.ndarray) -> bytes:
        """(C, h, w) latent → side info: the palette, ``colors`` × C as ``<f2``."""
        latent = _check_latent(latent, "palette quantizer")
        if np.abs(latent).max() > _F16_MAX:
            raise InputError(f"palette quantizer: latent values beyond the float16 range (±{_F16_MAX:g})")
        cells = latent.reshape(latent.shape[0], -1).T.astype(np.float64)  # (n, C)
        return _kmeans(cells, self.colors, self.max_iter).astype("<f2").tobytes()

    def palette(self, side: bytes) -> np.ndarray:
        """Side info → (colors, C) float32 palette."""
        if len(side) == 0 or len(side) % (2 * self.colors):
            raise InputError(f"palette quantizer: side info of {len(side)} bytes, "
                             f"expected 2 × {self.colors} colours × channels")
        pal = np.frombuffer(side, "<f2").astype(np.float32).reshape(self.colors, -1)
        if not np.isfinite(pal).all():
            raise InputError("palette quantizer: palette has NaN or infinite entries")
        return pal

    def quantize(self, latent: np.ndarray, side: bytes) -> np.ndarray:
        """(C, h, w) latent → (1, h, w) int64 palette indices."""
        latent = _check_latent(latent, "palette quantizer")
        pal = self.palette(side)
        c, h, w = latent.shape
        if pal.shape[1] != c:
            raise InputError(f"palette quantizer: palette has {pal.shape[1]} channels, latent has {c}")
        cells = np.ascontiguousarray(latent.transpose(1, 2, 0))  # (h, w, C)
        idx, dist = vq(cells.reshape(-1, c), pal, check_finite=False)
        if not self.dither:
            return idx.astype(np.int64).reshape(1, h, w)
        return _floyd_steinberg(cells, pal, self.damp_above * float(np.mean(dist.astype(np.float64) ** 2)))[None]

    def dequantize(self, symbols: np.ndarray, side: bytes) -> np.ndarray:
        """(1, ...) palette indices → (C, ...) float32 palette colours."""
        pal = self.palette(side)
        symbols = _check_symbols(symbols, 1, self.colors, "palette quantizer")
        return np.moveaxis(pal[symbols[0]], -1, 0).copy()


def _kmeans(x: np.ndarray, k: int, max_iter: int) -> np.ndarray:
    """(n, C) points → (k, C) centres: k-means++ seeding from ``default_rng(0)``, Lloyd.

    Fewer distinct points than ``k``: the distinct points, the last one repeated.
    """
    uniq = np.unique(x, axis=0)
    if len(uniq) <= k:
        return np.concatenate([uniq, np.repeat(uniq[-1:], k - len(uniq), axis=0)])
    rng = np.random.default_rng(0)
    n = len(x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for j in range(1, k):  # k-means++: next centre drawn with probability ∝ squared distance
        cum = np.cumsum(d2)
        i = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
        centres[j] = x[i]
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
    labels = None
    for _ in range(max_iter):
        new, _ = vq(x, centres, check_finite=False)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, weights=x[:, c], minlength=k) for c in range(x.shape[1])], axis=1)
        filled = counts > 0  # an emptied cluster keeps its previous centre
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def _floyd_steinberg(cells: np.ndarray, pal: np.ndarray, damp_sq: float) -> np.ndarray:
    """Floyd–Steinberg error diffusion of (h, w, C) cells onto a (k, C) palette → (h, w) int64.

    An error with squared norm above ``damp_sq`` is diffused at 3/4 strength.
    Cell (y, x) depends on (y, x-1), (y-1, x-1), (y-1, x) and (y-1, x+1), all on earlier
    anti-diagonals ``t = x + 2y``, so each such wavefront is quantized in one vectorised step.
    Each cell receives its diffused errors in the same order as in the raster-order loop
    (1/16, 5/16, 3/16, then 7/16), so the result is identical to it, float for float.
    """
    h, w, c = cells.shape
    acc = np.zeros((h + 1, w + 2, c), np.float32)  # padded: error leaving the grid is dropped
    acc[:h, 1:w + 1] = cells
    out = np.zeros((h, w), np.int64)
    ys, xs = np.mgrid[0:h, 0:w]
    t = (xs + 2 * ys).ravel()
    order = np.argsort(t, kind="stable")
    bounds = np.searchsorted(t[order], np.arange(t.max() + 2))
    yy, xx = ys.ravel()[order], xs.ravel()[order] + 1  # xx: column in the padded array
    for s in range(len(bounds) - 1):
        y, x = yy[bounds[s]:bounds[s + 1]], xx[bounds[s]:bounds[s + 1]]
        v = acc[y, x]
        idx, _ = vq(v, pal, check_finite=False)
        out[y, x - 1] = idx
        err = v - pal[idx]
        err[(err * err).sum(axis=1) > damp_sq] *= np.float32(0.75)
        # within each statement the targets are distinct, so fancy-index += is safe
        acc[y + 1, x - 1] += err * np.float32(3 / 16)
        acc[y, x + 1] += err * np.float32(7 / 16)
        acc[y + 1, x] += err * np.float32(5 / 16)
        acc[y + 1, x + 1] += err * np.float32(1 / 16)
    return out


QUANTIZERS = {"uniform": UniformQuantizer, "palette": PaletteQuantizer}


def make_quantizer(kind: str = "uniform", **kwargs):
    """A quantizer by registry name, e.g. ``make_quantizer("uniform", bits=6)``.

    Raises
    ------
    ConfigError
        Unknown ``kind``, an option the kind does not take, or a value out of range.
    """
    if kind not in QUANTIZERS:
        hint = difflib.get_close_matches(str(kind), QUANTIZERS, n=1)
        raise ConfigError(f"codec.quantizer.kind = {kind!r}: expected one of {', '.join(QUANTIZERS)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    cls = QUANTIZERS[kind]
    allowed = list(inspect.signature(cls).parameters)
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f"codec.quantizer.{key}: not an option of the {kind!r} quantizer "
                              f"(expected: {', '.join(allowed)})")
    return cls(**kwargs)
