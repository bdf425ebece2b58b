"""The stages of one work unit, each a function of its inputs:

``prepare`` (encode, quantize, loss-free decode and its scores) → ``transmit`` (the engine,
once per policy; no repair) → ``repair`` (the policies' methods, batched per method across the
unit's transmissions) → ``decode`` (one batch) → ``score`` (one batch, on the codec's device) →
``make_records`` (one JSON-ready record per transmission).

Failures are caught per transmission and travel as :class:`Sent` entries with an ``error``, so
one failing policy leaves the unit's other records intact; Ctrl-C propagates.
:class:`sim.worker.Worker` holds the models and runs the stages in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Reference", "Sent", "clock", "prepare", "transmit", "repair", "decode", "score", "make_records"]


def clock() -> float:
    """``time.perf_counter()`` after the CUDA work queued so far has finished (where CUDA is in
    use), so a stage's time is its device time too."""
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


@dataclass
class Reference:
    """One image under one codec configuration, loss-free.

    latent : (C, h, w) float32 — the dequantized latent as sent
    image : (H, W, 3) uint8 — its decode
    decode_s : float — wall seconds of that decode
    quality : dict — the metric fields of a reconstruction equal to it (LPIPS where scored)
    lpips_features : list or None — LPIPS features of [original, decode], computed once per image
    """

    latent: np.ndarray
    image: np.ndarray
    decode_s: float
    quality: dict
    lpips_features: list | None = None


@dataclass
class Sent:
    """One policy's transmission as it moves through the stages (``error`` ends its way)."""

    transmission: object = None
    latent: np.ndarray | None = None     # after repair
    image: np.ndarray | None = None      # after decode
    complemented: bool = False
    quality: dict = field(default_factory=dict)
    wall: dict = field(default_factory=dict)
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _timed(fn, *args):
    t0 = clock()
    out = fn(*args)
    return out, clock() - t0


def prepare(codec, image: np.ndarray, latent: np.ndarray, lpips=None, device=None):
    """``(Prepared, Reference)`` of an encoded ``latent`` of ``image``: quantized and entropy
    coded, its loss-free decode scored against the original (and against itself)."""
    from sim.metrics import quality_batch

    prep = codec.prepare(latent)
    sent = np.asarray(codec.dequantize(prep.symbols, prep.side), dtype=np.float32)
    decoded, decode_s = _timed(codec.decode, sent)
    q = {**quality_batch(image, [decoded], device=device)[0],
         **quality_batch(decoded, [decoded], "_lossfree", device=device)[0]}
    feats = None
    if lpips is not None:  # identical images: LPIPS 0, like SSIM 1
        feats = lpips.unit_features([image, decoded])
        d = lpips.distances_from([f[:1] for f in feats], [decoded], [f[1:] for f in feats])
        q.update(lpips=float(d[0, 0]), lpips_lossfree=0.0)
    return prep, Reference(sent, decoded, decode_s, q, feats)


def transmit(scenario, codec, prep, packets, image_id: int, rng_of) -> list[Sent]:
    """Every policy's transmission of one prepared image (``rng_of()``: a fresh generator of the
    unit's seed per policy, so all policies face the same first-pass channel draws)."""
    from sim import engine

    out = []
    for pol in scenario.policies:
        t0 = time.perf_counter()
        try:
            t = engine.transmit(codec, prep, image_id=image_id, packetizer=scenario.packetizer, link=scenario.link,
                                channel=scenario.channel, policy=pol.policy, receiver=scenario.receiver, rng=rng_of(),
                                packets=packets)
            out.append(Sent(transmission=t, wall={**t.wall, "transmit_s": time.perf_counter() - t0}))
        except Exception as err:  # noqa: BLE001 - one transmission's failure must not end the run
            out.append(Sent(error=err))
    return out


