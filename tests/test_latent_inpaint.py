"""The complement loop and methods with tiny seeded random models: the ``tiny`` and ``sd15`` paths,
known cells kept exactly, seeded determinism (pinned slices), wrong/all/no-loss masks, loading
errors, pixel baselines, the registry factory and the diffusion training recipe."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import wake_controlnet

from sim.complement import COMPLEMENT_METHODS, ComplementMethod
from sim.complement.chain import control_images
from sim.complement.latent_inpaint import Control, _embedded_once, denoise_latents
from sim.complement.learned import (
    CODEC_METHODS, LearnedComplement, NeedsCodec, PixelDiffusion, PixelTelea, check_options, make_method,
)
from sim.complement.models import (
    SD15_SCHEDULER, ComplementModels, ControlSpec, control_channels, inpainting_unet, latent_control,
    load_complement_models, load_sd15, load_weight_set, tiny_controlnet,
)
from sim.errors import ConfigError, InputError, ModelLoadError

# out[0, 2:5, 2:5] (lost cells) for the seeded models, latent and rng below; regenerate only on purpose.
EXPECTED_TINY = [
    [-9.44699, -9.85848, -99.11946],
    [6.21899, -4.00828, -26.0558],
    [-84.76464, 22.68111, -39.14894],
]
EXPECTED_SD15 = [
    [-254.09468, 109.60751, -86.04182],
    [48.94675, 98.73251, -34.31944],
    [-98.92961, -15.07104, -79.49277],
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _case(h: int = 8, w: int = 8):
    """A seeded latent (4, h, w) and a mask with a 3 × 4 hole and a lost row (True = lost)."""
    latent = np.random.default_rng(0).standard_normal((4, h, w)).astype(np.float32)
    missing = np.zeros((h, w), dtype=bool)
    missing[2:5, 2:6] = True
    missing[h - 1] = True
    return latent, missing


def _check_slice(got: np.ndarray, expected: list) -> None:
    assert np.allclose(got, expected, rtol=1e-3, atol=1e-3), (
        f"pinned slice changed; if on purpose, paste: {[[round(float(v), 5) for v in r] for r in got]}")


@pytest.fixture(scope="module")
def tiny_models(tiny_complement_dir):
    return load_weight_set(tiny_complement_dir)


@pytest.fixture(scope="module")
def sd_codec(tiny_sd_vae):
    from sim.codec import Codec
    from sim.codec.diffusers_backends import SDVAEModel
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer

    return Codec(SDVAEModel(tiny_sd_vae), make_quantizer("uniform", bits=6), make_entropy_coder("range"))


@pytest.fixture(scope="module")
def sd15_models(tiny_sd15_dirs):
    return load_sd15(**{k: str(v) for k, v in tiny_sd15_dirs.items()})


# -- the tiny path -------------------------------------------------------------------------

def test_tiny_known_cells_exact_and_pinned(random_tiny_codec, tiny_models):
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=2)
    latent, missing = _case()
    out = method(latent, missing, np.random.default_rng(0))
    assert out.shape == latent.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out[:, ~missing], latent[:, ~missing])  # bit for bit
    assert not np.allclose(out[:, missing], latent[:, missing])
    _check_slice(out[0, 2:5, 2:5], EXPECTED_TINY)
    assert not method.alters_known


def test_seeded_determinism(random_tiny_codec, tiny_models):
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=2)
    latent, missing = _case()
    a = method(latent, missing, np.random.default_rng(5))
    b = method(latent, missing, np.random.default_rng(5))
    c = method(latent, missing, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_run_returns_the_conditioning(random_tiny_codec, tiny_models):
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=1)
    latent, missing = _case()
    res = method.run(latent, missing, torch.Generator().manual_seed(0))
    assert res["edges"].shape == (64, 64) and 0 <= res["edges"].min() and res["edges"].max() <= 1
    assert res["masked_image"] is None  # the tiny set's inpaint control is the latent, no decode needed


def test_latent_control_is_the_received_latent_upsampled():
    scaled = torch.arange(8.0).reshape(1, 2, 2, 2)
    lost = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    got = latent_control(scaled, lost, 2)
    assert got.shape == (1, 3, 4, 4)
    expected_c1 = torch.tensor([[4.0, 4.0, 0.0, 0.0], [4.0, 4.0, 0.0, 0.0],
                                [6.0, 6.0, 7.0, 7.0], [6.0, 6.0, 7.0, 7.0]])
    assert torch.equal(got[0, 1], expected_c1)  # lost cell (0, 1) is 0, every cell a 2 × 2 block
    assert torch.equal(got[0, 2], torch.kron(lost[0, 0], torch.ones(2, 2)))  # the mask channel


def _controls(method, *args):
    """The control images ``method``'s weight set gets (``control_images`` at the tiny codec's stride 8)."""
    return control_images(method.models.controlnets, *args, 8)


def test_controls_carry_edges_latent_and_mask(random_tiny_codec, tiny_models):
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=1)
    latent, missing = _case()
    scaled = torch.from_numpy(latent)[None] * 0.5
    lost = torch.from_numpy(missing)[None, None].float()
    edges = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    (inpaint,) = _controls(method, scaled, lost, edges, None, "inpaint")
    assert torch.equal(inpaint.image, torch.cat([edges, latent_control(scaled, lost, 8)], 1))
    assert inpaint.image[0, 5, 16:40, 16:48].eq(1).all() and inpaint.image[0, 1:5, 16:40, 16:48].eq(0).all()
    (denoise,) = _controls(method, scaled, lost, edges, None, "denoise")  # edges only: every cell lost
    assert denoise.image[0, 1:5].eq(0).all() and denoise.image[0, 5].eq(1).all()
    (noedge,) = _controls(method, scaled, lost, None, None, "inpaint")  # the no-edge ablation: zero edges
    assert noedge.image[0, 0].eq(0).all() and torch.equal(noedge.image[:, 1:], inpaint.image[:, 1:])


def test_no_edge_ablation_zeroes_a_sole_edge_controlnet_and_drops_a_companion(random_tiny_codec, tiny_models):
    with torch.random.fork_rng():
        torch.manual_seed(2)
        edge_net = tiny_controlnet(tiny_models.unet, ("edges",))
        inpaint_net = tiny_controlnet(tiny_models.unet, ("inpaint",))
    base = (tiny_models.unet,)
    rest = (tiny_models.prompt_embeds, tiny_models.scheduler_config, tiny_models.een)
    sole = LearnedComplement(random_tiny_codec,
                             ComplementModels("e", *base, [ControlSpec(edge_net, ("edges",))], *rest))
    pair = LearnedComplement(random_tiny_codec, ComplementModels(
        "p", *base, [ControlSpec(inpaint_net, ("inpaint",)), ControlSpec(edge_net, ("edges",))], *rest))
    latent, missing = _case()
    scaled, lost = torch.from_numpy(latent)[None], torch.from_numpy(missing)[None, None].float()
    (only,) = _controls(sole, scaled, lost, None, None, "inpaint")  # kept, on zero edges
    assert only.net is edge_net and only.image.shape == (1, 1, 64, 64) and only.image.eq(0).all()
    image = torch.zeros(1, 3, 64, 64)
    (kept,) = _controls(pair, scaled, lost, None, image, "inpaint")  # the canny-like net is left out
    assert kept.net is inpaint_net
    assert _controls(sole, scaled, lost, None, None, "denoise") == []  # no edges: no edge-only denoising


def test_masked_image_control(random_tiny_codec, tiny_models):
    """A ControlNet on [edges, inpaint] (as SD's inpaint ControlNet) gets the decoded holed image."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = tiny_controlnet(tiny_models.unet, ("edges", "inpaint"))
        wake_controlnet(net)
    models = ComplementModels("inpaint", tiny_models.unet, [ControlSpec(net, ("edges", "inpaint"))],
                              tiny_models.prompt_embeds, tiny_models.scheduler_config, tiny_models.een)
    method = LearnedComplement(random_tiny_codec, models, steps=1)
    latent, missing = _case()
    res = method.run(latent, missing, torch.Generator().manual_seed(0))
    img = res["masked_image"]
    assert img.shape == (3, 64, 64)
    assert (img[:, 16:40, 16:48] == -1).all() and (img[:, :16] >= 0).all()  # lost cells ×8 are −1
    assert np.array_equal(res["latent"][:, ~missing], latent[:, ~missing])


def test_no_cell_lost(random_tiny_codec, tiny_models):
    latent, _ = _case()
    none = np.zeros(latent.shape[1:], dtype=bool)
    out = LearnedComplement(random_tiny_codec, tiny_models, steps=2)(latent, none, np.random.default_rng(0))
    assert np.array_equal(out, latent) and out is not latent
    # with the denoising step at a fixed start every cell is repaired, even with nothing lost
    den = LearnedComplement(random_tiny_codec, tiny_models, steps=2, denoise=True, denoise_strength=0.2)
    out = den(latent, none, np.random.default_rng(0))
    assert den.alters_known and np.isfinite(out).all() and not np.array_equal(out, latent)


def test_all_cells_lost_generates_deterministically(random_tiny_codec, tiny_models):
    latent, _ = _case()
    every = np.ones(latent.shape[1:], dtype=bool)
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=2)
    a = method(latent, every, np.random.default_rng(1))
    assert np.isfinite(a).all() and np.array_equal(a, method(latent, every, np.random.default_rng(1)))
    assert np.array_equal(a, method(latent * 0 + 7, every, np.random.default_rng(1)))  # nothing received: input unused


