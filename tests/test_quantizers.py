"""Quantizers: contract shapes, error bounds, dithering, determinism, validation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from sim.codec.quantizers import QUANTIZERS, PaletteQuantizer, UniformQuantizer, make_quantizer
from sim.errors import ConfigError, InputError

from helpers import synthetic_latent


@pytest.fixture
def latent() -> np.ndarray:
    return synthetic_latent(np.random.default_rng(0))


# -- registry and validation ----------------------------------------------------------
def test_registry_and_config_round_trip():
    assert set(QUANTIZERS) == {"uniform", "palette"}
    for q in (make_quantizer("uniform", bits=3), make_quantizer("palette", colors=16, dither=False)):
        assert make_quantizer(**q.config()).config() == q.config()
    assert make_quantizer("uniform").alphabet_size == 64
    assert make_quantizer("palette").alphabet_size == 256


@pytest.mark.parametrize("kind, kwargs, expected", [
    ("uniform", {"bits": 12}, "codec.quantizer.bits = 12: expected an integer in [2, 10]"),
    ("uniform", {"bits": 1}, "codec.quantizer.bits = 1"),
    ("uniform", {"bits": 6.0}, "codec.quantizer.bits = 6.0"),
    ("uniform", {"bits": True}, "codec.quantizer.bits = True"),
    ("palette", {"colors": 1}, "codec.quantizer.colors = 1: expected an integer in [2, 1024]"),
    ("palette", {"dither": "yes"}, "codec.quantizer.dither = 'yes': expected true or false"),
    ("uniform", {"colors": 16}, "codec.quantizer.colors: not an option of the 'uniform' quantizer (expected: bits)"),
    ("unifrom", {}, "codec.quantizer.kind = 'unifrom': expected one of uniform, palette (did you mean 'uniform'?)"),
])
def test_bad_parameters_name_field_and_value(kind, kwargs, expected):
    with pytest.raises(ConfigError) as err:
        make_quantizer(kind, **kwargs)
    assert expected in str(err.value)


@pytest.mark.parametrize("q", [UniformQuantizer(), PaletteQuantizer(colors=8)])
def test_bad_latents_and_side_info_raise_input_error(q, latent):
    bad = latent.copy()
    bad[1, 2, 3] = np.nan
    for z in (bad, latent[0], latent[:, :0]):
        with pytest.raises(InputError):
            q.fit(z)
    side = q.fit(latent)
    with pytest.raises(InputError):
        q.quantize(latent, side[:-1])
    with pytest.raises(InputError):
        q.quantize(latent[:3], side)
    with pytest.raises(InputError):
        q.dequantize(np.full((q.symbols_per_cell(4), 2), q.alphabet_size), side)


# -- uniform --------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 6, 10])
def test_uniform_error_at_most_half_step(bits, latent):
    q = UniformQuantizer(bits)
    side = q.fit(latent)
    assert len(side) == 8 * latent.shape[0]
    sym = q.quantize(latent, side)
    assert sym.shape == latent.shape and sym.dtype == np.int64
    assert sym.min() == 0 and sym.max() == 2**bits - 1  # each channel's min and max are hit
    flat = latent.reshape(4, -1)
    delta = (flat.max(1) - flat.min(1)).astype(np.float64) / (2**bits - 1)
    err = np.abs(q.dequantize(sym, side).astype(np.float64) - latent).reshape(4, -1)
    slack = 4 * np.finfo(np.float32).eps * np.abs(flat).max()  # float32 output rounding
    assert (err <= delta[:, None] / 2 + slack).all()


def test_uniform_noise_std_is_the_rounding_error_of_a_fine_step():
    """Δ/√12 (RMS over channels): the std of a uniform error on [−Δ/2, Δ/2]; at 8 bits on a
    128 × 128 latent the measured error matches it within 2 % (its SE is ≈ 0.5 %)."""
    z = synthetic_latent(np.random.default_rng(3), h=128, w=128)
    q = UniformQuantizer(8)
    side = q.fit(z)
    flat = z.reshape(4, -1).astype(np.float64)
    delta = (flat.max(1) - flat.min(1)) / 255
    assert q.noise_std(side) == pytest.approx(np.sqrt(np.mean(delta ** 2) / 12), rel=1e-6)
    err = q.dequantize(q.quantize(z, side), side).astype(np.float64) - z
    assert np.sqrt(np.mean(err ** 2)) == pytest.approx(q.noise_std(side), rel=0.02)
    assert not hasattr(PaletteQuantizer(), "noise_std")    # no closed form: the engine counts none


def test_uniform_any_trailing_shape_constant_channel_and_saturation(latent):
    q = UniformQuantizer(4)
    latent[2] = 1.25  # zero range: symbol 0, reconstructed exactly
    side = q.fit(latent)
    sym = q.quantize(latent, side)
    assert (sym[2] == 0).all()
    full = q.dequantize(sym, side)
    assert (full[2] == 1.25).all()
    cells = np.array([5, 0, 77])
    sub = q.dequantize(sym.reshape(4, -1)[:, cells], side)
    assert sub.shape == (4, 3) and np.array_equal(sub, full.reshape(4, -1)[:, cells])
    assert q.dequantize(sym[:, 0, 0], side).shape == (4,)
    assert q.dequantize(np.zeros((4, 0), np.int64), side).shape == (4, 0)
    wide = q.quantize(latent * 3 + 100, side)  # outside the fitted range: saturates
    assert wide.min() >= 0 and wide.max() <= 15


# -- palette --------------------------------------------------------------------------
def test_palette_cells_are_palette_colours(latent):
    q = PaletteQuantizer(colors=32)
    side = q.fit(latent)
    assert len(side) == 2 * 32 * 4
    pal = q.palette(side)
    sym = q.quantize(latent, side)
    assert sym.shape == (1, 32, 32) and sym.min() >= 0 and sym.max() < 32
    zq = q.dequantize(sym, side)
    assert zq.shape == latent.shape and zq.dtype == np.float32
    cells = zq.reshape(4, -1).T
    assert (cells[:, None, :] == pal[None]).all(axis=2).any(axis=1).all()
    assert q.dequantize(sym.reshape(1, -1)[:, [3, 1]], side).shape == (4, 2)


def test_dithering_changes_result_and_lowers_low_pass_error(latent):
    plain, dithered = PaletteQuantizer(colors=64, dither=False), PaletteQuantizer(colors=64, dither=True)
    side = plain.fit(latent)
    assert side == dithered.fit(latent)  # same palette; only the assignment differs
    zp = plain.dequantize(plain.quantize(latent, side), side)
    zd = dithered.dequantize(dithered.quantize(latent, side), side)
    assert not np.array_equal(zp, zd)
    low = lambda e: np.sqrt((uniform_filter(e, size=(1, 3, 3), mode="nearest") ** 2).mean())  # noqa: E731
    assert low(zd - latent) < 0.9 * low(zp - latent)
    assert ((zd - latent) ** 2).mean() > ((zp - latent) ** 2).mean()  # the price: per-cell error


def _raster_floyd_steinberg(cells: np.ndarray, pal: np.ndarray, damp_sq: float) -> np.ndarray:
    """Textbook raster-order Floyd–Steinberg, one cell at a time; errors with squared norm
    above ``damp_sq`` diffused at 3/4 (libimagequant's rule)."""
    h, w, _ = cells.shape
    acc = cells.astype(np.float32).copy()
    out = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            v = acc[y, x]
            i = int(np.argmin(((pal - v) ** 2).sum(axis=1)))
            out[y, x] = i
            err = v - pal[i]
            if (err * err).sum() > damp_sq:
                err = err * np.float32(0.75)
            for dy, dx, wgt in ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16)):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    acc[y + dy, x + dx] += err * np.float32(wgt)
    return out


