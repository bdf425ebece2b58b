"""Training recipe of the shipped ``tiny`` codec (``latentcast train codec``).

Loss: L1 + MSE + 0.1·(1 − SSIM) between image and reconstruction. Quantization robustness:
the decoder sees latents with uniform noise of the width of a b-bit uniform quantizer step
(b drawn from 5–8 per sample, range = per-channel min–max of that latent, as the ``uniform``
quantizer sends it), so 5–8-bit latents decode well. Adam (gradient norm clipped to 1), linear warm-up then cosine decay
(at 2e-3 the run diverged after ~250 steps; 6e-4 is stable).
Checkpoints (``checkpoint.pt``, tensors only, loaded with ``weights_only=True``) every
``save_every`` steps; a rerun with the same ``--out`` resumes from the last one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from sim.codec.tiny import save_tiny
from sim.codec.tiny_net import TinyAutoencoder
from sim.training.loop import load_checkpoint, lr_at, save_checkpoint
from sim.training.losses import ssim_torch
from sim.training.patches import PatchSampler

__all__ = ["train_codec", "quantization_noise"]

log = logging.getLogger(__name__)


def quantization_noise(z: torch.Tensor, generator: torch.Generator, bits=(5, 8)) -> torch.Tensor:
    """Add uniform noise of one b-bit quantizer step (per-sample b, per-channel range)."""
    b = z.shape[0]
    flat = z.detach().flatten(2)
    span = (flat.amax(-1) - flat.amin(-1)).clamp_min(1e-6)  # (B, C)
    nbits = torch.randint(bits[0], bits[1] + 1, (b, 1), generator=generator, device="cpu").to(z.device)
    step = span / (2.0 ** nbits.float() - 1)
    u = torch.rand(z.shape, generator=generator, device="cpu").to(z.device) - 0.5
    return z + u * step[..., None, None]


def _lr(step: int, steps: int, base: float, warmup: int = 200) -> float:
    return lr_at(step, steps, base, warmup)


@torch.no_grad()
def latent_scale(model: TinyAutoencoder, sampler: PatchSampler, device: str, batches: int = 8) -> float:
    """1 / std of the latents over training patches (SD's ``scaling_factor`` convention)."""
    zs = [model.encode(sampler.batch(10**9 + i, 16).to(device)) for i in range(batches)]
    return float(1.0 / torch.cat(zs).std())


def train_codec(images: str | Path, out: str | Path, steps: int = 5000, device: str = "cpu",
                batch: int = 16, crop: int = 128, lr: float = 6e-4, seed: int = 0,
                widths=(24, 48, 96), save_every: int = 250) -> Path:
    """Train (or resume) the tiny codec; returns the path of ``tiny_codec.safetensors``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # initial weights only; batches and noise use explicit generators
    model = TinyAutoencoder(widths=tuple(widths)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ckpt_path = out / "checkpoint.pt"
    start, elapsed = load_checkpoint(ckpt_path, device, model=model, opt=opt)
    if start:
        log.info("resuming from step %d", start)
    sampler = PatchSampler(images, crop, seed)
    gen = torch.Generator()
    t0 = time.perf_counter() - elapsed
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train codec", unit="step")
    ema = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        gen.manual_seed(seed * 1_000_003 + step)
        x = sampler.batch(step, batch).to(device)
        z = model.encode(x)
        x_hat = model.decode(quantization_noise(z, gen))
        loss = (x_hat - x).abs().mean() + (x_hat - x).pow(2).mean() + 0.1 * (1 - ssim_torch(x_hat, x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        mse = (x_hat.detach().clamp(-1, 1) - x).pow(2).mean().item() / 4
        psnr = -10 * math.log10(max(mse, 1e-10))
        ema = psnr if ema is None else 0.98 * ema + 0.02 * psnr
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{ema:.2f}")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            save_checkpoint(ckpt_path, step + 1, time.perf_counter() - t0, model=model, opt=opt)
    model.eval()
    card = {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "seed": seed,
            "device": device, "wall_s": round(time.perf_counter() - t0, 1),
            "train_images": [p.name for p in sampler.files], "train_psnr_ema": round(ema or 0.0, 2),
            "scaling_factor": latent_scale(model, sampler, device)}
    weights = out / "tiny_codec.safetensors"
    save_tiny(model, weights, card)
    (out / "training.json").write_text(json.dumps(card, indent=2))
    return weights
