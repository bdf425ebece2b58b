"""Pillow JPEG / WebP at a target bit rate, for side-by-side codec comparisons."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["encode_at_bpp"]


def _encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    kwargs = {"quality": quality}
    if fmt == "WEBP":
        kwargs["method"] = 4
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def encode_at_bpp(image: np.ndarray, fmt: str, target_bpp: float) -> tuple[np.ndarray, float, int] | None:
    """Largest-bpp encoding not above ``target_bpp``: (decoded uint8 image, bpp, quality).

    Searches quality 1–100 by bisection (size grows with quality), then checks the
    neighbours, since the size is not strictly monotone. ``None`` if even quality 1 is larger.
    """
    img = Image.fromarray(image)
    pixels = image.shape[0] * image.shape[1]
    cache: dict[int, bytes] = {}

    def size_bpp(q: int) -> float:
        if q not in cache:
            cache[q] = _encode(img, fmt, q)
        return 8 * len(cache[q]) / pixels

    lo, hi = 1, 100
    if size_bpp(lo) > target_bpp:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size_bpp(mid) <= target_bpp:
            lo = mid
        else:
            hi = mid - 1
    for q in (lo + 1, lo + 2):
        if q <= 100 and size_bpp(q) <= target_bpp:
            lo = q
    decoded = np.asarray(Image.open(io.BytesIO(cache[lo])).convert("RGB"))
    return decoded, size_bpp(lo), lo
