"""Image quality metrics on RGB ``uint8`` images (H, W, 3), data range 255.

All three metrics compare two images of the same shape and are symmetric in their
arguments. Results are Python floats; identical images give ``psnr = inf`` (the results
file stores a non-finite number as ``null``), ``ssim = ms_ssim = 1.0``.

The metrics are torch code: :func:`quality_batch` scores N pairs (or one reference against
N images) at once on any torch device with float64 support; the single-pair functions run the
same code on the CPU. Everything is computed in float64, on every device: the values equal
scikit-image's ``structural_similarity`` and the former numpy/scipy code to ~1e-14 on the
CPU, and a device changes them only by float64 rounding. (float32 would run about twice as
fast on a CPU and stay within ~1e-6 of them on test images; float64 keeps the former values.)

The Gaussian filter is separable: two passes of 11 shifted slices, which in float64 on a
CPU run several times faster than ``torch.nn.functional.conv2d``. It keeps only the 'valid'
region. scikit-image's SSIM and the former MS-SSIM filtered with scipy's 'reflect' boundary
and then dropped ``(11 - 1) // 2 = 5`` pixels on each side before averaging; no pixel left
after that crop reads a padded value, so the 'valid' filter gives the same numbers without
building the padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sim.errors import InputError

__all__ = ["psnr", "ssim", "ms_ssim", "quality", "quality_batch", "MS_SSIM_WEIGHTS", "ms_ssim_scales"]

DATA_RANGE = 255.0
# Wang, Simoncelli & Bovik (2003), "Multi-scale structural similarity for image quality assessment".
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN, _SIGMA = 11, 1.5
_RADIUS = _WIN // 2
_K1, _K2 = 0.01, 0.03
_CHUNK = 8  # image pairs per step of quality_batch: ≈ 70 MB of float64 images at 512 × 512
_CPU_BLOCK = 2 ** 18  # float64 values per map a CPU filters at once (2 MB: a block stays in cache)

# one scale of the reference: (image, filtered mean, filtered variance), each (B, 3, h, w)
_Level = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _gauss_taps() -> tuple[float, ...]:
    """The 11 normalised Gaussian weights (σ = 1.5) of scipy's ``gaussian_filter(truncate=3.5)``."""
    x = np.arange(_WIN, dtype=np.float64) - _RADIUS
    g = np.exp(-(x ** 2) / (2 * _SIGMA ** 2))
    return tuple(float(v) for v in g / g.sum())


_TAPS = _gauss_taps()


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"quality metrics need two (H, W, 3) images of one shape; got {a.shape} and {b.shape}")
    return a, b


def _check_window(height: int, width: int, metric: str) -> None:
    if min(height, width) < _WIN:
        raise InputError(f"{metric} needs images of at least {_WIN} × {_WIN} pixels; got {height} × {width}")


def ms_ssim_scales(height: int, width: int) -> int:
    """Number of MS-SSIM scales used for an image: at most 5, the coarsest side ≥ 11 px."""
    _check_window(height, width, "MS-SSIM")
    side, scales = min(height, width), 0
    while scales < len(MS_SSIM_WEIGHTS) and side >= _WIN:
        scales += 1
        side //= 2
    return scales


def _row_step(x: torch.Tensor, rows: int) -> int:
    """Output rows filtered at once: about ``_CPU_BLOCK`` values per map on a CPU, all ``rows`` elsewhere."""
    return max(1, _CPU_BLOCK * x.shape[-2] // x.numel()) if x.is_cpu else rows


def _filter_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """11-tap Gaussian along ``dim``, 'valid' region (10 samples shorter); taps paired by symmetry."""
    n = x.shape[dim] - 2 * _RADIUS
    out = x.narrow(dim, _RADIUS, n) * _TAPS[_RADIUS]
    pair = torch.empty_like(out)
    for i in range(_RADIUS):
        torch.add(x.narrow(dim, i, n), x.narrow(dim, _WIN - 1 - i, n), out=pair)
        out.add_(pair, alpha=_TAPS[i])
    return out


def _filter(x: torch.Tensor) -> torch.Tensor:
    """Separable 11 × 11 Gaussian (σ = 1.5) of (..., H, W) maps, 'valid' region: (..., H - 10, W - 10)."""
    rows = x.shape[-2] - 2 * _RADIUS
    step = _row_step(x, rows)
    blocks = [_filter_axis(_filter_axis(x[..., r:r + step + 2 * _RADIUS, :], -2), -1)
              for r in range(0, rows, step)]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-2)