def test_wavefront_dithering_equals_raster_order(latent):
    q = PaletteQuantizer(colors=12)
    z = latent[:, :9, :13]
    side = q.fit(z)
    pal = q.palette(side)
    cells = z.transpose(1, 2, 0)
    mse = (((cells[:, :, None, :] - pal) ** 2).sum(axis=3).min(axis=2)).astype(np.float64).mean()
    expected = _raster_floyd_steinberg(cells, pal, PaletteQuantizer.damp_above * mse)
    assert np.array_equal(q.quantize(z, side)[0], expected)
    assert not np.array_equal(expected, _raster_floyd_steinberg(cells, pal, np.inf))  # damping acts here


def test_palette_with_fewer_distinct_cells_than_colours():
    q = PaletteQuantizer(colors=8)
    z = np.zeros((4, 2, 3), np.float32)
    z[:, 1, 2] = [1.0, -2.0, 0.5, 3.0]
    side = q.fit(z)
    assert np.array_equal(q.dequantize(q.quantize(z, side), side), z)
    one = np.full((4, 1, 1), 0.25, np.float32)
    assert np.array_equal(q.dequantize(q.quantize(one, q.fit(one)), q.fit(one)), one)


# -- determinism and speed ------------------------------------------------------------
@pytest.mark.parametrize("config", [{"kind": "uniform", "bits": 6}, {"kind": "palette", "colors": 64}])
def test_same_input_same_bytes(config, latent):
    a, b = make_quantizer(**config), make_quantizer(**config)
    side = a.fit(latent)
    assert side == b.fit(latent.copy())
    assert np.array_equal(a.quantize(latent, side), b.quantize(latent.copy(), side))


@pytest.mark.slow
def test_palette_speed_512px_image():
    z = synthetic_latent(np.random.default_rng(1), h=64, w=64)
    q = PaletteQuantizer()
    q.quantize(z, q.fit(z))  # warm-up
    t = time.perf_counter()
    q.quantize(z, q.fit(z))
    assert time.perf_counter() - t < 0.5
