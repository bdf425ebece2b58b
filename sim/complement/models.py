"""Weight sets of the learned complement: a latent UNet, its ControlNet(s), the text-free
conditioning, a DDIM config and (optionally) the EEN, behind one :class:`ComplementModels`.

``tiny`` (shipped, ``sim/complement/weights/tiny/``): a small ``UNet2DConditionModel`` and one
``ControlNetModel`` trained here on the ``tiny`` codec's latents (``latentcast train diffusion``),
conditioned on [edges, received latent + mask] (1 + 5 channels); a learned null embedding
(1, 1, 64) instead of text. Its folder holds a manifest, ``complement.json``::

    {"format": 1, "name": "tiny", "unet": "unet",
     "controlnets": [{"path": "controlnet", "inputs": ["edges", "latent"], "scale": 1.0}],
     "prompt_embeds": "null_embedding.safetensors", "scheduler": {...DDIM config...},
     "een": "een.safetensors", "training": {...}}

``sd15``: the SD 1.5 UNet, ``control_v11p_sd15_inpaint`` (input ``inpaint``) and a canny
ControlNet (input ``canny``), each from a local directory or a hub id; the empty-prompt CLIP
embedding computed once (needs ``transformers``) or read from a safetensors file; an EEN
trained for SD latents (``latentcast train een --codec sd-vae``).

**Control inputs** (all at pixel resolution, H = h × the latent stride):
``edges`` 1 channel in [0, 1]; ``canny`` the same repeated to 3 channels (SD's canny
ControlNets); ``inpaint`` RGB in [0, 1] with lost pixels set to −1 (``control_v11p_sd15_inpaint``);
``latent`` the received latent itself (× scaling factor, lost cells 0) and the loss mask
(1 = lost), 4 + 1 channels nearest-upsampled by the stride (:func:`latent_control`): the
``tiny`` set's inpaint control — the receiver has the latent, so the ControlNet need not learn
to encode pixels back into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sim.codec import diffusers_backends as db
from sim.complement.een import EdgeEstimationNetwork, load_een
from sim.errors import ConfigError, ModelLoadError

__all__ = [
    "CONTEXTS", "CONTROL_INPUTS", "SD15_SCHEDULER", "SHIPPED_TINY", "SD15_DEFAULTS", "SD15_KEYS", "ControlSpec",
    "ComplementModels", "TINY_CHANNELS", "check_unet_channels", "tiny_unet", "tiny_controlnet", "inpainting_unet",
    "save_weight_set", "load_weight_set", "load_sd15", "load_complement_models", "empty_prompt_embedding",
    "save_prompt_embeds", "latent_control", "control_channels", "DTYPES", "cast_models",
]

log = logging.getLogger(__name__)

CONTROL_INPUTS = {"edges": 1, "canny": 3, "inpaint": 3, "latent": 5}  # input kind → channels (4-channel latents)
EDGE_INPUTS = ("edges", "canny")
SHIPPED_TINY = Path(__file__).parent / "weights" / "tiny"
MANIFEST = "complement.json"
# An inpainting UNet's context channels: SD-inpainting's masked latent (lost cells 0), or the
# received latent with its holes filled by harmonic interpolation (sim.complement.fill).
CONTEXTS = ("masked", "interp")
# Stable Diffusion 1.x's DDIM configuration (scheduler/scheduler_config.json of the SD 1.5 repo).
SD15_SCHEDULER = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
SD15_KEYS = ("unet", "inpaint", "canny", "empty_prompt", "een", "scales")
# the dtypes a weight set's networks can run in (float16 / bfloat16 on a CUDA device only), each with
# the torch.nn.Module method that casts to it (diffusers' `.to(dtype)` warns on every cast)
DTYPES = {"float32": "float", "float16": "half", "bfloat16": "bfloat16"}
SD15_DEFAULTS = {"unet": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 "inpaint": "lllyasviel/control_v11p_sd15_inpaint",
                 "canny": "lllyasviel/control_v11p_sd15_canny"}


@dataclass
class ControlSpec:
    """A ControlNet and the control inputs it takes, concatenated along channels in this order."""

    net: ControlNetModel
    inputs: tuple[str, ...]
    scale: float = 1.0

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.net.config.conditioning_embedding_out_channels) - 1)

    @property
    def uses_edges(self) -> bool:
        return any(k in EDGE_INPUTS for k in self.inputs)

    @property
    def edges_only(self) -> bool:
        return all(k in EDGE_INPUTS for k in self.inputs)


@dataclass
class ComplementModels:
    """Everything the complement loop needs apart from the codec (all in eval mode; the networks
    fp32 as loaded, or as :func:`cast_models` left them; the prompt embedding fp32)."""

    name: str
    unet: UNet2DConditionModel
    controlnets: list[ControlSpec]
    prompt_embeds: torch.Tensor  # (1, L, cross_attention_dim)
    scheduler_config: dict
    een: EdgeEstimationNetwork | None = None
    card: dict = field(default_factory=dict)
    context: str = "masked"  # an inpainting UNet's context channels: "masked" latent or "interp"olated
    steps: int = 8  # the DDIM steps a method uses unless told otherwise
    een_file: Path | None = None  # the file the EEN was loaded from (a weight set's copies carry it over)

    @property
    def downscale(self) -> int | None:
        """The ControlNets' conditioning stride (must equal the codec's latent stride)."""
        return self.controlnets[0].downscale if self.controlnets else None

    def digest(self) -> str:
        """SHA-256 of every weight and setting that shapes the output (tensors as loaded, so the
        same for a set whichever files it came from): a run resumed with other weights is
        refused on it (:mod:`sim.provenance`)."""
        from sim.provenance import state_digest

        nets = [("unet", self.unet)] + [(f"controlnet{i}", c.net) for i, c in enumerate(self.controlnets)]
        nets += [("een", self.een)] if self.een is not None else []
        state = {f"{n}.{k}": v for n, m in nets for k, v in m.state_dict().items()}
        settings = [self.scheduler_config, self.context, [(c.inputs, c.scale) for c in self.controlnets]]
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()
                              + state_digest({**state, "prompt_embeds": self.prompt_embeds}).encode()).hexdigest()


def latent_control(scaled: torch.Tensor, lost: torch.Tensor, stride: int) -> torch.Tensor:
    """The ``latent`` control input: [scaled latent × (1 − lost), lost] (B, C + 1, h·s, w·s).

    ``scaled`` (B, C, h, w) is the latent × scaling factor, ``lost`` (B, 1, h, w) 1 where lost;
    each cell becomes an s × s block (nearest), so the ControlNet's ×s conditioning embedding
    sees it at pixel resolution like every other input.
    """
    lost = lost.to(scaled.dtype)
    cells = torch.cat([scaled * (1 - lost), lost], 1)
    return torch.nn.functional.interpolate(cells, scale_factor=stride, mode="nearest")


# -- the tiny architecture ----------------------------------------------------------------

TINY_CHANNELS = (48, 96, 128)


def check_unet_channels(channels) -> tuple[int, ...]:
    """``channels`` as a tuple if they are three multiples of 16 (one width per level), else ConfigError."""
    channels = tuple(channels)
    if len(channels) != 3 or any(not isinstance(c, int) or c < 16 or c % 16 for c in channels):
        raise ConfigError(f"unet channels {','.join(map(str, channels))}: expected three multiples of 16 "
                          f"(one per level), e.g. {','.join(map(str, TINY_CHANNELS))}")
    return channels


def tiny_unet(latent_channels: int = 4, cross_attention_dim: int = 64,
              channels: tuple[int, ...] = TINY_CHANNELS) -> UNet2DConditionModel:
    """The ``tiny`` latent UNet: ``channels`` (default 48/96/128, ≈ 4.6 M parameters) at 1, ½
    and ¼ of the latent resolution, one ResNet per level, attention at ¼ only (256 tokens for a
    64 × 64 latent)."""
    return UNet2DConditionModel(
        sample_size=32, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=check_unet_channels(channels), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=16,
    )


def inpainting_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """SD-inpainting's widening of ``unet``: ``conv_in`` also takes [mask, masked latent]
    (in_channels 2·C + 1); the new input weights start at zero, so it begins as ``unet``."""
    c = unet.config.out_channels
    wide = UNet2DConditionModel.from_config({**unet.config, "in_channels": 2 * c + 1})
    state = unet.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], c + 1, *w.shape[2:])], 1)
    wide.load_state_dict(state)
    return wide.to(w.device)


def tiny_controlnet(unet: UNet2DConditionModel, inputs=("edges", "latent"), downscale: int = 8) -> ControlNetModel:
    """A ControlNet copied from ``unet`` (zero convolutions out), for ``inputs`` at ×``downscale``."""
    levels = {2: (16, 32), 4: (16, 32, 64), 8: (16, 32, 64, 128)}
    if downscale not in levels:
        raise ConfigError(f"ControlNet downscale = {downscale}: expected one of {sorted(levels)}")
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=levels[downscale],
                                     conditioning_channels=control_channels(inputs))


def control_channels(inputs) -> int:
    for k in inputs:
        if k not in CONTROL_INPUTS:
            raise ConfigError(f"control input {k!r}: expected one of {', '.join(CONTROL_INPUTS)}")
    return sum(CONTROL_INPUTS[k] for k in inputs)


# -- saving and loading a weight-set folder -----------------------------------------------

def save_weight_set(folder: str | Path, unet: UNet2DConditionModel, controlnets: list[ControlSpec],
                    prompt_embeds: torch.Tensor, scheduler_config: dict, training: dict,
                    name: str = "tiny", context: str = "masked", steps: int = 8) -> Path:
    """Write a weight-set folder (manifest + diffusers folders + safetensors); returns it.

    ``context`` (an inpainting UNet's context channels, :data:`CONTEXTS`) and ``steps`` (the
    default DDIM step count of the methods using the set) go in the manifest.

    An ``een.safetensors`` already in the folder is kept and listed in the manifest.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    nets = []
    for i, spec in enumerate(controlnets):
        sub = "controlnet" if len(controlnets) == 1 else f"controlnet_{i}"
        spec.net.save_pretrained(folder / sub, safe_serialization=True)
        nets.append({"path": sub, "inputs": list(spec.inputs), "scale": spec.scale})
    save_file({"prompt_embeds": prompt_embeds.detach().cpu().contiguous()}, str(folder / "null_embedding.safetensors"))
    if context not in CONTEXTS:
        raise ConfigError(f"context = {context!r}: expected one of {', '.join(CONTEXTS)}")
    manifest = {"format": 1, "name": name, "unet": "unet", "controlnets": nets, "context": context, "steps": steps,
                "prompt_embeds": "null_embedding.safetensors", "scheduler": dict(scheduler_config),
                "een": "een.safetensors", "training": training}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def load_weight_set(folder: str | Path | None = None, een: str | Path | None = None,
                    device: str = "cpu") -> ComplementModels:
    """Load a weight-set folder (default: the shipped ``tiny`` one).

    ``een`` overrides the folder's ``een.safetensors``; without either the models have no EEN
    (only the no-edge variants can run).
    """
    folder = Path(folder).expanduser() if folder else SHIPPED_TINY
    path = folder / MANIFEST
    if not path.is_file():
        hint = ("; the shipped tiny complement weights are not installed yet — train them with "
                "`latentcast train diffusion`" if folder == SHIPPED_TINY else "")
        raise ModelLoadError(f"{folder}: no {MANIFEST}; expected a complement weight-set folder{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        unet = db._from_dir(UNet2DConditionModel, folder / manifest["unet"], str(folder / manifest["unet"]))
        specs = []
        for entry in manifest["controlnets"]:
            net = db._from_dir(ControlNetModel, folder / entry["path"], str(folder / entry["path"]))
            specs.append(ControlSpec(net.to(device), tuple(entry["inputs"]), float(entry.get("scale", 1.0))))
        prompt = load_file(str(folder / manifest["prompt_embeds"]))["prompt_embeds"]
        scheduler = dict(manifest["scheduler"])
        context, steps = manifest.get("context", "masked"), manifest.get("steps", 8)
        if context not in CONTEXTS:
            raise ValueError(f"context = {context!r}, expected one of {', '.join(CONTEXTS)}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps = {steps!r}, expected an integer ≥ 1")
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as err:
        raise ModelLoadError(f"{path}: not a complement weight set ({err.__class__.__name__}: "
                             f"{str(err).splitlines()[0][:120]})") from None
    een_path = Path(een) if een else folder / manifest.get("een", "een.safetensors")
    een_net = load_een(een_path, device) if (een or een_path.is_file()) else None
    models = ComplementModels(manifest.get("name", folder.name), unet.to(device), specs, prompt.to(device),
                              scheduler, een_net, manifest.get("training", {}), context, steps,
                              een_path if een_net is not None else None)
    _check(models, str(folder))
    return models


# -- SD 1.5 -------------------------------------------------------------------------------

def _diffusers_dir(cls, source: str | Path, subfolders: tuple[str | None, ...]) -> tuple[Path, str]:
    """(folder holding config.json + safetensors, description) for a local dir or a hub id."""
    source = str(source)
    path = Path(source).expanduser()
    if path.exists() or not db._looks_like_hub_id(source):
        if not path.is_dir():
            raise ModelLoadError(f"{path}: no such directory (expected a diffusers {cls.__name__} folder)")
        for sub in subfolders:
            d = path / sub if sub else path
            if (d / db.CONFIG_NAME).is_file():
                return d, str(d)
        where = " or ".join(f"{sub}/" if sub else "the folder itself" for sub in subfolders)
        raise ModelLoadError(f"{path}: no {db.CONFIG_NAME} in {where}; expected a diffusers {cls.__name__} folder")
    err = None
    for sub in subfolders:
        try:
            d, _ = db._hub_dir(source, sub, cls.__name__)
            return d, f"hub id {source!r}" + (f" ({sub}/)" if sub else "")
        except ModelLoadError as e:
            err = e
    raise err


def _load_diffusers(cls, source, subfolders, device: str):
    d, where = _diffusers_dir(cls, source, subfolders)
    return db._from_dir(cls, d, where).to(device)


def empty_prompt_embedding(source: str | Path) -> torch.Tensor:
    """SD's empty-prompt embedding (1, 77, 768), computed once with the pipeline's CLIP text encoder.

    ``source`` is an SD 1.x pipeline folder or hub id with ``tokenizer/`` and ``text_encoder/``.
    Needs ``transformers`` (``pip install transformers``); save the result with
    :func:`save_prompt_embeds` and pass the file as ``empty_prompt`` to skip this next time.
    """
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise ModelLoadError("the SD empty-prompt embedding needs `transformers` (pip install transformers), "
                             "or pass empty_prompt = a safetensors file with 'prompt_embeds' (1, 77, 768)") from None
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(source), subfolder="tokenizer")
        encoder = CLIPTextModel.from_pretrained(str(source), subfolder="text_encoder", use_safetensors=True).eval()
        ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return encoder(ids)[0].float()
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{source}: could not compute the empty-prompt embedding ({err.__class__.__name__}: "
                             f"{str(err).splitlines()[0][:120]})") from None