def _planes(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) images of any real dtype → (B, 3, H, W) float64 on their device."""
    return images.permute(0, 3, 1, 2).contiguous().to(torch.float64)


def _levels(x: torch.Tensor, scales: int) -> list[_Level]:
    """The reference side of SSIM at each of ``scales`` scales (2 × 2 average pooling between them)."""
    levels = []
    for j in range(scales):
        if j:
            x = F.avg_pool2d(x, 2)
        mx = _filter(x)
        levels.append((x, mx, _filter(x * x).sub_(mx * mx)))
    return levels


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, mx: torch.Tensor,
               sxx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps (…, h, w) of ``y`` against ``x`` (…, h + 10, w + 10), given
    the filtered mean ``mx`` and variance ``sxx`` of ``x``; population covariances, K1, K2 as Wang et al.

    In place where it can: ``cs = (2 σxy + C2) / (σx² + σy² + C2)``,
    ``l = (2 μx μy + C1) / (μx² + μy² + C1)``, SSIM = l · cs.
    """
    c1, c2 = (_K1 * DATA_RANGE) ** 2, (_K2 * DATA_RANGE) ** 2
    my = _filter(y)
    mxy, myy = mx * my, my * my
    sxy = _filter(x * y).sub_(mxy)
    syy = _filter(y * y).sub_(myy)
    cs = sxy.mul_(2).add_(c2).div_(syy.add_(sxx).add_(c2))
    lum = mxy.mul_(2).add_(c1).div_(myy.add_(mx * mx).add_(c1))
    return lum.mul_(cs), cs


def _ssim_terms(levels: list[_Level], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term, each (B, scales, 3), of ``y`` (B, 3, H, W)
    against the reference ``levels``; the maps are made a block of rows at a time (see ``_row_step``)."""
    ssim_means, cs_means = [], []
    for j, (x, mx, sxx) in enumerate(levels):
        if j:
            y = F.avg_pool2d(y, 2)
        rows = mx.shape[-2]
        step = _row_step(y, rows)
        ssim_sum = cs_sum = 0.0
        for r in range(0, rows, step):
            halo = slice(r, r + step + 2 * _RADIUS)
            ssim_map, cs_map = _ssim_maps(x[..., halo, :], y[..., halo, :], mx[..., r:r + step, :],
                                          sxx[..., r:r + step, :])
            ssim_sum = ssim_sum + ssim_map.sum(dim=(-2, -1))
            cs_sum = cs_sum + cs_map.sum(dim=(-2, -1))
        ssim_means.append(ssim_sum / mx[0, 0].numel())
        cs_means.append(cs_sum / mx[0, 0].numel())
    return torch.stack(ssim_means, dim=1), torch.stack(cs_means, dim=1)


def _combine_ms_ssim(ssim_means: torch.Tensor, cs_means: torch.Tensor) -> torch.Tensor:
    """(B,) MS-SSIM from (B, M, 3) per-scale means: ``∏ cs_j^{w_j} · ssim_M^{w_M}``, mean over channels."""
    m = ssim_means.shape[1]
    w = torch.tensor(MS_SSIM_WEIGHTS[:m], dtype=torch.float64, device=ssim_means.device)
    terms = torch.cat([cs_means[:, :-1], ssim_means[:, -1:]], dim=1).clamp(min=0.0)
    return (terms ** (w / w.sum())[:, None]).prod(dim=1).mean(dim=1)


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of float64 (B, 3, H, W) stacks; ``mse = 0`` gives ``inf``."""
    d = x - y
    return 10.0 * torch.log10(DATA_RANGE ** 2 / (d * d).mean(dim=(1, 2, 3)))


def _as_tensor(images) -> torch.Tensor:
    """A tensor, an array or a sequence of equally shaped images as one tensor (no dtype change)."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images) if images.flags.writeable else images.copy())
    items = [_as_tensor(im) for im in images]
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        raise InputError(f"quality_batch needs images of one shape; got {sorted(shapes)}")
    return torch.stack(items)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Two checked (H, W, 3) images as float64 (1, 3, H, W) stacks."""
    a, b = _check(a, b)
    return _planes(_as_tensor(a)[None]), _planes(_as_tensor(b)[None])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255² / MSE)`` over all pixels and channels.

    Returns ``inf`` for identical images.
    """
    return float(_psnr(*_pair(a, b))[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the image and its three channels, as scikit-image's ``structural_similarity``.

    Uses the settings that match Wang et al. (2004): an 11 × 11 Gaussian window with
    σ = 1.5, population covariances, K1 = 0.01, K2 = 0.03, data range 255; the mean leaves
    out a 5-pixel border. Images need at least 11 × 11 pixels.
    """
    x, y = _pair(a, b)
    _check_window(x.shape[2], x.shape[3], "SSIM")
    ssim_means, _ = _ssim_terms(_levels(x, 1), y)
    return float(ssim_means[0, 0].mean())


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
    x, y = _pair(a, b)
    ssim_means, cs_means = _ssim_terms(_levels(x, ms_ssim_scales(x.shape[2], x.shape[3])), y)
    return float(_combine_ms_ssim(ssim_means, cs_means)[0])


