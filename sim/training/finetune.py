"""Stage 3 of the tiny complement recipe: unrolled perceptual fine-tuning (``latentcast train finetune``).

Stages 1–2 (:mod:`sim.training.latent_diffusion`) teach the UNet and ControlNet the diffusion
objective one timestep at a time. The receiver, though, runs the whole inpainting loop at the
weight set's default step count and decodes the result, and the product is judged on that
image. This stage trains exactly that chain end to end: for a batch of crops with packet-loss
masks, the EEN's edges (frozen), the UNet's context, every DDIM step of the inpainting loop with
known-cell blending — :mod:`sim.complement.chain`, the code the method itself runs — then the
frozen codec decoder; the loss is

    L = l1_weight · ‖x̂ − x‖₁ + lpips_weight · LPIPS_VGG(x̂, x)

against the original crop x, back-propagated into the UNet, the ControlNet(s) and the null
embedding. This is direct reward fine-tuning of a diffusion sampler (DRaFT, Clark et al. 2023)
with a differentiable image loss as the reward. The perceptual term is VGG-LPIPS — the LPIPS
authors' choice for a training loss — so that AlexNet-LPIPS, the metric ``complement-eval``
reports, is not what the model was fitted to.

Latents get the codec's quantization noise (one 5–8-bit uniform step, as the EEN recipe), so
the model sees dequantized latents as at run time. Edges are zeroed with probability
``edge_dropout`` so the no-edge ablation still runs on the same weights. The loop's starting
noise comes from the step's seeded generator: the result is a function of (seed, step).

One checkpoint (``checkpoint_finetune.pt``, tensors only, ``weights_only=True``) holds the
step; a rerun with the same ``out`` resumes. The result is a weight-set folder with the base's
EEN, context and step count, and the base's training card kept under ``base_training``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from sim.complement.chain import conditioning, denoise, inpaint
from sim.complement.learned import DENOISE_STEPS, FIXED_DENOISE_STRENGTH
from sim.complement.models import SHIPPED_TINY, load_weight_set, save_weight_set
from sim.errors import ConfigError
from sim.training.codec import quantization_noise
from sim.training.een import frozen_module
from sim.training.loop import lr_at
from sim.training.masks import loss_masks
from sim.training.patches import PatchSampler

__all__ = ["finetune_complement"]

log = logging.getLogger(__name__)


def _decoded_losses(model, perceptual, scaled: torch.Tensor, x: torch.Tensor, lpips_weight: float):
    """Decode scaled latents; their mean L1 and perceptual distance to the crops ``x`` (the
    perceptual term is 0, and not computed, when ``lpips_weight`` is 0)."""
    x_hat = model.decode(scaled / float(model.scaling_factor)).float()
    l1 = (x_hat - x).abs().mean()
    lp = perceptual(x_hat.clamp(-1, 1), x).mean() if lpips_weight > 0 else torch.zeros(())
    return l1, lp


def finetune_complement(images: str | Path, out: str | Path, weights: str | Path | None = None, steps: int = 600,
                        codec: str = "tiny", codec_weights: str | None = None, device: str = "cpu", batch: int = 8,
                        crop: int = 128, lr: float = 5e-5, l1_weight: float = 1.0, lpips_weight: float = 1.0,
                        loop_steps: int | None = None, edge_dropout: float = 0.15, max_loss: float = 0.4,
                        augment: bool = False, image_size: int | None = None, denoise_weight: float = 0.0,
                        seed: int = 0, save_every: int = 50, perceptual: torch.nn.Module | None = None) -> Path:
    """Fine-tune a complement weight set through its own inpainting loop; returns the new set ``out``.

    Parameters
    ----------
    images, out : path
        Training images; output folder (checkpoint, then the weight set).
    weights : path, optional
        The weight set to start from (default: the shipped ``tiny`` set); it needs an EEN if
        its ControlNets take edges.
    steps : int
        Optimisation steps (AdamW, 50 warm-up steps, cosine decay, gradient norm clipped to 1).
    loop_steps : int, optional
        DDIM steps of the unrolled loop (default: the set's ``steps``); stored as the new set's default.
    l1_weight, lpips_weight : float
        Weights of the pixel L1 and VGG-LPIPS terms (≥ 0, not both 0).
    augment : bool
        Patches also turned by random quarter turns, colour channels in a random order
        (:class:`~sim.training.patches.PatchSampler`).
    image_size : int, optional
        Resize every training image so its shorter side is this many pixels before cropping (the
        scale ``complement-eval --size`` sees; default: the multi-scale crops of the originals).
    denoise_weight : float
        Also train the Canny-based denoising step (``learned-denoise``): the inpainted latents go
        through :func:`~sim.complement.chain.denoise` at the method's fixed start
        (``DENOISE_STEPS`` steps from t ≈ ``FIXED_DENOISE_STRENGTH`` × T, fresh noise), are
        decoded, and this weight
        times the same L1 + LPIPS loss is added (default 0: inpainting only).
    perceptual : callable, optional
        The perceptual loss ``f(x̂, x) → (B,)`` (default: VGG-LPIPS, :func:`sim.lpips.load_lpips`
        with ``net="vgg"``; tests pass a randomly initialised one).
    """
    from sim.codec import load_model

    out = Path(out)
    if steps < 1 or batch < 1:
        raise ConfigError(f"steps = {steps}, batch = {batch}: expected both ≥ 1")
    if l1_weight < 0 or lpips_weight < 0 or l1_weight + lpips_weight == 0:
        raise ConfigError(f"l1_weight = {l1_weight}, lpips_weight = {lpips_weight}: expected ≥ 0, not both 0")
    if not 0.0 <= edge_dropout <= 1.0:
        raise ConfigError(f"edge_dropout = {edge_dropout!r}: expected a probability in [0, 1]")
    if not denoise_weight >= 0:
        raise ConfigError(f"denoise_weight = {denoise_weight!r}: expected a number ≥ 0")
    source = Path(weights).expanduser() if weights else SHIPPED_TINY
    models = load_weight_set(source, device=device)
    if any(s.uses_edges for s in models.controlnets) and models.een is None:
        raise ConfigError(f"weights {source}: its ControlNets take edges but it has no een.safetensors")
    loop_steps = models.steps if loop_steps is None else loop_steps
    if not isinstance(loop_steps, int) or loop_steps < 1:
        raise ConfigError(f"loop_steps = {loop_steps!r}: expected an integer ≥ 1")
    if perceptual is None and lpips_weight > 0:
        from sim.lpips import load_lpips

        perceptual = load_lpips(net="vgg")
        if perceptual is None:
            raise ConfigError("VGG-LPIPS weights are not available (see the warning above): run "
                              "`python -m sim.lpips --build --net vgg`, or pass --lpips-weight 0")
    if isinstance(perceptual, torch.nn.Module):
        perceptual = perceptual.to(device)
    model = load_model(codec, codec_weights, device)
    frozen_module(model)
    stride = int(getattr(model, "downscale", 8))
    if crop % (4 * stride):
        raise ConfigError(f"crop = {crop}: expected a multiple of {4 * stride} (4 × the latent stride)")
    if image_size is not None and image_size < crop:
        raise ConfigError(f"image_size = {image_size}: expected at least the crop ({crop} pixels)")
    out.mkdir(parents=True, exist_ok=True)
    null = torch.nn.Parameter(models.prompt_embeds.detach().clone().to(device))
    nets = [models.unet, *(s.net for s in models.controlnets)]
    for net in nets:
        net.train().requires_grad_(True)
    opt = torch.optim.AdamW([*(p for n in nets for p in n.parameters()), null], lr=lr, weight_decay=1e-4)
    ckpt_path = out / "checkpoint_finetune.pt"
    start, elapsed = 0, 0.0
    # every step's losses, for the card ("denoise": the CDS output's L1 + LPIPS, with denoise_weight > 0)
    history: dict[str, list[float]] = {"loss": [], "l1": [], "lpips": [], "denoise": []}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        for i, net in enumerate(nets):
            net.load_state_dict(ckpt[f"net{i}"])
        null.data.copy_(ckpt["null"])
        opt.load_state_dict(ckpt["opt"])
        start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        history = {k: ckpt[f"history_{k}"].tolist() if f"history_{k}" in ckpt else [] for k in history}
        log.info("resuming fine-tuning from step %d", start)
    sampler = PatchSampler(images, crop, seed, augment=augment, short_side=image_size)
    gen = torch.Generator()
    t0 = time.perf_counter() - elapsed
    ema: dict[str, float] = {}
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train finetune", unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=50)
        gen.manual_seed(seed * 1_000_003 + step)
        # 1. crops, their dequantized latents, packet-loss masks
        x = sampler.batch(step, batch).to(device)
        with torch.no_grad():
            z = quantization_noise(model.encode(x).float(), gen)
        lost = loss_masks(batch, z.shape[-2], z.shape[-1], gen, max_loss).to(device)
        keep_edges = torch.rand(batch, generator=gen) >= edge_dropout
        # 2. the receiver's chain (sim.complement.chain, as the method runs it), then the decoder
        with torch.no_grad():
            edges, image = conditioning(models, model, z, lost)
            if edges is not None:
                edges = edges * keep_edges[:, None, None, None].to(edges)
        scaled = inpaint(models, z, lost, edges, image, gen, scaling_factor=float(model.scaling_factor),
                         stride=stride, steps=loop_steps, prompt_embeds=null)
        l1, lp = _decoded_losses(model, perceptual, scaled, x, lpips_weight)
        loss = l1_weight * l1 + lpips_weight * lp
        terms = {"l1": l1, "lpips": lp}
        if denoise_weight > 0:  # 3. the Canny-based denoising step on the inpainted latents, as it runs
            cleaned = denoise(models, scaled, lost, edges, image, gen, stride=stride, steps=DENOISE_STEPS,
                              strength=FIXED_DENOISE_STRENGTH, prompt_embeds=null)
            l1_den, lp_den = _decoded_losses(model, perceptual, cleaned, x, lpips_weight)
            terms["denoise"] = l1_weight * l1_den + lpips_weight * lp_den
            loss = loss + denoise_weight * terms["denoise"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        for key, value in ((k, v.item()) for k, v in {"loss": loss, **terms}.items()):
            history[key].append(value)
            ema[key] = value if key not in ema else 0.95 * ema[key] + 0.05 * value
        bar.set_postfix({k: f"{v:.4f}" for k, v in ema.items()})
        if (step + 1) % save_every == 0 or step + 1 == steps:
            state = {f"net{i}": net.state_dict() for i, net in enumerate(nets)}
            torch.save({**state, "null": null.detach(), "opt": opt.state_dict(), "step": step + 1,
                        "elapsed": time.perf_counter() - t0,
                        **{f"history_{k}": torch.tensor(v, dtype=torch.float64) for k, v in history.items()}},
                       ckpt_path)
    for net in nets:
        net.eval().requires_grad_(False)
    card = {"stage": "finetune", "base": str(source), "codec": model.name, "codec_weights": codec_weights,
            "steps": steps, "loop_steps": loop_steps, "batch": batch, "crop": crop, "lr": lr,
            "l1_weight": l1_weight, "lpips_weight": lpips_weight, "lpips_net": "vgg" if lpips_weight > 0 else None,
            "edge_dropout": edge_dropout, "max_loss": max_loss, "augment": augment, "image_size": image_size,
            "denoise_weight": denoise_weight,
            "seed": seed, "device": device,
            "wall_s": round(time.perf_counter() - t0, 1), "train_images": [p.name for p in sampler.files],
            "loss_ema": {k: round(v, 4) for k, v in ema.items()},
            "loss_first_last_20": {k: [round(sum(v[:20]) / len(v[:20]), 4), round(sum(v[-20:]) / len(v[-20:]), 4)]
                                   for k, v in history.items() if v},
            "base_training": models.card}
    if models.een_file is not None and models.een_file.resolve() != (out / "een.safetensors").resolve():
        shutil.copy(models.een_file, out / "een.safetensors")
    save_weight_set(out, models.unet, models.controlnets, null.detach(), models.scheduler_config, card,
                    name=models.name, context=models.context, steps=loop_steps)
    (out / "finetune_training.json").write_text(json.dumps(card, indent=2))
    return out
