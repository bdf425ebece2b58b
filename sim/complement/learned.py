"""Complement methods that need the codec: the learned method (EEN edges + ControlNet latent
inpainting + optional Canny-based denoising step) with its ablations, and pixel-domain baselines.

Each is a :class:`~sim.complement.method.ComplementMethod` built once per run with the codec
(:func:`make_method`)::

    method(latent (C, h, w) float32, missing (h, w) bool, rng: numpy Generator, noise_std=0.0) -> (C, h, w) float32
    method.batch(latents, masks, rngs, noise_stds) -> [(C, h, w) float32, ...]

Known cells come back exactly, except with the denoising step (``denoise=True``), which
repairs every cell (``method.alters_known`` is True then). The ``rng`` only seeds a
``torch.Generator`` (one 63-bit draw per call or item), so a call is a pure function of its
inputs, and :meth:`LearnedComplement.batch` runs many latents through the models at once with
one generator per item: item i gets what its own call gives (within float tolerance).

Names (:data:`CODEC_METHODS`; known to :func:`sim.complement.complement_method`):

``learned``          EEN edges + inpaint control, known cells blended, no denoising step
``learned-denoise``  the same, then the Canny-based denoising step over the whole latent
``learned-noedge``   ablation without edges (the EEN is not run)
``pixel-telea``      decode with holes, OpenCV Telea inpainting of the lost pixels, re-encode
``pixel-diffusion``  decode with holes, re-encode, then the diffusion model in pixel-mask mode:
                     inpaint control only, no latent of the lost region, no edges

The models run in the weight set's dtype (option ``dtype``: float32, or float16 / bfloat16 on
a CUDA device); latents, noise and the DDIM arithmetic stay float32, results are float32.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sim.complement.fill import check_inputs
from sim.complement.method import ComplementMethod, check_batch, warmup_case
from sim.errors import ConfigError, InputError

__all__ = ["CODEC_METHODS", "LearnedComplement", "PixelTelea", "PixelDiffusion", "make_method", "check_options",
           "NeedsCodec"]

log = logging.getLogger(__name__)


def _generator(rng: np.random.Generator):
    import torch

    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def _stride(codec) -> int:
    return int(getattr(codec.model, "downscale", 8))


def _pixel_mask(missing: np.ndarray, stride: int) -> np.ndarray:
    """(h, w) cell mask → (h·s, w·s) pixel mask."""
    return np.kron(missing, np.ones((stride, stride), dtype=bool))


# the Canny-based denoising step's defaults: from the channel's noise level ("auto"), 2 DDIM steps
DENOISE_STRENGTH, DENOISE_STEPS = "auto", 2
# its fixed start t ≈ 0.2 T (fresh noise on top of the latent's), what `train finetune --denoise-weight` trains
FIXED_DENOISE_STRENGTH = 0.2


class _Plan(NamedTuple):
    """What runs for one item: inpainting (cells were lost), the denoising step, and the step's
    schedule length where it starts from the item's noise level (None: the fixed start)."""

    inpaint: bool
    denoise: bool
    start: int | None


