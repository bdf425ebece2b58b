"""Time to complement one 512×512 image (10 % of the latent cells lost in 8 × 8 tiles).

    .venv/bin/python benchmarks/bench_complement.py [--threads 2] [--steps 4 6 8 10] [--repeat 5]
    .venv/bin/python benchmarks/bench_complement.py --random   # tiny-architecture random models

The shipped ``tiny`` codec and complement weights by default; ``--random`` builds the same
architectures with random weights (same cost; use it before the shipped weights exist), and
``--codec-weights`` / ``--weights`` point elsewhere. Prints the median over ``--repeat`` runs
of the conditioning (masked-image decode, EEN), then of the whole ``learned`` method per step
count (with and without the denoising step), and of the codec decode that follows it, each as
wall-clock seconds and, in parentheses, process CPU seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _models(args):
    from sim.complement.een import EdgeEstimationNetwork
    from sim.complement.models import SD15_SCHEDULER, ComplementModels, ControlSpec, load_complement_models
    from sim.complement.models import inpainting_unet, tiny_controlnet, tiny_unet

    if not args.random:
        return load_complement_models(args.weights)
    with torch.random.fork_rng():  # the shipped layout: inpainting UNet + edge ControlNet
        torch.manual_seed(0)
        unet = inpainting_unet(tiny_unet()).eval()
        controlnet = tiny_controlnet(unet, ("edges",)).eval()
        een = EdgeEstimationNetwork().eval()
    return ComplementModels("random-tiny", unet, [ControlSpec(controlnet, ("edges",))],
                            torch.zeros(1, 1, unet.config.cross_attention_dim), dict(SD15_SCHEDULER), een,
                            context="interp", steps=2)


def _codec(args):
    from sim.codec import Codec, load_codec
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer
    from sim.codec.tiny import TinyModel
    from sim.codec.tiny_net import TinyAutoencoder

    if args.random and not args.codec_weights:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = TinyAutoencoder(widths=(24, 48, 96))
        return Codec(TinyModel(net, 1.0), make_quantizer("uniform", bits=6), make_entropy_coder("range"))
    return load_codec("tiny", weights=args.codec_weights)


def _median_s(fn, repeat: int) -> str:
    """'wall (cpu)': median wall-clock and process CPU seconds over ``repeat`` runs after a warm-up.

    On a shared machine the wall time includes waiting for a core; the CPU time (all threads)
    is what the same work costs on an idle one with one thread.
    """
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return f"{statistics.median(wall):.3f} ({statistics.median(cpu):.3f})"


def main() -> None:
    from sim.complement.chain import edge_map, holed_image
    from sim.complement.learned import FIXED_DENOISE_STRENGTH, LearnedComplement
    from sim.images import load_sample, resize_center_crop
    from sim.training.masks import random_loss_mask

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 10])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--random", action="store_true", help="random weights, shipped architectures")
    ap.add_argument("--weights", default="tiny", help="complement weight set: tiny | a folder")
    ap.add_argument("--codec-weights", default=None, help="tiny codec weights file (default: shipped)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec, models = _codec(args), _models(args)
    latent = codec.encode(resize_center_crop(load_sample("astronaut"), 512))
    h, w = latent.shape[1:]
    # 10 % of the 8 × 8 tiles lost, the first mask of a seeded draw that has some loss
    gen = torch.Generator().manual_seed(0)
    missing = np.zeros((h, w), dtype=bool)
    while not missing.any():
        missing = random_loss_mask(h, w, gen, "tile", max_loss=0.2).numpy()
    print(f"512×512, latent {h}×{w}, {missing.mean():.1%} of cells lost, {args.threads} threads, "
          f"weights {'random' if args.random else args.weights}, median of {args.repeat}, wall s (CPU s):")
    method = LearnedComplement(codec, models, steps=args.steps[0])
    z = torch.from_numpy(latent)[None]
    lost = torch.from_numpy(missing)[None, None].float()
    with torch.no_grad():
        t_image = _median_s(lambda: holed_image(codec.model, z, lost), args.repeat)
        t_een = _median_s(lambda: edge_map(models.een, z, lost, codec.model.scaling_factor), args.repeat)
    print(f"  conditioning: masked-image decode {t_image}  EEN {t_een}")
    for steps in args.steps:
        for denoise in (False, True):
            # the fixed start, so the step runs (auto skips it on a latent without channel noise)
            m = LearnedComplement(codec, models, steps=steps, denoise=denoise,
                                  denoise_strength=FIXED_DENOISE_STRENGTH)
            t = _median_s(lambda: m(latent, missing, np.random.default_rng(0)), args.repeat)
            print(f"  learned, steps {steps:2d}{' + denoise step (2 steps)' if denoise else ''}: {t}")
    print(f"  codec decode afterwards: {_median_s(lambda: codec.decode(latent), args.repeat)}")


if __name__ == "__main__":
    main()
