"""The learned method's receiver chain on a batch of latents, in torch.

Conditioning (EEN edges, the decoded masked image), the inpainting UNet's context, the
ControlNets' control images, then the inpainting loop (:func:`inpaint`) and the Canny-based
denoising step (:func:`denoise`), both :func:`~sim.complement.latent_inpaint.denoise_latents`.
One code path serves both users:

- :class:`sim.complement.learned.LearnedComplement` runs it under ``no_grad`` on a batch of
  received latents, one ``torch.Generator`` per item (a list: item i's noise is drawn from
  generator i alone, so an item's result does not depend on its batch);
- stage 3 of the tiny recipe (:mod:`sim.training.finetune`) runs it on batches and
  back-propagates through :func:`inpaint` (and, with ``--denoise-weight``, :func:`denoise`)
  into the UNet and ControlNets,

so what is trained is what runs.

Shapes: z (B, C, h, w) unscaled dequantized latents (values in lost cells ignored); lost
(B, 1, h, w) float, 1 = lost; edges (B, 1, H, W) in [0, 1]; images (B, 3, H, W) with
H = h × the codec's stride. The loop works on scaled latents (z × ``scaling_factor``), in
float32; the networks get their inputs in their own dtype (:func:`sim.complement.models.cast_models`).
"""

from __future__ import annotations

import numpy as np
import torch

from sim.complement.fill import harmonic_fill
from sim.complement.latent_inpaint import Control, denoise_latents, takes_mask
from sim.errors import InputError

__all__ = ["masked_image", "holed_image", "edge_map", "conditioning", "unet_context", "control_images", "inpaint",
           "denoise", "noise_matched_total"]


def masked_image(decoded: torch.Tensor, lost: torch.Tensor) -> torch.Tensor:
    """The inpaint control: ``decoded`` (B, 3, H, W) in [-1, 1] → [0, 1], pixels of ``lost`` cells −1."""
    x = decoded.clamp(-1, 1).add(1).div(2)
    stride = x.shape[-1] // lost.shape[-1]
    pixel_lost = torch.nn.functional.interpolate(lost, scale_factor=stride, mode="nearest") > 0.5
    return x.masked_fill(pixel_lost.expand_as(x), -1.0)


def holed_image(codec_model, z: torch.Tensor, lost: torch.Tensor, device=None) -> torch.Tensor:
    """The received latent decoded with its holes zeroed (on ``device``, default z's), as the inpaint control."""
    holed = (z * (1 - lost)).to(device or z.device)
    return masked_image(codec_model.decode(holed).float().to(z.device), lost)