@pytest.mark.parametrize("missing, match", [
    (np.zeros((8, 9), dtype=bool), "bool mask"),
    (np.zeros((8, 8), dtype=np.uint8), "bool mask"),
    (np.zeros((1, 8, 8), dtype=bool), "bool mask"),
])
def test_wrong_mask_is_refused(random_tiny_codec, tiny_models, missing, match):
    latent, _ = _case()
    with pytest.raises(InputError, match=match):
        LearnedComplement(random_tiny_codec, tiny_models, steps=1)(latent, missing, np.random.default_rng(0))


def test_wrong_channels_are_refused(random_tiny_codec, tiny_models):
    latent, missing = _case()
    with pytest.raises(InputError, match="channels"):
        LearnedComplement(random_tiny_codec, tiny_models, steps=1)(latent[:3], missing, np.random.default_rng(0))


def test_variants_run(random_tiny_codec, tiny_models):
    latent, missing = _case()
    base = LearnedComplement(random_tiny_codec, tiny_models, steps=2)(latent, missing, np.random.default_rng(0))
    for kw in ({"edges": False}, {"strength": 0.5}, {"guidance_scale": 2.0}, {"eta": 1.0}):
        out = LearnedComplement(random_tiny_codec, tiny_models, steps=2, **kw)(latent, missing,
                                                                                np.random.default_rng(0))
        assert np.isfinite(out).all() and np.array_equal(out[:, ~missing], latent[:, ~missing])
        assert not np.array_equal(out, base), kw
    den = LearnedComplement(random_tiny_codec, tiny_models, steps=2, denoise=True, denoise_strength=0.2)(
        latent, missing, np.random.default_rng(0))
    assert not np.array_equal(den[:, ~missing], latent[:, ~missing])


