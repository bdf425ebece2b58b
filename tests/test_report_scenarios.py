"""The scenario library: every file in scenarios/ validates as it is, and documents itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import main

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml"))


def test_the_library_is_there():
    names = {p.stem for p in SCENARIOS}
    assert {"quickstart", "iid_vs_bursty", "deadline_hybrid", "awgn", "trace_driven", "bitdepth", "sd15"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_validates(path, capsys):
    assert main(["validate", str(path), "--no-images"]) == 0, capsys.readouterr().err
    head = path.read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith(f"# {path.stem}"), "each scenario starts with a comment naming and explaining it"


def test_bundled_trace_is_a_trace():
    from channels import make_channel

    ch = make_channel("trace", path=str(Path(__file__).parent.parent / "scenarios" / "traces" / "synthetic_loss.txt"))
    assert 0.01 < ch.start(None).expected_loss_rate(0) < 0.2
