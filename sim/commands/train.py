"""``latentcast train codec|een|diffusion|finetune``: reproduce the shipped tiny models' training recipes."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = ("train a shipped model (codec, EEN, latent UNet + ControlNet) from a folder of images; "
        "resumes from --out's checkpoint")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["codec", "een", "diffusion", "finetune"],
                   help="codec: the tiny autoencoder; een: the Edge Estimation Network for --codec's latents; "
                        "diffusion: the tiny latent UNet, then its ControlNet (two stages); finetune: a complement "
                        "weight set through its own inpainting loop and the decoder, on L1 + VGG-LPIPS")
    p.add_argument("--images", required=True, help="folder of RGB training images")
    p.add_argument("--out", required=True, help="output folder (checkpoint + weights); een and diffusion "
                                                "may share one folder: it becomes a complement weight set")
    p.add_argument("--steps", type=int, default=None,
                   help="total optimisation steps (codec 5000, een 3000, finetune 600; "
                        "diffusion: --unet-steps + --controlnet-steps)")
    p.add_argument("--weights", default=None,
                   help="finetune: the complement weight set to start from (default: the shipped tiny set)")
    p.add_argument("--lr", type=float, default=None, help="finetune: peak lr (default 5e-5)")
    p.add_argument("--lpips-weight", type=float, default=1.0,
                   help="finetune: weight of the VGG-LPIPS term (default 1; 0 = L1 only, no VGG weights needed)")
    p.add_argument("--l1-weight", type=float, default=1.0, help="finetune: weight of the pixel L1 term (default 1)")
    p.add_argument("--loop-steps", type=int, default=None,
                   help="finetune: DDIM steps of the unrolled loop (default: the weight set's steps)")
    p.add_argument("--augment", action="store_true",
                   help="finetune: also turn patches by random quarter turns and put their colour channels "
                        "in a random order")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="finetune: resize every training image so its shorter side is N pixels before cropping "
                        "(the scale complement-eval --size N sees; default: multi-scale crops of the originals)")
    p.add_argument("--denoise-weight", type=float, default=0.0, metavar="W",
                   help="finetune: also train the Canny-based denoising step (learned-denoise) on the "
                        "inpainted latents, its L1 + LPIPS weighted W (default 0: inpainting only)")
    p.add_argument("--unet-steps", type=int, default=3000, help="diffusion stage 1 steps (default 3000)")
    p.add_argument("--controlnet-steps", type=int, default=1500, help="diffusion stage 2 steps (default 1500)")
    p.add_argument("--controlnet-lr", type=float, default=5e-4, help="diffusion stage 2 peak lr (default 5e-4)")
    p.add_argument("--unet-lr2", type=float, default=0.0,
                   help="diffusion stage 2: also fine-tune the UNet at this peak lr (default 0: frozen, as ControlNet)")
    p.add_argument("--inpaint-unet", action="store_true",
                   help="diffusion stage 2: widen the UNet to an inpainting UNet ([latents, mask, masked latent]) "
                        "and fine-tune it at --unet-lr2")
    p.add_argument("--context", choices=["masked", "interp"], default="masked",
                   help="diffusion, with --inpaint-unet: the UNet's context channels: the masked latent "
                        "(SD-inpainting) or the holes filled by harmonic interpolation (default masked)")
    p.add_argument("--prediction", choices=["epsilon", "v_prediction"], default="epsilon",
                   help="diffusion: what the UNet predicts (default epsilon, SD 1.5's; v_prediction as SD 2)")
    p.add_argument("--controls", default="edges,latent",
                   help="diffusion: the ControlNet's inputs, comma-separated: edges, canny, latent, inpaint "
                        "(default edges,latent)")
    p.add_argument("--unet-channels", default=None, metavar="C1,C2,C3",
                   help="diffusion stage 1: the UNet's widths per level, three multiples of 16 "
                        "(default 48,96,128; the shipped set's are 64,128,192)")
    p.add_argument("--base", default=None,
                   help="diffusion: start stage 2 from this weight set's UNet + null embedding (needs --unet-steps 0)")
    p.add_argument("--een", default=None,
                   help="diffusion: EEN weights whose estimates replace Canny edges in stage 2 (as at run time)")
    p.add_argument("--known-weight", type=float, default=0.1,
                   help="diffusion stage 2: loss weight of received cells, lost cells weigh 1 (default 0.1)")
    p.add_argument("--x0-weight-cap", type=float, default=10.0,
                   help="diffusion stage 2: cap of the per-timestep weight (1−ᾱ)/ᾱ on the ε error "
                        "(default 10; 1 = plain ε)")
    p.add_argument("--batch", type=int, default=None, help="patches per step (codec 16, een/diffusion 8)")
    p.add_argument("--crop", type=int, default=128, help="patch side in pixels (default 128)")
    p.add_argument("--codec", default="tiny",
                   help="een/diffusion: the codec whose latents to learn: tiny | sd-vae | taesd (default tiny)")
    p.add_argument("--codec-weights", default=None, help="een/diffusion: its weights (default: shipped tiny)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def run(args: argparse.Namespace) -> int:
    import torch

    from sim.errors import ConfigError

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device visible to torch (is a CUDA build of torch installed?)")
    batch = args.batch or (16 if args.what == "codec" else 8)
    if (args.steps is not None and args.steps < 1) or batch < 1 or args.crop % 8 or args.crop < 16:
        raise ConfigError("--steps and --batch must be ≥ 1 and --crop a multiple of 8, ≥ 16")
    if args.what == "codec":
        from sim.training.codec import train_codec

        path = train_codec(args.images, args.out, steps=args.steps or 5000, device=args.device, batch=batch,
                           crop=args.crop, seed=args.seed)
    elif args.what == "een":
        from sim.training.een import train_een

        path = train_een(args.images, args.out, codec=args.codec, codec_weights=args.codec_weights,
                         steps=args.steps or 3000, device=args.device, batch=batch, crop=args.crop, seed=args.seed)
    elif args.what == "finetune":
        from sim.training.finetune import finetune_complement

        path = finetune_complement(args.images, args.out, weights=args.weights, steps=args.steps or 600,
                                   codec=args.codec, codec_weights=args.codec_weights, device=args.device,
                                   batch=batch, crop=args.crop, lr=args.lr or 5e-5, l1_weight=args.l1_weight,
                                   lpips_weight=args.lpips_weight, loop_steps=args.loop_steps, augment=args.augment,
                                   image_size=args.image_size, denoise_weight=args.denoise_weight, seed=args.seed)
    else:
        from sim.training.latent_diffusion import train_latent_diffusion

        if args.steps is not None:
            raise ConfigError("--steps: diffusion trains in two stages; use --unet-steps and --controlnet-steps")
        if args.unet_steps < 0 or args.controlnet_steps < 0 or args.unet_steps + args.controlnet_steps < 1:
            raise ConfigError("--unet-steps and --controlnet-steps must be ≥ 0, one of them ≥ 1")
        channels = {}
        if args.unet_channels is not None:
            if args.base is not None:
                raise ConfigError(f"--unet-channels {args.unet_channels} with --base {args.base}: "
                                  f"the base's UNet keeps its own widths")
            try:
                channels["unet_channels"] = tuple(int(c) for c in args.unet_channels.split(","))
            except ValueError:
                raise ConfigError(f"--unet-channels {args.unet_channels!r}: expected three comma-separated "
                                  f"integers, e.g. 48,96,128") from None
        path = train_latent_diffusion(args.images, args.out, codec=args.codec, codec_weights=args.codec_weights,
                                      unet_steps=args.unet_steps, controlnet_steps=args.controlnet_steps,
                                      device=args.device, batch=batch, crop=args.crop, seed=args.seed,
                                      controlnet_lr=args.controlnet_lr, unet_lr2=args.unet_lr2,
                                      controls=tuple(k.strip() for k in args.controls.split(",") if k.strip()),
                                      base=args.base, een=args.een, known_weight=args.known_weight,
                                      x0_weight_cap=args.x0_weight_cap, inpaint_unet=args.inpaint_unet,
                                      prediction_type=args.prediction, context=args.context, **channels)
    print(path)
    return 0
