"""A worker: holds the models and runs whole work units (:mod:`sim.units`) through the stages.

One worker per process (or Ray actor): it loads each codec, complement weight set and the LPIPS
model once, and caches per image what every unit of that image shares — the image, its encoded
latent, the quantized latent with its loss-free decode and scores (per codec config), and its
packets (per packetizer and link packet limit). It writes nothing: :meth:`Worker.run` returns a
:class:`UnitResult` (records, the example images the report keeps, stage timings, the weights'
provenance cards) and the parent writes it.

A complement method is built once per (codec config, method, options), warmed up once per latent
shape before its first use (``wall.repair_s`` excludes one-off set-up).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from sim import stages
from sim.errors import InputError, LatentcastError, ModelLoadError

__all__ = ["Worker", "UnitResult", "Example", "STAGES", "load_image", "image_files"]

log = logging.getLogger(__name__)

STAGES = ("load", "prepare", "packetize", "warmup", "transmit", "repair", "decode", "examples", "metrics")


@dataclass
class Example:
    """A unit's pictures for the report (only for the units :func:`reports.examples.keeps` keeps)."""

    point_index: int
    repeat: int
    image_id: int
    name: str
    original: np.ndarray
    lossfree: np.ndarray
    outputs: list          # (policy name, missing (h, w) bool, reconstruction (H, W, 3) uint8)
    edges: np.ndarray | None


@dataclass
class UnitResult:
    """What a worker gives back for one unit. ``fatal``: a model or input error that ends the
    run (one line), with no records."""

    unit: object
    records: list = field(default_factory=list)
    example: Example | None = None
    stages: dict = field(default_factory=dict)
    cards: dict = field(default_factory=dict)
    fatal: str | None = None


def image_files(images, source: str = "<scenario>") -> dict:
    """``{name: file, or None for a sample}`` of an ``images:`` config, in sending order.

    Raises
    ------
    InputError
        One line naming the scenario file and ``images.source`` (a folder that is missing or empty).
    """
    try:
        return dict(images.items())
    except LatentcastError as err:
        raise InputError(f"{source}: images.source = {images.source!r}: {err}") from None


def load_image(images, name: str, path, source: str = "<scenario>") -> np.ndarray:
    """Image ``name`` of an ``images:`` config (``path``: its file, None for a sample), read,
    resized and center-cropped to ``images.size``.

    Raises
    ------
    InputError
        One line naming the scenario file, ``images.source`` and the bad image file.
    """
    from sim.images import load_rgb, load_sample, resize_center_crop

    try:
        img = load_sample(name) if path is None else load_rgb(path)
    except LatentcastError as err:
        raise InputError(f"{source}: images.source = {images.source!r}: {err}") from None
    return resize_center_crop(img, images.size)


