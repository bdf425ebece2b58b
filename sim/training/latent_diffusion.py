"""Training recipe of the ``tiny`` complement weight set (``latentcast train diffusion``).

Two stages, as ControlNet prescribes (and the first paper, §III-D):

1. **Base UNet** (:func:`sim.complement.models.tiny_unet`) and a learned null embedding
   (1, 1, 64) — the text-free conditioning — on the codec's latents × ``scaling_factor``,
   ε-prediction: L = ‖ε − ε_θ(z_t, t)‖², t uniform over SD's 1000-step scaled-linear schedule.
2. **ControlNet** (:func:`~sim.complement.models.tiny_controlnet`, copied from the trained
   UNet, zero convolutions out) with the UNet and null embedding frozen:
   L = ‖ε − ε_θ(z_t, t, c)‖², c = [edges, masked image] at pixel resolution: Canny edges of the
   crop (zeroed for a sample with probability ``edge_dropout``, so the no-edge ablation runs
   on the same weights) and the crop in [0, 1] with the pixels of packet-loss-shaped lost cells
   (:mod:`sim.training.masks`) set to −1 (all −1 with probability ``image_dropout``: the
   denoising step's edge-only conditioning).

Edges in training are Canny edges of the original (as ControlNet's canny training); at run
time they come from the EEN. Data: :class:`PatchSampler` crops, encoded on the fly by the frozen
codec. AdamW, warm-up + cosine, gradient clipping at 1. One checkpoint
(``checkpoint_diffusion.pt``, tensors only, ``weights_only=True``) holds the stage and step;
a rerun with the same ``out`` resumes in whichever stage it stopped. The result is a
weight-set folder (:func:`sim.complement.models.save_weight_set`) in ``out``.
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

from sim.complement.een import canny_edges
from sim.complement.models import SD15_SCHEDULER, ControlSpec, save_weight_set, tiny_controlnet, tiny_unet
from sim.training.een import frozen_module
from sim.errors import ConfigError
from sim.training.loop import lr_at
from sim.training.masks import loss_masks
from sim.training.patches import PatchSampler

__all__ = ["train_latent_diffusion", "control_batch", "CONTROL_INPUTS"]

log = logging.getLogger(__name__)

CONTROL_INPUTS = ("edges", "inpaint")


def control_batch(x: torch.Tensor, lost: torch.Tensor, edges: torch.Tensor, generator: torch.Generator,
                  edge_dropout: float = 0.15, image_dropout: float = 0.1) -> torch.Tensor:
    """[edges, masked image] (B, 4, H, W) for images x (B, 3, H, W) in [-1, 1] and cell masks (B, 1, h, w)."""
    b = x.shape[0]
    stride = x.shape[-1] // lost.shape[-1]
    pixel_lost = F.interpolate(lost, scale_factor=stride, mode="nearest") > 0.5
    drop_image = (torch.rand(b, generator=generator) < image_dropout).to(x.device)
    pixel_lost = pixel_lost | drop_image[:, None, None, None]
    image = x.add(1).div(2).masked_fill(pixel_lost.expand_as(x), -1.0)
    keep_edges = (torch.rand(b, generator=generator) >= edge_dropout).to(x.device)
    return torch.cat([edges * keep_edges[:, None, None, None], image], 1)


def train_latent_diffusion(images: str | Path, out: str | Path, codec: str = "tiny", codec_weights: str | None = None,
                           unet_steps: int = 3000, controlnet_steps: int = 1500, device: str = "cpu",
                           batch: int = 8, crop: int = 128, lr: float = 3e-4, controlnet_lr: float = 1e-4,
                           canny_sigma: float = 2.0, edge_dropout: float = 0.15, image_dropout: float = 0.1,
                           max_loss: float = 0.4, seed: int = 0, save_every: int = 250) -> Path:
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
    """
    from sim.codec import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(codec, codec_weights, device)
    frozen_module(model)
    stride = int(getattr(model, "downscale", 8))
    if crop % (4 * stride):
        raise ConfigError(f"crop = {crop}: expected a multiple of {4 * stride} (4 × the latent stride)")
    sf = float(model.scaling_factor)
    total = unet_steps + controlnet_steps
    with torch.random.fork_rng():  # initial weights only
        torch.manual_seed(seed)
        unet = tiny_unet().to(device)
        null = torch.nn.Parameter(torch.randn(1, 1, unet.config.cross_attention_dim, device=device) * 0.02)
    controlnet = None
    opt = torch.optim.AdamW([*unet.parameters(), null], lr=lr, weight_decay=1e-4)
    ckpt_path = out / "checkpoint_diffusion.pt"
    start, elapsed = 0, 0.0

    def start_stage2():
        nonlocal controlnet, opt
        unet.requires_grad_(False)
        null.requires_grad_(False)
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            controlnet = tiny_controlnet(unet, CONTROL_INPUTS, stride).to(device)
        opt = torch.optim.AdamW(controlnet.parameters(), lr=controlnet_lr, weight_decay=1e-4)

    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        unet.load_state_dict(ckpt["unet"])
        null.data.copy_(ckpt["null"])
        start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        if "controlnet" in ckpt:
            start_stage2()
            controlnet.load_state_dict(ckpt["controlnet"])
        opt.load_state_dict(ckpt["opt"])
        log.info("resuming diffusion training from step %d", start)
    sampler = PatchSampler(images, crop, seed)
    scheduler = DDIMScheduler.from_config(SD15_SCHEDULER)
    gen = torch.Generator()
    t0 = time.perf_counter() - elapsed
    ema: dict[str, float] = {}
    history: dict[str, list[float]] = {"loss1": [], "loss2": []}  # this run's losses, for the card
    bar = tqdm(range(start, total), initial=start, total=total, desc="train diffusion", unit="step")
    for step in bar:
        stage = 1 if step < unet_steps else 2
        if stage == 2 and controlnet is None:
            start_stage2()
        local, length, base = (step, unet_steps, lr) if stage == 1 else (step - unet_steps, controlnet_steps,
                                                                           controlnet_lr)
        for g in opt.param_groups:
            g["lr"] = lr_at(local, length, base, warmup=100)
        gen.manual_seed(seed * 1_000_003 + step)
        # 1. a batch of scaled latents, noised at random timesteps
        x = sampler.batch(step, batch)
        edges = canny_edges(x, canny_sigma).to(device) if stage == 2 else None
        x = x.to(device)
        with torch.no_grad():
            z0 = model.encode(x).float() * sf
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        zt = scheduler.add_noise(z0, noise, t)
        states = null.expand(batch, -1, -1)
        # 2. ε-prediction, with ControlNet residuals in stage 2
        residuals = {}
        if stage == 2:
            lost = loss_masks(batch, z0.shape[-2], z0.shape[-1], gen, max_loss).to(device)
            cond = control_batch(x, lost, edges, gen, edge_dropout, image_dropout)
            down, mid = controlnet(zt, t, encoder_hidden_states=states, controlnet_cond=cond, return_dict=False)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        eps = unet(zt, t, encoder_hidden_states=states, **residuals).sample
        loss = F.mse_loss(eps, noise)
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
            "unet_steps": unet_steps, "controlnet_steps": controlnet_steps, "batch": batch, "crop": crop,
            "lr": lr, "controlnet_lr": controlnet_lr, "canny": {"library": "skimage", "sigma": canny_sigma},
            "edge_dropout": edge_dropout, "image_dropout": image_dropout, "max_loss": max_loss, "seed": seed,
            "device": device, "wall_s": round(time.perf_counter() - t0, 1),
            "train_images": [p.name for p in sampler.files], "train_loss_ema": {k: round(v, 4) for k, v in ema.items()},
            "loss_first_last_20": {k: [round(sum(v[:20]) / len(v[:20]), 4), round(sum(v[-20:]) / len(v[-20:]), 4)]
                                   for k, v in history.items() if v}}
    save_weight_set(out, unet, [ControlSpec(controlnet, CONTROL_INPUTS, 1.0)], null.detach(), SD15_SCHEDULER, card)
    (out / "diffusion_training.json").write_text(json.dumps(card, indent=2))
    return out