def repair(policies, methods: list, sent: list[Sent]) -> None:
    """Repair every transmission in place with its policy's method (``methods[i]``: the built
    method of policy i, or None), one ``batch`` call per method over the transmissions that need
    it; each item keeps its own generator and noise σ, so a batch equals the items' own calls."""
    from sim.policies.base import needs_repair

    groups: dict[int, list[int]] = {}
    fns = {}
    for i, (pol, s) in enumerate(zip(policies, sent)):
        if not s.ok:
            continue
        t = s.transmission
        try:
            fn = pol.policy.repairer(methods[i])
        except Exception as err:  # noqa: BLE001
            s.error = err
            continue
        s.latent, s.wall["repair_s"] = t.latent, 0.0
        if needs_repair(fn, t.missing):
            fns[id(fn)] = fn
            groups.setdefault(id(fn), []).append(i)
    for key, items in groups.items():
        fn = fns[key]
        ts = [sent[i].transmission for i in items]
        t0 = clock()
        try:
            out = fn.batch([t.latent for t in ts], [t.missing for t in ts], [t.repair_rng for t in ts],
                           [t.noise_std for t in ts])
        except Exception as err:  # noqa: BLE001
            for i in items:
                sent[i].error = err
            continue
        dt = (clock() - t0) / len(items)
        for i, latent in zip(items, out):
            sent[i].latent = np.asarray(latent, dtype=np.float32)
            sent[i].complemented = bool(policies[i].policy.complements)
            sent[i].wall["repair_s"] = dt


def decode(codec, sent: list[Sent], reference: Reference) -> None:
    """Decode the repaired latents in one batch; a latent equal to the loss-free one *is* the
    loss-free decode (its ``decode_s`` that decode's time)."""
    todo = []
    for s in sent:
        if not s.ok:
            continue
        if np.array_equal(s.latent, reference.latent):
            s.image, s.wall["decode_s"] = reference.image, reference.decode_s
        else:
            todo.append(s)
    if not todo:
        return
    t0 = clock()
    try:
        images = codec.decode(np.stack([s.latent for s in todo]))
    except Exception as err:  # noqa: BLE001
        for s in todo:
            s.error = err
        return
    dt = (clock() - t0) / len(todo)
    for s, img in zip(todo, images):
        s.image, s.wall["decode_s"] = img, dt


def score(image: np.ndarray, sent: list[Sent], reference: Reference, lpips=None, device=None) -> None:
    """PSNR, SSIM, MS-SSIM (and LPIPS where loaded) of each new reconstruction against the
    original and against the loss-free decode, one batch each; a reconstruction that *is* the
    loss-free decode takes ``reference.quality``."""
    from sim.metrics import quality_batch

    for s in sent:
        if s.ok and s.image is reference.image:
            s.quality, s.wall["metrics_s"] = dict(reference.quality), 0.0
    todo = [s for s in sent if s.ok and s.image is not reference.image]
    if not todo:
        return
    t0 = clock()
    try:
        images = [s.image for s in todo]
        q = quality_batch(image, images, device=device)
        q0 = quality_batch(reference.image, images, "_lossfree", device=device)
        lp = lpips.distances_from(reference.lpips_features, images) if lpips is not None else None
    except Exception as err:  # noqa: BLE001
        for s in todo:
            s.error = err
        return
    dt = (clock() - t0) / len(todo)
    for k, s in enumerate(todo):
        s.quality = {**q[k], **q0[k]}
        if lp is not None:
            s.quality.update(lpips=float(lp[0, k]), lpips_lossfree=float(lp[1, k]))
        s.wall["metrics_s"] = dt


def make_records(unit, sent: list[Sent]) -> list[dict]:
    """One record per policy, in policy order: identity, the engine's stats, the scores and the
    wall-clock ``wall`` mapping; or identity and ``error``."""
    from sim.units import record_key

    records = []
    pid = unit.point_id
    for pol, s in zip(unit.scenario.policies, sent):
        rec = {"key": record_key(pid, unit.repeat, unit.image, pol.name), "point": pid, "repeat": unit.repeat,
               "image": unit.image, "image_id": unit.image_id, "sweep": unit.point.values_dict(), "seed": unit.seed,
               "policy": pol.name, "policy_kind": pol.kind}
        if not s.ok:
            rec["error"] = f"{s.error.__class__.__name__}: {s.error}"
        else:
            stats = s.transmission.stats
            clash = set(stats) & (set(s.quality) | {"wall", "error", "complemented"})
            if clash:
                raise RuntimeError(f"engine stats clash with record fields: {sorted(clash)}")
            rec.update({k: v for k, v in stats.items() if k not in rec})  # identity fields win
            rec["complemented"] = s.complemented
            rec.update(s.quality)
            wall = dict(s.wall)
            wall["compute_s"] = float(wall.get("repair_s", 0.0)) + float(wall.get("decode_s", 0.0))
            rec["wall"] = wall
        records.append(rec)
    return records
