"""Random multi-scale RGB patches from a folder of training images.

Each image is kept in memory at several downsampling factors (1×–4×), so one training
image yields patches at many scales; a batch is drawn from a generator seeded by
``(seed, step)``, which makes a resumed run draw exactly the batches it would have drawn.

Every patch is mirrored left–right with probability ½. With ``augment=True`` it is also turned
by a random number of quarter turns and its colour channels put in a random order (one of the
six), so a folder of photographs also teaches colours and orientations it does not hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sim.images import list_images

__all__ = ["PatchSampler"]

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)


class PatchSampler:
    """Draws (B, 3, crop, crop) float batches in [-1, 1].

    Parameters
    ----------
    folder : path
        Directory of RGB images (jpg/png/webp…); every file is used.
    crop : int
        Patch side in pixels (a multiple of 8).
    seed : int
        Base seed; batch ``step`` comes from ``numpy.random.default_rng([seed, step])``.
    augment : bool
        Random quarter turns and colour-channel orders on top of the mirroring.
    short_side : int, optional
        First resize every image (bicubic) so its shorter side is this many pixels: the scale at
        which ``complement-eval --size`` and scenarios see images; the levels are then taken
        from that.
    """

    def __init__(self, folder: str | Path, crop: int, seed: int = 0, augment: bool = False,
                 short_side: int | None = None):
        self.crop = crop
        self.seed = seed
        self.augment = augment
        self.files = list_images(folder)
        self.levels: list[np.ndarray] = []
        for path in self.files:
            img = Image.open(path).convert("RGB")
            if short_side:
                f = short_side / min(img.size)
                img = img.resize((max(short_side, round(img.width * f)), max(short_side, round(img.height * f))),
                                 Image.BICUBIC)
            for s in SCALES:
                w, h = round(img.width / s), round(img.height / s)
                if min(w, h) >= crop:
                    self.levels.append(np.asarray(img.resize((w, h), Image.BICUBIC if s > 1 else Image.NEAREST)))

    def batch(self, step: int, size: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(size):
            arr = self.levels[rng.integers(len(self.levels))]
            y = rng.integers(arr.shape[0] - self.crop + 1)
            x = rng.integers(arr.shape[1] - self.crop + 1)
            patch = arr[y:y + self.crop, x:x + self.crop]
            patch = patch[:, ::-1] if rng.random() < 0.5 else patch
            if self.augment:
                patch = np.rot90(patch, rng.integers(4))[..., rng.permutation(3)]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