def save_prompt_embeds(path: str | Path, prompt_embeds: torch.Tensor) -> None:
    save_file({"prompt_embeds": prompt_embeds.detach().cpu().contiguous()}, str(path))


def load_sd15(unet: str | Path = SD15_DEFAULTS["unet"], inpaint: str | Path | None = SD15_DEFAULTS["inpaint"],
              canny: str | Path | None = SD15_DEFAULTS["canny"], empty_prompt: str | Path | None = None,
              een: str | Path | None = None, scales: tuple[float, float] = (1.0, 1.0),
              device: str = "cpu") -> ComplementModels:
    """SD 1.5 UNet + inpaint ControlNet + canny ControlNet (MultiControlNet), fp32.

    Parameters
    ----------
    unet : str or Path
        SD 1.x pipeline folder / hub id (its ``unet/`` is used) or a UNet folder.
    inpaint, canny : str, Path or None
        ControlNet folders or hub ids; None leaves that ControlNet out.
    empty_prompt : str or Path, optional
        safetensors file with ``prompt_embeds`` (1, 77, 768); default: computed from
        ``unet``'s pipeline with its text encoder (:func:`empty_prompt_embedding`).
    een : str or Path, optional
        EEN weights trained for the codec's SD latents; needed for the canny ControlNet.
    scales : (float, float)
        ``conditioning_scale`` of the inpaint and canny ControlNets.
    """
    base = _load_diffusers(UNet2DConditionModel, unet, ("unet", None), device)
    specs = []
    for source, kind, scale in ((inpaint, "inpaint", scales[0]), (canny, "canny", scales[1])):
        if source is not None:
            specs.append(ControlSpec(_load_diffusers(ControlNetModel, source, (None, "controlnet"), device),
                                     (kind,), float(scale)))
    if empty_prompt is not None:
        try:
            prompt = load_file(str(Path(empty_prompt).expanduser()))["prompt_embeds"]
        except (KeyError, OSError, SafetensorError) as err:
            raise ModelLoadError(f"{empty_prompt}: expected a safetensors file with 'prompt_embeds' "
                                 f"({err.__class__.__name__})") from None
    else:
        prompt = empty_prompt_embedding(unet)
    scheduler = dict(SD15_SCHEDULER)
    folder = Path(str(unet)).expanduser()
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        scheduler.update({k: v for k, v in config.items() if not k.startswith("_") and k in SD15_SCHEDULER})
    models = ComplementModels("sd15", base, specs, prompt.float().to(device), scheduler,
                              load_een(een, device) if een else None,
                              {"unet": str(unet), "inpaint": str(inpaint), "canny": str(canny)})
    _check(models, "sd15")
    return models