@pytest.mark.parametrize("kw, match", [
    ({"steps": 0}, "steps"), ({"strength": 0.0}, "strength"), ({"steps": 1, "strength": 0.5}, "runs no step"),
    ({"denoise_strength": 1.0}, "denoise_strength"), ({"denoise_strength": "automatic"}, "or 'auto'"),
    ({"guidance_scale": 0.5}, "guidance_scale"),
])
def test_bad_options_are_refused(random_tiny_codec, tiny_models, kw, match):
    with pytest.raises(ConfigError, match=match):
        LearnedComplement(random_tiny_codec, tiny_models, **kw)


def test_missing_een_and_stride_mismatch(random_tiny_codec, tiny_models, sd_codec):
    no_een = ComplementModels("t", tiny_models.unet, tiny_models.controlnets, tiny_models.prompt_embeds,
                              tiny_models.scheduler_config, None)
    with pytest.raises(ConfigError, match="no EEN"):
        LearnedComplement(random_tiny_codec, no_een)
    LearnedComplement(random_tiny_codec, no_een, edges=False)  # the no-edge ablation needs none
    with pytest.raises(ConfigError, match="latent stride 2"):
        LearnedComplement(sd_codec, tiny_models)


# -- the sd15 path -------------------------------------------------------------------------

def test_sd15_path_runs_from_folders(sd_codec, sd15_models):
    assert [s.inputs for s in sd15_models.controlnets] == [("inpaint",), ("canny",)]
    assert sd15_models.prompt_embeds.shape == (1, 77, 32) and sd15_models.downscale == 2
    assert sd15_models.scheduler_config["beta_schedule"] == "scaled_linear"
    method = LearnedComplement(sd_codec, sd15_models, steps=2)
    latent, missing = _case(16, 16)
    out = method(latent, missing, np.random.default_rng(0))
    assert np.array_equal(out[:, ~missing], latent[:, ~missing]) and np.isfinite(out).all()
    assert np.array_equal(out, method(latent, missing, np.random.default_rng(0)))
    _check_slice(out[0, 2:5, 2:5], EXPECTED_SD15)
    for kw in ({"edges": False}, {"denoise": True}, {"denoise": True, "denoise_strength": 0.2}):
        res = LearnedComplement(sd_codec, sd15_models, steps=2, **kw)(latent, missing, np.random.default_rng(0))
        assert np.isfinite(res).all()
    noisy = LearnedComplement(sd_codec, sd15_models, steps=2, denoise=True)
    res = noisy(latent, missing, np.random.default_rng(0), 0.3)  # the noise-matched start, canny control
    assert np.isfinite(res).all() and not np.array_equal(res[:, ~missing], latent[:, ~missing])


def test_sd15_loading_errors(tiny_sd15_dirs, tmp_path):
    dirs = {k: str(v) for k, v in tiny_sd15_dirs.items()}
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_sd15(**{**dirs, "inpaint": str(tmp_path / "nowhere")})
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_sd15(**{**dirs, "canny": str(tmp_path)})
    from sim.complement.models import save_prompt_embeds

    save_prompt_embeds(tmp_path / "wide.safetensors", torch.zeros(1, 77, 48))
    with pytest.raises(ModelLoadError, match="cross_attention_dim 32"):
        load_sd15(**{**dirs, "empty_prompt": str(tmp_path / "wide.safetensors")})
    one = load_sd15(**{**dirs, "canny": None})
    assert [s.inputs for s in one.controlnets] == [("inpaint",)]


def test_weight_set_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="complement.json"):
        load_weight_set(tmp_path)
    with pytest.raises(ConfigError, match="weights"):
        load_complement_models(str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="sd15"):
        load_complement_models("tiny", sd15={"unet": "x"})
    with pytest.raises(ConfigError, match="complement.sd15.unets: unknown key"):
        load_complement_models("sd15", sd15={"unets": "x"})


# -- the loop itself -------------------------------------------------------------------------

def test_loop_keeps_known_exactly_and_checks_shapes(tiny_models):
    unet, spec = tiny_models.unet, tiny_models.controlnets[0]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 8, 8, generator=g)
    image = torch.rand(1, control_channels(spec.inputs), 64, 64, generator=g)
    ctl = [Control(spec.net, image)]
    kw = dict(encoder_hidden_states=tiny_models.prompt_embeds, controls=ctl, steps=2)
    out = denoise_latents(unet, SD15_SCHEDULER, z, generator=torch.Generator().manual_seed(0),
                          keep=torch.ones(1, 1, 8, 8), **kw)
    assert torch.equal(out, z)
    with pytest.raises(InputError, match="keep mask"):
        denoise_latents(unet, SD15_SCHEDULER, z, generator=g, keep=torch.ones(1, 1, 8, 7), **kw)
    with pytest.raises(InputError, match="control image"):
        bad = [Control(spec.net, image[..., :32])]
        denoise_latents(unet, SD15_SCHEDULER, z, generator=g, **{**kw, "controls": bad})
    with pytest.raises(ConfigError, match="strength"):
        denoise_latents(unet, SD15_SCHEDULER, z, generator=g, strength=1.5, **kw)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_noise_matched_start_is_the_latest_that_covers_sigma(tiny_models, steps):
    """N = noise_matched_total(σ): its trailing schedule's first timestep has σ_t ≥ σ, N + 1's
    does not (checked against diffusers' own timesteps); below σ_0 nothing runs."""
    from diffusers import DDIMScheduler

    from sim.complement.chain import noise_matched_total

    config = tiny_models.scheduler_config
    sched = DDIMScheduler.from_config(config, timestep_spacing="trailing")
    alphas = sched.alphas_cumprod.double().numpy()
    level = np.sqrt((1 - alphas) / alphas)

    def first(n: int) -> int:  # the first of the last `steps` of n trailing timesteps
        sched.set_timesteps(n)
        return int(sched.timesteps[n - steps])

    assert noise_matched_total(config, 0.99 * level[0], steps) is None
    for sigma in (level[0], 0.05, 0.1, 0.3, 0.57, 1.0, 3.0):
        n = noise_matched_total(config, sigma, steps)
        assert steps <= n <= 1000 and level[first(n)] >= sigma
        assert n == 1000 or level[first(n + 1)] < sigma, (sigma, n)
    assert noise_matched_total(config, 2 * level[-1], steps) == steps and first(steps) == 999