class Worker:
    """Models and per-image caches of one process; :meth:`run` runs one unit.

    Parameters
    ----------
    source : str — the scenario file, named in error lines
    lpips : bool or sim.lpips.LPIPS — score LPIPS (True: the model loads once, none after one
        warning where its weights cannot be had; a model: that one)
    """

    def __init__(self, source: str = "<scenario>", lpips=True):
        self.source = source
        self._lpips = lpips if not isinstance(lpips, bool) else None
        self._want_lpips = bool(lpips)
        self.codecs: dict = {}
        self.codec_cards: list[dict] = []
        self.models: dict = {}          # make_method's cache: weight sets loaded once
        self.methods: dict = {}
        self.warmed: set = set()
        self.images: dict = {}
        self.files: dict = {}           # images config → {name: file or None}
        self.latents: dict = {}
        self.prepared: dict = {}
        self.packetized: dict = {}

    # -- models ------------------------------------------------------------------------
    def codec(self, cfg):
        if cfg not in self.codecs:
            from sim.codec import load_codec
            from sim.provenance import codec_card

            self.codecs[cfg] = load_codec(**cfg.load_kwargs())
            self.codec_cards.append(codec_card(cfg, self.codecs[cfg]))
        return self.codecs[cfg]

    def lpips(self):
        if self._want_lpips and self._lpips is None:
            from sim.lpips import load_lpips

            self._lpips = load_lpips() or False
        return self._lpips or None

    @staticmethod
    def _method_key(cfg, policy) -> tuple | None:
        name = getattr(policy, "method", None)
        if name is None:
            return None
        return cfg, name, json.dumps(policy.method_options or {}, sort_keys=True, default=str)

    def method(self, cfg, policy):
        """The policy's complement method for this codec, built once (None for a policy without one)."""
        key = self._method_key(cfg, policy)
        if key is None:
            return None
        if key not in self.methods:
            from sim.complement import make_method

            self.methods[key] = make_method(policy.method, self.codec(cfg), cache=self.models,
                                            **(policy.method_options or {}))
        return self.methods[key]

    def build(self, scenario) -> None:
        """Load the codec and every policy's method of a point (one line naming the policy on failure)."""
        self.codec(scenario.codec)
        for i, pol in enumerate(scenario.policies):
            try:
                self.method(scenario.codec, pol.policy)
            except LatentcastError as err:
                hint = "; or choose another method (e.g. method: interp)" if isinstance(err, ModelLoadError) else ""
                raise err.__class__(f"{self.source}: policies[{i}].method = {pol.policy.method!r} "
                                    f"({pol.name}): {err}{hint}") from None

    def cards(self) -> dict:
        """Provenance of the weights loaded so far: codec cards and complement sets (name, options, SHA-256)."""
        return {"codecs": list(self.codec_cards),
                "complement": [{"name": m.name, "options": k, "sha256": m.digest()}
                               for k, m in sorted(self.models.items())]}

    def _warm(self, cfg, policy, shape) -> float:
        key = (self._method_key(cfg, policy), tuple(int(v) for v in shape))
        fn = self.method(cfg, policy)
        if fn is None or key in self.warmed:
            return 0.0
        self.warmed.add(key)
        t0 = time.perf_counter()
        fn.warmup(key[1])
        return time.perf_counter() - t0

    # -- per-image caches ---------------------------------------------------------------
    def image(self, images, name: str) -> np.ndarray:
        key = (images, name)
        if key not in self.images:
            if images not in self.files:
                self.files[images] = image_files(images, self.source)
            self.images[key] = load_image(images, name, self.files[images][name], self.source)
        return self.images[key]

    def prepare(self, cfg, images, name: str):
        key = (cfg, images, name)
        if key not in self.prepared:
            image = self.image(images, name)
            codec = self.codec(cfg)
            mkey = (cfg.model, cfg.weights, cfg.device, images, name)
            if mkey not in self.latents:
                self.latents[mkey] = codec.encode(image)
            self.prepared[key] = stages.prepare(codec, image, self.latents[mkey], self._lpips_for(image),
                                                codec.device)
        return self.prepared[key]

    def _lpips_for(self, image: np.ndarray):
        from sim.lpips import MIN_SIZE

        return self.lpips() if min(image.shape[:2]) >= MIN_SIZE else None

    def packets(self, sc, name: str, image_id: int, prep):
        from sim.packets import packetize

        limit = int(sc.link.max_payload)
        key = (sc.codec, sc.images, name, image_id, sc.packetizer, limit)
        if key not in self.packetized:
            self.packetized[key] = packetize(self.codec(sc.codec), prep, image_id, sc.packetizer, limit=limit)
        return self.packetized[key]

    # -- units --------------------------------------------------------------------------
    def run(self, unit) -> UnitResult:
        """All records of ``unit`` (every policy, in policy order), its example pictures if the
        report keeps them, and wall seconds per stage. A model or image that cannot be loaded
        ends the run (``fatal``); any other failure becomes the transmission's error record."""
        return self.run_batch([unit])[0]

    def run_batch(self, units: list) -> list[UnitResult]:
        """:meth:`run` for several units, their repairs batched together: one ``batch`` call per
        method over every transmission of the units (each item with its own generator and noise
        σ; equal to its own call within float tolerance). Stage times of the shared repair are
        split evenly between the units."""
        live = []   # (result, sent, reference, methods)
        results = []
        for unit in units:
            result, sent, ref, methods = self._start(unit)
            results.append(result)
            if ref is not None:
                live.append((result, sent, ref, methods))
        t0 = time.perf_counter()
        stages.repair([p for r, *_ in live for p in r.unit.scenario.policies],
                      [m for *_, ms in live for m in ms], [s for _, sent, *_ in live for s in sent])
        for result, *_ in live:
            result.stages["repair"] += (time.perf_counter() - t0) / len(live)
        for result, sent, ref, methods in live:
            self._finish(result, sent, ref, methods)
        for result in results:
            if result.fatal is None:
                self._log_errors(result)
                result.cards = self.cards()
        return results

    def _start(self, unit):
        """Load what ``unit`` needs, transmit under every policy, warm the methods up; returns
        ``(result, sent, reference or None, methods)``."""
        sc = unit.scenario
        result = UnitResult(unit, stages=dict.fromkeys(STAGES, 0.0))
        times = result.stages
        t0 = time.perf_counter()
        try:
            self.build(sc)
            self.image(sc.images, unit.image)
        except LatentcastError as err:
            result.fatal = str(err)
            return result, [], None, []
        times["load"] += time.perf_counter() - t0
        sent = self._transmit(unit, self.codec(sc.codec), times)
        ref = self.prepared.get((sc.codec, sc.images, unit.image), (None, None))[1]
        if ref is None:
            result.records = stages.make_records(unit, sent)
            return result, sent, None, []
        methods = [self.method(sc.codec, pol.policy) for pol in sc.policies]
        for pol, s in zip(sc.policies, sent):
            if s.ok:
                times["warmup"] += self._warm(sc.codec, pol.policy, s.transmission.latent.shape)
        return result, sent, ref, methods

    def _finish(self, result, sent, ref, methods) -> None:
        """Decode, score, pictures and records of one repaired unit."""
        from reports.examples import keeps

        unit, times = result.unit, result.stages
        codec = self.codec(unit.scenario.codec)
        t0 = time.perf_counter()
        stages.decode(codec, sent, ref)
        t1 = time.perf_counter()
        image = self.image(unit.scenario.images, unit.image)
        stages.score(image, sent, ref, self._lpips_for(image), codec.device)
        t2 = time.perf_counter()
        times.update(decode=t1 - t0, metrics=t2 - t1)
        if keeps(unit.repeat, unit.image_id):
            result.example = self._example(unit, image, ref, methods, sent)
            times["examples"] += time.perf_counter() - t2
        result.records = stages.make_records(unit, sent)

    @staticmethod
    def _log_errors(result) -> None:
        unit = result.unit
        for rec in result.records:
            if "error" in rec:
                log.error("image %s, policy %s (%s, repeat %d): %s", unit.image, rec["policy"], unit.point_id,
                          unit.repeat, rec["error"])

    def _transmit(self, unit, codec, times: dict) -> list:
        sc = unit.scenario
        t0 = time.perf_counter()
        try:
            prep, _ = self.prepare(sc.codec, sc.images, unit.image)
        except Exception as err:  # noqa: BLE001 - one image's failure must not end the run
            return [stages.Sent(error=err) for _ in sc.policies]
        t1 = time.perf_counter()
        times["prepare"] += t1 - t0
        try:
            packets = self.packets(sc, unit.image, unit.image_id, prep)
        except Exception as err:  # noqa: BLE001
            return [stages.Sent(error=err) for _ in sc.policies]
        t2 = time.perf_counter()
        times["packetize"] += t2 - t1
        sent = stages.transmit(sc, codec, prep, packets, unit.image_id, unit.rng)
        times["transmit"] += time.perf_counter() - t2
        return sent

    @staticmethod
    def _example(unit, image, ref, methods, sent) -> Example:
        """The unit's pictures, with the EEN edges of the first policy whose method estimates
        edges and that had cells missing."""
        edges = None
        for fn, s in zip(methods, sent):
            if fn is None or not s.ok or not s.transmission.missing.any():
                continue
            edges = fn.estimate_edges(s.transmission.latent, s.transmission.missing)
            if edges is not None:
                break
        outputs = [(pol.name, s.transmission.missing, s.image) for pol, s in zip(unit.scenario.policies, sent)
                   if s.ok]
        return Example(unit.point.index, unit.repeat, unit.image_id, unit.image, image, ref.image, outputs, edges)
