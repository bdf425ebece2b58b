"""Real-weights latent models through diffusers: the SD VAE and TAESD.

``SDVAEModel``  wraps :class:`diffusers.AutoencoderKL` (SD 1.x/2.x VAE, ``sd-vae-ft-mse``, the
                SDXL VAE). ``encode`` returns the posterior *mode* (its mean: deterministic) in
                the VAE's native units; the UNet sees ``latent × scaling_factor`` (0.18215 for
                SD 1.5, read from ``config.scaling_factor``).
``TAESDModel``  wraps :class:`diffusers.AutoencoderTiny` (``madebyollin/taesd``). TAESD was
                distilled to output SD latents *already scaled* (≈ SD-VAE latent × 0.18215,
                values within about ±3), so its ``config.scaling_factor`` is 1.0. diffusers'
                ``EncoderTiny`` maps [-1, 1] images to TAESD's own [0, 1] and ``DecoderTiny``
                maps back, so both wrappers take and return images in [-1, 1].

Both expose ``downscale`` (latent stride: 8 for the real models), read from the config.
``load_sd_vae`` / ``load_taesd`` take a local directory (a saved model, or a pipeline with a
``vae/`` subfolder) or a Hugging Face hub id, load safetensors only, fp32, and fail with a
one-line :class:`~sim.errors.ModelLoadError`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from sim.errors import ConfigError, InputError, ModelLoadError
from sim.images import check_size

__all__ = ["SDVAEModel", "TAESDModel", "load_sd_vae", "load_taesd", "CONFIG_NAME", "WEIGHTS_NAME"]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
LATENT_CHANNELS = 4
PIPELINE_SUBFOLDER = "vae"


# -- the two models ----------------------------------------------------------------------

def _check_channels(config, kind: str) -> None:
    """RGB in and out, 4 latent channels: what the codec contract carries."""
    if config.in_channels != 3 or config.out_channels != 3:
        raise ModelLoadError(f"{kind} with in/out channels {config.in_channels}/{config.out_channels}: "
                             f"expected an RGB (3-channel) autoencoder")
    if config.latent_channels != LATENT_CHANNELS:
        raise ModelLoadError(f"{kind} with latent_channels = {config.latent_channels}: latentcast carries "
                             f"{LATENT_CHANNELS}-channel latents (SD 1.x/2.x/SDXL VAEs, TAESD/TAESDXL); "
                             f"SD3/FLUX-style VAEs are not supported")


def _check_images(x: torch.Tensor, multiple: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"{name}.encode: expected images (B, 3, H, W), got shape {tuple(x.shape)}")
    check_size(x.shape[2], x.shape[3], multiple, source=f"{name} input")


def _check_latents(z: torch.Tensor, name: str) -> None:
    if z.dim() != 4 or z.shape[1] != LATENT_CHANNELS:
        raise InputError(f"{name}.decode: expected latents (B, {LATENT_CHANNELS}, h, w), "
                         f"got shape {tuple(z.shape)}")


class _DiffusersModel:
    """Shared plumbing: the wrapped module's device/dtype."""

    vae: torch.nn.Module

    def _param(self) -> torch.Tensor:
        return next(self.vae.parameters())

    @property
    def device(self) -> torch.device:
        return self._param().device

    def _to_model(self, t: torch.Tensor) -> torch.Tensor:
        p = self._param()
        return t.to(device=p.device, dtype=p.dtype)


