"""``benchmarks/bench_gpu.py --small`` on the CPU: it builds its models, prints its figures, and the
batched complement agrees with the one-by-one calls."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_prints_the_figures_and_batched_equals_one_by_one(bench, capsys):
    got = bench.main(["--small", "--device", "cpu", "--images", "3", "--steps", "2", "--repeat", "1"])
    out = capsys.readouterr().out
    assert out.startswith("small models: 64×64 images, latent 4×32×32, 2 DDIM steps, ControlNets inpaint + canny")
    for batch in ("batch 1", "batch 3"):  # float32 only: no float16 on the CPU
        line = re.search(rf"float32 +{batch}: +([0-9.]+) images/s", out)
        assert line and float(line.group(1)) == pytest.approx(got["images_per_s"]["float32", batch], abs=0.01)
        assert got["images_per_s"]["float32", batch] > 0
    assert set(got["images_per_s"]) == {("float32", "batch 1"), ("float32", "batch 3")} and "float16" not in out
    assert re.search(r"float32 max \|batched − one by one\| = \S+ latent units", out)
    # one generator per item: the same results up to float32 rounding (16 ulps of the largest value)
    assert got["largest"] > 0
    assert got["max_abs_diff"] <= max(1e-4, 16 * np.finfo(np.float32).eps * got["largest"])
