"""One DDIM denoising loop on latents, with ControlNet residuals and known-cell blending.

diffusers' inpainting pipelines cannot start from latents (``NOTES-diffusers.md``), so this
is the loop of ``StableDiffusionControlNetInpaintPipeline`` (diffusers 0.42, §8 of its
``__call__``) cut down to what latentcast needs: no text encoder, no VAE, latents in and out.

- **Inpainting** (``keep`` given): after every ``scheduler.step`` the known cells are
  replaced by the known latent re-noised to the next timestep with the loop's own noise,
  ``latents = keep · add_noise(known, noise, t_next) + (1 − keep) · latents``; the last step
  uses the clean known latent (the pipeline's rule for a 4-channel UNet).
- **Partial denoising** (``keep=None``, ``strength < 1``): img2img — the latent is noised to
  the first of the last ``int(steps × strength)`` timesteps and denoised freely.

- **Inpainting UNet** (``in_channels`` = 2 × latent channels + 1, SD-inpainting's layout): the
  UNet input is ``[latents, mask, context]`` at every step (mask = 1 where generated; without
  ``keep`` everything counts as generated; context = the known latent with generated cells 0,
  SD-inpainting's masked latent, unless the caller passes another, e.g. the harmonic
  interpolation of the holes); a ControlNet whose ``conv_in`` takes the same width gets the
  same input, others the latents alone (diffusers' ControlNet inpaint pipeline). Known cells
  are still blended, as above.

Latents are in the UNet's units (codec latent × ``scaling_factor``). Every random draw comes
from ``generator``; with the same generator state the result is the same. With a list of
generators, one per item, item i's draws come from generator i alone, in the order a batch of
one would draw them: an item's result does not depend on the batch it runs in.

The latents, the noise and the DDIM arithmetic are float32; the UNet and ControlNets get their
inputs in their own dtype (float16 / bfloat16 on CUDA, :func:`sim.complement.models.cast_models`)
and their predictions come back as float32.

The loop is differentiable (``latentcast train finetune`` backpropagates through all its
steps); callers that only infer wrap it in ``torch.no_grad()``, as ``LearnedComplement`` does.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from sim.errors import ConfigError, InputError

__all__ = ["Control", "denoise_latents", "timesteps_for", "inpaint_input", "takes_mask"]


@dataclass
class Control:
    """One ControlNet with its conditioning image.

    net : diffusers ``ControlNetModel``
    image : (B, k, H, W) conditioning at pixel resolution (H = h × the net's downsampling)
    scale : ``conditioning_scale`` of the residuals
    """

    net: nn.Module
    image: torch.Tensor
    scale: float = 1.0


class _Fixed(nn.Module):
    """Stands in for a ControlNet's conditioning embedding: returns a precomputed tensor."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.value


@contextmanager
def _embedded_once(control: Control):
    """Run the control image through the net's conditioning embedding once for the whole loop.

    ``ControlNetModel.forward`` embeds its (constant) conditioning image at every step; at
    512 × 512 that is a third of a tiny ControlNet's cost. The embedding module is swapped
    for :class:`_Fixed` during the loop and restored afterwards.
    """
    net = control.net
    if net.config.controlnet_conditioning_channel_order == "bgr":
        image = torch.flip(control.image, dims=[1])
    else:
        image = control.image
    original = net.controlnet_cond_embedding
    net.controlnet_cond_embedding = _Fixed(original(image.to(net.dtype)))
    try:
        yield
    finally:
        net.controlnet_cond_embedding = original


def takes_mask(unet: nn.Module) -> bool:
    """True for an inpainting UNet: ``in_channels`` = 2 × ``out_channels`` + 1."""
    return unet.config.in_channels == 2 * unet.config.out_channels + 1


def inpaint_input(latents: torch.Tensor, generate: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``[latents, mask, context]``: an inpainting UNet's input (mask = 1 where generated)."""
    return torch.cat([latents, generate, context], 1)


def timesteps_for(scheduler: DDIMScheduler, steps: int, strength: float) -> torch.Tensor:
    """The last ``int(steps × strength)`` of ``steps`` DDIM timesteps (diffusers' ``get_timesteps``)."""
    if not isinstance(steps, int) or steps < 1 or steps > scheduler.config.num_train_timesteps:
        raise ConfigError(f"steps = {steps!r}: expected an integer in [1, {scheduler.config.num_train_timesteps}]")
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"strength = {strength!r}: expected a value in (0, 1]")
    run = min(int(steps * strength + 1e-6), steps)  # + 1e-6: 10 × 0.2 runs 2 steps
    if run < 1:
        raise ConfigError(f"steps = {steps} at strength = {strength} runs no step; raise one of them")
    scheduler.set_timesteps(steps)
    start = steps - run
    if hasattr(scheduler, "set_begin_index"):  # not DDIM's; other schedulers count steps from it
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def denoise_latents(
    unet: nn.Module,
    scheduler_config: dict,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    generator: torch.Generator | list[torch.Generator],
    *,
    controls: list[Control] = (),
    keep: torch.Tensor | None = None,
    steps: int = 8,
    strength: float = 1.0,
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    timestep_spacing: str | None = "trailing",
    context: torch.Tensor | None = None,
    present_sigma: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Denoise ``latents`` with DDIM, inpainting where ``keep`` is 0.

    Parameters
    ----------
    unet : UNet2DConditionModel
        Predicts ε (``prediction_type`` comes from the scheduler config).
    scheduler_config : dict
        A ``DDIMScheduler`` config (a fresh scheduler is made per call: schedulers hold state).
    latents : (B, C, h, w) float
        Scaled latents. With ``keep``: the known latent (values where keep = 0 are ignored
        unless ``strength < 1``, where they are the starting point). Without: the start.
    encoder_hidden_states : (1 or B, L, D)
        The text-free conditioning (empty-prompt embedding or learned null embedding).
    generator : torch.Generator or list of B torch.Generator
        CPU generator for the starting noise (and the DDIM variance noise when eta > 0): one
        for the whole batch, or one per item (diffusers' convention: each item's draws from its own).
    controls : list of Control
        ControlNets whose residuals are summed (MultiControlNet semantics).
    keep : (B, 1, h, w) float or bool, optional
        1 where the latent is known and must be kept (blended), 0 where it is generated.
    steps : int
        DDIM steps of the full schedule; ``int(steps × strength)`` of them run.
    strength : float in (0, 1]
        1: start from pure noise (inpainting); below 1: start from ``latents`` noised to the
        first timestep run (partial denoising, img2img).
    eta : float
        DDIM η (0 = deterministic DDIM).
    guidance_scale : float
        > 1: control guidance, ε = ε_u + g (ε_c − ε_u) with ε_u the UNet without ControlNet
        residuals (there is no text to guide by); doubles the UNet cost. 1 = off.
    timestep_spacing : str or None
        Overrides the config's spacing; ``"trailing"`` starts at t = T − 1 even with few steps.
    context : (B, C, h, w), optional
        An inpainting UNet's context channels (default: ``latents`` × keep, the masked latent).
    present_sigma : float ≥ 0, or a (B,) tensor of them (one per item)
        Without ``keep``: ``latents`` already carry Gaussian noise of this standard deviation
        (x₀ + σ ε, as a noisy channel delivers them). The start tops it up to the first
        timestep's level instead of adding a full one: √ᾱ_t (x + √max(0, σ_t² − σ²) ε), σ_t² =
        (1 − ᾱ_t)/ᾱ_t — so the noise in the start is σ_t's, not σ_t's plus the channel's. 0: the
        usual ``scheduler.add_noise``.

    Returns
    -------
    torch.Tensor
        (B, C, h, w) denoised latents (float32, on ``latents``' device, whatever the networks'
        dtype). With ``keep`` and ``strength`` = 1 the known cells equal ``latents`` there exactly.
    """
    if latents.dim() != 4:
        raise InputError(f"latents: expected (B, C, h, w), got shape {tuple(latents.shape)}")
    b, _, h, w = latents.shape
    if keep is not None:
        if keep.shape != (b, 1, h, w):
            raise InputError(f"keep mask {tuple(keep.shape)} does not match latents {tuple(latents.shape)}: "
                             f"expected ({b}, 1, {h}, {w})")
        keep = keep.to(latents.dtype)
    if isinstance(generator, list) and len(generator) != b:
        raise InputError(f"{len(generator)} generators for a batch of {b} latents: expected one per item")
    sigma = torch.as_tensor(present_sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)
    if (sigma < 0).any() or ((sigma > 0).any() and keep is not None) or sigma.shape[0] not in (1, b):
        raise InputError(f"present_sigma = {present_sigma!r}: expected ≥ 0, one or one per item, and only "
                         f"without keep")
    for c in controls:
        down = 2 ** (len(c.net.config.conditioning_embedding_out_channels) - 1)
        if c.image.shape[0] != b or tuple(c.image.shape[-2:]) != (h * down, w * down):
            raise InputError(f"control image {tuple(c.image.shape)}: expected batch {b} and size "
                             f"{h * down}×{w * down} (latent {h}×{w} × {down})")
    # 1. scheduler and timesteps
    overrides = {"timestep_spacing": timestep_spacing} if timestep_spacing else {}
    scheduler = DDIMScheduler.from_config(scheduler_config, **overrides)
    timesteps = timesteps_for(scheduler, steps, strength)
    # 2. starting latents: pure noise (strength 1) or the input noised to the first timestep
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=torch.float32).to(latents)
    known = latents
    if (sigma > 0).any():
        alpha = scheduler.alphas_cumprod[int(timesteps[0])].to(known)
        top_up = ((1 - alpha) / alpha - (sigma ** 2).to(known)).clamp(min=0).sqrt()
        latents = alpha.sqrt() * (known + top_up * noise)
    elif strength >= 1.0:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(known, noise, timesteps[:1])
    if keep is not None:
        latents = keep * scheduler.add_noise(known, noise, timesteps[:1]) + (1 - keep) * latents
    dtype = unet.dtype  # the networks' (the ControlNets are cast with the UNet)
    states = encoder_hidden_states.to(device=latents.device, dtype=dtype).expand(b, -1, -1)
    generate = (1 - keep) if keep is not None else torch.ones_like(latents[:, :1])
    if context is None:
        context = known * (1 - generate)
    elif context.shape != known.shape:
        raise InputError(f"context {tuple(context.shape)} does not match latents {tuple(known.shape)}")
    # 3. the loop; control images are embedded once
    with ExitStack() as stack:
        for c in controls:
            stack.enter_context(_embedded_once(c))
        for i, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(latents, t)
            full_input = model_input
            if takes_mask(unet):
                full_input = inpaint_input(model_input, generate, context.to(model_input))
            model_input, full_input = model_input.to(dtype), full_input.to(dtype)
            down_res = mid_res = None
            for c in controls:
                wide = c.net.config.in_channels == full_input.shape[1]
                d, m = c.net(full_input if wide else model_input, t, encoder_hidden_states=states,
                             controlnet_cond=c.image, conditioning_scale=c.scale, return_dict=False)
                down_res = d if down_res is None else [x + y for x, y in zip(down_res, d)]
                mid_res = m if mid_res is None else mid_res + m
            eps = unet(full_input, t, encoder_hidden_states=states, down_block_additional_residuals=down_res,
                       mid_block_additional_residual=mid_res, return_dict=False)[0].float()
            if guidance_scale != 1.0 and controls:
                eps_u = unet(full_input, t, encoder_hidden_states=states, return_dict=False)[0].float()
                eps = eps_u + guidance_scale * (eps - eps_u)
            latents = scheduler.step(eps, t, latents, eta=eta, generator=generator, return_dict=False)[0]
            # 4. blend the known cells, re-noised to the next timestep (clean after the last)
            if keep is not None:
                if i < len(timesteps) - 1:
                    target = scheduler.add_noise(known, noise, timesteps[i + 1:i + 2])
                else:
                    target = known
                latents = keep * target + (1 - keep) * latents
    return latents