class SDVAEModel(_DiffusersModel):
    """``LatentModel`` around a diffusers :class:`~diffusers.AutoencoderKL`.

    Parameters
    ----------
    vae : AutoencoderKL
        3 → 4 → 3 channels. Put in eval mode; not copied.

    Attributes
    ----------
    scaling_factor : float
        ``vae.config.scaling_factor`` (0.18215 for SD 1.x): latent × scaling_factor ≈ unit variance.
    downscale : int
        Latent stride, ``2 ** (len(block_out_channels) - 1)``: 8 for SD VAEs.
    """

    name = "sd-vae"

    def __init__(self, vae: AutoencoderKL):
        if not isinstance(vae, AutoencoderKL):
            raise TypeError(f"SDVAEModel wraps a diffusers AutoencoderKL, got {type(vae).__name__}")
        _check_channels(vae.config, "AutoencoderKL")
        self.vae = vae.eval()
        self.scaling_factor = float(vae.config.scaling_factor)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → posterior mode (B, 4, H/d, W/d) float32, unscaled (d = downscale)."""
        _check_images(x, self.downscale, self.name)
        return self.vae.encode(self._to_model(x)).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) unscaled latent → (B, 3, h·d, w·d) float32, ≈ [-1, 1], not clamped."""
        _check_latents(z, self.name)
        return self.vae.decode(self._to_model(z)).sample.float()


def _tiny_downscale(config) -> int:
    """Encoder stride of an AutoencoderTiny; refuses a decoder that does not undo it."""
    down = 2 ** (len(config.encoder_block_out_channels) - 1)  # one stride-2 conv per block after the first
    up = config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    if down != up:
        raise ModelLoadError(f"AutoencoderTiny encoder downscales by {down} but its decoder upscales by {up}")
    return down


