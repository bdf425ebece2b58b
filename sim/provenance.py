"""What a run records about itself in ``provenance.json``, and the weights check of a resume.

Each run that writes an output folder appends one entry to ``provenance.json``'s ``runs``
(:func:`run_entry`): start time, command line, seed, git commit, package versions, Python,
hardware, the codec cards (:func:`codec_card`: config, training metadata, weights file and
its SHA-256) and the complement weight sets loaded (name, loading options, SHA-256 of their
tensors: ``ComplementModels.digest``). :func:`check_weights` refuses to add records to a
folder whose records were made with other weights (:mod:`sim.runner`, on resume).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from sim.errors import ConfigError
from sim.results import PROVENANCE_FILE, RESULTS_FILE

__all__ = ["file_sha256", "state_digest", "codec_card", "run_entry", "fingerprints", "check_weights", "append_run"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex); OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_digest(state: dict) -> str:
    """SHA-256 over a state dict of tensors: for each name in sorted order, the name then the
    tensor's bytes (so the same for the same values whatever file they were read from)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _git_commit() -> dict | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("latentcast", "numpy", "scipy", "torch", "simpy", "pyyaml", "scikit-image",
                 "pillow", "safetensors", "constriction", "diffusers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    if out["latentcast"] is None:  # running from a checkout that is not pip-installed
        from sim import __version__

        out["latentcast"] = __version__
    return out


def codec_card(cfg, codec) -> dict:
    """A codec's provenance card: its config (``sim.scenario.CodecConfig``), training metadata,
    and, where the weights are a local file, its path, SHA-256 and ``MODEL_CARD.md``."""
    card = {"model": cfg.model, "weights": cfg.weights, "quantizer": cfg.quantizer_dict(),
            "entropy": cfg.entropy, "device": cfg.device,
            "training": getattr(codec.model, "training", None) or None}
    weights = Path(cfg.weights) if cfg.weights else None
    if cfg.model == "tiny":
        from sim.codec.tiny import SHIPPED_WEIGHTS

        weights = weights or SHIPPED_WEIGHTS
        if weights.is_dir():
            weights = weights / SHIPPED_WEIGHTS.name
    if weights is not None and weights.is_file():
        card["weights_file"] = str(weights)
        try:
            card["weights_sha256"] = file_sha256(weights)
        except OSError:
            card["weights_sha256"] = None
        model_card = weights.parent / "MODEL_CARD.md"
        if model_card.is_file():
            card["model_card"] = str(model_card)
    return card


def run_entry(scenario, codec_cards: list[dict], complement: list[dict]) -> dict:
    """This run's ``provenance.json`` entry (``scenario``: a ``sim.scenario.Scenario``)."""
    import torch

    cuda = None
    if torch.cuda.is_available():
        cuda = torch.cuda.get_device_name(0)
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scenario": scenario.name,
        "seed": scenario.seed,
        "argv": sys.argv,
        "git": _git_commit(),
        "packages": _versions(),
        "python": platform.python_version(),
        "hardware": {"platform": platform.platform(), "machine": platform.machine(),
                     "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "cuda": cuda},
        "codecs": codec_cards,
        "complement": complement,
    }


def _runs(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("runs", []) if path.exists() else []
    except (ValueError, AttributeError):
        return []


def fingerprints(run: dict) -> dict[str, str]:
    """label → SHA-256 of the model weights one run entry used (codecs and complement sets)."""
    out = {}
    for card in run.get("codecs") or ():
        if card.get("weights_sha256"):
            out[f"codec {card['model']}" + (f" ({card['weights']})" if card.get("weights") else "")] = \
                card["weights_sha256"]
    for c in run.get("complement") or ():
        out[f"complement weights {c['name']} {c['options']}"] = c["sha256"]
    return out


def check_weights(out: Path, records: int, run: dict) -> None:
    """Refuse to add records made with other weights than those of ``out``'s ``records`` so far.

    ``run``'s :func:`fingerprints` are compared with the latest earlier entry that names each
    label (a fully resumed run builds no complement models, so it records none).

    Raises
    ------
    ConfigError
        One line naming the folder, the weights that changed and both hashes.
    """
    before: dict[str, str] = {}
    for entry in _runs(out / PROVENANCE_FILE):
        before.update(fingerprints(entry))
    for label, sha in fingerprints(run).items():
        if label in before and before[label] != sha:
            raise ConfigError(f"{out}: its {records} record(s) were made with other model weights "
                              f"({label}: sha256 {before[label][:12]}… then, {sha[:12]}… now); choose "
                              f"another --out or delete {out / RESULTS_FILE} to start again")


def append_run(out: Path, run: dict) -> None:
    """Append ``run`` to ``out/provenance.json`` (a file that is not valid JSON starts again)."""
    path = out / PROVENANCE_FILE
    runs = _runs(path) + [run]
    path.write_text(json.dumps({"runs": runs}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