def test_present_sigma_tops_the_noise_up_instead_of_adding_it(tiny_models):
    """With σ equal to the first timestep's level no noise is added (the generator is unused at
    η = 0); with less, the missing part is drawn; with keep it is refused."""
    from diffusers import DDIMScheduler

    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(encoder_hidden_states=tiny_models.prompt_embeds, steps=10, strength=0.2)
    sched = DDIMScheduler.from_config(tiny_models.scheduler_config, timestep_spacing="trailing")
    sched.set_timesteps(10)
    alpha = float(sched.alphas_cumprod[int(sched.timesteps[8])])
    exact = float(np.sqrt((1 - alpha) / alpha))

    def run(seed: int, sigma: float) -> torch.Tensor:
        return denoise_latents(tiny_models.unet, tiny_models.scheduler_config, z,
                               generator=torch.Generator().manual_seed(seed), present_sigma=sigma, **kw)

    assert torch.equal(run(0, exact), run(1, exact))
    assert not torch.equal(run(0, exact / 2), run(1, exact / 2))
    assert not torch.allclose(run(0, exact), run(0, 0.0))        # 0: a full level of fresh noise on top
    with pytest.raises(InputError, match="present_sigma"):
        denoise_latents(tiny_models.unet, tiny_models.scheduler_config, z, generator=torch.Generator(),
                        keep=torch.ones(1, 1, 8, 8), present_sigma=0.1, **kw)


def test_auto_denoising_follows_the_channel_noise(random_tiny_codec, tiny_models):
    latent, missing = _case()
    none = np.zeros(latent.shape[1:], dtype=bool)
    auto = LearnedComplement(random_tiny_codec, tiny_models, steps=2, denoise=True)  # "auto" by default
    assert auto.denoise_strength == "auto"
    plain = LearnedComplement(random_tiny_codec, tiny_models, steps=2)
    # no channel noise: the step leaves every cell as it is
    out = auto(latent, none, np.random.default_rng(0))
    assert auto.alters_known and np.array_equal(out, latent) and out is not latent
    assert np.array_equal(auto(latent, missing, np.random.default_rng(0)),
                          plain(latent, missing, np.random.default_rng(0)))
    # with it (the call's noise_std): every cell denoised, from the timestep that covers the noise
    out = auto(latent, none, np.random.default_rng(0), 0.5)
    assert np.isfinite(out).all() and not np.array_equal(out, latent)
    assert np.array_equal(out, auto(latent, none, np.random.default_rng(0), noise_std=0.5))
    assert np.array_equal(auto(latent, none, np.random.default_rng(0)), latent)  # σ is the call's, not kept
    for bad in (-1.0, float("nan"), "0.1"):
        with pytest.raises(InputError, match="noise_std"):
            auto(latent, none, np.random.default_rng(0), bad)


def test_inpainting_unet_starts_as_its_base_and_reads_the_known_latent(tiny_models):
    base = tiny_models.unet
    wide = inpainting_unet(base).eval()
    assert wide.config.in_channels == 9 and wide.config.out_channels == 4
    g = torch.Generator().manual_seed(0)
    z, extra = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, 8, 8, generator=g)
    t, states = torch.tensor([500]), tiny_models.prompt_embeds
    with torch.no_grad():  # new input channels start at zero: the same function as the base
        assert torch.allclose(wide(torch.cat([z, extra], 1), t, states).sample, base(z, t, states).sample, atol=1e-5)
    with torch.no_grad():
        wide.conv_in.weight[:, 4:].normal_(std=0.1, generator=g)
    keep = torch.ones(1, 1, 8, 8)
    keep[..., 2:5, 2:6] = 0
    kw = dict(encoder_hidden_states=states, keep=keep, steps=1)
    known = torch.randn(1, 4, 8, 8, generator=g)
    a = denoise_latents(wide, SD15_SCHEDULER, known, generator=torch.Generator().manual_seed(1), **kw)
    other = known.clone()
    other[..., 6:, :] += 1.0  # change received cells only
    b = denoise_latents(wide, SD15_SCHEDULER, other, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a[..., keep[0, 0] > 0], known[..., keep[0, 0] > 0])  # known cells exact
    assert not torch.allclose(a[..., 2:5, 2:6], b[..., 2:5, 2:6])
    # the one step by hand: the UNet input is [latents, mask = 1 − keep, known × keep]
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(SD15_SCHEDULER, timestep_spacing="trailing")
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    noise = torch.randn(known.shape, generator=torch.Generator().manual_seed(1))
    start = keep * sched.add_noise(known, noise, sched.timesteps[:1]) + (1 - keep) * noise
    with torch.no_grad():
        eps = wide(torch.cat([start, 1 - keep, known * keep], 1), t, states.expand(1, -1, -1)).sample
    hand = keep * known + (1 - keep) * sched.step(eps, t, start).prev_sample
    assert torch.allclose(a, hand, atol=1e-5)
    # a caller's context (e.g. the interpolated holes) replaces the masked latent
    context = torch.randn(known.shape, generator=g)
    c = denoise_latents(wide, SD15_SCHEDULER, known, generator=torch.Generator().manual_seed(1), context=context, **kw)
    with torch.no_grad():
        eps = wide(torch.cat([start, 1 - keep, context], 1), t, states.expand(1, -1, -1)).sample
    assert torch.allclose(c, keep * known + (1 - keep) * sched.step(eps, t, start).prev_sample, atol=1e-5)
    with pytest.raises(InputError, match="context"):
        denoise_latents(wide, SD15_SCHEDULER, known, generator=g, context=context[..., :4], **kw)