class TAESDModel(_DiffusersModel):
    """``LatentModel`` around a diffusers :class:`~diffusers.AutoencoderTiny` (TAESD).

    Parameters
    ----------
    vae : AutoencoderTiny
        3 → 4 → 3 channels. Put in eval mode; not copied.

    Attributes
    ----------
    scaling_factor : float
        ``vae.config.scaling_factor``: 1.0 for TAESD, whose latents are already SD's *scaled*
        latents (≈ SD-VAE latent × 0.18215).
    downscale : int
        Latent stride, ``2 ** (len(encoder_block_out_channels) - 1)``: 8 for TAESD.

    Notes
    -----
    The decoder soft-clamps latents to about ±3 (``3·tanh(z/3)``) before decoding.
    """

    name = "taesd"

    def __init__(self, vae: AutoencoderTiny):
        if not isinstance(vae, AutoencoderTiny):
            raise TypeError(f"TAESDModel wraps a diffusers AutoencoderTiny, got {type(vae).__name__}")
        _check_channels(vae.config, "AutoencoderTiny")
        self.downscale = _tiny_downscale(vae.config)
        self.vae = vae.eval()
        self.scaling_factor = float(vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, 4, H/d, W/d) float32 (diffusers rescales to TAESD's [0, 1])."""
        _check_images(x, self.downscale, self.name)
        return self.vae.encode(self._to_model(x)).latents.float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) → (B, 3, h·d, w·d) float32, ≈ [-1, 1], not clamped."""
        _check_latents(z, self.name)
        return self.vae.decode(self._to_model(z)).sample.float()


# -- loading -----------------------------------------------------------------------------

def load_sd_vae(source: str | Path, device: str = "cpu", subfolder: str | None = None,
                dtype: str = "float32") -> SDVAEModel:
    """Load an SD VAE (:class:`~diffusers.AutoencoderKL`) as a :class:`SDVAEModel`, in ``dtype``.

    Parameters
    ----------
    source : str or Path
        A local directory holding ``config.json`` + ``diffusion_pytorch_model.safetensors``
        (``save_pretrained`` output), or a pipeline directory with them under ``vae/``;
        or a hub id such as ``"stabilityai/sd-vae-ft-mse"`` (fetched once, then read from the
        Hugging Face cache; works offline once cached).
    device : str
        Torch device for the weights.
    subfolder : str, optional
        Where the model sits inside ``source``; by default the root, else ``vae/``.
    dtype : {"float32", "float16", "bfloat16"}
        The weights' precision (half precision on CUDA only: ``sim.codec.check_dtype``); inputs are
        cast to it, outputs come back as float32.

    Raises
    ------
    ModelLoadError
        One line naming the missing directory, file, hub id or mismatch.
    """
    return _load(AutoencoderKL, SDVAEModel, source, device, subfolder, dtype)


def load_taesd(source: str | Path, device: str = "cpu", subfolder: str | None = None,
               dtype: str = "float32") -> TAESDModel:
    """Load TAESD (:class:`~diffusers.AutoencoderTiny`) as a :class:`TAESDModel`, fp32.

    ``source`` is a local directory or a hub id such as ``"madebyollin/taesd"``; see
    :func:`load_sd_vae` for layouts, ``subfolder`` and errors.
    """
    return _load(AutoencoderTiny, TAESDModel, source, device, subfolder, dtype)


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()
    return text[0][:limit] if text else err.__class__.__name__


def _looks_like_hub_id(source: str) -> bool:
    """``org/name``, as diffusers tells them apart: one '/', and not an existing path."""
    return (source.count("/") == 1 and "\\" not in source
            and not source.startswith(("/", ".", "~")) and not source.endswith("/"))


def _load(cls, wrapper, source, device: str, subfolder: str | None, dtype: str = "float32"):
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device = {device!r}: {_first_line(err)}") from None
    # 1. find the model directory (local, or the hub cache after a download)
    source = str(source)
    path = Path(source).expanduser()
    if path.exists() or not _looks_like_hub_id(source):
        model_dir = _local_dir(path, subfolder, cls.__name__)
        where = str(model_dir)
    else:
        model_dir, sub = _hub_dir(source, subfolder, cls.__name__)
        where = f"hub id {source!r}" + (f" ({sub}/)" if sub else "")
    # 2. load the weights
    vae = _from_dir(cls, model_dir, where)
    # 3. place and wrap
    try:
        vae = vae.to(dev)
    except (RuntimeError, AssertionError) as err:  # e.g. "Torch not compiled with CUDA enabled"
        raise ConfigError(f"device = {device!r}: {_first_line(err)}") from None
    if dtype != "float32":  # .half() / .bfloat16(): diffusers' .to(dtype) warns on every cast
        vae = vae.half() if dtype == "float16" else vae.bfloat16()
    try:
        return wrapper(vae)
    except ModelLoadError as err:
        raise ModelLoadError(f"{where}: {err}") from None


def _local_dir(path: Path, subfolder: str | None, kind: str) -> Path:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such directory")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a directory; expected a diffusers {kind} directory "
                             f"(single-file checkpoints are not supported)")
    for sub in [subfolder] if subfolder else [None, PIPELINE_SUBFOLDER]:
        d = path / sub if sub else path
        if (d / CONFIG_NAME).is_file():
            if sub and not subfolder:
                log.info("%s: pipeline layout, loading %s/", path, sub)
            return d
    if subfolder:
        raise ModelLoadError(f"{path / subfolder}: no {CONFIG_NAME}; expected a diffusers {kind} directory")
    raise ModelLoadError(f"{path}: no {CONFIG_NAME}; expected a diffusers {kind} directory "
                         f"(or a pipeline with {PIPELINE_SUBFOLDER}/)")


def _hub_dir(repo_id: str, subfolder: str | None, kind: str) -> tuple[Path, str | None]:
    """(snapshot folder with config + safetensors weights, subfolder) for a hub id.

    The Hugging Face cache is read first, without any network call, so a model fetched once
    loads offline and without delay (newer hub revisions are not looked for). Otherwise the two
    files are downloaded into the cache.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import (
        EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    candidates = [subfolder] if subfolder else [None, PIPELINE_SUBFOLDER]
    offline = ModelLoadError(f"could not fetch hub id {repo_id!r}: no network or not in the local cache; "
                             f"download it elsewhere and pass the local directory")
    try:
        # 1. the cache alone
        for sub in candidates:
            prefix = f"{sub}/" if sub else ""
            cached = [try_to_load_from_cache(repo_id, prefix + name) for name in (CONFIG_NAME, WEIGHTS_NAME)]
            if all(isinstance(c, str) for c in cached):
                return Path(cached[0]).parent, sub
        # 2. the hub: the config (root, else vae/), then the weights beside it
        not_cached = False
        for sub in candidates:
            try:
                config = Path(hf_hub_download(repo_id, CONFIG_NAME, subfolder=sub))
                break
            except LocalEntryNotFoundError:  # offline or unreachable, and not cached (try vae/ too)
                not_cached = True
            except EntryNotFoundError:  # the repository has no such file
                pass
        else:
            if not_cached:
                raise offline
            layout = f"{subfolder}/" if subfolder else f"root or {PIPELINE_SUBFOLDER}/"
            raise ModelLoadError(f"hub id {repo_id!r}: no {CONFIG_NAME} ({layout}); expected a diffusers {kind} "
                                 f"repository (or a pipeline with {PIPELINE_SUBFOLDER}/)")
        try:
            hf_hub_download(repo_id, WEIGHTS_NAME, subfolder=sub)
        except LocalEntryNotFoundError:
            raise offline from None
        except EntryNotFoundError:
            raise ModelLoadError(f"hub id {repo_id!r}: no {(sub + '/') if sub else ''}{WEIGHTS_NAME}; "
                                 f"latentcast loads safetensors weights only") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"hub id {repo_id!r}: no such repository on the Hugging Face Hub "
                             f"(or it is private/gated: log in with `hf auth login`)") from None
    except HFValidationError as err:
        raise ModelLoadError(f"{repo_id}: no such directory, and not a valid hub id "
                             f"({_first_line(err)})") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise ModelLoadError(f"could not fetch hub id {repo_id!r} ({err.__class__.__name__}: "
                             f"{_first_line(err)})") from None
    return config.parent, sub