def _check(models: ComplementModels, where: str) -> None:
    """Shapes that must agree: prompt width = cross-attention width; control channels; strides."""
    cross = models.unet.config.cross_attention_dim
    if models.prompt_embeds.dim() != 3 or models.prompt_embeds.shape[-1] != cross:
        raise ModelLoadError(f"{where}: prompt embedding {tuple(models.prompt_embeds.shape)} does not fit the "
                             f"UNet's cross_attention_dim {cross}; expected (1, L, {cross})")
    strides = {spec.downscale for spec in models.controlnets}
    if len(strides) > 1:
        raise ModelLoadError(f"{where}: ControlNets with different conditioning strides {sorted(strides)}")
    for spec in models.controlnets:
        if spec.net.config.conditioning_channels != control_channels(spec.inputs):
            raise ModelLoadError(f"{where}: a ControlNet takes {spec.net.config.conditioning_channels} conditioning "
                                 f"channels but its inputs {list(spec.inputs)} make {control_channels(spec.inputs)}")
    if models.een is not None and strides and models.een.config["upscale"] not in strides:
        raise ModelLoadError(f"{where}: the EEN upsamples ×{models.een.config['upscale']} but the ControlNets "
                             f"condition at ×{strides.pop()}")


def cast_models(models: ComplementModels, dtype: str) -> ComplementModels:
    """``models`` with the UNet, ControlNets and EEN cast to ``dtype`` (a key of :data:`DTYPES`), in place.

    The prompt embedding stays float32; the complement loop casts the networks' inputs to their
    dtype and their outputs back to float32.
    """
    nets = [models.unet] + [spec.net for spec in models.controlnets]
    for net in nets + ([models.een] if models.een is not None else []):
        getattr(net, DTYPES[dtype])()
    return models


