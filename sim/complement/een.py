"""Edge Estimation Network (EEN): a received, possibly holed latent → an edge map at image resolution.

After the first paper (§III-A, §III-D), a pix2pix-style generator trained with L1 + adversarial
loss against a PatchGAN discriminator, targets = Canny edges of the original image. Sized for a
2-core CPU: a small U-Net at latent resolution, then ×2 pixel-shuffle stages up to the image.

Input  : latent × scaling_factor (C, h, w), lost cells set to 0, plus the loss mask (1 = lost):
         (B, C + 1, h, w).
Output : edge probability (B, 1, h·s, w·s) in [0, 1] (sigmoid), s = ``upscale`` (the codec's
         latent stride, 8 for every shipped codec).

Weights are one safetensors file with the config and training card as JSON metadata
(:func:`save_een` / :func:`load_een`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from sim.errors import ConfigError, InputError, ModelLoadError

__all__ = ["EdgeEstimationNetwork", "PatchDiscriminator", "canny_edges", "edge_f1", "edge_counts", "ods_f1",
           "f1_from_counts", "EDGE_THRESHOLDS", "save_een", "load_een", "een_input"]


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EdgeEstimationNetwork(nn.Module):
    """Latent (+ loss mask) → edge map, ×``upscale`` resolution.

    Parameters
    ----------
    latent_channels : int
        Latent channels C (4 for every shipped codec); the input has C + 1 channels.
    width : int
        Features at latent resolution (2 × width at 1/2 and 1/4 of it).
    upscale : int
        Power of two: the codec's latent stride (8; 2 for the tiny test VAEs).
    """

    def __init__(self, latent_channels: int = 4, width: int = 48, upscale: int = 8):
        super().__init__()
        if upscale < 1 or upscale & (upscale - 1):
            raise ConfigError(f"EEN upscale = {upscale}: expected a power of two")
        self.config = {"latent_channels": latent_channels, "width": width, "upscale": upscale}
        w, w2 = width, 2 * width
        self.stem = nn.Sequential(nn.Conv2d(latent_channels + 1, w, 3, padding=1), _ResBlock(w))
        self.down1 = nn.Sequential(nn.Conv2d(w, w2, 3, stride=2, padding=1), _ResBlock(w2))
        self.down2 = nn.Sequential(nn.Conv2d(w2, w2, 3, stride=2, padding=1), _ResBlock(w2), _ResBlock(w2))
        self.up2 = nn.Conv2d(w2 + w2, w2, 3, padding=1)
        self.up1 = nn.Sequential(nn.Conv2d(w2 + w, w, 3, padding=1), _ResBlock(w))
        head, c = [], w
        for _ in range(int(math.log2(upscale))):  # each stage: ×2 resolution, ½ channels
            nxt = max(8, c // 2)
            head += [nn.SiLU(), nn.Conv2d(c, 4 * nxt, 3, padding=1), nn.PixelShuffle(2)]
            c = nxt
        self.head = nn.Sequential(*head, nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid edge logits (B, 1, h·s, w·s); h, w need not be multiples of 4."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        u = self.up2(torch.cat([F.interpolate(s2, size=s1.shape[-2:], mode="nearest"), s1], 1))
        u = self.up1(torch.cat([F.interpolate(u, size=s0.shape[-2:], mode="nearest"), s0], 1))
        s = self.config["upscale"]
        return self.head(u)[..., :h * s, :w * s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C + 1, h, w) → edge probabilities (B, 1, h·s, w·s) in [0, 1]."""
        return torch.sigmoid(self.logits(x))