class LearnedComplement(ComplementMethod):
    """EEN edges + ControlNet latent inpainting (+ Canny-based denoising step) for one codec.

    Parameters
    ----------
    codec : sim.codec.Codec
        Its model decodes the holed latent for the inpaint control; ``scaling_factor`` scales
        latents for the UNet; ``downscale`` must match the ControlNets' conditioning stride.
    models : ComplementModels
        A weight set (:func:`sim.complement.models.load_complement_models`).
    steps : int, optional
        DDIM steps of the inpainting loop (default: the weight set's ``steps``, chosen on
        validation images — 2 for the shipped ``tiny`` set, 8 for ``sd15``; see
        ``benchmarks/bench_complement.py`` and docs/complement.md for the cost per step).
    strength : float in (0, 1]
        1 = lost cells start from pure noise; below 1 they start from harmonic interpolation
        noised to the first timestep run (SDEdit-style; fewer steps run).
    edges : bool
        Run the EEN and feed edges to the ControlNets (False = the no-edge ablation: edge-only
        ControlNets are left out, edge channels of combined ones are zero).
    denoise : bool
        Canny-based denoising step after inpainting: ``denoise_steps`` DDIM steps over the whole
        latent, with edge control only. ``denoise_strength = "auto"`` (default): from the
        timestep whose noise level matches the noise in the received values (the call's
        ``noise_std``: quantization and channel), topped up rather than added
        (:func:`sim.complement.chain.noise_matched_total`); below the schedule's finest level
        (and with ``noise_std`` 0, the default) the step leaves the latent as it is. A number s:
        from t ≈ s × T with fresh noise, whatever the channel (the fixed start; 0.2 is what
        ``train finetune --denoise-weight`` trains).
    guidance_scale : float
        Control guidance (1 = off); see :func:`~sim.complement.latent_inpaint.denoise_latents`.
    eta : float
        DDIM η (0 = deterministic given the starting noise).
    """

    def __init__(self, codec, models, steps: int | None = None, strength: float = 1.0, edges: bool = True,
                 denoise: bool = False, denoise_strength: float | str = DENOISE_STRENGTH,
                 denoise_steps: int = DENOISE_STEPS, guidance_scale: float = 1.0, eta: float = 0.0,
                 name: str = "learned"):
        self.codec, self.models, self.name = codec, models, name
        self.steps = models.steps if steps is None else steps
        self.strength, self.edges, self.denoise = strength, edges, denoise
        self.denoise_strength, self.denoise_steps = denoise_strength, denoise_steps
        self.guidance_scale, self.eta = guidance_scale, eta
        self._check()

    @property
    def alters_known(self) -> bool:
        return self.denoise

    def _check(self) -> None:
        m, stride = self.models, _stride(self.codec)
        _check_loop({k: getattr(self, k) for k in LOOP_KEYS})
        if m.downscale is not None and m.downscale != stride:
            raise ConfigError(f"complement weights {m.name!r} condition at ×{m.downscale} but the codec "
                              f"{self.codec.model.name!r} has latent stride {stride}")
        if self.edges and any(s.uses_edges for s in m.controlnets):
            if m.een is None:
                raise ConfigError(f"complement weights {m.name!r} have no EEN: pass een = a weights file "
                                  f"(`latentcast train een`), or use learned-noedge")
            card = getattr(m.een, "training_card", {})
            if card.get("codec") not in (None, self.codec.model.name):
                log.warning("EEN trained on %r latents, used with codec %r", card.get("codec"), self.codec.model.name)
            sf = card.get("scaling_factor")
            if sf and abs(sf - self.codec.model.scaling_factor) > 0.05 * abs(sf):
                log.warning("EEN trained with scaling factor %.4g, codec has %.4g", sf, self.codec.model.scaling_factor)

    # -- the method ---------------------------------------------------------------------------
    def __call__(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
                 noise_std: float = 0.0) -> np.ndarray:
        return self.run(latent, missing, _generator(rng), noise_std)["latent"]

    def batch(self, latents: list[np.ndarray], masks: list[np.ndarray], rngs: list[np.random.Generator],
              noise_stds: list[float]) -> list[np.ndarray]:
        """Every item's :meth:`__call__`, the items run through the models together (:meth:`run_batch`)."""
        generators = [_generator(rng) for rng in rngs]
        return [r["latent"] for r in self.run_batch(latents, masks, generators, noise_stds)]

    def run(self, latent: np.ndarray, missing: np.ndarray, generator, noise_std: float = 0.0) -> dict:
        """Complement one latent; returns ``{"latent", "edges", "masked_image"}`` (numpy; None if unused).

        ``generator`` is a CPU ``torch.Generator``; :meth:`__call__` seeds one from the rng.
        ``noise_std``: the noise in the received values (latent units), as in :meth:`__call__`.
        """
        return self.run_batch([latent], [missing], [generator], [noise_std])[0]

    def run_batch(self, latents: list[np.ndarray], masks: list[np.ndarray], generators: list,
                  noise_stds: list[float]) -> list[dict]:
        """:meth:`run` of every item.

        Items of one latent shape and one plan (inpainting where cells were lost; the denoising
        step and, with ``denoise_strength = "auto"``, its start, which follows the item's noise
        level) go through the models as one batch; item i's random draws come from
        ``generators[i]`` alone, so its result is the one its own :meth:`run` gives. Items with
        nothing to do come back unchanged (a copy).
        """
        import torch

        check_batch(self.name, latents, masks, generators, noise_stds)
        items = [self._item(*args) for args in zip(latents, masks, noise_stds)]
        results = [{"latent": out, "edges": None, "masked_image": None} for out, *_ in items]
        groups: dict[tuple, list[int]] = {}
        for i, (out, _, _, plan) in enumerate(items):
            if plan.inpaint or plan.denoise:
                groups.setdefault((out.shape, plan), []).append(i)
        with torch.no_grad():
            for (_, plan), idx in groups.items():
                done = self._run_group([items[i] for i in idx], [generators[i] for i in idx], plan)
                for i, result in zip(idx, done):
                    results[i] = result
        return results

    def _item(self, latent, missing, noise_std) -> tuple[np.ndarray, np.ndarray, float | None, _Plan]:
        """(latent as a float32 copy, mask, σ of its noise in UNet units or None, its plan) after checks."""
        from sim.complement.chain import noise_matched_total

        out, missing = check_inputs(latent, missing, f"complement {self.name}")
        if out.shape[0] != self.models.unet.config.out_channels:
            raise InputError(f"complement {self.name}: latent has {out.shape[0]} channels, the UNet takes "
                             f"{self.models.unet.config.out_channels}")
        if not (_is_real(noise_std) and noise_std >= 0):
            raise InputError(f"complement {self.name}: noise_std = {noise_std!r}: expected a number ≥ 0")
        sigma = float(self.codec.model.scaling_factor) * float(noise_std) if self.denoise_strength == "auto" else None
        start = (noise_matched_total(self.models.scheduler_config, sigma, self.denoise_steps)
                 if self.denoise and sigma is not None else None)
        denoising = self.denoise and (sigma is None or start is not None)  # auto: below σ_0 nothing to denoise
        return out, missing, sigma, _Plan(bool(missing.any()), denoising, start)

    def _run_group(self, items: list[tuple], generators: list, plan: _Plan) -> list[dict]:
        """:meth:`run` of items (from :meth:`_item`) of one shape and ``plan``, as one batch."""
        import torch

        from sim.complement.chain import conditioning, denoise, inpaint

        outs, missings, sigmas = ([item[k] for item in items] for k in range(3))
        sf, stride = float(self.codec.model.scaling_factor), _stride(self.codec)
        device = self.models.unet.device
        z = torch.from_numpy(np.stack(outs)).to(device)
        lost = torch.from_numpy(np.stack(missings))[:, None].to(device, torch.float32)
        # 1. conditioning: EEN edges and the masked image, where the weight set's ControlNets take them
        edges, image = conditioning(self.models, self.codec.model, z, lost, self.edges,
                                    getattr(self.codec, "device", None))
        loop = dict(generator=list(generators), eta=self.eta, guidance_scale=self.guidance_scale)
        # 2. inpainting: known cells blended, lost cells generated (sim.complement.chain, as trained)
        scaled = z * sf
        if plan.inpaint:
            scaled = inpaint(self.models, z, lost, edges, image, scaling_factor=sf, stride=stride,
                             steps=self.steps, strength=self.strength, **loop)
        # 3. Canny-based denoising step over the whole latent, from each item's noise level ("auto")
        if plan.denoise:
            auto = plan.start is not None
            scaled = denoise(self.models, scaled, lost, edges, image, stride=stride, steps=self.denoise_steps,
                             strength=None if auto else self.denoise_strength, sigma=sigmas if auto else None,
                             **loop)
        repaired = (scaled / sf).float().cpu().numpy()
        results = []
        for i, (out, missing) in enumerate(zip(outs, missings)):
            if plan.denoise:
                out = repaired[i].copy()
            else:
                out[:, missing] = repaired[i][:, missing]
            results.append({"latent": out, "edges": None if edges is None else edges[i, 0].cpu().numpy(),
                            "masked_image": None if image is None else image[i].cpu().numpy()})
        return results

    def estimate_edges(self, latent: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
        """EEN edge map (H, W) in [0, 1] of a received latent (C, h, w) with ``missing`` (h, w)
        cells, as the method computes it; ``None`` where the method uses no edges."""
        import torch

        from sim.complement.chain import edge_map

        if not (self.edges and any(s.uses_edges for s in self.models.controlnets)):
            return None
        device = self.models.unet.device
        z = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))[None].to(device)
        lost = torch.from_numpy(np.asarray(missing, dtype=bool))[None, None].to(device, torch.float32)
        with torch.inference_mode():
            edges = edge_map(self.models.een, z * (1 - lost), lost, self.codec.model.scaling_factor)
        return edges[0, 0].cpu().numpy()

    def warmup(self, shape: tuple[int, int, int]) -> None:
        """One throw-away call on zeros of ``shape`` (C, h, w) with one lost cell.

        The first call of a process pays one-off kernel set-up (seconds on a CPU); a runner
        that reports measured compute time calls this once after building the method.
        """
        self.run(*warmup_case(shape), _generator(np.random.default_rng(0)))


