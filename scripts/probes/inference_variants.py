"""Validation probe: inference-time variants of the learned complement (not shipped).

- ``scale``: ``interp + α · (learned − interp)`` in the holes, α ∈ {0.5, 1, 1.5, 2, 3} (does
  the model's correction to harmonic interpolation want shrinking or extrapolating?);
- ``rotations``: the learned complement averaged over quarter turns of the latent and mask
  (test-time augmentation), {0}, {0, 2}, {0, 1, 2, 3};
- ``sampler``: the DDIM loop's own knobs away from what stage 3 fitted — edge-control guidance
  g ∈ {1.5, 2}, η ∈ {0.5, 1}, 1 and 3 steps — each paired with the shipped setting (its
  reference by default, ``shipped``: the interval is the variant's difference to it).

Each variant is scored like ``latentcast complement-eval`` (same masks, LPIPS, paired
difference to ``interp`` or ``--versus``) at 10 % tile loss on a folder of validation photos, never on the
held-out samples: docs/complement.md, *Inference-time variants*, has the numbers.

    .venv/bin/python scripts/probes/inference_variants.py scale --images VAL_DIR --masks 3
    .venv/bin/python scripts/probes/inference_variants.py sampler --images VAL_DIR --masks 10
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sim.codec import load_codec
from sim.commands.complement_eval import evaluate
from sim.complement import COMPLEMENT_METHODS, FillMethod, harmonic_fill, make_method
from sim.images import load_image_set
from sim.lpips import load_lpips


def scale_variants(learned) -> dict:
    last = {}

    def pair(latent, missing, rng):  # one learned + interp call per (latent, mask), shared by the α
        key = (latent.tobytes(), missing.tobytes())
        if last.get("key") != key:
            last.update(key=key, out=(learned(latent, missing, rng), harmonic_fill(latent, missing, rng)))
        return last["out"]

    def scaled(alpha):
        def method(latent, missing, rng):
            learned_out, interp_out = pair(latent, missing, rng)
            return (interp_out + alpha * (learned_out - interp_out)).astype(np.float32)
        return method

    alphas = {f"alpha={a:g}": a for a in (0.5, 1.0, 1.5, 2.0, 3.0)}
    return {name: FillMethod(name, scaled(a)) for name, a in alphas.items()}


def rotation_variants(learned) -> dict:
    def averaged(turns):
        def method(latent, missing, rng):
            outs = []
            for k in turns:
                z = np.ascontiguousarray(np.rot90(latent, k, axes=(1, 2)))
                m = np.ascontiguousarray(np.rot90(missing, k))
                outs.append(np.rot90(learned(z, m, np.random.default_rng(0)), -k, axes=(1, 2)))
            return np.ascontiguousarray(np.mean(outs, axis=0), dtype=np.float32)
        return method

    names = {f"turns={','.join(map(str, t))}": t for t in ((0,), (0, 2), (0, 1, 2, 3))}
    return {name: FillMethod(name, averaged(t)) for name, t in names.items()}


def sampler_variants(codec, weights: str) -> dict:
    cache: dict = {}
    settings = {"shipped": {}, "guidance=1.5": {"guidance_scale": 1.5}, "guidance=2": {"guidance_scale": 2.0},
                "eta=0.5": {"eta": 0.5}, "eta=1": {"eta": 1.0}, "steps=1": {"steps": 1}, "steps=3": {"steps": 3}}
    return {name: make_method("learned", codec, cache=cache, weights=weights, **opts)
            for name, opts in settings.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", choices=["scale", "rotations", "sampler"])
    p.add_argument("--images", required=True, help="folder of validation photos (not the held-out samples)")
    p.add_argument("--masks", type=int, default=3)
    p.add_argument("--loss", type=float, default=0.1)
    p.add_argument("--weights", default="tiny")
    p.add_argument("--versus", help="reference of the paired differences (default: shipped for sampler, else interp)")
    args = p.parse_args()
    torch.set_num_threads(1)
    codec = load_codec("tiny", {"kind": "uniform", "bits": 6}, "range", None)
    if args.variant == "sampler":
        variants = sampler_variants(codec, args.weights)
    else:
        learned = make_method("learned", codec, cache={}, weights=args.weights)
        variants = scale_variants(learned) if args.variant == "scale" else rotation_variants(learned)
    versus = args.versus or ("shipped" if args.variant == "sampler" else "interp")
    methods = {"interp": COMPLEMENT_METHODS["interp"], **variants}
    res = evaluate(codec, load_image_set(args.images, 512), [args.loss], methods,
                   lpips=load_lpips(), masks=args.masks, versus=versus)
    for r in res["rows"]:
        if "d_lpips" in r:
            d, e = r["d_psnr"], r["d_lpips"]
            print(f"{r['method']:>14}  PSNR {r['psnr']:.3f}  LPIPS {r['lpips']:.5f}  ΔPSNR {d['mean']:+.3f} "
                  f"[{d['lo']:+.3f}, {d['hi']:+.3f}]  ΔLPIPS {e['mean']:+.5f} [{e['lo']:+.5f}, {e['hi']:+.5f}]")


if __name__ == "__main__":
    main()