def edge_map(een, z: torch.Tensor, lost: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """The EEN's edges (B, 1, H, W) in [0, 1], float32, from the holed latent (run in the EEN's dtype)."""
    from sim.complement.een import een_input

    dtype = next(een.parameters()).dtype
    return een(een_input(z, lost, scaling_factor).to(dtype)).float()


def conditioning(models, codec_model, z: torch.Tensor, lost: torch.Tensor, edges: bool = True,
                 codec_device=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(edges, masked image) of a weight set ``models`` for z with ``lost`` cells.

    Each is None where no ControlNet takes it; edges also where ``edges`` is False (the no-edge
    ablation). ``codec_device``: where the codec decodes.
    """
    image = est = None
    if any("inpaint" in s.inputs for s in models.controlnets):
        image = holed_image(codec_model, z, lost, codec_device)
    if edges and any(s.uses_edges for s in models.controlnets):
        est = edge_map(models.een, z, lost, float(codec_model.scaling_factor))
    return est, image


def unet_context(kind: str, z: torch.Tensor, lost: torch.Tensor) -> torch.Tensor:
    """An inpainting UNet's context: ``"masked"`` (lost cells 0) or ``"interp"`` (holes filled by
    :func:`~sim.complement.fill.harmonic_fill`, per sample, in numpy: not differentiable)."""
    if kind == "masked":
        return z * (1 - lost)
    filled = [harmonic_fill(zi.detach().cpu().numpy(), li[0].cpu().numpy() > 0.5) for zi, li in zip(z, lost)]
    return torch.from_numpy(np.stack(filled)).to(z)


def control_images(controlnets, scaled, lost, edges, image, stage: str, stride: int) -> list[Control]:
    """:class:`~sim.complement.latent_inpaint.Control` of every ControlNet that runs at ``stage``.

    controlnets : the weight set's ``ControlSpec`` list; scaled (B, C, h, w) scaled latents;
    lost (B, 1, h, w) 1 = lost; edges (B, 1, H, W) or None (the no-edge ablation); image the
    inpaint control (B, 3, H, W) or None; stage ``"inpaint"`` or ``"denoise"``; stride the
    codec's latent stride (H = h × stride).
    """
    from sim.complement.models import latent_control

    b, size = scaled.shape[0], (scaled.shape[-2] * stride, scaled.shape[-1] * stride)
    if stage == "denoise":  # the denoising stage conditions on edges only: every cell counts as lost
        lost = torch.ones_like(lost)
    # without edges (the no-edge ablation) an edge-only ControlNet is left out when another
    # ControlNet remains (sd15's canny net); a set's only ControlNet runs on zero edges, the
    # condition its training's edge dropout taught it (tiny)
    drop_edge_only = any(not spec.edges_only for spec in controlnets)
    out = []
    for spec in controlnets:
        if (edges is None and spec.edges_only and drop_edge_only) or (
                stage == "denoise" and (edges is None or not spec.uses_edges)):
            continue
        parts = []
        for kind in spec.inputs:
            if kind in ("edges", "canny"):
                e = edges if edges is not None else scaled.new_zeros(b, 1, *size)  # no-edge ablation
                parts.append(e if kind == "edges" else e.expand(-1, 3, -1, -1))
            elif kind == "latent":
                parts.append(latent_control(scaled, lost, stride))
            elif stage == "inpaint":
                parts.append(image)
            else:
                parts.append(scaled.new_full((b, 3, *size), -1.0))
        out.append(Control(spec.net, torch.cat(parts, 1), spec.scale))
    return out


def inpaint(models, z: torch.Tensor, lost: torch.Tensor, edges, image, generator: torch.Generator | list, *,
            scaling_factor: float, stride: int, steps: int, strength: float = 1.0, eta: float = 0.0,
            guidance_scale: float = 1.0, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The inpainting stage: scaled latents (B, C, h, w), known cells blended, lost cells generated.

    ``edges``/``image`` from :func:`conditioning`; ``generator`` one for the batch or a list, one
    per item (:func:`~sim.complement.latent_inpaint.denoise_latents`); ``strength`` < 1 starts the
    lost cells from harmonic interpolation noised to the first timestep run (SDEdit-style);
    ``prompt_embeds`` overrides the set's null embedding (stage 3 trains it). Differentiable in
    the UNet, the ControlNets and ``prompt_embeds``.
    """
    scaled = z * scaling_factor
    interp_context = models.context == "interp" and takes_mask(models.unet)
    filled = unet_context("interp", z, lost) * scaling_factor if strength < 1 or interp_context else None
    controls = control_images(models.controlnets, scaled, lost, edges, image, "inpaint", stride)
    return denoise_latents(models.unet, models.scheduler_config, filled if strength < 1 else scaled,
                           models.prompt_embeds if prompt_embeds is None else prompt_embeds, generator,
                           controls=controls, keep=1 - lost, steps=steps, strength=strength, eta=eta,
                           guidance_scale=guidance_scale, context=filled if interp_context else None)


def denoise(models, scaled: torch.Tensor, lost: torch.Tensor, edges, image, generator: torch.Generator | list, *,
            stride: int, steps: int, strength: float | None, eta: float = 0.0, guidance_scale: float = 1.0,
            prompt_embeds: torch.Tensor | None = None, sigma: float | list[float] | None = None) -> torch.Tensor:
    """The Canny-based denoising step (CDS): ``steps`` DDIM steps over every cell of the scaled
    latents, conditioned on the edges only (every cell counts as lost). Differentiable like
    :func:`inpaint`.

    From t ≈ ``strength`` × T (fresh noise added to the latents), or, with ``sigma`` (the
    standard deviation of the noise already in ``scaled``, known from the channel), from the
    first timestep whose level reaches it, the noise topped up rather than added
    (:func:`noise_matched_total`; ``present_sigma`` of
    :func:`~sim.complement.latent_inpaint.denoise_latents`). A ``sigma`` below the schedule's
    finest level leaves the latents as they are. ``sigma`` may be one per item, all of them
    starting at the same timestep (InputError otherwise: denoise those items apart).
    """
    if sigma is not None:  # strength is not used
        totals = {noise_matched_total(models.scheduler_config, float(s), steps) for s in np.atleast_1d(sigma)}
        if len(totals) > 1:
            raise InputError(f"sigma = {sigma!r}: the items start at different timesteps (schedules of "
                             f"{sorted(totals, key=str)} steps); denoise them apart")
        total = totals.pop()
        if total is None:
            return scaled
    else:
        total = max(steps, round(steps / strength))
    controls = control_images(models.controlnets, scaled, lost, edges, image, "denoise", stride)
    return denoise_latents(models.unet, models.scheduler_config, scaled,
                           models.prompt_embeds if prompt_embeds is None else prompt_embeds, generator,
                           controls=controls, keep=None, steps=total, strength=steps / total, eta=eta,
                           guidance_scale=guidance_scale,
                           present_sigma=0.0 if sigma is None else torch.as_tensor(sigma, dtype=torch.float64))


def noise_matched_total(scheduler_config: dict, sigma: float, steps: int) -> int | None:
    """The DDIM schedule length N whose last ``steps`` trailing timesteps start at the first t
    with noise level σ_t = √((1 − ᾱ_t)/ᾱ_t) ≥ ``sigma`` (the latest start that covers the noise).

    With trailing spacing the last ``steps`` of N timesteps start at round(T − (N − steps)·T/N) − 1
    (diffusers' ``DDIMScheduler``), so N is the largest one in [steps, T] whose start is ≥ that t;
    a ``sigma`` above every level starts at T − 1 (N = steps). None where ``sigma`` is below σ_0:
    nothing to denoise.
    """
    from diffusers import DDIMScheduler

    alphas = DDIMScheduler.from_config(scheduler_config).alphas_cumprod.double().numpy()
    levels = np.sqrt((1 - alphas) / alphas)
    if sigma < levels[0]:
        return None
    T = len(levels)
    t_cover = min(int(np.searchsorted(levels, sigma)), T - 1)  # levels rise with t
    n = np.arange(T, steps - 1, -1)                             # longest schedule first
    starts = np.round(T - (n - steps) * (T / n)) - 1
    return int(n[np.argmax(starts >= t_cover)])                 # n = steps starts at T − 1: always one
