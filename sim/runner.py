"""Run a scenario: every sweep point × repeat × image × policy → one transmission → one record.

For each (point, repeat, image) *group* the runner calls :func:`sim.engine.transmit` once
per policy, decodes the policies' latents in one batch, scores each reconstruction against
the original image and against the loss-free decode (the quantized latent decoded as
sent), and appends one record per transmission to ``results.jsonl``, flushed at once.
A received latent identical to the loss-free one (nothing lost, or everything resent) is
not decoded again: its reconstruction *is* the cached loss-free decode, and its
``wall.decode_s`` is that decode's measured time.

Randomness: transmission ``(point p, repeat r, image named n)`` gets
``numpy.random.default_rng(SeedSequence([seed, p, r, crc32(n)]))``, a fresh generator per
policy from that same seed: all policies of a group face the same channel realisation on
the first pass (common random numbers), and adding an image, a policy or a sweep value
does not change the other transmissions' streams. No global RNG is used.

Resume: records already in ``results.jsonl`` (same scenario: ``scenario.resolved.yaml``
must match; same model weights: the SHA-256 of the codec weights and of each complement
weight set in ``provenance.json``, checked when records are to be added) are skipped; a
group with some records is recomputed whole (so the batched decode is the same as in an
uninterrupted run) and only its missing records are written.
Failure on one transmission (any exception other than Ctrl-C) is logged as one line
naming the image, policy and error, written as an ``error`` record, and the run goes on;
error records are retried by the next run of the same scenario.

Example images (for the report, which decodes nothing): after each group's batched decode,
:func:`reports.examples.save_examples` writes the groups it keeps (repeat 0 of the first
image) under ``out/examples/``. They are artifacts, not records: nothing in
``results.jsonl`` depends on them, and a group recomputed on resume writes the same bytes.

Caches: images per (source, name, size); the encoded latent per (image, model); the
quantized/entropy-coded latent and the loss-free decode per (image, codec config); the
packets (``sim.packets.packetize``) per (image, codec config, packetizer, link packet
limit), handed to every ``transmit`` of that image; each policy's complement method per
(codec config, method, options), built once per run with
``sim.complement.make_method(..., cache=<the run's model cache>)`` (weight sets load once,
whichever methods share them) before any transmission, and warmed up once per latent shape
(``method.warmup``) before its first use, so ``wall.repair_s`` excludes one-off set-up.

Torch threads: ``run_scenario(threads=1)`` runs with one torch thread (restored afterwards):
on a shared CPU the complement models ran 5–8× *slower* with 2 threads than with 1
(docs/complement.md, Speed); run parallel sweeps as one process per core.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.errors import ConfigError, InputError, LatentcastError, ModelLoadError
from sim.metrics import quality
from sim.provenance import append_run, check_weights, codec_card, run_entry
from sim.results import RESOLVED_FILE, RESULTS_FILE, ResultsWriter, read_records, write_summaries
from sim.scenario import CodecConfig, ImagesConfig, Scenario

__all__ = ["run_scenario", "RunReport", "load_images", "transmission_rng"]

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What a call of :func:`run_scenario` did. Times are wall-clock seconds."""

    out: Path
    total: int = 0            # transmissions in the scenario
    skipped: int = 0          # already in results.jsonl when the run started
    written: int = 0          # records written by this run (errors included)
    errors: int = 0           # error records written by this run
    wall_s: float = 0.0       # whole call
    transmit_s: float = 0.0   # inside sim.engine.transmit
    stages: dict = field(default_factory=dict)  # wall seconds per stage (load, prepare = encode +
    #   loss-free decode, packetize, warmup (complement methods), transmit, decode, examples, metrics, write)


