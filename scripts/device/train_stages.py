"""The record of how the shipped ``tiny`` complement set was trained on a lent H100 (one run of
this script per experiment, side by side on one GPU), kept so the runs can be repeated.

    python scripts/device/train_stages.py RUN DEADLINE_EPOCH OUTDIR

RUN is a key of :data:`RUNS`. Each stage calls the product's own training functions with the
arguments ``latentcast train`` passes (the equivalent commands are in the model card), on
``TRAIN55`` (``shared/datasets/train/`` without the six validation photos), with TF32 and
cuDNN autotuning on and checkpoints written rarely. A wall-clock guard stops a stage's loop
early (its weights are saved as they are) if the stage's share of the time up to
DEADLINE_EPOCH runs out; the log says when it did, because the step count in the card is then
the planned one, not the one reached. The result is an fp16 copy of the final weight set,
tarred into OUTDIR (split into 15 MB parts, the device tool's file limit).

Environment: ``TRAIN`` (the image folder, default ``.dev/train55``), ``DEV`` (default
``cuda``), ``SCALE`` (multiplies steps and batches: a CPU smoke test uses 0.005), ``BASE`` (the
weight set a stage-3-only run starts from, checked against ``STAGE3_BASE``).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

import sim.training.finetune as ft_mod
import sim.training.latent_diffusion as ld_mod
from sim.complement.models import SHIPPED_TINY, load_weight_set

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
torch.backends.cudnn.benchmark = True

# name: UNet widths, (stage 1, 2, 3 steps), seed of stages 1–2 (stage 3: 11 + seed), the
# fraction of the time at which stages 1 and 2 must end, stage-3 options beyond the defaults of
# `stage3`. Stage 1 batch 96 (crop 128), stage 2 batch 96 (crop 160), stage 3 batch 16 (crop
# 256). Widths None: stage 3 alone, from the weight set of `STAGE3_BASE` (the one shipped when
# the run was made). The `lp*` runs (second GPU session) weigh the VGG-LPIPS term 1–30×, on the
# photos resized as `--image-size 512` does (the folder carried then held them so, see
# README.md); `lp1` is the shipped set.
RUNS = {
    "ft": (None, (0, 0, 1800), 10, (0, 0), {}),
    "base": ((48, 96, 128), (1500, 1200, 700), 0, (0.30, 0.68), {}),
    "wide": ((64, 128, 192), (1500, 1200, 700), 0, (0.30, 0.68), {}),
    "wideA": ((64, 128, 192), (1500, 1000, 700), 1, (0.30, 0.68), {}),
    "wideB": ((64, 128, 192), (1200, 800, 1000), 2, (0.30, 0.58), {}),
    **{f"lp{w}": (None, (0, 0, 1000), 20 + i, (0, 0), {"lpips_weight": float(w), "image_size": 512})
       for i, w in enumerate((1, 3, 10, 30))},
}
# stage-3-only runs: the git commit of the set they start from and its ComplementModels.digest();
# `BASE` (default: the shipped folder) must hold that set, e.g. after `mkdir -p /tmp/base && git archive
# f135e33 sim/complement/weights/tiny | tar -x -C /tmp/base`, BASE=/tmp/base/sim/complement/weights/tiny
STAGE3_BASE = {
    "ft": ("a10d583", "fa158d6d9868be0260af34653a4d3c51d40aa755bf1b4e2fc624730110546f26"),
    **{f"lp{w}": ("f135e33", "bef55da738725ef40b96868135bc01de54903eab21854d2a1711dd0da08a22b7")
       for w in (1, 3, 10, 30)},
}
NAME, DEADLINE, OUT = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
TRAIN = os.environ.get("TRAIN", ".dev/train55")
DEV = os.environ.get("DEV", "cuda")
SCALE = float(os.environ.get("SCALE", 1.0))
EEN = str(SHIPPED_TINY / "een.safetensors")
WORK = Path("/tmp/runs") / NAME
STAGE_END, DONE = [DEADLINE], [0]


def log(msg):
    print(f"[{NAME} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class GuardedBar:
    """Stands in for tqdm in the training loops: yields steps until the stage's end time."""

    def __init__(self, it, total=None, **_):
        self.it, self.total = it, total

    def __iter__(self):
        DONE[0] = 0
        for i in self.it:
            if time.time() > STAGE_END[0]:
                log(f"GUARD: stopped at step {i} of {self.total}")
                return
            DONE[0] += 1
            yield i

    def set_postfix(self, *a, **k):
        pass


