"""VGG-LPIPS (58.9 MB fp32) as int8 kernels per output channel + fp32 scales, xz-packed (12.1 MB),
so the training loss fits beside the repo under the device tool's 64 MiB transfer limit.

    python scripts/device/vgg_int8.py pack [CACHE_DIR]     # here: writes .dev/vgg_int8.safetensors.xz
    python scripts/device/vgg_int8.py unpack CACHE_DIR     # there: rebuilds CACHE_DIR/lpips_vgg_v0.1.safetensors

The rebuilt file keeps the original's safetensors metadata, so ``sim.lpips`` loads it; its
distances differ from the fp32 weights' by about 0.3 % (e.g. 0.0604 vs 0.0602).
"""
import json
import lzma
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load, save, save_file

from sim.lpips import default_cache_dir

FILE = "lpips_vgg_v0.1.safetensors"
PACKED = Path(".dev/vgg_int8.safetensors.xz")


def pack(cache: Path) -> None:
    with safe_open(str(cache / FILE), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    q = {}
    for k, v in state.items():
        if k.startswith("features.") and v.ndim == 4:
            s = v.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
            q[k + ".q"], q[k + ".s"] = torch.round(v / s).to(torch.int8), s
        else:
            q[k] = v
    PACKED.parent.mkdir(parents=True, exist_ok=True)
    PACKED.write_bytes(lzma.compress(save(q, metadata=meta), preset=9))


def unpack(cache: Path) -> None:
    raw = lzma.decompress(PACKED.read_bytes())
    meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    q = load(raw)
    state = {k[:-2]: v.float() * q[k[:-2] + ".s"] for k, v in q.items() if k.endswith(".q")}
    state.update({k: v for k, v in q.items() if not k.endswith((".q", ".s"))})
    cache.mkdir(parents=True, exist_ok=True)
    save_file(state, str(cache / FILE), metadata=meta)


if __name__ == "__main__":
    what, where = sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else default_cache_dir()
    {"pack": pack, "unpack": unpack}[what](where)
