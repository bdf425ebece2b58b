"""Image quality metrics on RGB ``uint8`` images (H, W, 3), data range 255.

All three metrics compare two images of the same shape and are symmetric in their
arguments. Results are Python floats; identical images give ``psnr = inf`` (the results
file stores a non-finite number as ``null``), ``ssim = ms_ssim = 1.0``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

from sim.errors import InputError

__all__ = ["psnr", "ssim", "ms_ssim", "quality", "MS_SSIM_WEIGHTS", "ms_ssim_scales"]

DATA_RANGE = 255.0
# Wang, Simoncelli & Bovik (2003), "Multi-scale structural similarity for image quality assessment".
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN, _SIGMA = 11, 1.5
_K1, _K2 = 0.01, 0.03


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"quality metrics need two (H, W, 3) images of one shape; got {a.shape} and {b.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255² / MSE)`` over all pixels and channels.

    Returns ``inf`` for identical images.
    """
    a, b = _check(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(DATA_RANGE ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the image and its three channels (scikit-image).

    Uses the settings that match Wang et al. (2004): an 11 × 11 Gaussian window with
    σ = 1.5, population covariances, K1 = 0.01, K2 = 0.03, data range 255.
    """
    a, b = _check(a, b)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=DATA_RANGE,
                                       gaussian_weights=True, sigma=_SIGMA, use_sample_covariance=False))


def _gauss_window() -> np.ndarray:
    x = np.arange(_WIN, dtype=np.float64) - _WIN // 2
    g = np.exp(-(x ** 2) / (2 * _SIGMA ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of a (H, W) image, keeping only the 'valid' region."""
    y = correlate1d(correlate1d(x, g, axis=0, mode="reflect"), g, axis=1, mode="reflect")
    r = _WIN // 2
    return y[r:-r, r:-r]


def _ssim_cs(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure term) of two (H, W) float64 images."""
    c1, c2 = (_K1 * DATA_RANGE) ** 2, (_K2 * DATA_RANGE) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def ms_ssim_scales(height: int, width: int) -> int:
    """Number of MS-SSIM scales used for an image: at most 5, the coarsest side ≥ 11 px."""
    side, scales = min(height, width), 0
    while scales < len(MS_SSIM_WEIGHTS) and side >= _WIN:
        scales += 1
        side //= 2
    if scales == 0:
        raise InputError(f"MS-SSIM needs images of at least {_WIN} × {_WIN} pixels; got {height} × {width}")
    return scales


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM (Wang et al. 2003), averaged over the three channels.

    Five scales with the standard weights ``MS_SSIM_WEIGHTS``, an 11 × 11 Gaussian window
    (σ = 1.5, 'valid' region), 2 × 2 average pooling between scales. The contrast-structure
    terms of scales 1..M-1 and the full SSIM of the coarsest scale M are combined as
    ``∏ cs_j^{w_j} · ssim_M^{w_M}``; negative terms are clipped to 0 before the powers
    (as in common implementations), so the result lies in [0, 1].

    Small images: scales are dropped until the coarsest scale is at least 11 px on its
    shorter side (256 px → 5 scales, 128 px → 4, 64 px → 3, 32 px → 2, 16 px → 1), and the
    weights of the scales kept are renormalised to sum to 1. Only compare values computed
    at the same image size.
    """
    a, b = _check(a, b)
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


def quality(a: np.ndarray, b: np.ndarray, suffix: str = "") -> dict[str, float]:
    """``{"psnr"+suffix, "ssim"+suffix, "ms_ssim"+suffix}`` of two (H, W, 3) uint8 images."""
    return {f"psnr{suffix}": psnr(a, b), f"ssim{suffix}": ssim(a, b), f"ms_ssim{suffix}": ms_ssim(a, b)}