def een_input(latent: torch.Tensor, lost: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """EEN input from an unscaled latent (B, C, h, w) and a loss mask (B, 1, h, w), 1 = lost."""
    if lost.shape[0] != latent.shape[0] or lost.shape[-2:] != latent.shape[-2:] or lost.shape[1] != 1:
        raise InputError(f"EEN input: latent {tuple(latent.shape)} and mask {tuple(lost.shape)} "
                         f"do not match; expected (B, C, h, w) and (B, 1, h, w)")
    lost = lost.to(latent.dtype)
    return torch.cat([latent * scaling_factor * (1 - lost), lost], 1)


class PatchDiscriminator(nn.Module):
    """pix2pix 70 × 70 PatchGAN (n_layers = 3), conditional: D(condition, edges) → patch logits.

    The condition is the EEN input upsampled (nearest) to image resolution, so the
    discriminator judges whether the edges fit the received latent. Instance norm (batch
    statistics of small CPU batches are too noisy for batch norm).
    """

    def __init__(self, condition_channels: int = 5, width: int = 32):
        super().__init__()
        self.config = {"condition_channels": condition_channels, "width": width}
        c = [width, 2 * width, 4 * width, 8 * width]

        def block(cin, cout, stride, norm=True):
            layers = [nn.Conv2d(cin, cout, 4, stride=stride, padding=1)]
            if norm:
                layers.append(nn.InstanceNorm2d(cout))
            return layers + [nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(
            *block(condition_channels + 1, c[0], 2, norm=False), *block(c[0], c[1], 2), *block(c[1], c[2], 2),
            *block(c[2], c[3], 1), nn.Conv2d(c[3], 1, 4, stride=1, padding=1),
        )

    def forward(self, condition: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        if condition.shape[-2:] != edges.shape[-2:]:
            condition = F.interpolate(condition, size=edges.shape[-2:], mode="nearest")
        return self.net(torch.cat([condition, edges * 2 - 1], 1))


# -- targets and metric ------------------------------------------------------------------

def canny_edges(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Canny edges (skimage, default thresholds) of the grayscale images.

    images : (B, 3, H, W) in [-1, 1] → (B, 1, H, W) float32 in {0, 1}.
    """
    from skimage.color import rgb2gray
    from skimage.feature import canny

    arr = images.detach().float().clamp(-1, 1).add(1).div(2).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([canny(rgb2gray(a), sigma=sigma) for a in arr])[:, None]
    return torch.from_numpy(out.astype(np.float32))


EDGE_THRESHOLDS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
"""The thresholds over which :func:`ods_f1` picks one for a whole data set (dense at the low end:
the shipped EEN's maps are faint, its best threshold on the held-out samples is about 0.04)."""


def edge_counts(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, tolerance: int = 2,
                thresholds=(0.5,)) -> np.ndarray:
    """Edge-matching counts per threshold, summed over every leading dimension of (..., H, W).

    Returns an int array (len(thresholds), 4): predicted edge pixels (``pred > threshold``) with a
    target edge within ``tolerance`` pixels (Euclidean), predicted edge pixels, target edge pixels
    with a predicted one within ``tolerance``, target edge pixels (BSDS-style, without one-to-one
    matching). Counts add up over images, which is how :func:`ods_f1` pools a data set. One
    dilation and one maximum filter per image serve every threshold: a target pixel is found at
    threshold θ iff the strongest prediction within ``tolerance`` exceeds θ.
    """
    from scipy.ndimage import binary_dilation, maximum_filter

    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.float32)
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target) > 0.5
    if p.shape != t.shape:
        raise InputError(f"edge_f1: prediction {p.shape} and target {t.shape} differ in shape")
    p, t = p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])
    r = int(tolerance)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = yy ** 2 + xx ** 2 <= tolerance ** 2
    th = np.asarray(thresholds, dtype=np.float32)[:, None]
    out = np.zeros((len(thresholds), 4), dtype=np.int64)
    for pi, ti in zip(p, t):
        near_target = binary_dilation(ti, structure=disk)
        strongest_near = maximum_filter(pi, footprint=disk, mode="constant", cval=-np.inf)
        out[:, 0] += (pi[near_target][None] > th).sum(1)
        out[:, 1] += (pi.ravel()[None] > th).sum(1)
        out[:, 2] += (strongest_near[ti][None] > th).sum(1)
        out[:, 3] += ti.sum()
    return out


def f1_from_counts(counts) -> dict:
    """``{"precision", "recall", "f1"}`` of one row of :func:`edge_counts` (no edges predicted or
    present counts as precise; none present as fully recalled)."""
    hit_p, n_p, hit_t, n_t = (int(c) for c in counts)
    precision = hit_p / n_p if n_p else float(n_t == 0)
    recall = hit_t / n_t if n_t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def edge_f1(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, tolerance: int = 2,
            threshold: float = 0.5) -> dict:
    """Edge precision/recall/F1 at one threshold with a pixel tolerance (:func:`edge_counts`)."""
    return f1_from_counts(edge_counts(pred, target, tolerance, (threshold,))[0])


def ods_f1(counts, thresholds=EDGE_THRESHOLDS) -> dict:
    """F1 at the optimal data-set scale (BSDS's ODS): the items' :func:`edge_counts` (each
    (len(thresholds), 4)) pooled, then the one threshold with the best F1 for all of them.

    ``{"precision", "recall", "f1", "threshold"}``; the lowest threshold wins a tie.
    """
    pooled = np.sum(list(counts), axis=0)
    scores = [f1_from_counts(row) for row in pooled]
    k = max(range(len(scores)), key=lambda i: (scores[i]["f1"], -i))
    return {**scores[k], "threshold": thresholds[k]}


# -- weights -----------------------------------------------------------------------------

def save_een(net: EdgeEstimationNetwork, path: str | Path, training: dict) -> None:
    """One safetensors file: weights + ``config`` + ``training`` (codec, scaling factor, …) as JSON."""
    meta = {"config": json.dumps(net.config), "training": json.dumps(training)}
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)


def load_een(path: str | Path, device: str = "cpu") -> EdgeEstimationNetwork:
    """An :class:`EdgeEstimationNetwork` in eval mode; ``.training_card`` holds the training metadata."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "een.safetensors"
    if not path.is_file():
        raise ModelLoadError(f"{path}: EEN weights not found (train them with `latentcast train een`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        config = json.loads(meta["config"])
        net = EdgeEstimationNetwork(**config)
        net.load_state_dict(load_file(str(path)))
        card = json.loads(meta.get("training", "{}"))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as err:
        raise ModelLoadError(f"{path}: not an EEN weights file ({err.__class__.__name__}: "
                             f"{str(err).splitlines()[0][:120]})") from None
    net.training_card = card
    return net.to(device).eval()