ft_mod.tqdm = GuardedBar
ld_mod.tqdm = GuardedBar


def n(x):
    return max(1, int(x * SCALE))


def stage1(out, steps, ch, seed):
    return ld_mod.train_latent_diffusion(TRAIN, out, unet_steps=n(steps), controlnet_steps=0, device=DEV,
                                         batch=n(96), crop=128, seed=seed, unet_channels=ch, save_every=10**9)


def stage2(out, steps, base, seed):
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(EEN, out / "een.safetensors")
    return ld_mod.train_latent_diffusion(TRAIN, out, base=str(base), unet_steps=0, controlnet_steps=n(steps),
                                         device=DEV, batch=n(96), crop=160, seed=seed, inpaint_unet=True,
                                         context="interp", prediction_type="v_prediction", unet_lr2=2e-4,
                                         controls=("edges",), een=EEN, save_every=10**9)


def stage3(out, steps, weights, seed, **opts):
    return ft_mod.finetune_complement(TRAIN, out, weights=str(weights), steps=n(steps), device=DEV,
                                      batch=n(16), crop=256, lr=5e-5, loop_steps=2, augment=True, seed=seed,
                                      save_every=10**9, **opts)


def run(label, fn, end, *args, **opts):
    STAGE_END[0] = min(end, DEADLINE)
    t = time.time()
    out = fn(*args, **opts)
    card = next(json.loads((out / f).read_text()) for f in ("finetune_training.json", "diffusion_training.json")
                if (out / f).exists())
    log(f"{label}: {DONE[0]} steps, loop {card['wall_s']} s, call {time.time() - t:.0f} s")
    return out


def pack(folder):
    """fp16 copy of the weight set (its EEN is the shipped one and stays out), tarred into OUT."""
    m = load_weight_set(folder)
    dst = Path("/tmp/pack") / NAME / "s3"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    m.unet.half().save_pretrained(dst / "unet", safe_serialization=True, variant="fp16")
    m.controlnets[0].net.half().save_pretrained(dst / "controlnet", safe_serialization=True, variant="fp16")
    for f in folder.iterdir():
        if f.suffix == ".json" or f.name == "null_embedding.safetensors":
            shutil.copy(f, dst / f.name)
    tar = OUT / f"{NAME}.s3.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(dst.parent), "s3"], check=True)
    if tar.stat().st_size > 15_000_000:
        subprocess.run(["split", "-b", "15000000", "-d", str(tar), str(tar) + "."], check=True)
        tar.unlink()
    log("packed")


def main():
    ch, (n1, n2, n3), seed, (f1, f2), opts = RUNS[NAME]
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    left = DEADLINE - t0
    if ch is None:
        base = Path(os.environ.get("BASE", SHIPPED_TINY))
        commit, digest = STAGE3_BASE[NAME]
        if load_weight_set(base).digest() != digest:
            sys.exit(f"{NAME} starts from the set at git {commit}; {base} holds another. Extract it: "
                     f"mkdir -p /tmp/base && git archive {commit} sim/complement/weights/tiny | tar -x -C "
                     f"/tmp/base, then BASE=/tmp/base/sim/complement/weights/tiny")
        pack(run("stage 3", stage3, DEADLINE, WORK / "s3", n3, base, 11 + seed, **opts))
        return
    run("stage 1", stage1, t0 + f1 * left, WORK / "s1", n1, ch, seed)
    run("stage 2", stage2, t0 + f2 * left, WORK / "s2", n2, WORK / "s1", seed)
    pack(run("stage 3", stage3, DEADLINE, WORK / "s3", n3, WORK / "s2", 11 + seed, **opts))


if __name__ == "__main__":
    main()
