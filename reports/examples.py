"""Example images: saved by the runner as PNGs, shown by the report as grids per loss rate.

The report never decodes anything, so the images it shows must be saved while the run
decodes them. :func:`save_examples` is the runner's hook, called once per (point, repeat,
image) group after the batched decode; it writes only the groups it is asked to keep
(repeat 0 of the first image by default), under::

    OUT/examples/point0003/astronaut/original.png        the image as sent
                                     received.png        loss-free decode, holes in magenta
                                     edges.png           edge map, when a policy provides one
                                     policy-<name>.png   each policy's output

"received" is the decode of the latent as sent with the cells missing at decode under any
of the group's policies painted magenta: with a policy that does not resend, exactly the
cells whose packets the channel erased on the first pass. PNGs are written with Pillow and
carry no time stamp, so a resumed or repeated run writes the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["save_examples", "EXAMPLES_DIR", "HOLE_RGB", "find_examples"]

log = logging.getLogger(__name__)

EXAMPLES_DIR = "examples"
HOLE_RGB = (255, 0, 255)


def _rgb8(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8:  # float images in [0, 1]
        a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a


def _upsample(mask: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour upsampling of an (h, w) cell map to an (H, W) image."""
    h, w = mask.shape
    H, W = shape[:2]
    ys = (np.arange(H) * h) // H
    xs = (np.arange(W) * w) // W
    return mask[ys][:, xs]


def _save_png(path: Path, img) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb8(img)).save(path, format="PNG")


def keeps(repeat: int, image_id: int, repeats=(0,), max_images: int = 1) -> bool:
    """Whether :func:`save_examples` keeps the group of (``repeat``, ``image_id``)."""
    return repeat in repeats and image_id < max_images


def save_examples(out, point: int, repeat: int, image_id: int, name: str, original, lossfree, outputs,
                  *, edges=None, repeats=(0,), max_images: int = 1) -> list[Path]:
    """Save one group's example images (if the group is one to keep); returns the files written.

    Parameters
    ----------
    out : path — the run's output folder
    point, repeat, image_id : int — the group's sweep point index, repeat and image index
    name : str — the image name (a folder name under the point)
    original : (H, W, 3) uint8 — the image as sent
    lossfree : (H, W, 3) uint8 — the decode of the latent as sent (no loss)
    outputs : list of (policy name, missing, (H, W, 3) uint8 reconstruction): ``missing``
        ((h, w) bool, the cells missing at decode) makes the holes.
    edges : (H, W) or (h, w) array in [0, 1], optional — the estimated edge map (EEN) of the
        received latent, saved as ``edges.png``
    repeats : which repeats to keep (default: the first)
    max_images : keep images with ``image_id < max_images``

    Never raises for a bad image: a failure is logged and the run goes on.
    """
    if not keeps(repeat, image_id, repeats, max_images):
        return []
    folder = Path(out) / EXAMPLES_DIR / f"point{int(point):04d}" / str(name)
    written: list[Path] = []
    try:
        orig = _rgb8(original)
        _save_png(folder / "original.png", orig)
        written.append(folder / "original.png")
        base = _rgb8(lossfree).copy()
        holes = np.zeros(base.shape[:2], dtype=bool)
        for _, miss, _ in outputs:
            if miss is not None and np.asarray(miss).ndim == 2 and np.asarray(miss).any():
                holes |= _upsample(np.asarray(miss, dtype=bool), base.shape)
        base[holes] = HOLE_RGB
        _save_png(folder / "received.png", base)
        written.append(folder / "received.png")
        if edges is not None:
            edges = np.asarray(edges, dtype=np.float64)
            if edges.shape != base.shape[:2]:
                edges = _upsample(edges, base.shape)
            _save_png(folder / "edges.png", edges)
            written.append(folder / "edges.png")
        for policy, _, img in outputs:
            if img is not None:
                _save_png(folder / f"policy-{policy}.png", img)
                written.append(folder / f"policy-{policy}.png")
    except (OSError, ValueError, TypeError) as err:
        log.warning("example images for point %d, image %s not saved: %s", point, name, err)
    return written


def find_examples(out) -> dict:
    """``{image name: {point index: {"original"|"received"|"edges"|policy name: path}}}``."""
    root = Path(out) / EXAMPLES_DIR
    found: dict = {}
    if not root.is_dir():
        return found
    for pdir in sorted(root.glob("point*")):
        try:
            point = int(pdir.name[len("point"):])
        except ValueError:
            continue
        for idir in sorted(d for d in pdir.iterdir() if d.is_dir()):
            files = {}
            for f in sorted(idir.glob("*.png")):
                key = f.stem[len("policy-"):] if f.stem.startswith("policy-") else f.stem
                files[("policy", key) if f.stem.startswith("policy-") else key] = f
            if files:
                found.setdefault(idir.name, {})[point] = files
    return found