def quality(a: np.ndarray, b: np.ndarray, suffix: str = "") -> dict[str, float]:
    """``{"psnr"+suffix, "ssim"+suffix, "ms_ssim"+suffix}`` of two (H, W, 3) uint8 images."""
    a, b = _check(a, b)
    return quality_batch(a, b[None], suffix)[0]


def _batch(refs, images) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked (R, H, W, 3) references with R = 1 or N, and (N, H, W, 3) images."""
    x, y = _as_tensor(refs), _as_tensor(images)
    if x.ndim == 3:
        x = x[None]
    if (y.ndim != 4 or y.shape[3] != 3 or x.ndim != 4 or x.shape[1:] != y.shape[1:]
            or x.shape[0] not in (1, y.shape[0])):
        raise InputError(f"quality_batch needs (N, H, W, 3) images and one (H, W, 3) reference or N of them, "
                         f"all of one shape; got refs {tuple(x.shape)} and images {tuple(y.shape)}")
    return x, y


def quality_batch(refs: Sequence | np.ndarray | torch.Tensor, images: Sequence | np.ndarray | torch.Tensor,
                  suffix: str = "", device: str | torch.device | None = None) -> list[dict[str, float]]:
    """PSNR, SSIM and MS-SSIM of N image pairs at once: :func:`quality` pair by pair.

    Parameters
    ----------
    refs : one (H, W, 3) image, or N of them (a sequence, or an (N, H, W, 3) array or tensor)
        One reference is compared with every image, and its side of SSIM is computed once.
    images : N (H, W, 3) images: a sequence, or an (N, H, W, 3) array or tensor
        RGB, data range 255 (``uint8``), at least 11 × 11 pixels.
    suffix : str
        Appended to the keys.
    device : str or torch.device, optional
        Where to compute (default: the CPU). The inputs go there once, as they are (``uint8``),
        and become float64 there, ``_CHUNK`` pairs at a time to bound memory.

    Returns
    -------
    list of N dicts ``{"psnr"+suffix, "ssim"+suffix, "ms_ssim"+suffix}`` of Python floats
    (PSNR in dB).
    """
    if len(images) == 0:
        return []
    x, y = _batch(refs, images)
    scales = ms_ssim_scales(y.shape[1], y.shape[2])
    device = torch.device("cpu" if device is None else device)
    x, y = x.to(device), y.to(device)
    shared = _levels(_planes(x), scales) if x.shape[0] == 1 else None
    scores = []
    for start in range(0, y.shape[0], _CHUNK):
        part = slice(start, start + _CHUNK)
        levels = shared if shared is not None else _levels(_planes(x[part]), scales)
        y_part = _planes(y[part])
        ssim_means, cs_means = _ssim_terms(levels, y_part)
        scores.append(torch.stack([_psnr(levels[0][0], y_part), ssim_means[:, 0].mean(dim=1),
                                   _combine_ms_ssim(ssim_means, cs_means)]))
    psnrs, ssims, ms_ssims = torch.cat(scores, dim=1).cpu().tolist()
    return [{f"psnr{suffix}": p, f"ssim{suffix}": s, f"ms_ssim{suffix}": m}
            for p, s, m in zip(psnrs, ssims, ms_ssims)]