def test_embedding_swap_is_undone(tiny_models):
    net = tiny_models.controlnets[0].net
    original = net.controlnet_cond_embedding
    with pytest.raises(RuntimeError):
        with _embedded_once(Control(net, torch.zeros(1, net.config.conditioning_channels, 64, 64))):
            assert net.controlnet_cond_embedding is not original
            raise RuntimeError("boom")
    assert net.controlnet_cond_embedding is original


# -- pixel baselines and the registry factory --------------------------------------------------

def test_pixel_telea(random_tiny_codec):
    latent, missing = _case()
    method = PixelTelea(random_tiny_codec)
    out = method(latent, missing, np.random.default_rng(0))
    assert np.array_equal(out[:, ~missing], latent[:, ~missing]) and np.isfinite(out).all()
    img = method.image(latent, missing)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    none = np.zeros_like(missing)
    assert np.array_equal(method(latent, none, None), latent)


def test_pixel_diffusion(random_tiny_codec, tiny_models):
    latent, missing = _case()
    method = PixelDiffusion(random_tiny_codec, tiny_models, steps=2)
    out = method(latent, missing, np.random.default_rng(0))
    assert np.array_equal(out[:, ~missing], latent[:, ~missing])
    assert np.array_equal(out, method(latent, missing, np.random.default_rng(0)))
    assert method.image(latent, missing, np.random.default_rng(0)).shape == (64, 64, 3)


