"""Throughput of the ``sd15`` learned complement: one image at a time vs batches, float32 vs float16.

    .venv/bin/python benchmarks/bench_gpu.py                # SD-1.5-shaped models, 512 × 512, on CUDA
    .venv/bin/python benchmarks/bench_gpu.py --small        # tiny configs, 64 × 64: seconds on a CPU

The models are built here from their configs, with random weights (no download, no network):
a ``UNet2DConditionModel`` with SD 1.5's config, two ``ControlNetModel.from_unet`` copies of it
(inpaint and canny), an ``AutoencoderKL`` with SD's VAE config, an EEN and a zero empty-prompt
embedding. They are saved with ``save_pretrained`` to a temporary folder and loaded through the
project's own path (``load_codec("sd-vae", ...)``, ``make_method("learned", weights="sd15",
dtype=...)``), so what is timed is what a run uses. Random weights cost what trained ones do:
the figures are throughput, not quality (the ControlNets' zero convolutions are as
``from_unet`` leaves them, so their residuals are zero; they still run in full).

The ``learned`` method repairs ``--images`` latents (4 × 64 × 64 for 512², 10 % of their 8 × 8
tiles lost, no denoising step) at ``--steps`` DDIM steps (8, the sd15 default) with both
ControlNets: images/s one by one (batch 1) and in one ``batch`` call (batch ``--images``), in
float32 and, on CUDA, float16; then the largest absolute difference between the batched and the
one-by-one float32 results (one generator per item: they should agree to float rounding). On
CUDA the clocks are read after ``torch.cuda.synchronize()``. Medians over ``--repeat`` runs, after
one warm-up run of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# model configs: SD 1.5's (UNet, VAE, ControlNet conditioning embedding), and tiny ones for --small
CONFIGS = {
    "sd15": {
        "size": 512,
        "unet": {"sample_size": 64, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
                 "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 "cross_attention_dim": 768, "attention_head_dim": 8},
        "conditioning": (16, 32, 96, 256),
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "sample_size": 512,
                "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
                "scaling_factor": 0.18215},
        "een_width": 48,
    },
    "small": {
        "size": 64,
        "unet": {"sample_size": 32, "block_out_channels": (32, 64), "layers_per_block": 2,
                 "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                 "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": 32},
        "conditioning": (16, 32),
        "vae": {"block_out_channels": (32, 64), "sample_size": 64,
                "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2,
                "scaling_factor": 0.18215},
        "een_width": 8,
    },
}


def save_models(config: dict, root: Path) -> dict:
    """Build the seeded random models of ``config`` and save them under ``root``.

    Returns the files as the project reads them: ``{"vae": codec folder, "sd15": load_sd15 keywords}``.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from sim.complement.een import EdgeEstimationNetwork, save_een
    from sim.complement.models import save_prompt_embeds

    stride = 2 ** (len(config["vae"]["block_out_channels"]) - 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config["unet"])
        unet.save_pretrained(root / "pipeline" / "unet", safe_serialization=True)
        for kind in ("inpaint", "canny"):
            net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=config["conditioning"])
            net.save_pretrained(root / kind, safe_serialization=True)
        del unet, net
        AutoencoderKL(**config["vae"]).save_pretrained(root / "vae", safe_serialization=True)
        save_een(EdgeEstimationNetwork(width=config["een_width"], upscale=stride), root / "een.safetensors",
                 {"codec": "sd-vae", "scaling_factor": config["vae"]["scaling_factor"]})
    save_prompt_embeds(root / "empty_prompt.safetensors", torch.zeros(1, 77, config["unet"]["cross_attention_dim"]))
    return {"vae": root / "vae",
            "sd15": {"unet": str(root / "pipeline"), "inpaint": str(root / "inpaint"), "canny": str(root / "canny"),
                     "empty_prompt": str(root / "empty_prompt.safetensors"), "een": str(root / "een.safetensors")}}


def received(n: int, shape: tuple[int, int, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` seeded latents of ``shape`` with 10 % of their 8 × 8 tiles lost (as ``complement-eval`` draws them)."""
    from sim.commands.complement_eval import packet_loss_mask

    rng = np.random.default_rng(0)
    latents = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
    return latents, [packet_loss_mask("tile", 8, *shape[1:], 0.1, rng) for _ in range(n)]


def _seconds(run, device: str, repeat: int) -> tuple[float, list[np.ndarray]]:
    """(median wall seconds of ``run()`` over ``repeat`` runs after one warm-up run, its last result)."""
    result = run()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def measure(codec, sd15: dict, dtype: str, latents, masks, args) -> dict:
    """The ``learned`` method in ``dtype``: images/s one by one and in one batch, and both results
    (each item with its own seeded rng)."""
    from sim.complement import make_method

    method = make_method("learned", codec, weights="sd15", sd15=sd15, device=args.device, dtype=dtype,
                         steps=args.steps)
    n = len(latents)

    def one_by_one():
        return [method(z, m, np.random.default_rng(i), 0.0) for i, (z, m) in enumerate(zip(latents, masks))]

    def batched():
        return method.batch(latents, masks, [np.random.default_rng(i) for i in range(n)], [0.0] * n)

    t1, singles = _seconds(one_by_one, args.device, args.repeat)
    tb, batch = _seconds(batched, args.device, args.repeat)
    return {"batch 1": n / t1, f"batch {n}": n / tb, "singles": singles, "batched": batch}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; prints the figures and returns them: ``{"images_per_s": {(dtype, batch): …},
    "max_abs_diff": float, "largest": float}`` (the float32 batched-vs-one-by-one difference and the
    largest absolute value among the results, latent units)."""
    from sim.codec import load_codec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny configs and 64 × 64 images (runs on a CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="torch device (default: cuda where there is one)")
    ap.add_argument("--images", type=int, default=8, help="latents per batch (default 8)")
    ap.add_argument("--steps", type=int, default=8, help="DDIM steps (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (default 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = CONFIGS["small" if args.small else "sd15"]
    dtypes = ["float32"] + (["float16"] if args.device.startswith("cuda") else [])
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        files = save_models(config, Path(tmp))
        codec = load_codec("sd-vae", {"kind": "uniform", "bits": 6}, "range", str(files["vae"]), args.device)
        stride = codec.model.downscale
        shape = (4, config["size"] // stride, config["size"] // stride)
        latents, masks = received(args.images, shape)
        where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
        print(f"{'small' if args.small else 'sd15'} models: {config['size']}×{config['size']} images, latent "
              f"{'×'.join(map(str, shape))}, {args.steps} DDIM steps, ControlNets inpaint + canny, "
              f"{np.mean(masks):.1%} of cells lost, {args.device} ({where}), median of {args.repeat}")
        rates = {}
        for dtype in dtypes:  # one weight set on the device at a time
            got = measure(codec, files["sd15"], dtype, latents, masks, args)
            for batch in dict.fromkeys(("batch 1", f"batch {args.images}")):
                rates[dtype, batch] = got[batch]
                print(f"  {dtype:8s} {batch:>8s}: {got[batch]:8.2f} images/s")
            if dtype == "float32":
                diff = max(float(np.abs(a - b).max()) for a, b in zip(got["singles"], got["batched"]))
                largest = max(float(np.abs(a).max()) for a in got["singles"])
    print(f"  float32 max |batched − one by one| = {diff:.3g} latent units ({diff / largest:.2g} of the largest "
          f"value, {largest:.3g}; {args.images} images)")
    return {"images_per_s": rates, "max_abs_diff": diff, "largest": largest}


if __name__ == "__main__":
    main()
