"""Work units of a run: one (sweep point values, repeat, image) group with all its policies.

A unit is a small picklable spec (the point's validated scenario, the repeat, the image's
name and index; never models or arrays), so any worker, process or cluster node can run it.
Its identity and its random stream come from the point's *values*, never from the point's
position in the sweep: removing, reordering or sharding sweep values leaves every other
unit's records unchanged, and the records of shards merge into those of one run.

``point_id`` is the canonical text of a point's values (``channel.loss=0.2``; ``-`` without a
sweep), the first element of every record ``key``: ``[point_id, repeat, image, policy]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError

__all__ = ["Unit", "point_id", "canonical_value", "transmission_rng", "plan_units", "parse_shard", "shard_units",
           "record_key", "key_text"]

NO_SWEEP = "-"


def canonical_value(v):
    """A swept value in the one form its identity uses: integral numbers as ints (``0.0`` and
    ``0`` are one value), other floats as floats, lists and mappings recursively (mapping keys
    sorted when written)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return int(v) if math.isfinite(v) and v.is_integer() and abs(v) < 2**53 else v
    if isinstance(v, dict):
        return {str(k): canonical_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [canonical_value(x) for x in v]
    return str(v)


def point_id(values: dict) -> str:
    """Canonical text of a sweep point's values: ``key=json`` pairs sorted by key, ``, ``-joined."""
    if not values:
        return NO_SWEEP
    return ", ".join(f"{k}={json.dumps(canonical_value(values[k]), sort_keys=True, ensure_ascii=False)}"
                     for k in sorted(values))


def _words(text: str) -> list[int]:
    """Eight 32-bit words of the SHA-256 of ``text``: entropy for a SeedSequence."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]


def transmission_rng(seed: int, point: str, repeat: int, image: str) -> np.random.Generator:
    """The generator of one transmission (the same for every policy of the unit):
    ``SeedSequence([seed, sha256(point_id) words, repeat, crc32(image)])``."""
    entropy = [int(seed), *_words(point), int(repeat), zlib.crc32(image.encode("utf-8"))]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def record_key(point: str, repeat: int, image: str, policy: str) -> list:
    """A record's ``key``: ``[point_id, repeat, image, policy]``."""
    return [point, int(repeat), image, policy]


def key_text(key) -> str:
    """The canonical JSON of a record key, for sets and dict keys."""
    return json.dumps(key, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class Unit:
    """One (point, repeat, image) group: every policy of the point's scenario on one channel draw.

    point : sim.scenario.Point — its ``index`` (the position in the scenario's sweep) names
        example folders only; identity and seeds use its values
    """

    point: object
    repeat: int
    image_id: int
    image: str
    seed: int

    @property
    def point_id(self) -> str:
        return point_id(self.point.values_dict())

    @property
    def scenario(self):
        return self.point.scenario

    def keys(self) -> list[str]:
        """The canonical key text of each policy's record, in policy order."""
        return [key_text(record_key(self.point_id, self.repeat, self.image, pol.name))
                for pol in self.scenario.policies]

    def rng(self) -> np.random.Generator:
        return transmission_rng(self.seed, self.point_id, self.repeat, self.image)


def plan_units(scenario, names_of) -> list[Unit]:
    """Every unit of ``scenario`` in run order: points, then repeats, then images.

    ``names_of(images_config) -> [image name, ...]`` lists a point's images in sending order.
    """
    return [Unit(p, r, i, name, int(scenario.seed)) for p in scenario.points or ()
            for r in range(scenario.repeats) for i, name in enumerate(names_of(p.scenario.images))]


_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` → ``(I, N)`` with 1 ≤ I ≤ N; None passes through. ConfigError (one line) otherwise."""
    if text is None:
        return None
    m = _SHARD_RE.match(str(text))
    if m is None or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--shard = {text!r}: expected I/N with 1 ≤ I ≤ N (e.g. --shard 1/3: every 3rd unit "
                          f"from the first)")
    return int(m.group(1)), int(m.group(2))


def shard_units(units: list, shard: tuple[int, int] | None) -> list:
    """Shard ``(I, N)`` of ``units``: every N-th unit from the I-th (1-based); all without a shard."""
    if shard is None:
        return list(units)
    i, n = shard
    return list(units)[i - 1::n]