def transmission_rng(seed: int, point: int, repeat: int, image: str) -> np.random.Generator:
    """The generator of one transmission (the same for every policy of the group)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(point), int(repeat),
                                                         zlib.crc32(image.encode("utf-8"))]))


def load_images(images: ImagesConfig, source: str = "<scenario>") -> list[tuple[str, np.ndarray]]:
    """``[(name, (size, size, 3) uint8)]``: every image read, resized and center-cropped.

    Raises
    ------
    InputError
        One line naming the scenario file, ``images.source`` and the bad image file.
    """
    from sim.images import load_rgb, load_sample, resize_center_crop

    out = []
    try:
        for name, path in images.items():
            img = load_sample(name) if path is None else load_rgb(path)
            out.append((name, resize_center_crop(img, images.size)))
    except LatentcastError as err:
        raise InputError(f"{source}: images.source = {images.source!r}: {err}") from None
    return out


# ------------------------------------------------------------------------------ running


def _lpips_ok(model, image: np.ndarray) -> bool:
    """Whether LPIPS is scored for this image: a model is loaded and the image is large enough."""
    if model is None:
        return False
    from sim.lpips import MIN_SIZE

    return min(image.shape[:2]) >= MIN_SIZE


class _Cache:
    """Codecs, encoded latents, prepared latents, loss-free decodes and complement methods,
    shared by all points.

    ``lpips``: the run's :class:`sim.lpips.LPIPS` model, or None (LPIPS left out).
    """

    def __init__(self, lpips=None):
        self.lpips = lpips
        self.codecs: dict = {}
        self.cards: list[dict] = []
        self.latents: dict = {}
        self.prepared: dict = {}
        self.reference: dict = {}
        self.packetized: dict = {}
        self.methods: dict = {}       # (codec config, method, options) → built method
        self.models: dict = {}        # make_method's cache: weight sets loaded once per run
        self.warmed: set = set()      # (method key, latent shape) already warmed up

    @staticmethod
    def _method_key(cfg: CodecConfig, policy) -> tuple | None:
        name = getattr(policy, "method", None)
        if name is None:
            return None
        return cfg, name, json.dumps(getattr(policy, "method_options", {}) or {}, sort_keys=True, default=str)

    def complement_cards(self) -> list[dict]:
        """The complement weight sets loaded so far: name, loading options, :meth:`digest`."""
        return [{"name": m.name, "options": key, "sha256": m.digest()} for key, m in sorted(self.models.items())]

    def method(self, cfg: CodecConfig, policy):
        """The policy's complement method for this codec, built once (None for a policy without one)."""
        key = self._method_key(cfg, policy)
        if key is None:
            return None
        if key not in self.methods:
            from sim.complement import make_method

            self.methods[key] = make_method(policy.method, self.codec(cfg), cache=self.models,
                                            **(policy.method_options or {}))
        return self.methods[key]

    def warm(self, cfg: CodecConfig, policy, shape) -> float:
        """Warm the policy's method up once per latent ``shape`` (C, h, w); returns the wall seconds spent."""
        key = self._method_key(cfg, policy)
        fn = self.method(cfg, policy)
        warmup = getattr(fn, "warmup", None)
        shape = tuple(int(v) for v in shape)
        if warmup is None or (key, shape) in self.warmed:
            return 0.0
        self.warmed.add((key, shape))
        t0 = time.perf_counter()
        warmup(shape)
        return time.perf_counter() - t0

    def codec(self, cfg: CodecConfig):
        if cfg not in self.codecs:
            from sim.codec import load_codec

            self.codecs[cfg] = load_codec(**cfg.load_kwargs())
            self.cards.append(codec_card(cfg, self.codecs[cfg]))
        return self.codecs[cfg]

    def prepare(self, cfg: CodecConfig, key: tuple, image: np.ndarray):
        """(Prepared, loss-free reference) of one image under one codec configuration.

        The reference is a dict: ``latent`` (the dequantized latent as sent), ``image`` (its
        decode), ``decode_s`` (wall time of that decode) and ``quality`` (the metric fields
        of a reconstruction equal to it, LPIPS included when it is scored).
        """
        if (cfg, key) not in self.prepared:
            codec = self.codec(cfg)
            mkey = (cfg.model, cfg.weights, cfg.device, key)
            if mkey not in self.latents:
                self.latents[mkey] = codec.encode(image)
            prep = codec.prepare(self.latents[mkey])
            latent = np.asarray(codec.dequantize(prep.symbols, prep.side), dtype=np.float32)
            t0 = time.perf_counter()
            decoded = codec.decode(latent)
            decode_s = time.perf_counter() - t0
            q = {**quality(image, decoded), **quality(decoded, decoded, "_lossfree")}
            if _lpips_ok(self.lpips, image):  # identical images: LPIPS 0, like SSIM 1
                q.update(lpips=float(self.lpips.distances([image], [decoded])[0, 0]), lpips_lossfree=0.0)
            self.prepared[(cfg, key)] = prep
            self.reference[(cfg, key)] = {"latent": latent, "image": decoded, "decode_s": decode_s, "quality": q}
        return self.prepared[(cfg, key)], self.reference[(cfg, key)]

    def packets(self, sc: Scenario, key: tuple, image_id: int, prep):
        """The image's packets for this codec, packetizer and link packet limit (cut once)."""
        from sim.packets import packetize

        limit = int(sc.link.max_payload)
        pkey = (sc.codec, key, image_id, sc.packetizer, limit)
        if pkey not in self.packetized:
            self.packetized[pkey] = packetize(self.codec(sc.codec), prep, image_id, sc.packetizer, limit=limit)
        return self.packetized[pkey]


