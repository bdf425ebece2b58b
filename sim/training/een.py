"""Training recipe of the Edge Estimation Network (``latentcast train een``), for any codec.

pix2pix (Isola et al. 2017) as the first paper uses it (§III-D): generator loss
L_G = L_adv + λ·L_rec, discriminator loss L_D = L_adv, with a conditional 70 × 70 PatchGAN
and the least-squares GAN loss (LSGAN; steadier than the BCE GAN loss on small CPU batches).

**Reconstruction term.** The paper's L_rec is L1 (λ = 1); pix2pix weights its L1 by λ = 100.
Neither works for 1-pixel Canny targets through a sigmoid (measured in 200-step smoke runs,
see docs/complement.md): the L1 optimum of a sparse binary target is its conditional median,
0 wherever an edge's exact pixel is uncertain, so with λ = 100 the map collapses to blank and
the sigmoid saturates (max output 1e-6, F1 0) and stays there; with λ = 1 the adversarial
term dominates and the generator draws edges everywhere (11 % of pixels for 4 % true edges,
precision 0.17). The default is therefore ``recon="bce"``: binary cross-entropy on the
logits, whose gradient (p − y) never vanishes and whose optimum is the edge probability,
weighted λ = 100 as pix2pix so the GAN sharpens rather than invents. ``recon="l1"`` with
``rec_weight=1`` is the paper's objective, kept for comparison.

Data: random multi-scale crops of the training images (:class:`PatchSampler`); targets are
Canny edges of the crop (skimage, σ = ``canny_sigma``); inputs are the codec's latents of the
crop with quantization noise (one 5–8-bit uniform step, as the codec recipe) and random
packet-loss holes (:mod:`sim.training.masks`) whose cells are zeroed and flagged in the mask
channel. Checkpoints (``checkpoint_een.pt``, tensors only, loaded with ``weights_only=True``)
every ``save_every`` steps; a rerun with the same ``out`` resumes. The weights go to
``out/een.safetensors`` with the codec name and scaling factor in the metadata; the held-out
scikit-image samples give edge F1 (2-pixel tolerance) for the card.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sim.complement.een import (
    EDGE_THRESHOLDS, EdgeEstimationNetwork, PatchDiscriminator, canny_edges, edge_counts, edge_f1, een_input, ods_f1,
    save_een,
)
from sim.training.codec import quantization_noise
from sim.training.loop import load_checkpoint, lr_at, save_checkpoint
from sim.errors import ConfigError
from sim.training.masks import loss_masks, random_loss_mask
from sim.training.patches import PatchSampler

__all__ = ["train_een", "evaluate_een", "frozen_module"]

log = logging.getLogger(__name__)


def frozen_module(model) -> None:
    """Freeze a codec ``LatentModel``'s weights (``TinyModel.net`` or a diffusers ``.vae``)."""
    module = model.net if hasattr(model, "net") else model.vae
    module.eval().requires_grad_(False)