def test_make_method(random_tiny_codec, tiny_complement_dir):
    cache = {}
    folder = str(tiny_complement_dir)
    learned = make_method("learned", random_tiny_codec, cache=cache, weights=folder, steps=2)
    noedge = make_method("learned-noedge", random_tiny_codec, cache=cache, weights=folder, steps=2)
    assert isinstance(learned, LearnedComplement) and learned.edges and not noedge.edges
    assert len(cache) == 1 and learned.models is noedge.models  # loaded once
    assert make_method("learned-denoise", random_tiny_codec, cache=cache, weights=folder).denoise
    assert isinstance(make_method("pixel-diffusion", random_tiny_codec, cache=cache, weights=folder), PixelDiffusion)
    assert isinstance(make_method("pixel-telea", random_tiny_codec, radius=5), PixelTelea)
    assert make_method("interp", random_tiny_codec) is COMPLEMENT_METHODS["interp"]
    for name in (*COMPLEMENT_METHODS, *CODEC_METHODS):  # every name builds a protocol object
        opts = {"weights": folder} if name in CODEC_METHODS and name != "pixel-telea" else {}
        built = make_method(name, random_tiny_codec, cache=cache, **opts)
        assert isinstance(built, ComplementMethod) and built.name == name
        assert built.alters_known == (name == "learned-denoise")
    with pytest.raises(ConfigError, match="contradicts"):
        make_method("learned-noedge", random_tiny_codec, cache=cache, weights=folder, edges=True)
    with pytest.raises(ConfigError, match="unknown option"):
        make_method("learned", random_tiny_codec, cache=cache, weights=folder, stpes=2)
    with pytest.raises(ConfigError, match="takes no options"):
        make_method("zero", random_tiny_codec, steps=2)
    with pytest.raises(ConfigError, match="expected one of"):
        make_method("lerned", random_tiny_codec)
    assert isinstance(CODEC_METHODS["learned"], NeedsCodec) and isinstance(CODEC_METHODS["learned"], ComplementMethod)
    with pytest.raises(ConfigError, match="needs the codec"):
        CODEC_METHODS["learned"](*_case(), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="needs the codec"):
        CODEC_METHODS["pixel-diffusion"].batch([_case()[0]], [_case()[1]], [np.random.default_rng(0)], [0.0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_refused_off_cuda(dtype):
    with pytest.raises(ConfigError) as err:
        check_options("learned", dtype=dtype)
    assert str(err.value) == (f"complement.dtype = {dtype!r}: half precision needs a CUDA device (device: cuda); "
                              f"expected float32 on the CPU")
    with pytest.raises(ConfigError, match=r"complement.dtype = 'float16': .* expected float32 on mps"):
        check_options("pixel-diffusion", dtype="float16", device="mps")
    with pytest.raises(ConfigError, match=r"complement.dtype = 'half': expected one of float32, float16, bfloat16"):
        check_options("learned", dtype="half")
    assert check_options("learned", dtype=dtype, device="cuda:1") == {"dtype": dtype, "device": "cuda:1"}
    assert check_options("learned", dtype="float32") == {"dtype": "float32"}


def test_dtype_casts_the_networks_and_results_stay_float32(random_tiny_codec, tiny_complement_dir):
    """A bfloat16 weight set (what ``dtype`` loads; run here on the CPU, which check_options refuses
    for a scenario) still takes and returns float32 latents, known cells exact, close to float32."""
    from sim.complement.models import cast_models

    latent, missing = _case()
    full = LearnedComplement(random_tiny_codec, load_weight_set(tiny_complement_dir), steps=2)
    half = cast_models(load_weight_set(tiny_complement_dir), "bfloat16")
    assert {p.dtype for net in (half.unet, half.controlnets[0].net, half.een) for p in net.parameters()} == {
        torch.bfloat16}
    assert half.prompt_embeds.dtype == torch.float32
    method = LearnedComplement(random_tiny_codec, half, steps=2)
    out = method(latent, missing, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.array_equal(out[:, ~missing], latent[:, ~missing])
    ref = full(latent, missing, np.random.default_rng(0))
    assert not np.array_equal(out, ref)
    assert np.abs(out - ref).max() <= 0.1 * np.abs(ref[:, missing]).max()
    assert method.estimate_edges(latent, missing).dtype == np.float32


# -- batches: one generator per item, each item as its own call ----------------------------------

def _items(n: int, h: int = 8, w: int = 8, seed: int = 1):
    """n seeded latents (4, h, w) with masks: the first loses nothing, the second everything, the
    rest about a third of their cells."""
    rng = np.random.default_rng(seed)
    latents = [rng.standard_normal((4, h, w)).astype(np.float32) for _ in range(n)]
    masks = [rng.random((h, w)) < 0.3 for _ in range(n)]
    masks[0][:] = False
    masks[1][:] = True
    return latents, masks


def _batch_is_the_calls(method, latents, masks, noise_stds, seeds=None) -> list[np.ndarray]:
    """``method.batch`` over the items, checked against each item's own call: max abs difference
    ≤ 1e-4, or 16 float32 ulps of the item's largest value where that is more (the random sd15
    models generate values beyond 100, where batched kernels' rounding alone reaches 1e-4)."""
    seeds = range(10, 10 + len(latents)) if seeds is None else seeds
    batched = method.batch(latents, masks, [np.random.default_rng(s) for s in seeds], noise_stds)
    assert len(batched) == len(latents)
    for out, latent, missing, sigma, seed in zip(batched, latents, masks, noise_stds, seeds):
        alone = method(latent, missing, np.random.default_rng(seed), sigma)
        assert out.dtype == np.float32 and out.shape == latent.shape
        tol = max(1e-4, 16 * np.finfo(np.float32).eps * np.abs(alone).max())
        assert np.abs(out - alone).max() <= tol, (np.abs(out - alone).max(), tol)
        if not method.alters_known:
            assert np.array_equal(out[:, ~missing], latent[:, ~missing])  # known cells exact
    return batched


@pytest.mark.parametrize("kw", [{}, {"eta": 1.0}, {"edges": False}, {"strength": 0.5}, {"guidance_scale": 2.0},
                                {"denoise": True, "denoise_strength": 0.2}])
def test_tiny_batch_equals_the_items_own_calls(random_tiny_codec, tiny_models, kw):
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=2, **kw)
    latents, masks = _items(4)
    out = _batch_is_the_calls(method, latents, masks, [0.0] * 4)
    if not method.alters_known:
        assert np.array_equal(out[0], latents[0])  # nothing lost: unchanged
    assert not np.allclose(out[2][:, masks[2]], out[3][:, masks[3]][:, :masks[2].sum()])


def test_batch_groups_shapes_and_denoising_starts(random_tiny_codec, tiny_models):
    """Latents of two shapes, and noise levels that start the "auto" denoising step at different
    timesteps (or not at all: σ = 0), in one batch; the edges per item as ``run`` gives them."""
    method = LearnedComplement(random_tiny_codec, tiny_models, steps=2, denoise=True, eta=0.5)
    latents, masks = _items(5)
    wide, wide_mask = _items(3, 8, 16, seed=2)
    latents, masks = latents + wide, masks + wide_mask
    sigmas = [0.0, 0.3, 0.3, 0.5, 2.0, 0.0, 0.5, 0.3]
    out = _batch_is_the_calls(method, latents, masks, sigmas)
    assert np.array_equal(out[0], latents[0]) and np.array_equal(out[5], latents[5])  # nothing lost, no noise
    assert not np.array_equal(out[2][:, ~masks[2]], latents[2][:, ~masks[2]])  # noisy: every cell denoised
    gens = [torch.Generator().manual_seed(s) for s in range(len(latents))]
    runs = method.run_batch(latents, masks, gens, sigmas)
    for i in (2, 6):
        alone = method.run(latents[i], masks[i], torch.Generator().manual_seed(i), sigmas[i])
        assert runs[i]["edges"].shape == alone["edges"].shape and np.abs(runs[i]["edges"] - alone["edges"]).max() < 1e-5
    with pytest.raises(InputError, match="expected one of each per item"):
        method.batch(latents, masks[:-1], [np.random.default_rng(0)] * len(latents), sigmas)


def test_sd15_batch_equals_the_items_own_calls(sd_codec, sd15_models):
    latents, masks = _items(3, 16, 16)
    _batch_is_the_calls(LearnedComplement(sd_codec, sd15_models, steps=2), latents, masks, [0.0] * 3)
    _batch_is_the_calls(LearnedComplement(sd_codec, sd15_models, steps=2, denoise=True, eta=1.0), latents, masks,
                        [0.3, 0.0, 0.3])


def test_pixel_diffusion_batch_leaves_lossless_items_and_their_rng_alone(random_tiny_codec, tiny_models):
    method = PixelDiffusion(random_tiny_codec, tiny_models, steps=2)
    latents, masks = _items(3)
    out = _batch_is_the_calls(method, latents, masks, [0.0] * 3)
    assert np.array_equal(out[0], latents[0])
    rngs = [np.random.default_rng(0) for _ in range(3)]
    method.batch(latents, masks, rngs, [0.0] * 3)
    fresh = np.random.default_rng(0).integers(0, 2**63 - 1)
    assert rngs[0].integers(0, 2**63 - 1) == fresh and rngs[1].integers(0, 2**63 - 1) != fresh


def test_fill_methods_batch_by_the_default_loop():
    latents, masks = _items(3)
    for fill in COMPLEMENT_METHODS.values():
        out = fill.batch(latents, masks, [None] * 3, [0.0] * 3)
        assert all(np.array_equal(o, fill.fill(lat, m, None)) for o, lat, m in zip(out, latents, masks))
        assert not fill.alters_known and fill.estimate_edges(latents[0], masks[0]) is None


# -- the training recipe ---------------------------------------------------------------------

def test_diffusion_training_runs_resumes_and_loads(tmp_path, random_tiny_codec):
    from PIL import Image

    from sim.codec.tiny import save_tiny
    from sim.training.latent_diffusion import train_latent_diffusion

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    save_tiny(random_tiny_codec.model.net, tmp_path / "codec.safetensors", {"scaling_factor": 0.5})
    kw = dict(codec="tiny", codec_weights=str(tmp_path / "codec.safetensors"), batch=2, crop=32, save_every=1)
    out = tmp_path / "run"
    train_latent_diffusion(images, out, unet_steps=1, controlnet_steps=0, **kw)
    assert "controlnet" not in torch.load(out / "checkpoint_diffusion.pt", weights_only=True)
    train_latent_diffusion(images, out, unet_steps=1, controlnet_steps=1, **kw)  # resumes into stage 2
    ckpt = torch.load(out / "checkpoint_diffusion.pt", weights_only=True)
    assert ckpt["step"] == 2 and "controlnet" in ckpt
    models = load_weight_set(out)
    assert models.een is None and models.controlnets[0].inputs == ("edges", "latent")
    assert models.card["unet_steps"] == 1 and models.card["scaling_factor"] == 0.5
    latent, missing = _case()
    out_latent = LearnedComplement(random_tiny_codec, models, edges=False, steps=1)(latent, missing,
                                                                                   np.random.default_rng(0))
    assert np.isfinite(out_latent).all()


def test_stage2_from_a_base_with_een_edges(tmp_path, random_tiny_codec, tiny_complement_dir, tiny_models):
    """``base`` replaces stage 1 (its UNet comes back unchanged when frozen), ``een`` supplies the
    edges, ``unet_lr2`` fine-tunes the UNet; bad settings fail before any work."""
    from PIL import Image

    from sim.codec.tiny import save_tiny
    from sim.training.latent_diffusion import train_latent_diffusion

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "a.png")
    save_tiny(random_tiny_codec.model.net, tmp_path / "codec.safetensors", {"scaling_factor": 0.5})
    kw = dict(codec="tiny", codec_weights=str(tmp_path / "codec.safetensors"), batch=2, crop=32, unet_steps=0,
              controlnet_steps=1, base=tiny_complement_dir, een=tiny_complement_dir / "een.safetensors")
    frozen = load_weight_set(train_latent_diffusion(images, tmp_path / "frozen", **kw))
    before = tiny_models.unet.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in frozen.unet.state_dict().items())
    assert torch.equal(frozen.prompt_embeds, tiny_models.prompt_embeds)
    assert frozen.card["edges"] == "een" and frozen.card["controls"] == ["edges", "latent"]
    tuned = load_weight_set(train_latent_diffusion(images, tmp_path / "tuned", unet_lr2=1e-3, **kw))
    assert not all(torch.equal(v, before[k]) for k, v in tuned.unet.state_dict().items())
    with pytest.raises(ConfigError, match="base replaces stage 1"):
        train_latent_diffusion(images, tmp_path / "x", **{**kw, "unet_steps": 1})
    with pytest.raises(ConfigError, match="control input 'mask'"):
        train_latent_diffusion(images, tmp_path / "x", controls=("edges", "mask"), **kw)
    with pytest.raises(ConfigError, match="known_weight"):
        train_latent_diffusion(images, tmp_path / "x", known_weight=2.0, **kw)