class PixelTelea(ComplementMethod):
    """Pixel inpainting after decoding (OpenCV Telea), with neither latent nor edge information.

    ``image`` gives the pixel result itself; calling the object returns the latent with the lost
    cells taken from re-encoding that image (known cells exact), as the protocol requires.
    """

    def __init__(self, codec, radius: int = 3, name: str = "pixel-telea"):
        if not isinstance(radius, int) or radius < 1:
            raise ConfigError(f"complement.radius = {radius!r}: expected an integer ≥ 1 (pixels)")
        self.codec, self.radius, self.name = codec, radius, name

    def image(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(H, W, 3) uint8: the zero-filled latent decoded, lost pixels inpainted by Telea."""
        import cv2

        out, missing = check_inputs(latent, missing, f"complement {self.name}")
        out[:, missing] = 0.0
        decoded = self.codec.decode(out)
        if not missing.any():
            return decoded
        mask = _pixel_mask(missing, _stride(self.codec)).astype(np.uint8)
        return cv2.inpaint(decoded, mask, self.radius, cv2.INPAINT_TELEA)

    def __call__(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator | None,
                 noise_std: float = 0.0) -> np.ndarray:
        out, missing = check_inputs(latent, missing, f"complement {self.name}")
        if missing.any():
            out[:, missing] = self.codec.encode(self.image(out, missing))[:, missing]
        return out

    def warmup(self, shape: tuple[int, int, int]) -> None:
        """One throw-away call on zeros of ``shape`` (C, h, w) with one lost cell (see LearnedComplement)."""
        self(*warmup_case(shape), np.random.default_rng(0))


class PixelDiffusion(ComplementMethod):
    """The diffusion model in pixel-mask mode (the first paper's "inpainting after receiving").

    The receiver decodes the holed latent, re-encodes the image (it keeps no latent), and
    inpaints the lost region with the inpaint control only — no EEN, so no edge information.
    The noise level is not used (no denoising step).
    """

    def __init__(self, codec, models, name: str = "pixel-diffusion", **loop):
        self.codec, self.name = codec, name
        self.inner = LearnedComplement(codec, models, edges=False, denoise=False, name=name, **loop)

    def _received(self, latent: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """What a pixel-domain receiver has: the holed latent decoded and encoded again."""
        return self.codec.encode(self.codec.decode(np.where(missing, np.float32(0), latent)))

    def image(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8: the pixel-mode result, decoded from the re-encoded, inpainted latent."""
        out, missing = check_inputs(latent, missing, f"complement {self.name}")
        return self.codec.decode(self.inner(self._received(out, missing), missing, rng))

    def __call__(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
                 noise_std: float = 0.0) -> np.ndarray:
        return self.batch([latent], [missing], [rng], [noise_std])[0]

    def batch(self, latents: list[np.ndarray], masks: list[np.ndarray], rngs: list[np.random.Generator],
              noise_stds: list[float]) -> list[np.ndarray]:
        """Every item's call; the items with lost cells go through the models together
        (:meth:`LearnedComplement.batch`); the others come back unchanged, their rng untouched."""
        check_batch(self.name, latents, masks, rngs, noise_stds)
        items = [check_inputs(latent, missing, f"complement {self.name}") for latent, missing in zip(latents, masks)]
        lossy = [i for i, (_, missing) in enumerate(items) if missing.any()]
        repaired = self.inner.batch([self._received(*items[i]) for i in lossy], [items[i][1] for i in lossy],
                                    [rngs[i] for i in lossy], [0.0] * len(lossy))
        for i, rep in zip(lossy, repaired):
            out, missing = items[i]
            out[:, missing] = rep[:, missing]
        return [out for out, _ in items]

    def warmup(self, shape: tuple[int, int, int]) -> None:
        """One throw-away call on zeros of ``shape`` (C, h, w) with one lost cell (see LearnedComplement)."""
        self(*warmup_case(shape), np.random.default_rng(0))


class NeedsCodec(ComplementMethod):
    """Registry placeholder for a method that must be built with the codec first (calling it is a ConfigError)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, latent, missing, rng, noise_std: float = 0.0):
        raise ConfigError(f"complement method {self.name!r} needs the codec: build it once per run with "
                          f"sim.complement.make_method({self.name!r}, codec, ...)")


PRESETS = {"learned": {"edges": True, "denoise": False},
           "learned-denoise": {"edges": True, "denoise": True},
           "learned-noedge": {"edges": False, "denoise": False}}
CODEC_METHODS = {name: NeedsCodec(name) for name in (*PRESETS, "pixel-telea", "pixel-diffusion")}
MODEL_KEYS = ("weights", "een", "sd15", "device", "dtype")
LOOP_KEYS = ("steps", "strength", "edges", "denoise", "denoise_strength", "denoise_steps", "guidance_scale", "eta")
LOOP_DEFAULTS = {k: p.default for k, p in inspect.signature(LearnedComplement).parameters.items() if k in LOOP_KEYS}
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def _check_loop(loop: dict) -> None:
    """Ranges of the DDIM loop keys (any subset of :data:`LOOP_KEYS`); ConfigError naming ``complement.<key>``."""
    rules = {"steps": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1"),
             "strength": (lambda v: _is_real(v) and 0 < v <= 1, "a number in (0, 1]"),
             "edges": (lambda v: isinstance(v, (bool, np.bool_)), "true or false"),
             "denoise": (lambda v: isinstance(v, (bool, np.bool_)), "true or false"),
             "denoise_strength": (lambda v: v == "auto" or (_is_real(v) and 0 < v < 1),
                                  "a number in (0, 1) or 'auto'"),
             "denoise_steps": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1"),
             "guidance_scale": (lambda v: _is_real(v) and v >= 1, "a number ≥ 1 (1 = off)"),
             "eta": (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]")}
    for key, value in loop.items():
        ok, expected = rules[key]
        if not ok(value):
            raise ConfigError(f"complement.{key} = {value!r}: expected {expected} (see docs/complement.md)")
    steps, strength = loop.get("steps", LOOP_DEFAULTS["steps"]), loop.get("strength", LOOP_DEFAULTS["strength"])
    if steps is not None and int(steps * strength + 1e-6) < 1:  # None: the weight set's, checked when built
        raise ConfigError(f"complement.steps = {steps} at strength = {strength} runs no step")


def _check_model_keys(model: dict) -> None:
    """Types of the weight-set keys, and a dtype the device runs; a ``weights`` folder or ``een`` file
    must exist (nothing is loaded)."""
    from sim.complement.models import DTYPES, MANIFEST, SD15_KEYS

    weights = model.get("weights", "tiny")
    if not isinstance(weights, str) or not weights:
        raise ConfigError(f"complement.weights = {weights!r}: expected 'tiny', 'sd15' or a weight-set folder")
    if weights not in ("tiny", "sd15") and not Path(weights).expanduser().is_dir():
        raise ConfigError(f"complement.weights = {weights!r}: expected 'tiny', 'sd15' or a weight-set folder "
                          f"(with {MANIFEST}); no such folder")
    een = model.get("een")
    if een is not None and (not isinstance(een, str) or not Path(een).expanduser().exists()):
        raise ConfigError(f"complement.een = {een!r}: expected an EEN weights file "
                          f"(`latentcast train een`); {'no such file' if isinstance(een, str) else 'not a path'}")
    sd15 = model.get("sd15")
    if sd15 is not None:
        if not isinstance(sd15, dict):
            raise ConfigError(f"complement.sd15 = {sd15!r}: expected a mapping with keys {', '.join(SD15_KEYS)}")
        unknown = sorted(set(sd15) - set(SD15_KEYS))
        if unknown:
            raise ConfigError(f"complement.sd15.{unknown[0]}: unknown key; expected keys: {', '.join(SD15_KEYS)}")
        if sd15 and weights != "sd15":
            raise ConfigError(f"complement.sd15 is set but complement.weights = {weights!r}; "
                              f"set weights: sd15 or drop the sd15 section")
    device = model.get("device", "cpu")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError(f"complement.device = {device!r}: expected cpu, cuda, cuda:N or mps")
    dtype = model.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"complement.dtype = {dtype!r}: expected one of {', '.join(DTYPES)}")
    if dtype != "float32" and not device.startswith("cuda"):
        where = "the CPU" if device == "cpu" else device
        raise ConfigError(f"complement.dtype = {dtype!r}: half precision needs a CUDA device (device: cuda); "
                          f"expected float32 on {where}")


def check_options(name: str, **options) -> dict:
    """Check :func:`make_method` options of method ``name`` without the codec or loading any weights.

    What can be checked from the options alone is: unknown keys, keys that contradict the
    name, value types and ranges, and that a ``weights`` folder / ``een`` file exists. The rest
    (weights that do not load, a codec whose stride does not fit them) surfaces in
    :func:`make_method`. Scenario validation calls this for every complement policy.

    Returns
    -------
    dict
        The options as given (a copy).

    Raises
    ------
    ConfigError
        One line starting with ``complement.<key>`` (or naming the method when it is unknown).
    """
    from sim.complement import complement_method

    fn = CODEC_METHODS.get(name) or complement_method(name)
    options = dict(options)
    if not isinstance(fn, NeedsCodec):
        if options:
            keys = sorted(map(str, options))
            raise ConfigError(f"complement.{keys[0]}: complement method {name!r} takes no options "
                              f"(got {', '.join(keys)})")
        return options
    if name == "pixel-telea":
        unknown = sorted(set(map(str, options)) - {"radius"})
        if unknown:
            raise ConfigError(f"complement.{unknown[0]}: not an option of pixel-telea (expected: radius)")
        radius = options.get("radius", 3)
        if not _is_int(radius) or radius < 1:
            raise ConfigError(f"complement.radius = {radius!r}: expected an integer ≥ 1 (pixels)")
        return options
    unknown = sorted(set(map(str, options)) - set(MODEL_KEYS) - set(LOOP_KEYS))
    if unknown:
        raise ConfigError(f"complement.{unknown[0]}: unknown option; expected one of "
                          f"{', '.join(MODEL_KEYS + LOOP_KEYS)}")
    if name == "pixel-diffusion":
        for k in ("edges", "denoise"):
            if options.get(k):
                raise ConfigError(f"complement.{k} = {options[k]!r}: pixel-diffusion uses neither edges "
                                  f"nor the denoising step")
    else:
        for k, v in PRESETS[name].items():
            if k in options and options[k] != v:
                raise ConfigError(f"complement.{k} = {options[k]!r} contradicts method {name!r} ({k} = {v})")
    _check_model_keys({k: options[k] for k in MODEL_KEYS if k in options})
    _check_loop({k: options[k] for k in LOOP_KEYS if k in options})
    return options


def make_method(name: str, codec, cache: dict | None = None, **options) -> ComplementMethod:
    """Build complement method ``name`` for ``codec``; the plain fills come back as registered.

    Parameters
    ----------
    name : str
        A key of :data:`sim.complement.COMPLEMENT_METHODS` or :data:`CODEC_METHODS`.
    codec : sim.codec.Codec
        The run's codec (its model decodes/encodes and sets the latent scale and stride).
    cache : dict, optional
        Shared between calls of one run: loaded weight sets are kept there, so ``learned``,
        ``learned-noedge`` … load the models once.
    **options
        Model keys ``weights`` ("tiny" | "sd15" | a weight-set folder), ``een`` (file),
        ``sd15`` (dict of :func:`~sim.complement.models.load_sd15` arguments), ``device``,
        ``dtype`` (``float32``; ``float16`` or ``bfloat16`` casts the UNet, ControlNets and EEN,
        on a CUDA device only);
        loop keys of :class:`LearnedComplement` (``steps``, ``strength``, ``denoise``, …);
        ``radius`` for ``pixel-telea``. Unknown or contradicting keys raise ConfigError
        (:func:`check_options`); weights that cannot be loaded raise ModelLoadError.
    """
    from sim.complement import complement_method

    options = check_options(name, **options)
    fn = CODEC_METHODS.get(name) or complement_method(name)
    if not isinstance(fn, NeedsCodec):
        return fn
    if name == "pixel-telea":
        return PixelTelea(codec, **options)
    model_kw = {k: options.pop(k) for k in MODEL_KEYS if k in options}
    model_kw["weights"] = model_kw.get("weights", "tiny")
    key = repr(sorted((k, repr(v)) for k, v in model_kw.items()))
    cache = {} if cache is None else cache
    if key not in cache:
        from sim.complement.models import load_complement_models

        cache[key] = load_complement_models(**model_kw)
    models = cache[key]
    if name == "pixel-diffusion":
        for k in ("edges", "denoise"):
            options.pop(k, None)
        return PixelDiffusion(codec, models, **options)
    options.update(PRESETS[name])
    return LearnedComplement(codec, models, name=name, **options)