def _lr(step: int, steps: int, base: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 2 % of ``base``."""
    return lr_at(step, steps, base, warmup)


@torch.no_grad()
def evaluate_een(een: EdgeEstimationNetwork, model, size: int = 256, canny_sigma: float = 2.0,
                 loss: float = 0.1, tolerance: int = 2, seed: int = 0, device: str = "cpu") -> dict:
    """Edge F1 on scikit-image's held-out colour samples: without loss and with ``loss`` tile loss.

    ``model`` is the codec's ``LatentModel``. The tile-loss masks are seeded (``seed``).
    """
    from sim.images import SAMPLE_NAMES, load_sample, resize_center_crop, to_tensor

    een.eval()
    x = torch.cat([to_tensor(resize_center_crop(load_sample(n), size)) for n in SAMPLE_NAMES]).to(device)
    z = model.encode(x).float()
    target = canny_edges(x, canny_sigma)
    gen = torch.Generator().manual_seed(seed)
    h, w = z.shape[-2:]
    holes = torch.stack([random_loss_mask(h, w, gen, "tile", max_loss=min(1.0, 2 * loss)) for _ in SAMPLE_NAMES])
    out = {}
    for name, lost in (("no_loss", torch.zeros_like(holes)), ("tile_loss", holes)):
        lost = lost[:, None].float().to(device)
        pred = een(een_input(z, lost, model.scaling_factor)).cpu()
        out[name] = {k: round(v, 4) for k, v in edge_f1(pred, target, tolerance).items()}
        best = ods_f1([edge_counts(pred, target, tolerance, EDGE_THRESHOLDS)])
        out[name]["best_f1"], out[name]["best_threshold"] = round(best["f1"], 4), best["threshold"]
    out["images"], out["size"], out["tolerance_px"] = list(SAMPLE_NAMES), size, tolerance
    return out


def train_een(images: str | Path, out: str | Path, codec: str = "tiny", codec_weights: str | None = None,
              steps: int = 3000, device: str = "cpu", batch: int = 8, crop: int = 128, lr: float = 2e-4,
              rec_weight: float = 100.0, recon: str = "bce", edge_weight: float = 1.0, width: int = 48,
              canny_sigma: float = 2.0, max_loss: float = 0.4,
              seed: int = 0, save_every: int = 250, evaluate: bool = True) -> Path:
    """Train (or resume) an EEN for ``codec``'s latents; returns the path of ``een.safetensors``.

    Parameters
    ----------
    images : path
        Folder of RGB training images.
    out : path
        Output folder: ``checkpoint_een.pt``, ``een.safetensors``, ``een_training.json``.
    codec, codec_weights : str
        The latent model (``tiny`` | ``sd-vae`` | ``taesd``) and its weights, as in scenarios.
    steps, batch, crop, lr : training length, patches per step, patch side (multiple of 8 × 4),
        Adam learning rate (β₁ = 0.5 as pix2pix) for both networks.
    rec_weight : float
        λ of L_G = L_adv + λ·L_rec (see the module notes).
    recon : {"bce", "l1"}
        Reconstruction term; ``edge_weight`` weights edge pixels in it (BCE ``pos_weight``).
    width : int
        EEN width (48: ≈ 1 M parameters, ~0.1 s for a 512 × 512 image on one core).
    """
    from sim.codec import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(codec, codec_weights, device)
    frozen_module(model)
    stride = int(getattr(model, "downscale", 8))
    if recon not in ("bce", "l1"):
        raise ConfigError(f"recon = {recon!r}: expected 'bce' or 'l1'")
    if crop % (4 * stride):
        raise ConfigError(f"crop = {crop}: expected a multiple of {4 * stride} (4 × the latent stride)")
    sf = float(model.scaling_factor)
    with torch.random.fork_rng():  # initial weights only; batches, masks and noise use explicit generators
        torch.manual_seed(seed)
        gen_net = EdgeEstimationNetwork(4, width, stride).to(device)
        disc = PatchDiscriminator(4 + 1).to(device)
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    ckpt_path = out / "checkpoint_een.pt"
    start, elapsed = load_checkpoint(ckpt_path, device, generator=gen_net, discriminator=disc,
                                     opt_g=opt_g, opt_d=opt_d)
    if start:
        log.info("resuming EEN training from step %d", start)
    sampler = PatchSampler(images, crop, seed)
    gen = torch.Generator()
    t0 = time.perf_counter() - elapsed
    ema: dict[str, float] = {}
    history: dict[str, list[float]] = {}  # this run's per-step values, for the card
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train een", unit="step")
    for step in bar:
        for opt in (opt_g, opt_d):
            for g in opt.param_groups:
                g["lr"] = _lr(step, steps, lr)
        gen.manual_seed(seed * 1_000_003 + step)
        # 1. a batch: crops, their Canny edges, noisy holed latents
        x = sampler.batch(step, batch)
        target = canny_edges(x, canny_sigma).to(device)
        x = x.to(device)
        with torch.no_grad():
            z = quantization_noise(model.encode(x).float(), gen)
        lost = loss_masks(batch, z.shape[-2], z.shape[-1], gen, max_loss).to(device)
        inp = een_input(z, lost, sf)
        logits = gen_net.logits(inp)
        pred = torch.sigmoid(logits)
        # 2. discriminator: L_D = ½ [(D(x, y) − 1)² + D(x, G(x))²]   (LSGAN)
        d_loss = 0.5 * ((disc(inp, target) - 1).pow(2).mean() + disc(inp, pred.detach()).pow(2).mean())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # 3. generator: L_G = (D(x, G(x)) − 1)² + λ·|y − G(x)|
        adv = (disc(inp, pred) - 1).pow(2).mean()
        l1 = (pred - target).abs().mean()
        if recon == "l1":
            rec = ((pred - target).abs() * (1 + (edge_weight - 1) * target)).mean()
        else:
            rec = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(edge_weight))
        g_loss = adv + rec_weight * rec
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        torch.nn.utils.clip_grad_norm_(gen_net.parameters(), 1.0)
        opt_g.step()
        stats = {"rec": rec.item(), "l1": l1.item(), "adv": adv.item(), "d": d_loss.item()}
        if step % 25 == 0 or step + 1 == steps:
            stats["f1"] = edge_f1(pred.detach(), target)["f1"]
        for k, v in stats.items():
            history.setdefault(k, []).append(v)
            ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
        bar.set_postfix({k: f"{v:.4f}" for k, v in ema.items()})
        if (step + 1) % save_every == 0 or step + 1 == steps:
            save_checkpoint(ckpt_path, step + 1, time.perf_counter() - t0, generator=gen_net,
                            discriminator=disc, opt_g=opt_g, opt_d=opt_d)
    gen_net.eval()
    card = {"codec": model.name, "codec_weights": codec_weights, "scaling_factor": sf, "steps": steps,
            "batch": batch, "crop": crop, "lr": lr, "recon": recon, "rec_weight": rec_weight,
            "edge_weight": edge_weight, "gan": "lsgan", "width": width,
            "canny": {"library": "skimage", "sigma": canny_sigma}, "max_loss": max_loss, "seed": seed,
            "device": device, "wall_s": round(time.perf_counter() - t0, 1),
            "train_images": [p.name for p in sampler.files],
            "train_ema": {k: round(v, 4) for k, v in ema.items()},
            "first_last_20": {k: [round(sum(v[:20]) / len(v[:20]), 4), round(sum(v[-20:]) / len(v[-20:]), 4)]
                              for k, v in history.items() if v}}
    if evaluate:
        card["heldout_edge_f1"] = evaluate_een(gen_net, model, canny_sigma=canny_sigma, device=device)
    weights = out / "een.safetensors"
    save_een(gen_net, weights, card)
    (out / "een_training.json").write_text(json.dumps(card, indent=2))
    return weights