def test_stage2_with_an_inpainting_unet_resumes_and_runs(tmp_path, random_tiny_codec, tiny_complement_dir):
    from PIL import Image

    from sim.codec.tiny import save_tiny
    from sim.training.latent_diffusion import train_latent_diffusion

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "a.png")
    save_tiny(random_tiny_codec.model.net, tmp_path / "codec.safetensors", {"scaling_factor": 0.5})
    kw = dict(codec="tiny", codec_weights=str(tmp_path / "codec.safetensors"), batch=2, crop=32, unet_steps=0,
              base=tiny_complement_dir, een=tiny_complement_dir / "een.safetensors", controls=("edges",),
              inpaint_unet=True, unet_lr2=1e-3, prediction_type="v_prediction", context="interp", save_every=1)
    out = tmp_path / "run"
    train_latent_diffusion(images, out, controlnet_steps=1, **kw)
    train_latent_diffusion(images, out, controlnet_steps=2, **kw)  # resumes the widened UNet
    assert torch.load(out / "checkpoint_diffusion.pt", weights_only=True)["step"] == 2
    (out / "een.safetensors").write_bytes((tiny_complement_dir / "een.safetensors").read_bytes())
    models = load_weight_set(out)
    assert models.unet.config.in_channels == 9 and models.controlnets[0].inputs == ("edges",)
    assert models.card["inpaint_unet"] is True and models.scheduler_config["prediction_type"] == "v_prediction"
    assert models.context == "interp"
    latent, missing = _case()
    method = LearnedComplement(random_tiny_codec, models, steps=2)
    res = method(latent, missing, np.random.default_rng(0))
    assert np.array_equal(res[:, ~missing], latent[:, ~missing]) and np.isfinite(res).all()
    assert np.isfinite(LearnedComplement(random_tiny_codec, models, steps=2, denoise=True)(
        latent, missing, np.random.default_rng(0))).all()
    with pytest.raises(ConfigError, match="inpaint_unet needs unet_lr2"):
        train_latent_diffusion(images, tmp_path / "x", controlnet_steps=1, **{**kw, "unet_lr2": 0.0})
    with pytest.raises(ConfigError, match="a frozen UNet cannot change what it predicts"):
        train_latent_diffusion(images, tmp_path / "x", controlnet_steps=1,
                               **{**kw, "unet_lr2": 0.0, "inpaint_unet": False})
    with pytest.raises(ConfigError, match="context = 'zeros'"):
        train_latent_diffusion(images, tmp_path / "x", controlnet_steps=1, **{**kw, "context": "zeros"})
    # a trained inpainting set is itself a base (the shipped tiny set is one): not widened twice
    again = load_weight_set(train_latent_diffusion(images, tmp_path / "again", controlnet_steps=1,
                                                   **{**kw, "base": out}))
    assert again.unet.config.in_channels == 9
    with pytest.raises(ConfigError, match="trained with context 'interp'"):
        train_latent_diffusion(images, tmp_path / "x", controlnet_steps=1, **{**kw, "base": out, "context": "masked"})
    # the method hands the harmonic fill to an "interp" set, the masked latent to a "masked" one
    masked = LearnedComplement(random_tiny_codec, dataclasses.replace(models, context="masked"), steps=2)
    assert not np.array_equal(masked(latent, missing, np.random.default_rng(0)), res)
    manifest = out / "complement.json"
    assert models.steps == 8 and LearnedComplement(random_tiny_codec, models).steps == 8  # the manifest's default
    text = manifest.read_text()
    manifest.write_text(text.replace('"steps": 8', '"steps": 2', 1))
    assert LearnedComplement(random_tiny_codec, load_weight_set(out)).steps == 2
    assert LearnedComplement(random_tiny_codec, load_weight_set(out), steps=5).steps == 5
    manifest.write_text(text.replace('"steps": 8', '"steps": 0', 1))
    with pytest.raises(ModelLoadError, match="steps = 0"):
        load_weight_set(out)
    manifest.write_text(text.replace('"context": "interp"', '"context": "zeros"', 1))
    with pytest.raises(ModelLoadError, match="context = 'zeros'"):
        load_weight_set(out)
    with pytest.raises(ConfigError, match="prediction_type = 'x0'"):
        train_latent_diffusion(images, tmp_path / "x", controlnet_steps=1, **{**kw, "prediction_type": "x0"})


