"""``latentcast train codec``: reproduce the shipped tiny codec's training recipe."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a shipped model (codec) from a folder of images; resumes from --out's checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["codec"], help="which model to train")
    p.add_argument("--images", required=True, help="folder of RGB training images")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, tiny_codec.safetensors)")
    p.add_argument("--steps", type=int, default=5000, help="total optimisation steps (default 5000)")
    p.add_argument("--batch", type=int, default=16, help="patches per step (default 16)")
    p.add_argument("--crop", type=int, default=128, help="patch side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def run(args: argparse.Namespace) -> int:
    import torch

    from sim.errors import ConfigError
    from sim.training.codec import train_codec

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device visible to torch (is a CUDA build of torch installed?)")
    if args.steps < 1 or args.batch < 1 or args.crop % 8 or args.crop < 16:
        raise ConfigError("--steps and --batch must be ≥ 1 and --crop a multiple of 8, ≥ 16")
    path = train_codec(args.images, args.out, steps=args.steps, device=args.device, batch=args.batch,
                       crop=args.crop, seed=args.seed)
    print(path)
    return 0
