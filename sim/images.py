"""Loading, checking and preparing input images.

Images are RGB ``uint8`` arrays (H, W, 3) at the edges of the system and float tensors
(B, 3, H, W) in [-1, 1] inside the models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sim.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES", "SAMPLE_NAMES", "list_images", "load_rgb", "load_sample",
    "resize_center_crop", "to_tensor", "to_uint8", "check_size", "load_image_set",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# scikit-image's bundled colour samples: held-out evaluation images, never trained on.
SAMPLE_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files of ``folder``; a clear error if it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an RGB image as (H, W, 3) uint8; grayscale, RGBA or non-images are refused."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode != "RGB":
                raise InputError(f"{path}: image mode {mode!r}; expected an RGB colour image "
                                 f"(convert grayscale/RGBA/palette images to RGB first)")
            return np.asarray(img).copy()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: not a readable image ({err.__class__.__name__})") from None


def load_sample(name: str) -> np.ndarray:
    """One of scikit-image's colour samples (see ``SAMPLE_NAMES``) as (H, W, 3) uint8."""
    if name not in SAMPLE_NAMES:
        raise InputError(f"sample {name!r} unknown; expected one of {', '.join(SAMPLE_NAMES)}")
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (bicubic), then center-crop to size × size."""
    h, w = img.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    pil = Image.fromarray(img)
    if (nh, nw) != (h, w):
        pil = pil.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size))).copy()


def check_size(height: int, width: int, multiple: int = 8, source: str = "image") -> None:
    """Refuse sizes that are not multiples of ``multiple`` (no silent padding)."""
    if height % multiple or width % multiple or height == 0 or width == 0:
        raise InputError(f"{source}: size {height}×{width} is not a multiple of {multiple}; "
                         f"crop or resize it (e.g. --size 512) first")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [-1, 1] → (H, W, 3) uint8, rounded and clipped."""
    if x.dim() == 4:
        x = x[0]
    return x.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def load_image_set(source: str | Path, size: int | None, names: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """``[(name, (size, size, 3) uint8)]`` from ``"samples"`` or a folder of images.

    ``size`` resizes (shorter side) and center-crops; ``None`` keeps each image as it is,
    which then must have sides that are multiples of 8. ``names`` picks samples by name.
    """
    if size is not None and (size < 8 or size % 8):
        raise InputError(f"size = {size}: expected a positive multiple of 8")
    if str(source) == "samples":
        items = [(n, load_sample(n)) for n in (names or SAMPLE_NAMES)]
    else:
        items = [(p.stem, load_rgb(p)) for p in list_images(source)]
    out = []
    for name, img in items:
        if size is not None:
            img = resize_center_crop(img, size)
        else:
            check_size(img.shape[0], img.shape[1], source=name)
        out.append((name, img))
    return out