def test_control_batch_dropouts():
    from sim.training.latent_diffusion import control_batch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    scaled = torch.randn(2, 4, 2, 2, generator=g)
    lost = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]).expand(2, 1, 2, 2)
    edges = torch.ones(2, 1, 16, 16)
    cond, eff = control_batch(("edges", "latent", "inpaint"), x, scaled, lost, edges, g, 0.0, 0.0)
    assert cond.shape == (2, 1 + 5 + 3, 16, 16) and torch.equal(eff, lost)
    assert torch.equal(cond[:, 1:6], latent_control(scaled, lost, 8)) and cond[:, 0].eq(1).all()
    assert cond[:, 6:, :8, :8].eq(-1).all() and torch.equal(cond[:, 6:, 8:, 8:], x[:, :, 8:, 8:].add(1).div(2))
    cond, eff = control_batch(("edges", "latent"), x, scaled, lost, edges, g, 1.0, 1.0)  # both dropped
    assert eff.eq(1).all() and cond[:, 0].eq(0).all() and cond[:, 1:5].eq(0).all() and cond[:, 5].eq(1).all()


def test_train_command(tmp_path, random_tiny_codec, capsys):
    from PIL import Image

    from sim.cli import main
    from sim.codec.tiny import save_tiny

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "a.png")
    save_tiny(random_tiny_codec.model.net, tmp_path / "codec.safetensors", {"scaling_factor": 0.5})
    common = ["--images", str(images), "--out", str(tmp_path / "run"), "--codec-weights",
              str(tmp_path / "codec.safetensors"), "--crop", "32", "--batch", "1"]
    assert main(["train", "diffusion", *common, "--unet-steps", "1", "--controlnet-steps", "0"]) == 0
    assert (tmp_path / "run" / "complement.json").is_file()
    assert main(["train", "diffusion", *common, "--steps", "3"]) == 2
    # --unet-channels: the stage-1 UNet's widths, recorded in the config and the card
    wide = ["--images", str(images), "--out", str(tmp_path / "wide"), *common[4:]]
    assert main(["train", "diffusion", *wide, "--unet-steps", "1", "--controlnet-steps", "0",
                 "--unet-channels", "32,64,80"]) == 0
    config = json.loads((tmp_path / "wide" / "unet" / "config.json").read_text())
    card = json.loads((tmp_path / "wide" / "diffusion_training.json").read_text())
    assert config["block_out_channels"] == card["unet_channels"] == [32, 64, 80]
    capsys.readouterr()
    for bad in ("32,64", "32,64,72", "a,b,c"):
        assert main(["train", "diffusion", *wide, "--unet-channels", bad]) == 2
        assert bad in capsys.readouterr().err
    assert main(["train", "diffusion", *wide, "--unet-steps", "0", "--base", str(tmp_path / "run"),
                 "--unet-channels", "32,64,80"]) == 2
    assert "keeps its own widths" in capsys.readouterr().err
    assert main(["train", "een", *common[:-4], "--crop", "40"]) == 2
    assert "crop = 40" in capsys.readouterr().err