def _check_out(out: Path, resolved: str) -> list[dict]:
    """Existing records of ``out`` if they belong to this scenario; refuse otherwise."""
    results = out / RESULTS_FILE
    records = read_records(results, repair=True)
    if records:
        prev = out / RESOLVED_FILE
        old = prev.read_text(encoding="utf-8") if prev.exists() else None
        if old != resolved:
            raise ConfigError(f"{out}: holds results of a different scenario ({RESOLVED_FILE} "
                              f"{'differs' if old is not None else 'missing'}); choose another "
                              f"--out or delete {results} to start again")
    return records


def _key(point: int, repeat: int, image: str, policy: str) -> list:
    return [point, repeat, image, policy]


def _example_edges(cache: _Cache, sc: Scenario, sent) -> np.ndarray | None:
    """EEN edges of the first policy whose complement method estimates edges and that had
    cells missing (for the report's example grid); None if there is none."""
    for pol, (t, _, _) in zip(sc.policies, sent):
        if t is None or not t.missing.any():
            continue
        fn = cache.method(sc.codec, pol.policy)
        if hasattr(fn, "estimate_edges"):
            edges = fn.estimate_edges(t.latent, t.missing)
            if edges is not None:
                return edges
    return None


def _run_group(cache: _Cache, scenario: Scenario, point, repeat: int, image_id: int, name: str,
               image: np.ndarray, stages: dict, out: Path | None = None) -> list[dict]:
    """The records of one (point, repeat, image): every policy, in policy order.

    Failures are caught per transmission and come back as ``error`` records (no
    measurements); Ctrl-C propagates. Adds wall seconds per stage to ``stages``. With
    ``out``, the group's example images go to ``out/examples/`` (only the groups
    :func:`reports.examples.save_examples` keeps; artifacts, not records).
    """
    from reports.examples import keeps, save_examples
    from sim import engine

    sc = point.scenario
    image_key = (sc.images.source, name, sc.images.size)
    fail = None
    t0 = time.perf_counter()
    try:
        prep, reference = cache.prepare(sc.codec, image_key, image)
    except Exception as err:  # noqa: BLE001 - one image's failure must not end the run
        prep, reference, fail = None, None, err
    stages["prepare"] += time.perf_counter() - t0
    codec = cache.codec(sc.codec)
    packets = None
    if fail is None:
        t0 = time.perf_counter()
        try:
            packets = cache.packets(sc, image_key, image_id, prep)
        except Exception as err:  # noqa: BLE001
            fail = err
        stages["packetize"] += time.perf_counter() - t0

    # 1. transmit under every policy (common random numbers: one seed for the group)
    sent = []  # (transmission | None, transmit wall s, error | None) per policy
    for pol in sc.policies:
        if fail is not None:
            sent.append((None, 0.0, fail))
            continue
        rng = transmission_rng(scenario.seed, point.index, repeat, name)
        try:
            method = cache.method(sc.codec, pol.policy)
            stages["warmup"] += cache.warm(sc.codec, pol.policy, prep.shape)
        except Exception as e:  # noqa: BLE001
            sent.append((None, 0.0, e))
            continue
        t0 = time.perf_counter()
        try:
            t, err = engine.transmit(codec, prep, image_id=image_id, packetizer=sc.packetizer, link=sc.link,
                                     channel=sc.channel, policy=pol.policy, receiver=sc.receiver, rng=rng,
                                     packets=packets, method=method), None
        except Exception as e:  # noqa: BLE001
            t, err = None, e
        dt = time.perf_counter() - t0
        stages["transmit"] += dt
        sent.append((t, dt, err))

    # 2. decode the received latents in one batch; one equal to the loss-free latent *is*
    #    the loss-free decode, already cached
    ok = [i for i, (t, _, _) in enumerate(sent) if t is not None]
    same = {i for i in ok if np.array_equal(sent[i][0].latent, reference["latent"])}
    todo = [i for i in ok if i not in same]
    decoded: dict[int, np.ndarray] = {i: reference["image"] for i in same}
    decode_s = {i: reference["decode_s"] for i in same}
    if todo:
        t0 = time.perf_counter()
        try:
            decoded.update(zip(todo, codec.decode(np.stack([sent[i][0].latent for i in todo]))))
        except Exception as e:  # noqa: BLE001
            for i in todo:
                sent[i] = (None, sent[i][1], e)
        dt = time.perf_counter() - t0
        decode_s.update({i: dt / len(todo) for i in todo})
        stages["decode"] += dt

    # 3. example images for the report (rewritten with the same bytes when a group is recomputed)
    if out is not None and reference is not None:
        t0 = time.perf_counter()
        save_examples(out, point.index, repeat, image_id, name, image, reference["image"],
                      [(pol.name, t, decoded[i]) for i, (pol, (t, _, _)) in enumerate(zip(sc.policies, sent))
                       if t is not None],
                      edges=_example_edges(cache, sc, sent) if keeps(repeat, image_id) else None)
        stages["examples"] += time.perf_counter() - t0

    # 4. LPIPS of the new reconstructions against the original and the loss-free decode, one
    #    batch (a reconstruction equal to the loss-free decode has it in reference["quality"])
    lp: dict[int, dict] = {}
    lp_s = 0.0
    scored = [i for i in todo if sent[i][0] is not None]
    if scored and _lpips_ok(cache.lpips, image):
        t0 = time.perf_counter()
        try:
            d = cache.lpips.distances([image, reference["image"]], [decoded[i] for i in scored])
            lp = {i: {"lpips": float(d[0, k]), "lpips_lossfree": float(d[1, k])} for k, i in enumerate(scored)}
        except Exception as e:  # noqa: BLE001
            for i in scored:
                sent[i] = (None, sent[i][1], e)
        lp_s = (time.perf_counter() - t0) / len(scored)
        stages["metrics"] += lp_s * len(scored)

    # 5. score and make the records
    records = []
    for i, (pol, (t, transmit_s, err)) in enumerate(zip(sc.policies, sent)):
        rec = {"key": _key(point.index, repeat, name, pol.name), "point": point.index, "repeat": repeat,
               "image": name, "image_id": image_id, "sweep": point.values_dict(), "seed": scenario.seed,
               "policy": pol.name, "policy_kind": pol.kind}
        if err is None:
            t0 = time.perf_counter()
            try:
                q = (dict(reference["quality"]) if i in same else
                     {**quality(image, decoded[i]), **quality(reference["image"], decoded[i], "_lossfree"),
                      **lp.get(i, {})})
            except Exception as e:  # noqa: BLE001
                err = e
            metrics_s = time.perf_counter() - t0
            stages["metrics"] += metrics_s
            metrics_s += lp_s if i in lp else 0.0
        if err is not None:
            log.error("image %s, policy %s (point %d, repeat %d): %s: %s", name, pol.name, point.index,
                      repeat, err.__class__.__name__, err)
            rec["error"] = f"{err.__class__.__name__}: {err}"
        else:
            clash = set(t.stats) & (set(q) | {"wall", "error"})
            if clash:
                raise RuntimeError(f"engine stats clash with record fields: {sorted(clash)}")
            wall = dict(t.wall or {})
            wall.update(transmit_s=transmit_s, decode_s=decode_s[i], metrics_s=metrics_s,
                        compute_s=float(wall.get("repair_s", 0.0)) + decode_s[i])
            # the runner's identity fields win (the engine's "policy" is the kind)
            rec.update({k: v for k, v in t.stats.items() if k not in rec})
            rec.update(q)
            rec["wall"] = wall
        records.append(rec)
    return records


