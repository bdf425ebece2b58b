"""Training patches (sim.training.patches.PatchSampler): seeded by (seed, step), crops of the
image at one of its scales, mirrored; with augment, also quarter-turned and channel-permuted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from sim.training.patches import PatchSampler


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    return tmp_path


def _uint8(batch: torch.Tensor) -> np.ndarray:
    """(B, 3, c, c) in [-1, 1] → (B, c, c, 3) uint8, exactly (the sampler divides uint8 by 127.5)."""
    return np.rint((batch.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)


def test_batches_are_seeded_crops_of_the_levels(folder):
    s = PatchSampler(folder, 16, seed=3)
    a = s.batch(5, 4)
    assert a.shape == (4, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, PatchSampler(folder, 16, seed=3).batch(5, 4))      # a function of (seed, step)
    assert not torch.equal(a, s.batch(6, 4)) and not torch.equal(a, PatchSampler(folder, 16, seed=4).batch(5, 4))
    # every patch is a window of one of the image's scales (1×, 1.5×, 2×: 3× is under 16 px), maybe mirrored
    windows = [np.lib.stride_tricks.sliding_window_view(lv, (16, 16, 3)).reshape(-1, 16, 16, 3) for lv in s.levels]
    assert len(s.levels) == 3
    for patch in _uint8(a):
        found = any((w == p).all(axis=(1, 2, 3)).any()
                    for w in windows for p in (patch, patch[:, ::-1]))
        assert found


def test_augment_turns_and_permutes_the_same_crop(folder):
    plain, aug = PatchSampler(folder, 16, seed=1), PatchSampler(folder, 16, seed=1, augment=True)
    turns, orders = set(), set()
    for step in range(40):
        p, q = _uint8(plain.batch(step, 1))[0], _uint8(aug.batch(step, 1))[0]
        matches = [(k, order) for k in range(4) for order in itertools.permutations(range(3))
                   if np.array_equal(np.rot90(p, k)[..., list(order)], q)]
        assert matches, f"step {step}: the augmented patch is no turn/permutation of the plain one"
        turns.add(matches[0][0])
        orders.add(matches[0][1])
    assert turns == {0, 1, 2, 3} and len(orders) == 6


def test_short_side_resizes_first(folder):
    """short_side = 24: the 40 × 48 image becomes 24 × 29 (bicubic) before the levels are taken:
    1× and 1.5× (16 × 19) hold a 16-pixel crop, 2× does not."""
    s = PatchSampler(folder, 16, short_side=24)
    assert [lv.shape for lv in s.levels] == [(24, 29, 3), (16, 19, 3)]
    resized = np.asarray(Image.open(folder / "a.png").resize((29, 24), Image.BICUBIC))
    assert np.array_equal(s.levels[0], resized)
