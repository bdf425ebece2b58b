"""The batched torch metrics against scikit-image's SSIM, the former numpy MS-SSIM and numpy PSNR."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d, gaussian_filter
from skimage.metrics import structural_similarity

import sim.metrics as metrics
from sim.errors import InputError
from sim.metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, psnr, quality, quality_batch, ssim

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4  # agreement asked of the torch code with the references (it measures ~1e-15)
SIZES = [(32, 32), (64, 64), (256, 256), (96, 160)]


# ---- references: numpy PSNR, scikit-image SSIM, the numpy/scipy MS-SSIM the torch code replaced


def reference_psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def reference_ssim(a, b):
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255.0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def _gauss_window():
    x = np.arange(11, dtype=np.float64) - 5
    g = np.exp(-(x ** 2) / (2 * 1.5 ** 2))
    return g / g.sum()


def _filter_valid(x, g):
    y = correlate1d(correlate1d(x, g, axis=0, mode="reflect"), g, axis=1, mode="reflect")
    return y[5:-5, 5:-5]


def _ssim_cs(x, y, g):
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def reference_ms_ssim(a, b):
    m = ms_ssim_scales(a.shape[0], a.shape[1])
    w = np.asarray(MS_SSIM_WEIGHTS[:m], dtype=np.float64)
    w = w / w.sum()
    g = _gauss_window()
    total = 0.0
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        value = 1.0
        for j in range(m):
            s, cs = _ssim_cs(x, y, g)
            term = s if j == m - 1 else cs
            value *= max(term, 0.0) ** w[j]
            if j < m - 1:
                h2, w2 = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
                x = x[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
                y = y[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
        total += value
    return float(total / 3.0)


# ---- image pairs


def _u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _pattern(h, w, rng):
    """A smooth textured image with noise, so every SSIM term is well conditioned."""
    y, x = np.mgrid[0:h, 0:w]
    base = 110 + 70 * np.sin(x / 6.0)[..., None] * np.cos(y / 4.0)[..., None] * np.array([1.0, 0.6, -0.8])
    return _u8(base + rng.normal(0, 8, (h, w, 3)))


def image_pairs(h, w, seed=0):
    """Random and structured (reference, image) pairs of one size: noise levels, blur, shift,
    contrast, independent noise (cs < 0 at some scales) and flat images (zero variances)."""
    rng = np.random.default_rng(seed)
    ref = _pattern(h, w, rng)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [
        (ref, _u8(ref + rng.normal(0, 3, ref.shape))),
        (ref, _u8(ref + rng.normal(0, 40, ref.shape))),
        (ref, _u8(gaussian_filter(ref.astype(np.float64), (2, 2, 0)))),
        (ref, np.roll(ref, (2, -3), axis=(0, 1))),
        (ref, _u8(0.6 * ref + 50)),
        (noise, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
        (np.full((h, w, 3), 90, np.uint8), np.full((h, w, 3), 140, np.uint8)),
    ]


def assert_rows_close(rows, expected, tol=1e-12):
    """Lists of metric dicts equal to ``tol`` (relative and absolute; ``inf`` only equals ``inf``)."""
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected):
        assert row == pytest.approx(exp, rel=tol, abs=tol)


def _max_diffs(pairs, rows):
    diffs = {"psnr": 0.0, "ssim": 0.0, "ms_ssim": 0.0}
    for (a, b), row in zip(pairs, rows):
        for key, ref in (("psnr", reference_psnr), ("ssim", reference_ssim), ("ms_ssim", reference_ms_ssim)):
            diffs[key] = max(diffs[key], abs(row[key] - ref(a, b)))
    return diffs


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_batch_matches_references(size):
    pairs = image_pairs(*size)
    rows = quality_batch([a for a, _ in pairs], [b for _, b in pairs])
    assert max(_max_diffs(pairs, rows).values()) < TOL


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_single_pair_functions_match_references(size):
    pairs = image_pairs(*size, seed=1)[:3] + image_pairs(*size, seed=1)[5:]
    rows = [{"psnr": psnr(a, b), "ssim": ssim(a, b), "ms_ssim": ms_ssim(a, b)} for a, b in pairs]
    assert max(_max_diffs(pairs, rows).values()) < TOL


def test_batch_equals_single_calls():
    pairs = image_pairs(64, 96, seed=2)
    rows = quality_batch([a for a, _ in pairs], [b for _, b in pairs], suffix="_rx")
    for (a, b), row in zip(pairs, rows):
        assert_rows_close([row], [quality(a, b, suffix="_rx")])
        assert row["ssim_rx"] == pytest.approx(ssim(a, b), rel=1e-12, abs=1e-12)
        assert row["ms_ssim_rx"] == pytest.approx(ms_ssim(a, b), rel=1e-12, abs=1e-12)
        assert row["psnr_rx"] == psnr(a, b)


def test_one_reference_broadcast():
    pairs = image_pairs(48, 40, seed=3)[:5]  # one reference, five images
    ref, images = pairs[0][0], [b for _, b in pairs]
    expected = quality_batch([ref] * len(images), images)
    for refs in (ref, ref[None], torch.from_numpy(ref)):
        assert_rows_close(quality_batch(refs, np.stack(images)), expected)
    assert_rows_close(quality_batch(ref, torch.from_numpy(np.stack(images))), expected)


def test_chunks_and_row_blocks_do_not_change_values(monkeypatch):
    pairs = image_pairs(64, 80, seed=4) * 2  # 14 pairs
    refs, images = [a for a, _ in pairs], [b for _, b in pairs]
    expected = [quality(a, b) for a, b in pairs]
    monkeypatch.setattr(metrics, "_CHUNK", 3)
    monkeypatch.setattr(metrics, "_CPU_BLOCK", 3 * 80 * 7)  # 7 rows per block at the full scale
    assert_rows_close(quality_batch(refs, images), expected)
    assert_rows_close(quality_batch(refs[0], images[:5]), expected[:5])


def test_identical_images():
    pairs = image_pairs(32, 48, seed=5)
    images = [a for a, _ in pairs]
    for row in quality_batch(images, images) + quality_batch(images[0], [images[0]] * 3):
        assert row == {"psnr": math.inf, "ssim": 1.0, "ms_ssim": 1.0}


def test_bad_inputs_refused():
    a = np.zeros((32, 32, 3), np.uint8)
    assert quality_batch(a, []) == []
    with pytest.raises(InputError, match="one shape"):
        quality_batch(a, [a[:16]])
    with pytest.raises(InputError, match="one shape"):
        quality_batch([a, a], [a, a, a])
    with pytest.raises(InputError, match="one shape"):
        quality_batch(a, [a, a[:, :16]])
    with pytest.raises(InputError, match="one shape"):
        quality_batch(a[..., :1], [a[..., :1]])
    with pytest.raises(InputError, match="11 × 11"):
        quality_batch(a[:10], [a[:10]])
    with pytest.raises(InputError, match="11 × 11"):
        ssim(a[:8], a[:8])
    assert psnr(a[:8], a[:8]) == math.inf  # PSNR needs no window


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    pairs = image_pairs(256, 256, seed=6)
    refs, images = [a for a, _ in pairs], [b for _, b in pairs]
    for r in (refs, refs[0]):
        assert_rows_close(quality_batch(r, images, device="cuda"), quality_batch(r, images), tol=1e-10)
