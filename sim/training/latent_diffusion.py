"""Training recipe of the ``tiny`` complement weight set (``latentcast train diffusion``).

Two stages, as ControlNet prescribes (and the first paper, §III-D):

1. **Base UNet** (:func:`sim.complement.models.tiny_unet`) and a learned null embedding
   (1, 1, 64) — the text-free conditioning — on the codec's latents × ``scaling_factor``,
   ε-prediction: L = ‖ε − ε_θ(z_t, t)‖², t uniform over SD's 1000-step scaled-linear schedule.
   ``base`` skips this stage: the UNet and null embedding come from an existing weight set.
2. **ControlNet** (:func:`~sim.complement.models.tiny_controlnet`, copied from the trained
   UNet, zero convolutions out) with the UNet and null embedding frozen (``unet_lr2`` > 0
   fine-tunes the UNet too, a departure from the paper that the card records):
   L = Σ w ‖ε − ε_θ(z_t, t, c)‖² / Σ w, with w = 1 on lost cells and ``known_weight`` on
   received ones — the inpainting loop overwrites received cells, so the lost ones are what
   the loss must teach — times clamp((1 − ᾱ_t)/ᾱ_t, 1, ``x0_weight_cap``), the x0 error's
   weight, capped, so the noisy steps where a hole's content is decided are not drowned by
   the low-noise ones. c is the ``controls`` inputs at pixel resolution: ``edges`` (Canny of
   the crop, or — with ``een`` — the EEN's estimate from the holed latent, as at run time;
   zeroed with probability ``edge_dropout`` so the no-edge ablation runs on the same weights),
   ``latent`` (the received latent and the mask, :func:`~sim.complement.models.latent_control`)
   and/or ``inpaint`` (the crop in [0, 1], lost pixels −1). Masks are packet-loss shaped
   (:mod:`sim.training.masks`); with probability ``image_dropout`` every cell counts as lost
   (the denoising step's edge-only conditioning).

Data: :class:`PatchSampler` crops, encoded on the fly by the frozen codec. AdamW, warm-up +
cosine, gradient clipping at 1. One checkpoint (``checkpoint_diffusion.pt``, tensors only,
``weights_only=True``) holds the stage and step; a rerun with the same ``out`` resumes in
whichever stage it stopped. The result is a weight-set folder
(:func:`sim.complement.models.save_weight_set`) in ``out``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from tqdm import tqdm

from sim.complement.chain import masked_image, unet_context
from sim.complement.een import canny_edges
from sim.complement.latent_inpaint import inpaint_input, takes_mask
from sim.complement.models import (CONTEXTS, SD15_SCHEDULER, TINY_CHANNELS, ControlSpec, check_unet_channels,
                                   control_channels, inpainting_unet, latent_control, load_weight_set,
                                   save_weight_set, tiny_controlnet, tiny_unet)
from sim.training.een import frozen_module
from sim.errors import ConfigError
from sim.training.loop import lr_at
from sim.training.masks import loss_masks
from sim.training.patches import PatchSampler

__all__ = ["train_latent_diffusion", "control_batch", "DEFAULT_CONTROLS"]

log = logging.getLogger(__name__)

DEFAULT_CONTROLS = ("edges", "latent")


def control_batch(inputs, x: torch.Tensor, scaled: torch.Tensor, lost: torch.Tensor, edges: torch.Tensor | None,
                  generator: torch.Generator, edge_dropout: float = 0.15,
                  image_dropout: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(control (B, k, H, W), effective cell mask (B, 1, h, w)) for one ControlNet's ``inputs``.

    x (B, 3, H, W) images in [-1, 1]; scaled (B, C, h, w) their latents × scaling factor; lost
    (B, 1, h, w) 1 = lost; edges (B, 1, H, W) (needed when ``inputs`` has an edge kind). With
    probability ``image_dropout`` a sample's every cell counts as lost (returned mask too).
    """
    b = x.shape[0]
    stride = x.shape[-1] // lost.shape[-1]
    drop_image = (torch.rand(b, generator=generator) < image_dropout).to(x.device)
    lost = torch.where(drop_image[:, None, None, None], torch.ones_like(lost), lost)
    keep_edges = (torch.rand(b, generator=generator) >= edge_dropout).to(x.device)
    parts = []
    for kind in inputs:
        if kind in ("edges", "canny"):
            e = edges * keep_edges[:, None, None, None]
            parts.append(e if kind == "edges" else e.expand(-1, 3, -1, -1))
        elif kind == "latent":
            parts.append(latent_control(scaled, lost, stride))
        else:
            parts.append(masked_image(x, lost))
    return torch.cat(parts, 1), lost


