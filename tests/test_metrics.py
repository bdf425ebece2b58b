"""Quality metrics against closed forms and their defining properties."""

import math

import numpy as np
import pytest

from sim.errors import InputError
from sim.metrics import ms_ssim, ms_ssim_scales, psnr, quality, ssim


@pytest.fixture
def img():
    rng = np.random.default_rng(0)
    # a smooth image with texture so SSIM terms are well conditioned
    y, x = np.mgrid[0:64, 0:64]
    base = 100 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 5.0)[..., None]
    return np.clip(base + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8)


def test_identical_images(img):
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0)
    assert ms_ssim(img, img) == 1.0
    q = quality(img, img, suffix="_x")
    assert set(q) == {"psnr_x", "ssim_x", "ms_ssim_x"}


def test_psnr_closed_form(img):
    # ±d on a checkerboard, away from the clipping range: MSE = d² exactly
    base = np.clip(img, 20, 235).astype(np.int16)
    d = 5
    sign = np.where((np.indices(base.shape[:2]).sum(0) % 2) == 0, 1, -1)[..., None]
    noisy = (base + d * sign).astype(np.uint8)
    assert psnr(base.astype(np.uint8), noisy) == pytest.approx(10 * math.log10(255 ** 2 / d ** 2), abs=1e-12)


def test_psnr_gaussian_noise_matches_mse(img):
    rng = np.random.default_rng(1)
    noisy = np.clip(img.astype(np.float64) + rng.normal(0, 8, img.shape), 0, 255).round().astype(np.uint8)
    mse = np.mean((img.astype(np.float64) - noisy) ** 2)
    assert psnr(img, noisy) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert 25 < psnr(img, noisy) < 35


def test_symmetry_and_ordering(img):
    rng = np.random.default_rng(2)
    small = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    large = np.clip(img + rng.normal(0, 30, img.shape), 0, 255).astype(np.uint8)
    for f in (psnr, ssim, ms_ssim):
        assert f(img, small) == pytest.approx(f(small, img), rel=1e-12)
        assert f(img, small) > f(img, large)
    assert 0.0 <= ms_ssim(img, large) < ms_ssim(img, small) < 1.0


def test_ms_ssim_scales():
    assert ms_ssim_scales(256, 256) == 5
    assert ms_ssim_scales(128, 300) == 4
    assert ms_ssim_scales(64, 64) == 3
    assert ms_ssim_scales(16, 16) == 1
    with pytest.raises(InputError):
        ms_ssim_scales(8, 8)


def test_shape_mismatch_refused(img):
    with pytest.raises(InputError, match="one shape"):
        psnr(img, img[:32])
