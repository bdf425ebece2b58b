"""The complement-method protocol: what every repair method declares, and the plain fills as methods.

A method repairs one received latent::

    method(latent (C, h, w) float32, missing (h, w) bool (True = lost), rng: numpy Generator,
           noise_std: float = 0.0) -> (C, h, w) float32

and many at once with :meth:`ComplementMethod.batch`, each item with its own generator and
noise level, so ``method.batch(...)[i]`` equals the item's own call (within float tolerance
where a model runs the items together). ``noise_std`` is the standard deviation of the noise
in the received values (latent units: quantization and channel, as
:func:`sim.engine.received_noise_std` works it out); only methods that denoise use it.

Known cells come back exactly unless the method declares ``alters_known`` (the learned
method's denoising step repairs every cell, so it runs even when nothing was lost).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from sim.errors import InputError

__all__ = ["ComplementMethod", "FillMethod", "check_batch", "warmup_case"]


class ComplementMethod(ABC):
    """A complement method (the declared protocol).

    Attributes
    ----------
    name : str
        The registry name (the scenario's ``method:`` / ``fill:`` value).
    alters_known : bool
        True where the method changes received cells too (it then runs with nothing lost).
    """

    name: str = ""
    alters_known: bool = False

    @abstractmethod
    def __call__(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
                 noise_std: float = 0.0) -> np.ndarray:
        """The latent (C, h, w) float32 with the ``missing`` (h, w) cells repaired (a new array)."""

    def batch(self, latents: list[np.ndarray], masks: list[np.ndarray], rngs: list[np.random.Generator],
              noise_stds: list[float]) -> list[np.ndarray]:
        """``[self(latents[i], masks[i], rngs[i], noise_stds[i])]``: one call per item unless the method
        runs them together (same results, each item drawing from its own ``rngs[i]``)."""
        check_batch(self.name, latents, masks, rngs, noise_stds)
        return [self(*item) for item in zip(latents, masks, rngs, noise_stds)]

    def warmup(self, shape: tuple[int, int, int]) -> None:
        """Pay one-off set-up (kernels, imports) for latents of ``shape`` (C, h, w) before timing; no-op here."""

    def estimate_edges(self, latent: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
        """The edge map (H, W) in [0, 1] the method estimates from a received latent; None if it uses none."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FillMethod(ComplementMethod):
    """A function ``fill(latent, missing, rng) -> latent`` as a method (``zero``, ``mean``, ``interp``:
    :mod:`sim.complement.fill`); it has no use for ``noise_std``."""

    def __init__(self, name: str, fill: Callable[..., np.ndarray]):
        self.name, self.fill = name, fill

    def __call__(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator | None = None,
                 noise_std: float = 0.0) -> np.ndarray:
        return self.fill(latent, missing, rng)

    def warmup(self, shape: tuple[int, int, int]) -> None:
        """One throw-away call on zeros of ``shape`` (C, h, w) with one lost cell (imports, the sparse solver)."""
        self(*warmup_case(shape), np.random.default_rng(0))


def check_batch(who: str, latents, masks, rngs, noise_stds) -> int:
    """The number of items of a :meth:`ComplementMethod.batch` call; InputError if the lists differ in length."""
    sizes = [len(latents), len(masks), len(rngs), len(noise_stds)]
    if len(set(sizes)) != 1:
        raise InputError(f"complement {who}: batch of {sizes[0]} latents, {sizes[1]} masks, {sizes[2]} "
                         f"generators and {sizes[3]} noise levels; expected one of each per item")
    return sizes[0]


def warmup_case(shape) -> tuple[np.ndarray, np.ndarray]:
    """Zeros of ``shape`` (C, h, w) with one lost cell: the input of a warm-up call."""
    missing = np.zeros(tuple(shape)[1:], dtype=bool)
    missing[0, 0] = True
    return np.zeros(tuple(shape), dtype=np.float32), missing
