"""Random latent-cell loss masks shaped like packet losses, for training the complement models.

A mask is a (h, w) bool tensor over latent cells, True = lost. Each draw picks one of
:data:`MASK_KINDS`:

- ``tile``, ``row``, ``interleave``: the packetizer's own cell groups
  (:func:`sim.packets.cell_groups`, k ∈ {2, 4, 8}) lost by a two-state (Gilbert–Elliott-like)
  burst process over the packet sequence: a loss share p ~ U(0.02, ``max_loss``) and a mean
  burst length of 1–4 packets. Losing one ``tile`` packet leaves a k × k hole, a ``row``
  packet a stripe of k² cells, an ``interleave`` packet scattered single cells.
- ``block``: the first paper's test masks: 1–3 rectangles of random size whose sides are at
  most an eighth of the image side (at least one cell).

Everything is drawn from the ``torch.Generator`` argument (CPU); the same generator state
gives the same mask.
"""

from __future__ import annotations

import numpy as np
import torch

from sim.errors import ConfigError
from sim.packets import cell_groups

__all__ = ["MASK_KINDS", "TILES", "random_loss_mask", "loss_masks"]

MASK_KINDS = ("tile", "row", "interleave", "block")
TILES = (2, 4, 8)


def _uniform(generator: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _integer(generator: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (both included)."""
    return int(torch.randint(lo, hi + 1, (), generator=generator))


def _burst_losses(n: int, share: float, burst: float, generator: torch.Generator) -> np.ndarray:
    """(n,) bool: a two-state chain with stationary loss ``share`` and mean burst ``burst``."""
    p_exit = 1.0 / burst                                   # lost → received
    p_enter = min(1.0, share * p_exit / max(1e-9, 1.0 - share))  # received → lost
    u = torch.rand(n + 1, generator=generator).numpy()
    out = np.empty(n, dtype=bool)
    lost = bool(u[0] < share)
    for i in range(n):
        out[i] = lost
        lost = (u[i + 1] >= p_exit) if lost else (u[i + 1] < p_enter)
    return out


def random_loss_mask(h: int, w: int, generator: torch.Generator, kind: str | None = None,
                     max_loss: float = 0.4) -> torch.Tensor:
    """One packet-loss-shaped mask over an h × w latent.

    Parameters
    ----------
    h, w : int
        Latent height and width in cells (≥ 1).
    generator : torch.Generator
        CPU generator; the only source of randomness.
    kind : str, optional
        One of :data:`MASK_KINDS`; drawn uniformly when None.
    max_loss : float in (0.02, 1]
        Upper end of the packet loss share for the packet layouts.

    Returns
    -------
    torch.Tensor
        (h, w) bool, True = lost. May be all False (no packet lost) or, rarely, all True.
    """
    if h < 1 or w < 1:
        raise ConfigError(f"mask size {h}×{w}: expected at least 1×1 cells")
    if not 0.02 < max_loss <= 1.0:
        raise ConfigError(f"max_loss = {max_loss!r}: expected a share in (0.02, 1]")
    if kind is None:
        kind = MASK_KINDS[_integer(generator, 0, len(MASK_KINDS) - 1)]
    elif kind not in MASK_KINDS:
        raise ConfigError(f"mask kind = {kind!r}: expected one of {', '.join(MASK_KINDS)}")
    mask = np.zeros(h * w, dtype=bool)
    if kind == "block":
        side_h, side_w = max(1, h // 8), max(1, w // 8)
        grid = mask.reshape(h, w)
        for _ in range(_integer(generator, 1, 3)):
            bh, bw = _integer(generator, 1, side_h), _integer(generator, 1, side_w)
            y, x = _integer(generator, 0, h - bh), _integer(generator, 0, w - bw)
            grid[y:y + bh, x:x + bw] = True
    else:
        k = TILES[_integer(generator, 0, len(TILES) - 1)]
        groups = cell_groups(kind, k, h, w)
        lost = _burst_losses(len(groups), _uniform(generator, 0.02, max_loss),
                             _uniform(generator, 1.0, 4.0), generator)
        for g in np.flatnonzero(lost):
            mask[groups[g]] = True
    return torch.from_numpy(mask.reshape(h, w))


def loss_masks(batch: int, h: int, w: int, generator: torch.Generator, max_loss: float = 0.4) -> torch.Tensor:
    """(batch, 1, h, w) float masks (1 = lost), one :func:`random_loss_mask` per sample."""
    return torch.stack([random_loss_mask(h, w, generator, max_loss=max_loss) for _ in range(batch)])[:, None].float()
