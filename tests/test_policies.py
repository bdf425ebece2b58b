"""Policies and repair methods: registry/validation, the method protocol, fills, harmonic
interpolation, hybrid decisions on scripted losses, NACK bytes on the reverse path."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from channels import Link
from sim.complement import (
    CODEC_METHODS, COMPLEMENT_METHODS, ComplementMethod, FillMethod, complement_method, harmonic_fill, mean_fill,
    zero_fill,
)
from sim.engine import ReceiverConfig, transmit
from sim.errors import ConfigError, InputError
from sim.packets import PacketizerConfig
from sim.policies import POLICIES, Decision, make_policy
from sim.policies.base import needs_repair

from helpers import ByteCodec, Prep, Script


def run(policy, *bursts, trace=None, **kw):
    """Binary-exact link (1 byte = 1/1024 s, delay 0.25 s), timeout 0.5 s, 1×4 latent, one
    cell per data packet. Pass 1 losing seqs 2 and 4 ends at 0.921875 (timer); resending
    them takes until 2.005859375 (next timer) — see tests/test_engine.py for the trace.

    The transmission, then the policy's repair of it (as the repair stage makes it):
    ``stats``, ``missing``, the repaired ``latent`` and ``complemented``."""
    pol = make_policy(policy, **kw)
    t = transmit(ByteCodec(), Prep(), image_id=1, packetizer=PacketizerConfig(layout="row", tile=1),
                 link=Link(rate_bps=8 * 1024, delay_s=0.25, header_bytes=12), channel=Script(*bursts),
                 policy=pol, receiver=ReceiverConfig(timeout_s=0.5), rng=np.random.default_rng(0), trace=trace)
    latent, complemented = pol.repair(t.latent, t.missing, t.repair_rng, noise_std=t.noise_std)
    return SimpleNamespace(stats=t.stats, missing=t.missing, latent=latent, complemented=complemented)


LOSSES = ([0, 0, 1, 0, 1], [0, 1], [0])


# --------------------------------------------------------------------------- registry


def test_registry_and_validation_messages():
    assert set(POLICIES) == {"resend", "none", "complement", "hybrid"}
    assert make_policy("resend") == make_policy("resend", max_rounds=8, deadline_s=None)
    cases = [
        (("resnd",), "policy = 'resnd'.*did you mean 'resend'"),
        (("resend", {"max_rounds": 0}), "policy.resend.max_rounds = 0"),
        (("resend", {"deadline_s": -1}), "policy.resend.deadline_s = -1"),
        (("none", {"fill": "median"}), "policy.none.fill = 'median'"),
        (("complement", {"method": "magic"}), "policy.complement.method = 'magic'"),
        (("hybrid", {"mode": "fast"}), "policy.hybrid.mode = 'fast'"),
        (("hybrid", {"max_missing": 1.5}), "policy.hybrid.max_missing = 1.5"),
        (("hybrid", {"deadline": 1}), "policy.hybrid.deadline: unknown key.*did you mean 'deadline_s'"),
    ]
    for args, message in cases:
        kind, kw = args[0], (args[1] if len(args) > 1 else {})
        with pytest.raises(ConfigError, match=message):
            make_policy(kind, **kw)
    with pytest.raises(ConfigError, match="expected one of zero, mean, interp"):
        complement_method("nope")


def decision(rounds=1, missing=10, n=100, eta=1.0):
    return Decision(now_s=0.5, rounds=rounds, missing_cells=missing, n_cells=n, missing_packets=1, eta_s=eta)


def test_decide_rules():
    assert make_policy("resend", max_rounds=3).decide(decision(rounds=2))
    assert not make_policy("resend", max_rounds=3).decide(decision(rounds=3))
    assert not make_policy("none").decide(decision()) and not make_policy("complement").decide(decision())
    hd = make_policy("hybrid", deadline_s=1.0)
    assert hd.decide(decision(eta=1.0)) and not hd.decide(decision(eta=1.0001)) and hd.cutoff_s == 1.0
    ht = make_policy("hybrid", mode="threshold", max_missing=0.1)
    assert not ht.decide(decision(missing=10)) and ht.decide(decision(missing=11)) and ht.cutoff_s is None
    assert not make_policy("hybrid", mode="threshold", max_missing=0.0, max_rounds=2).decide(decision(rounds=2))


# --------------------------------------------------------------------------- repair methods


def ramp(h=12, w=10):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([2 * yy + 3 * xx + 1.0, -yy + 0.5 * xx, np.full((h, w), 7.0)]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(COMPLEMENT_METHODS))
def test_every_method_returns_known_cells_exactly(name):
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((4, 9, 11)).astype(np.float32)
    missing = rng.random((9, 11)) < 0.3
    before = latent.copy()
    out = COMPLEMENT_METHODS[name](latent, missing, rng)
    assert out.dtype == np.float32 and out.shape == latent.shape
    assert np.array_equal(out[:, ~missing], latent[:, ~missing])
    assert np.array_equal(latent, before)  # input untouched
    assert np.isfinite(out).all()


def test_zero_and_mean_fill():
    latent = ramp()
    missing = np.zeros(latent.shape[1:], bool)
    missing[2:5, 3:6] = True
    assert (zero_fill(latent, missing)[:, missing] == 0).all()
    means = latent[:, ~missing].mean(axis=1)
    filled = mean_fill(latent, missing)
    assert np.allclose(filled[:, missing], means[:, None], atol=1e-5)
    assert (mean_fill(latent, np.ones_like(missing)) == 0).all()  # nothing known: zeros


def test_harmonic_interpolation_reproduces_a_linear_ramp_in_interior_holes():
    latent = ramp()
    missing = np.zeros(latent.shape[1:], bool)
    missing[3:6, 2:7] = True   # a block
    missing[8, 8] = True       # a single cell
    missing[1:11:2, 1] = True  # scattered cells
    garbage = latent.copy()
    garbage[:, missing] = 1e6
    out = harmonic_fill(garbage, missing)
    assert np.abs(out - latent).max() < 1e-4  # float32 rounding of values up to ~40
    assert np.array_equal(out[:, ~missing], latent[:, ~missing])


def test_harmonic_interpolation_edge_cases():
    latent = ramp()
    none = np.zeros(latent.shape[1:], bool)
    assert np.array_equal(harmonic_fill(latent, none), latent)
    assert (harmonic_fill(latent, ~none) == 0).all()
    corner = none.copy()
    corner[:3, :3] = True  # touches the edge: Neumann boundary, bounded by the known values
    out = harmonic_fill(latent, corner)
    known = latent[:, ~corner]
    assert (out[:, corner] >= known.min(axis=1)[:, None] - 1e-4).all()
    assert (out[:, corner] <= known.max(axis=1)[:, None] + 1e-4).all()
    with pytest.raises(InputError):
        harmonic_fill(latent, none[:, :3])


# --------------------------------------------------------------------------- in the engine


def test_none_fills_zero_or_mean():
    z = run("none", [0, 0, 1, 0, 1])
    assert z.missing.tolist() == [[False, True, False, True]] and not z.complemented
    assert z.latent[0, 0].tolist() == [1.0, 0.0, 11.0, 0.0]
    m = run("none", [0, 0, 1, 0, 1], fill="mean")
    assert m.latent[0, 0].tolist() == [1.0, 6.0, 11.0, 6.0]


def test_complement_returns_known_cells_and_interpolates():
    t = run("complement", [0, 0, 1, 0, 1], method="interp")
    assert t.complemented and t.stats["rounds"] == 1 and t.stats["time_to_image_s"] == 0.921875
    assert t.latent[0, 0].tolist() == [1.0, 6.0, 11.0, 11.0]  # harmonic: mean of 1 and 11; edge: copy 11


def test_resend_max_rounds_reached_fills_zero():
    t = run("resend", [0, 0, 1, 0, 1], [0, 1], max_rounds=2)
    s = t.stats
    assert (s["rounds"], s["end"], s["missing_cells"], s["missing_share"]) == (2, "policy", 1, 0.25)
    assert s["time_to_image_s"] == 2.005859375 and not t.complemented
    assert t.latent[0, 0].tolist() == [1.0, 6.0, 11.0, 0.0]


def test_resend_deadline_is_hard():
    t = run("resend", [0, 0, 1, 0, 1], [0, 1], deadline_s=1.3)
    s = t.stats
    assert (s["time_to_image_s"], s["end"], s["missing_cells"], s["rounds"]) == (1.3, "deadline", 2, 2)
    assert t.latent[0, 0].tolist() == [1.0, 0.0, 11.0, 0.0]  # the resent packet arrived at 1.4746 s: too late


def test_hybrid_deadline_complements_when_a_resend_cannot_finish_in_time():
    # ETA of resending seqs 2, 4 at 0.921875: NACK 22 B + delay → 1.193359375; 2 × 32 B →
    # 1.255859375; + delay + timeout = 2.005859375.
    early = run("hybrid", *LOSSES, deadline_s=2.0)
    assert early.stats["rounds"] == 1 and early.stats["time_to_image_s"] == 0.921875
    assert early.complemented and early.stats["missing_cells"] == 2
    trace = []
    one = run("hybrid", *LOSSES, trace=trace, deadline_s=2.1)
    assert one.stats["rounds"] == 2 and one.stats["time_to_image_s"] == 2.005859375 <= 2.1
    assert one.complemented and one.stats["missing_cells"] == 1
    assert [e for e in trace if e[1] in ("nack", "decode")] == [
        (0.921875, "nack", (2, 4)), (2.005859375, "decode", "policy")]
    full = run("hybrid", *LOSSES, deadline_s=5.0)
    assert full.stats["rounds"] == 3 and full.stats["missing_cells"] == 0 and not full.complemented


def test_hybrid_threshold_resends_until_few_cells_are_missing():
    a = run("hybrid", *LOSSES, mode="threshold", max_missing=0.5)
    assert (a.stats["rounds"], a.stats["missing_cells"], a.complemented) == (1, 2, True)
    b = run("hybrid", *LOSSES, mode="threshold", max_missing=0.25)
    assert (b.stats["rounds"], b.stats["missing_cells"], b.complemented) == (2, 1, True)
    c = run("hybrid", *LOSSES, mode="threshold", max_missing=0.0)
    assert (c.stats["rounds"], c.stats["missing_cells"], c.complemented) == (3, 0, False)


def test_nack_bytes_are_counted_on_the_reverse_path():
    # 2 NACKs (bitmap of 5 seqs: 9 + 1 B) + 1 ACK (9 B), each + 12 B link header
    t = run("resend", *LOSSES)
    assert t.stats["bytes_reverse"] == 2 * (9 + 1 + 12) + (9 + 12)
    assert run("none", [0, 0, 1, 0, 1]).stats["bytes_reverse"] == 9 + 12  # ACK only


def test_deadline_while_waiting_for_a_retransmission():
    # NACK at 0.921875 reaches the sender at 1.193359375, after the 1.0 s deadline: the
    # receiver decodes at 1.0; the sender, not yet told (ACK arrives 1.2705078125), still
    # resends — those bytes are spent and counted.
    trace = []
    t = run("resend", [0, 0, 1, 0, 1], [0, 0], trace=trace, deadline_s=1.0)
    assert [e for e in trace if e[1] in ("decode", "nack_arrive", "ack_arrive")] == [
        (1.0, "decode", "deadline"), (1.193359375, "nack_arrive", (2, 4)), (1.2705078125, "ack_arrive", None)]
    s = t.stats
    assert (s["time_to_image_s"], s["rounds"], s["packets_sent"], s["missing_cells"]) == (1.0, 2, 7, 2)
    assert s["bytes_retransmitted"] == 2 * 32


# --------------------------------------------------------------------------- method options, built methods


def test_method_options_are_checked_and_named():
    assert make_policy("complement", method="interp").method_options == {}
    assert make_policy("hybrid", method="pixel-telea", method_options={"radius": 5}).method_options == {"radius": 5}
    opts = {"steps": 4, "strength": 0.5, "weights": "tiny"}
    assert make_policy("complement", method="learned", method_options=opts).method_options == opts
    cases = [
        (("complement", "interp", {"steps": 2}), r"policy.complement.method_options.steps: .*'interp' takes no options"),
        (("complement", "learned", {"steps": 0}), r"policy.complement.method_options.steps = 0: expected an integer"),
        (("complement", "learned", {"stpes": 2}), r"policy.complement.method_options.stpes: unknown option"),
        (("hybrid", "learned-noedge", {"edges": True}), r"policy.hybrid.method_options.edges = True contradicts"),
        (("hybrid", "learned", {"weights": "/no/such/dir"}), r"policy.hybrid.method_options.weights = .*no such folder"),
        (("complement", "learned", [1, 2]), r"policy.complement.method_options = \[1, 2\]: expected a mapping"),
        (("hybrid", "learned", {"dtype": "float16"}),
         (r"^policy.hybrid.method_options.dtype = 'float16': half precision needs a CUDA device \(device: cuda\); "
          r"expected float32 on the CPU$")),
    ]
    for (kind, method, opts), message in cases:
        with pytest.raises(ConfigError, match=message):
            make_policy(kind, method=method, method_options=opts)


class Doubler(ComplementMethod):
    """A complement method: doubles every value; ``alters_known`` like the denoising step. Records
    the noise levels it was called with."""

    name = "doubler"

    def __init__(self, alters_known):
        self.alters_known, self.noise_stds = alters_known, []

    @property
    def calls(self) -> int:
        return len(self.noise_stds)

    def __call__(self, latent, missing, rng, noise_std=0.0):
        self.noise_stds.append(noise_std)
        return np.asarray(latent, dtype=np.float32) * 2


@pytest.mark.parametrize("kind", ["complement", "hybrid"])
def test_built_method_is_used_and_denoising_runs_without_loss(kind):
    policy = make_policy(kind, method="interp")
    latent, none = np.ones((1, 2, 2), np.float32), np.zeros((2, 2), bool)
    plain, denoise = Doubler(False), Doubler(True)
    assert policy.repairer(plain) is plain and policy.repairer() is COMPLEMENT_METHODS["interp"]
    assert not needs_repair(plain, none) and needs_repair(denoise, none)
    out, done = policy.repair(latent, none, np.random.default_rng(0), method=plain)
    assert plain.calls == 0 and not done and np.array_equal(out, latent)      # nothing lost: not called
    out, done = policy.repair(latent, none, np.random.default_rng(0), method=denoise, noise_std=0.25)
    assert denoise.noise_stds == [0.25] and done and np.array_equal(out, 2 * latent)  # alters known cells: called
    lost = none.copy()
    lost[0, 0] = True
    assert needs_repair(plain, lost)
    out, done = policy.repair(latent, lost, np.random.default_rng(0), method=plain)
    assert plain.noise_stds == [0.0] and done


def test_repairers_are_protocol_objects():
    """Every policy names a ComplementMethod; resend and none fill (whatever method is built) and
    their repairs do not count as complemented; a codec method must be built first."""
    fn = Doubler(False)
    latent, missing = np.array([[[1.0, 5.0]]], np.float32), np.array([[True, False]])
    for name, fill in (("resend", "zero"), ("none", "zero")):
        policy = make_policy(name)
        assert policy.repairer(fn) is COMPLEMENT_METHODS[fill] and not policy.complements
        out, done = policy.repair(latent, missing, np.random.default_rng(0), method=fn)
        assert out.tolist() == [[[0.0, 5.0]]] and done is False and fn.calls == 0
    assert make_policy("none", fill="mean").repairer() is COMPLEMENT_METHODS["mean"]
    for kind in ("complement", "hybrid"):
        assert make_policy(kind, method="zero").complements
        placeholder = make_policy(kind, method="learned").repairer()
        assert placeholder is CODEC_METHODS["learned"] and isinstance(placeholder, ComplementMethod)
        with pytest.raises(ConfigError, match="needs the codec"):
            make_policy(kind, method="learned").repair(latent, missing, np.random.default_rng(0))
    for name in (*COMPLEMENT_METHODS, *CODEC_METHODS):
        method = complement_method(name)
        assert isinstance(method, ComplementMethod) and method.name == name
    assert isinstance(COMPLEMENT_METHODS["interp"], FillMethod) and COMPLEMENT_METHODS["interp"].fill is harmonic_fill


def test_default_batch_is_the_calls_and_checks_lengths():
    fn = Doubler(False)
    latents = [np.full((1, 1, 2), v, np.float32) for v in (1.0, 3.0)]
    masks = [np.array([[True, False]])] * 2
    out = fn.batch(latents, masks, [np.random.default_rng(0)] * 2, [0.1, 0.2])
    assert [o.tolist() for o in out] == [[[[2.0, 2.0]]], [[[6.0, 6.0]]]] and fn.noise_stds == [0.1, 0.2]
    with pytest.raises(InputError, match="batch of 2 latents, 1 masks"):
        fn.batch(latents, masks[:1], [np.random.default_rng(0)] * 2, [0.1, 0.2])
    with pytest.raises(TypeError, match="abstract"):
        ComplementMethod()