def _load_lpips(out: Path, points, existing: list[dict]):
    """The run's LPIPS model (``sim.lpips.load_lpips``: None after one warning where the weights
    cannot be had). Warns when records already in ``out`` were scored otherwise."""
    from sim.lpips import MIN_SIZE, load_lpips

    model = load_lpips()
    big = {p.index for p in points if p.scenario.images.size >= MIN_SIZE}
    old = [r for r in existing if r.get("point") in big]
    with_lpips = sum("lpips" in r for r in old)
    if model is None and with_lpips:
        log.warning("%s: %d of the %d records already there have lpips; the new ones will not (LPIPS is not "
                    "available now)", out / RESULTS_FILE, with_lpips, len(old))
    elif model is not None and with_lpips < len(old):
        log.warning("%s: %d of the %d records already there have no lpips (LPIPS was not available then); "
                    "the new ones have it", out / RESULTS_FILE, len(old) - with_lpips, len(old))
    return model


def _build_methods(cache: _Cache, scenario: Scenario, points) -> None:
    """Every policy's complement method, built before any transmission (one line on failure)."""
    for p in points:
        for i, pol in enumerate(p.scenario.policies):
            try:
                cache.method(p.scenario.codec, pol.policy)
            except LatentcastError as err:
                hint = "; or choose another method (e.g. method: interp)" if isinstance(err, ModelLoadError) else ""
                raise err.__class__(f"{scenario.source}: policies[{i}].method = {pol.policy.method!r} "
                                    f"({pol.name}): {err}{hint}") from None