def train_latent_diffusion(images: str | Path, out: str | Path, codec: str = "tiny", codec_weights: str | None = None,
                           unet_steps: int = 3000, controlnet_steps: int = 1500, device: str = "cpu",
                           batch: int = 8, crop: int = 128, lr: float = 3e-4, controlnet_lr: float = 5e-4,
                           unet_lr2: float = 0.0, controls: tuple[str, ...] = DEFAULT_CONTROLS,
                           base: str | Path | None = None, een: str | Path | None = None,
                           inpaint_unet: bool = False, context: str = "masked", prediction_type: str = "epsilon",
                           known_weight: float = 0.1, x0_weight_cap: float = 10.0, canny_sigma: float = 2.0,
                           edge_dropout: float = 0.15,
                           image_dropout: float = 0.1, max_loss: float = 0.4, seed: int = 0,
                           unet_channels: tuple[int, ...] = TINY_CHANNELS, save_every: int = 250) -> Path:
    """Train (or resume) the tiny UNet, then its ControlNet; returns the weight-set folder ``out``.

    Parameters
    ----------
    images, out : path
        Training images; output folder (checkpoint, ``unet/``, ``controlnet/``, manifest).
    codec, codec_weights : str
        The codec whose latents the models learn (``tiny`` by default, shipped weights).
    unet_steps, controlnet_steps : int
        Steps of stage 1 and stage 2 (0 skips a stage's training, not its model).
    lr, controlnet_lr : float
        Peak AdamW learning rates of the two stages.
    unet_lr2 : float
        Stage 2: peak lr of the UNet and null embedding trained with the ControlNet (0 = frozen).
    controls : tuple of str
        The ControlNet's inputs (kinds of :data:`sim.complement.models.CONTROL_INPUTS`).
    base : path, optional
        A weight-set folder whose UNet and null embedding replace stage 1 (``unet_steps`` must be 0).
    een : path, optional
        EEN weights: stage-2 edges are its estimates from the holed latent instead of Canny.
    inpaint_unet : bool
        Stage 2 widens the UNet to an inpainting UNet (SD-inpainting's [latents, mask, masked
        latent] input, :func:`~sim.complement.models.inpainting_unet`) and fine-tunes it at
        ``unet_lr2`` (> 0) with the ControlNet.
    context : str
        An inpainting UNet's context channels: ``"masked"`` (SD-inpainting's masked latent, lost
        cells 0) or ``"interp"`` (the holes filled by harmonic interpolation, so the UNet learns
        a correction of the receiver's cheap first guess); stored in the weight set's manifest.
    prediction_type : str
        ``"epsilon"`` (SD 1.5's) or ``"v_prediction"`` (SD 2's v = √ᾱ ε − √(1 − ᾱ) x0): what the
        UNet learns to output, stored in the weight set's scheduler config. With v the x0
        estimate at the noisiest steps is a direct regression instead of an ε error × 1/√ᾱ
        (× 15 at t = 999). A ``base`` of another type needs ``unet_lr2`` > 0.
    known_weight : float
        Stage-2 loss weight of received cells (lost cells weigh 1).
    x0_weight_cap : float
        With ε-prediction, stage 2 weighs each sample's ε error by clamp((1 − ᾱ_t)/ᾱ_t, 1, cap) —
        the x0 error's weight, capped — so the noisy timesteps where a hole's content is decided count (plain
        ε-MSE puts ~10× more weight on low-noise steps, where context barely matters). 1 = plain ε.
    """
    from sim.codec import load_model
    from sim.complement.een import een_input, load_een

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    controls = tuple(controls)
    control_channels(controls)  # unknown kinds fail here, before any work
    if base is not None and unet_steps:
        raise ConfigError(f"unet_steps = {unet_steps} with base = {base}: the base replaces stage 1; use 0")
    if not 0.0 <= known_weight <= 1.0:
        raise ConfigError(f"known_weight = {known_weight!r}: expected a weight in [0, 1]")
    if inpaint_unet and not unet_lr2 > 0:
        raise ConfigError(f"inpaint_unet needs unet_lr2 > 0 (got {unet_lr2!r}): its new mask inputs must be trained")
    if context not in CONTEXTS:
        raise ConfigError(f"context = {context!r}: expected one of {', '.join(CONTEXTS)}")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(f"prediction_type = {prediction_type!r}: expected epsilon or v_prediction")
    if base is None:
        check_unet_channels(unet_channels)  # before the codec loads
    if not x0_weight_cap >= 1.0:
        raise ConfigError(f"x0_weight_cap = {x0_weight_cap!r}: expected a cap ≥ 1 (1 = plain ε-MSE)")
    model = load_model(codec, codec_weights, device)
    frozen_module(model)
    stride = int(getattr(model, "downscale", 8))
    if crop % (4 * stride):
        raise ConfigError(f"crop = {crop}: expected a multiple of {4 * stride} (4 × the latent stride)")
    sf = float(model.scaling_factor)
    edge_net = load_een(een, device).eval().requires_grad_(False) if een else None
    total = unet_steps + controlnet_steps
    if base is None:
        with torch.random.fork_rng():  # initial weights only
            torch.manual_seed(seed)
            unet = tiny_unet(channels=unet_channels).to(device)
            null = torch.nn.Parameter(torch.randn(1, 1, unet.config.cross_attention_dim, device=device) * 0.02)
    else:
        start_set = load_weight_set(base, device=device)
        base_type = start_set.scheduler_config.get("prediction_type", "epsilon")
        if base_type != prediction_type and not unet_lr2 > 0:
            raise ConfigError(f"base {base} predicts {base_type}, prediction_type = {prediction_type!r}: "
                              f"a frozen UNet cannot change what it predicts; set unet_lr2 > 0")
        if takes_mask(start_set.unet) and start_set.context != context:
            raise ConfigError(f"base {base} is an inpainting UNet trained with context {start_set.context!r}, "
                              f"context = {context!r}; pass the base's")
        unet = start_set.unet.train()  # the base's own architecture (plain, or already an inpainting UNet)
        null = torch.nn.Parameter(start_set.prompt_embeds.detach().clone().to(device))
    controlnet = None
    opt = torch.optim.AdamW([*unet.parameters(), null], lr=lr, weight_decay=1e-4)
    bases = [lr]
    ckpt_path = out / "checkpoint_diffusion.pt"
    start, elapsed = 0, 0.0

    def start_stage2():
        nonlocal unet, controlnet, opt, bases
        if inpaint_unet and not takes_mask(unet):
            unet = inpainting_unet(unet)
        unet.requires_grad_(unet_lr2 > 0)
        null.requires_grad_(unet_lr2 > 0)
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            controlnet = tiny_controlnet(unet, controls, stride).to(device)
        groups = [{"params": list(controlnet.parameters())}]
        bases = [controlnet_lr]
        if unet_lr2 > 0:
            groups.append({"params": [*unet.parameters(), null]})
            bases.append(unet_lr2)
        opt = torch.optim.AdamW(groups, lr=controlnet_lr, weight_decay=1e-4)

    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if "controlnet" in ckpt:  # stage 2 first: it may widen the UNet
            start_stage2()
            controlnet.load_state_dict(ckpt["controlnet"])
        unet.load_state_dict(ckpt["unet"])
        null.data.copy_(ckpt["null"])
        start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        opt.load_state_dict(ckpt["opt"])
        log.info("resuming diffusion training from step %d", start)
    sampler = PatchSampler(images, crop, seed)
    scheduler_config = {**SD15_SCHEDULER, "prediction_type": prediction_type}
    scheduler = DDIMScheduler.from_config(scheduler_config)
    gen = torch.Generator()
    t0 = time.perf_counter() - elapsed
    ema: dict[str, float] = {}
    history: dict[str, list[float]] = {"loss1": [], "loss2": []}  # this run's losses, for the card
    bar = tqdm(range(start, total), initial=start, total=total, desc="train diffusion", unit="step")
    for step in bar:
        stage = 1 if step < unet_steps else 2
        if stage == 2 and controlnet is None:
            start_stage2()
        local, length = (step, unet_steps) if stage == 1 else (step - unet_steps, controlnet_steps)
        for g, peak in zip(opt.param_groups, bases):
            g["lr"] = lr_at(local, length, peak, warmup=100)
        gen.manual_seed(seed * 1_000_003 + step)
        # 1. a batch of scaled latents, noised at random timesteps
        x = sampler.batch(step, batch).to(device)
        with torch.no_grad():
            z = model.encode(x).float()
        z0 = z * sf
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        zt = scheduler.add_noise(z0, noise, t)
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(z0, noise, t)
        states = null.expand(batch, -1, -1)
        # 2. ε-prediction, with ControlNet residuals (and lost cells weighted) in stage 2
        residuals, weight = {}, None
        if stage == 2:
            lost = loss_masks(batch, z0.shape[-2], z0.shape[-1], gen, max_loss).to(device)
            edges = None
            if any(k in ("edges", "canny") for k in controls):
                with torch.no_grad():
                    edges = (edge_net(een_input(z, lost, sf)) if edge_net is not None
                             else canny_edges(x.cpu(), canny_sigma).to(device))
            cond, lost = control_batch(controls, x, z0, lost, edges, gen, edge_dropout, image_dropout)
            if takes_mask(unet):
                zt = inpaint_input(zt, lost, unet_context(context, z, lost) * sf)
            down, mid = controlnet(zt, t, encoder_hidden_states=states, controlnet_cond=cond, return_dict=False)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            weight = lost + known_weight * (1 - lost)
            if prediction_type == "epsilon":
                a = scheduler.alphas_cumprod.to(device)[t]
                weight = weight * ((1 - a) / a).clamp(1.0, x0_weight_cap)[:, None, None, None]
        pred = unet(zt, t, encoder_hidden_states=states, **residuals).sample
        if weight is None:
            loss = F.mse_loss(pred, target)
        else:
            loss = ((pred - target).pow(2).mean(1, keepdim=True) * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        key = f"loss{stage}"
        history[key].append(loss.item())
        ema[key] = loss.item() if key not in ema else 0.98 * ema[key] + 0.02 * loss.item()
        bar.set_postfix(stage=stage, **{k: f"{v:.4f}" for k, v in ema.items()})
        if (step + 1) % save_every == 0 or step + 1 == total or step + 1 == unet_steps:
            state = {"unet": unet.state_dict(), "null": null.detach(), "opt": opt.state_dict(), "step": step + 1,
                     "elapsed": time.perf_counter() - t0}
            if controlnet is not None:
                state["controlnet"] = controlnet.state_dict()
            torch.save(state, ckpt_path)
    if controlnet is None:  # no stage-2 step at all: an untrained ControlNet (outputs zeros)
        start_stage2()
    unet.eval()
    controlnet.eval()
    card = {"codec": model.name, "codec_weights": codec_weights, "scaling_factor": sf,
            "base": None if base is None else str(base), "unet_steps": unet_steps,
            "unet_channels": list(unet.config.block_out_channels),
            "controlnet_steps": controlnet_steps, "batch": batch, "crop": crop, "lr": lr,
            "controlnet_lr": controlnet_lr, "unet_lr2": unet_lr2, "inpaint_unet": inpaint_unet, "context": context,
            "prediction_type": prediction_type, "controls": list(controls),
            "edges": "een" if edge_net is not None else {"library": "skimage", "canny_sigma": canny_sigma},
            "known_weight": known_weight, "x0_weight_cap": x0_weight_cap, "edge_dropout": edge_dropout,
            "image_dropout": image_dropout,
            "max_loss": max_loss, "seed": seed, "device": device, "wall_s": round(time.perf_counter() - t0, 1),
            "train_images": [p.name for p in sampler.files], "train_loss_ema": {k: round(v, 4) for k, v in ema.items()},
            "loss_first_last_20": {k: [round(sum(v[:20]) / len(v[:20]), 4), round(sum(v[-20:]) / len(v[-20:]), 4)]
                                   for k, v in history.items() if v}}
    save_weight_set(out, unet, [ControlSpec(controlnet, controls, 1.0)], null.detach(), scheduler_config, card,
                    context=context)
    (out / "diffusion_training.json").write_text(json.dumps(card, indent=2))
    return out