def _from_dir(cls, model_dir: Path, where: str):
    """``cls.from_pretrained`` on a resolved directory, safetensors only, fp32, all weights present."""
    try:
        config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{where}: unreadable {CONFIG_NAME} ({err.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{where}: {CONFIG_NAME} is not a JSON object")
    kind = config.get("_class_name")
    if kind and kind != cls.__name__:
        hint = {"AutoencoderKL": " (use load_sd_vae / codec.model 'sd-vae')",
                "AutoencoderTiny": " (use load_taesd / codec.model 'taesd')"}.get(kind, "")
        raise ModelLoadError(f"{where}: {CONFIG_NAME} describes {kind}, not {cls.__name__}{hint}")

    # Plain weights, or else a single variant such as diffusion_pytorch_model.fp16.safetensors.
    variant = None
    if not (model_dir / WEIGHTS_NAME).is_file():
        stem = WEIGHTS_NAME.removesuffix(".safetensors")
        variants = sorted(p.name[len(stem) + 1:-len(".safetensors")]
                          for p in model_dir.glob(f"{stem}.*.safetensors"))
        if len(variants) != 1:
            others = sorted(p.name for p in model_dir.iterdir()
                            if p.suffix in (".bin", ".safetensors", ".ckpt", ".pt", ".pth"))
            found = f" (found {', '.join(others)})" if others else ""
            raise ModelLoadError(f"{where}: no {WEIGHTS_NAME}{found}; latentcast loads safetensors "
                                 f"weights only, never pickles")
        variant = variants[0]
        log.info("%s: loading the %r weights variant, upcast to float32", where, variant)

    try:
        vae, info = cls.from_pretrained(model_dir, use_safetensors=True, variant=variant,
                                        torch_dtype=torch.float32, local_files_only=True,
                                        low_cpu_mem_usage=False, output_loading_info=True)
    except Exception as err:  # diffusers re-wraps safetensors/torch errors: report the root cause
        while (err.__cause__ or err.__context__) is not None:
            err = err.__cause__ or err.__context__
        raise ModelLoadError(f"{where}: could not load {cls.__name__} weights ({err.__class__.__name__}: "
                             f"{_first_line(err)})") from None
    missing, mismatched = info.get("missing_keys", []), info.get("mismatched_keys", [])
    if missing or mismatched:
        example = (list(missing) + [k for k, *_ in mismatched])[0]
        raise ModelLoadError(f"{where}: weights do not match {CONFIG_NAME} ({len(missing)} missing, "
                             f"{len(mismatched)} of another shape, e.g. {example!r})")
    if info.get("unexpected_keys"):
        log.warning("%s: %d unused weights in the checkpoint", where, len(info["unexpected_keys"]))
    return vae.float().eval()