def run_scenario(scenario: Scenario, out: str | Path | None = None, *, progress: bool = False,
                 threads: int | None = 1) -> RunReport:
    """Run every transmission of ``scenario`` not yet in ``out``'s results; write the outputs.

    Writes ``out/scenario.resolved.yaml`` and appends to ``out/provenance.json`` at the
    start, appends to ``out/results.jsonl`` as each transmission finishes, and writes
    ``out/summary.csv`` and ``out/timings.csv`` at the end (also after Ctrl-C, for what is finished).

    Parameters
    ----------
    scenario : Scenario
        A validated scenario (:func:`sim.scenario.load_scenario`).
    out : path, optional
        Output folder; default ``scenario.out``.
    progress : bool
        Show a progress bar (records done / total) on stderr.
    threads : int or None
        ``torch.set_num_threads`` for the run, restored afterwards. Default 1: one thread per
        worker process (on a shared CPU the complement models ran 5–8× slower with 2 threads
        than with 1); None or 0 keeps torch's own setting (all cores).

    Returns
    -------
    RunReport

    Raises
    ------
    ConfigError
        ``out`` holds results of another scenario, or of other model weights (codec or
        complement: their SHA-256 in ``provenance.json``); ``threads`` < 0.
    InputError, ModelLoadError
        An image, the codec weights or a complement method's weights cannot be read (before
        any transmission).
    """
    import torch

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ConfigError(f"threads = {threads!r}: expected an integer ≥ 1 (torch threads), or 0 for torch's default")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_scenario(scenario, out, progress)
    finally:
        torch.set_num_threads(before)