def load_complement_models(weights: str = "tiny", een: str | Path | None = None, sd15: dict | None = None,
                           device: str = "cpu", dtype: str = "float32") -> ComplementModels:
    """``"tiny"`` (shipped folder), ``"sd15"`` (``sd15`` = kwargs of :func:`load_sd15`), or a weight-set
    folder, on ``device`` with the networks in ``dtype`` (:func:`cast_models`)."""
    return cast_models(_load_models(weights, een, sd15, device), dtype)


def _load_models(weights: str, een, sd15: dict | None, device: str) -> ComplementModels:
    if weights == "sd15":
        sd15 = dict(sd15 or {})
        unknown = set(sd15) - set(SD15_KEYS)
        if unknown:
            raise ConfigError(f"complement.sd15.{sorted(unknown)[0]}: unknown key; "
                              f"expected keys: {', '.join(SD15_KEYS)}")
        return load_sd15(**{**sd15, **({"een": een} if een else {}), "device": device})
    if sd15:
        raise ConfigError(f"complement.sd15 is set but complement.weights = {weights!r}; "
                          f"set weights: sd15 or drop the sd15 section")
    if weights == "tiny":
        return load_weight_set(None, een, device)
    path = Path(str(weights)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"complement.weights = {weights!r}: expected 'tiny', 'sd15' or a weight-set folder "
                          f"(with {MANIFEST})")
    return load_weight_set(path, een, device)
