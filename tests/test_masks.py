"""Packet-loss-shaped training masks: shapes, packet-group structure, paper blocks, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim.errors import ConfigError
from sim.packets import cell_groups
from sim.training.masks import MASK_KINDS, TILES, loss_masks, random_loss_mask


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", [*MASK_KINDS, None])
@pytest.mark.parametrize("h, w", [(1, 1), (8, 8), (32, 48), (7, 5)])
def test_shape_and_dtype(kind, h, w):
    mask = random_loss_mask(h, w, _gen(), kind)
    assert mask.shape == (h, w) and mask.dtype == torch.bool


def test_same_generator_state_same_mask():
    for kind in MASK_KINDS:
        a = random_loss_mask(32, 32, _gen(3), kind)
        b = random_loss_mask(32, 32, _gen(3), kind)
        assert torch.equal(a, b)
    draws = [random_loss_mask(32, 32, _gen(s), "tile") for s in range(10)]
    assert len({d.numpy().tobytes() for d in draws}) > 5


@pytest.mark.parametrize("kind", ["tile", "row", "interleave"])
def test_packet_layouts_lose_whole_groups(kind):
    """Each mask is a union of the packetizer's cell groups for one k in TILES."""
    h, w = 32, 32
    gen = _gen(1)
    for _ in range(20):
        mask = random_loss_mask(h, w, gen, kind).numpy().ravel()
        ok = [all(mask[g].all() or not mask[g].any() for g in cell_groups(kind, k, h, w)) for k in TILES]
        assert any(ok)


def test_blocks_are_at_most_an_eighth_of_the_side():
    gen = _gen(2)
    h, w = 64, 48
    for _ in range(30):
        mask = random_loss_mask(h, w, gen, "block").numpy()
        assert 1 <= mask.sum() <= 3 * (h // 8) * (w // 8)
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert ys.size and xs.size


def test_loss_share_stays_in_range():
    gen = _gen(4)
    shares = [random_loss_mask(32, 32, gen, "interleave", max_loss=0.3).float().mean().item() for _ in range(200)]
    assert 0.05 < np.mean(shares) < 0.3
    assert max(shares) < 0.9


def test_batch_of_masks():
    m = loss_masks(5, 16, 24, _gen())
    assert m.shape == (5, 1, 16, 24) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="mask kind"):
        random_loss_mask(8, 8, _gen(), "stripes")
    with pytest.raises(ConfigError, match="max_loss"):
        random_loss_mask(8, 8, _gen(), "tile", max_loss=1.5)
    with pytest.raises(ConfigError, match="mask size"):
        random_loss_mask(0, 8, _gen())