def _run_scenario(scenario: Scenario, out, progress: bool) -> RunReport:
    from tqdm import tqdm

    t_start = time.perf_counter()
    out = Path(out if out is not None else scenario.out)
    out.mkdir(parents=True, exist_ok=True)
    report = RunReport(out=out)
    stages = {k: 0.0 for k in ("load", "prepare", "packetize", "warmup", "transmit", "decode", "examples",
                               "metrics", "write")}
    resolved = scenario.to_yaml()
    existing = [r for r in _check_out(out, resolved) if "error" not in r]
    done = {json.dumps(r.get("key")) for r in existing}

    t0 = time.perf_counter()
    points = scenario.points or ()
    images_of: dict[ImagesConfig, list] = {}  # every image read up front (images.* may be swept)
    for p in points:
        if p.scenario.images not in images_of:
            images_of[p.scenario.images] = load_images(p.scenario.images, scenario.source)
    stages["load"] += time.perf_counter() - t0
    planned = [json.dumps(_key(p.index, r, n, pol.name)) for p in points for r in range(scenario.repeats)
               for n, _ in images_of[p.scenario.images] for pol in p.scenario.policies]
    report.total = len(planned)
    report.skipped = len(done & set(planned))

    (out / RESOLVED_FILE).write_text(resolved, encoding="utf-8")
    cache = _Cache()
    for p in points:  # every codec loaded up front: model errors surface before any work
        cache.codec(p.scenario.codec)
    if report.skipped < report.total:
        t0 = time.perf_counter()
        _build_methods(cache, scenario, points)  # weights errors surface before any work, too
        cache.lpips = _load_lpips(out, points, existing)
        stages["load"] += time.perf_counter() - t0
    run = run_entry(scenario, cache.cards, cache.complement_cards())
    if existing and report.skipped < report.total:  # records are to be added to them
        check_weights(out, len(existing), run)
    append_run(out, run)

    bar = tqdm(total=report.total, initial=report.skipped, disable=not progress, file=sys.stderr,
               unit="tx", desc=scenario.name, dynamic_ncols=True)
    writer = ResultsWriter(out / RESULTS_FILE)
    try:
        for point in points:
            for repeat in range(scenario.repeats):
                for image_id, (name, image) in enumerate(images_of[point.scenario.images]):
                    keys = [json.dumps(_key(point.index, repeat, name, pol.name))
                            for pol in point.scenario.policies]
                    if all(k in done for k in keys):
                        continue
                    # the whole group is recomputed (same batched decode as an uninterrupted
                    # run); only its missing records are written
                    for key, rec in zip(keys, _run_group(cache, scenario, point, repeat, image_id, name,
                                                         image, stages, out)):
                        if key in done:
                            continue
                        t0 = time.perf_counter()
                        writer.write(rec)
                        stages["write"] += time.perf_counter() - t0
                        report.written += 1
                        if "error" in rec:
                            report.errors += 1
                        else:
                            done.add(key)
                        bar.update(1)
    finally:
        writer.close()
        bar.close()
        t0 = time.perf_counter()
        write_summaries(out / RESULTS_FILE, out)
        stages["write"] += time.perf_counter() - t0
        report.transmit_s = stages["transmit"]
        report.stages = stages
        report.wall_s = time.perf_counter() - t_start
    if report.errors:
        log.error("%d of %d transmissions failed (error records in %s); run again to retry them",
                  report.errors, report.written, out / RESULTS_FILE)
    return report
