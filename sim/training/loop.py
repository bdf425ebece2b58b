"""Scaffolding shared by the training recipes: the lr schedule and resumable checkpoints.

Checkpoints hold tensors only (state dicts, ``step``, ``elapsed`` seconds) and are loaded with
``weights_only=True``. Each recipe keeps its own loop, losses and checkpoint keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["lr_at", "load_checkpoint", "save_checkpoint"]


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 2 % of ``base`` at ``steps``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def load_checkpoint(path: Path, device: str, **states) -> tuple[int, float]:
    """Restore ``states[key].load_state_dict(ckpt[key])`` for each key, in order, if ``path`` exists.

    Returns ``(step, elapsed)`` of the checkpoint, or ``(0, 0.0)`` when there is none.
    """
    if not path.exists():
        return 0, 0.0
    ckpt = torch.load(path, map_location=device, weights_only=True)
    for key, obj in states.items():
        obj.load_state_dict(ckpt[key])
    return int(ckpt["step"]), float(ckpt["elapsed"])


def save_checkpoint(path: Path, step: int, elapsed: float, **states) -> None:
    """Save ``{key: states[key].state_dict(), ..., "step": step, "elapsed": elapsed}`` to ``path``."""
    torch.save({**{key: obj.state_dict() for key, obj in states.items()}, "step": step, "elapsed": elapsed}, path)
