"""Engine: exact SimPy traces on scripted losses, ARQ rounds vs the closed form, exact
loss-free latency, determinism, corrupted payloads, awgn, limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from channels import Link, make_channel
from sim.engine import MAX_PASSES, ReceiverConfig, transmit
from sim.errors import ConfigError
from sim.packets import HEADER_BYTES, PacketizerConfig, packetize
from sim.policies import make_policy

from helpers import ByteCodec, Prep, Script

# Binary-exact link: 1 byte = 1/1024 s, so every simulated time below is exact in float64.
EXACT = dict(rate_bps=8 * 1024, delay_s=0.25, header_bytes=12)


def run(policy="resend", losses=(), trace=None, prep=None, link=None, timeout=0.5, seed=0, **kw):
    """1×4 latent, one cell per packet: seq 0 = header (36 B), seqs 1-4 = data (20 B each)."""
    return transmit(ByteCodec(), prep or Prep(1, 1, 4), image_id=1,
                    packetizer=PacketizerConfig(layout="row", tile=1), link=link or Link(**EXACT),
                    channel=losses if not isinstance(losses, tuple) else Script(*losses),
                    policy=make_policy(policy, **kw), receiver=ReceiverConfig(timeout_s=timeout),
                    rng=np.random.default_rng(seed), trace=trace)


INTERP = {"complement": {"method": "interp"}}  # the default (learned) needs the codec's complement weights


def events(trace, keep=None):
    return [e for e in trace if keep is None or e[1] in keep]


# Wire sizes: header 36+12 = 48 B (0.046875 s), data 20+12 = 32 B (0.03125 s),
# NACK bitmap 9+1+12 = 22 B (0.021484375 s), ACK 9+12 = 21 B (0.0205078125 s); delay 0.25 s.


def test_trace_resend_selective_repeat_exact():
    trace = []
    t = run("resend", ([0, 0, 1, 0, 1], [0, 1], [0]), trace)
    assert trace == [
        (0.0, "send", 0), (0.046875, "send", 1), (0.078125, "send", 2), (0.109375, "send", 3),
        (0.140625, "send", 4),
        (0.296875, "arrive", 0), (0.328125, "arrive", 1), (0.359375, "lost", 2),
        (0.390625, "arrive", 3), (0.421875, "lost", 4),
        (0.921875, "timeout", 1), (0.921875, "nack", (2, 4)),  # last packet lost: timer
        (1.193359375, "nack_arrive", (2, 4)), (1.193359375, "send", 2), (1.224609375, "send", 4),
        (1.474609375, "arrive", 2), (1.505859375, "lost", 4),
        (2.005859375, "timeout", 2), (2.005859375, "nack", (4,)),
        (2.27734375, "nack_arrive", (4,)), (2.27734375, "send", 4),
        (2.55859375, "arrive", 4), (2.55859375, "decode", "complete"), (2.55859375, "ack", None),
        (2.8291015625, "ack_arrive", None),
    ]
    s = t.stats
    assert (s["rounds"], s["packets_sent"], s["packets_lost"], s["packets_retransmitted"]) == (3, 8, 3, 3)
    assert s["time_to_image_s"] == 2.55859375 and s["end"] == "complete" and s["missing_share"] == 0
    assert s["bytes_forward"] == (36 + 4 * 20 + 5 * 12) + 2 * 32 + 32
    assert s["bytes_reverse"] == 22 + 22 + 21 and (s["nack_packets"], s["ack_packets"]) == (2, 1)
    assert np.array_equal(t.latent, Prep(1, 1, 4).symbols.astype(np.float32))


def test_loss_runs_span_passes_in_wire_order():
    # wire order: 0 1 0 1 1 | 1 0 0 | 0 (passes: seqs 0-4, then NACKed 1, 3, 4, then 1):
    # a run of 1 (seq 1), then seqs 3, 4 of pass 1 and seq 1 of pass 2: one run of 3
    t = run("resend", ([0, 1, 0, 1, 1], [1, 0, 0], [0]))
    assert t.stats["loss_runs"] == {"1": 1, "3": 1}
    assert t.stats["packets_lost"] == 4 and t.stats["rounds"] == 3
    assert run("none", ([0, 1, 0, 1, 1],)).stats["loss_runs"] == {"1": 1, "2": 1}
    assert run("none", ([0, 0, 0, 0, 0],)).stats["loss_runs"] == {}


def test_trace_gap_detection_decides_at_last_arrival():
    trace = []
    t = run("none", ([0, 0, 1, 0, 0],), trace)
    assert events(trace, {"gap", "timeout", "decode", "nack"}) == [
        (0.421875, "gap", 1), (0.421875, "decode", "policy")]
    assert t.stats["time_to_image_s"] == 0.421875 and t.missing.tolist() == [[False, True, False, False]]


def test_trace_header_lost_is_fetched_under_none():
    trace = []
    t = run("none", ([1, 0, 0, 0, 0], [0]), trace)
    assert events(trace, {"gap", "nack", "nack_arrive", "send", "decode"})[5:] == [
        (0.421875, "gap", 1), (0.421875, "nack", (0,)), (0.693359375, "nack_arrive", (0,)),
        (0.693359375, "send", 0), (0.990234375, "decode", "complete")]
    assert t.stats["rounds"] == 2 and t.stats["missing_share"] == 0


def test_trace_nothing_arrives_sender_timer_resends_header():
    trace = []
    t = run("none", ([1, 1, 1, 1, 1], [0]), trace)
    # sender timer = last nominal arrival 0.421875 + 2·timeout + worst NACK one-way (22 B + delay)
    assert events(trace, {"sender_timeout", "send", "all_arrived", "decode"})[5:] == [
        (1.693359375, "sender_timeout", 1), (1.693359375, "send", 0),
        (1.990234375, "all_arrived", 2), (1.990234375, "decode", "policy")]
    assert t.stats["missing_share"] == 1.0 and t.stats["packets_discarded"] == 0


def test_trace_header_and_data_lost_complement_fetches_header_only():
    trace = []
    t = run("complement", ([1, 1, 0, 1, 1], [1], [0]), trace, method="interp")
    assert events(trace, {"timeout", "nack", "decode"}) == [
        (0.921875, "timeout", 1), (0.921875, "nack", (0,)),
        (1.990234375, "timeout", 2), (1.990234375, "nack", (0,)),
        (2.55859375, "decode", "policy")]
    assert t.stats["missing_cells"] == 3 and t.missing.sum() == 3 and not t.latent[:, t.missing].any()


def test_lossless_time_to_image_is_serialization_plus_propagation_exactly():
    link = Link(rate_bps=8 * 2 ** 20, delay_s=2.0 ** -6, mtu=428, header_bytes=28)  # 1 byte = 2⁻²⁰ s; 400 B packets
    prep = Prep(4, 16, 16, side=bytes(700))
    for layout, tile in (("tile", 4), ("interleave", 2), ("row", 3)):
        pcfg = PacketizerConfig(layout=layout, tile=tile)
        pk = packetize(ByteCodec(), prep, 1, pcfg, limit=link.max_payload)
        assert pk.n_header == 2  # 700 B of side info: two header packets
        t = transmit(ByteCodec(), prep, image_id=1, packetizer=pcfg, link=link,
                     channel=make_channel("bernoulli", loss=0.0), policy=make_policy("resend"),
                     receiver=ReceiverConfig(), rng=np.random.default_rng(0))
        serialization = 8 * (int(pk.sizes.sum()) + 28 * pk.total) / link.rate_bps
        assert t.stats["time_to_image_s"] == serialization + link.delay_s
        assert t.stats["rounds"] == 1 and t.stats["bytes_reverse"] == 9 + 28  # the ACK only


def expected_rounds(n: int, p: float) -> float:
    """Σ_{r≥0} [1 − (1 − p^r)^n]: mean passes until n packets all got through."""
    total, r = 0.0, 0
    while True:
        term = 1.0 - (1.0 - p ** r) ** n
        total += term
        if r > 0 and term < 1e-12:
            return total
        r += 1


@pytest.mark.parametrize("p,closed", [(0.05, 2.12), (0.2, 3.45)])
def test_arq_rounds_match_closed_form(p, closed):
    """n = 64 packets (1 header + 63 data), every missing one resent each round.

    rounds = transmission passes, the first included. Tolerance: 4 standard errors of the
    sample mean (deterministic seeds, so the test cannot flake).
    """
    assert round(expected_rounds(64, p), 2) == closed
    prep = Prep(1, 7, 9)
    pcfg = PacketizerConfig(layout="row", tile=1)
    codec = ByteCodec()
    pk = packetize(codec, prep, 0, pcfg, limit=1172)
    assert pk.total == 64
    link = Link(rate_bps=1e7, delay_s=0.01)
    channel = make_channel("bernoulli", loss=p)
    policy = make_policy("resend", max_rounds=100)
    rounds = np.array([
        transmit(codec, prep, image_id=0, packetizer=pcfg, link=link, channel=channel, policy=policy,
                 receiver=ReceiverConfig(timeout_s=0.05), rng=np.random.default_rng(ss), packets=pk
                 ).stats["rounds"]
        for ss in np.random.SeedSequence(2024).spawn(1200)])
    se = rounds.std(ddof=1) / math.sqrt(rounds.size)
    assert abs(rounds.mean() - expected_rounds(64, p)) < 4 * se, (rounds.mean(), se)


@pytest.mark.parametrize("policy,kw", [("resend", {}), ("hybrid", {"deadline_s": 0.3}),
                                       ("complement", {"method": "interp"}), ("none", {"fill": "mean"})])
def test_same_seed_same_stats(policy, kw):
    prep = Prep(4, 12, 12)
    link = Link(rate_bps=1e6, delay_s=0.02, jitter_s=0.005)
    channel = make_channel("gilbert_elliott", loss=0.2, burst=3)

    def once(seed):
        t = transmit(ByteCodec(), prep, image_id=3, packetizer=PacketizerConfig(tile=2), link=link,
                     channel=channel, policy=make_policy(policy, **kw), receiver=ReceiverConfig(timeout_s=0.03),
                     rng=np.random.default_rng(seed), trace=[])
        return t

    a, b, c = once(11), once(11), once(12)
    assert a.stats == b.stats and np.array_equal(a.latent, b.latent) and np.array_equal(a.missing, b.missing)
    assert a.stats != c.stats


def test_policies_share_the_first_pass_channel_realisation():
    prep = Prep(4, 16, 16)
    seen = set()
    for policy in ("resend", "none", "complement", "hybrid"):
        t = transmit(ByteCodec(), prep, image_id=0, packetizer=PacketizerConfig(tile=2),
                     link=Link(rate_bps=1e6, delay_s=0.01), channel=make_channel("bernoulli", loss=0.3),
                     policy=make_policy(policy, **INTERP.get(policy, {})), receiver=ReceiverConfig(),
                     rng=np.random.default_rng(np.random.SeedSequence([7, 0, 1, 2])))
        seen.add(t.stats["first_pass_lost_share"])
    assert len(seen) == 1 and seen.pop() > 0


def test_packets_fit_the_link_mtu_with_its_header_bytes():
    prep = Prep(4, 16, 16, side=bytes(500))
    link = Link(rate_bps=1e6, delay_s=0.0, mtu=200, header_bytes=28)
    trace = []
    t = transmit(ByteCodec(), prep, image_id=0, packetizer=PacketizerConfig(tile=8), link=link,
                 channel=make_channel("bernoulli", loss=0.0), policy=make_policy("none"),
                 receiver=ReceiverConfig(), rng=np.random.default_rng(0), trace=trace)
    assert t.stats["packet_limit_bytes"] == 172  # link.mtu − link.header_bytes
    pk = packetize(ByteCodec(), prep, 0, PacketizerConfig(tile=8), limit=172)
    assert pk.sizes.max() <= 172 and t.stats["packets"] == pk.total > 5
    # on the wire: every packet + the link's header is at most link.mtu
    assert t.stats["bytes_forward"] == int(pk.sizes.sum()) + 28 * pk.total and int(pk.sizes.max()) + 28 <= 200
    with pytest.raises(ConfigError, match="do not fit the link"):
        transmit(ByteCodec(), prep, image_id=0, packetizer=PacketizerConfig(), link=link,
                 channel=make_channel("bernoulli", loss=0.0), policy=make_policy("none"),
                 receiver=ReceiverConfig(), rng=np.random.default_rng(0),
                 packets=packetize(ByteCodec(), prep, 0, PacketizerConfig(), limit=1172))


@pytest.fixture(scope="module")
def range_codec():
    from sim.codec.base import Codec
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer

    codec = Codec(None, make_quantizer("uniform", bits=6), make_entropy_coder("range"))
    latent = np.random.default_rng(0).standard_normal((4, 16, 16)).astype(np.float32)
    return codec, codec.prepare(latent)


def test_real_codec_lossless_round_trip(range_codec):
    codec, prep = range_codec
    t = transmit(codec, prep, image_id=0, packetizer=PacketizerConfig(layout="interleave", tile=4),
                 link=Link(rate_bps=1e6, delay_s=0.01), channel=make_channel("bernoulli", loss=0.0),
                 policy=make_policy("complement"), receiver=ReceiverConfig(), rng=np.random.default_rng(0))
    assert np.array_equal(t.latent, codec.dequantize(prep.symbols, prep.side))
    assert not t.missing.any() and t.noise_std > 0  # quantization noise only


def test_corrupted_payloads_do_not_crash_and_are_counted(range_codec):
    codec, prep = range_codec
    totals = {"corrupted": 0, "discarded": 0}
    for seed in range(6):
        t = transmit(codec, prep, image_id=0, packetizer=PacketizerConfig(tile=4),
                     link=Link(rate_bps=1e6, delay_s=0.01), channel=make_channel("bsc", ber=3e-4, crc=False),
                     policy=make_policy("resend"), receiver=ReceiverConfig(), rng=np.random.default_rng(seed))
        assert t.latent.shape == (4, 16, 16) and np.isfinite(t.latent).all()
        totals["corrupted"] += t.stats["packets_corrupted"]
        totals["discarded"] += t.stats["packets_discarded"]
    assert totals["corrupted"] > 0  # garbage symbols used: the point of crc: false


def test_awgn_adds_noise_to_received_values_only_deterministically(range_codec):
    codec, prep = range_codec
    clean = codec.dequantize(prep.symbols, prep.side)

    def once(seed):
        return transmit(codec, prep, image_id=0, packetizer=PacketizerConfig(tile=4),
                        link=Link(rate_bps=1e6, delay_s=0.01), channel=make_channel("awgn", snr_db=10.0),
                        policy=make_policy("none"), receiver=ReceiverConfig(), rng=np.random.default_rng(seed))

    a, b = once(3), once(3)
    assert a.stats["packets_lost"] == 0 and not a.missing.any()
    assert np.array_equal(a.latent, b.latent)
    noise = a.latent - clean
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 1.0


def test_the_transmission_carries_the_quantization_and_channel_noise(range_codec):
    """``noise_std`` (a complement method's call argument) is √(σ_q² + σ_c²): σ_q = RMS of Δ/√12
    over channels (Δ = the channel's range / 63 at 6 bits), σ_c = √(mean(clean²) / 10^(snr/10)) for awgn."""
    codec, prep = range_codec
    clean = codec.dequantize(prep.symbols, prep.side).astype(np.float64)
    flat = clean.reshape(4, -1)
    delta = (flat.max(axis=1) - flat.min(axis=1)) / 63       # the extremes are symbols 0 and 63
    sigma_q = np.sqrt(np.mean(delta ** 2) / 12)
    for channel, sigma_c in ((make_channel("awgn", snr_db=10.0), np.sqrt(np.mean(clean ** 2) / 10.0)),
                             (make_channel("bernoulli", loss=0.0), 0.0)):
        t = transmit(codec, prep, image_id=0, packetizer=PacketizerConfig(tile=4),
                     link=Link(rate_bps=1e6, delay_s=0.01), channel=channel,
                     policy=make_policy("complement", method="learned-denoise"), receiver=ReceiverConfig(),
                     rng=np.random.default_rng(3))
        assert t.noise_std == pytest.approx(np.hypot(sigma_q, sigma_c), rel=1e-5)
    assert 0.005 < sigma_q < 0.05 and codec.quantization_noise_std(prep.side) == pytest.approx(sigma_q, rel=1e-5)


def test_header_that_never_arrives_ends_after_max_passes():
    t = run("resend", make_channel("bernoulli", loss=1.0))
    assert t.stats["end"] == "no_header" and t.stats["rounds"] == MAX_PASSES
    assert t.stats["missing_share"] == 1.0 and not t.latent.any()


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="receiver.timeout_s"):
        ReceiverConfig(timeout_s=-1)
    with pytest.raises(TypeError, match="rng"):
        transmit(ByteCodec(), Prep(1, 1, 4), image_id=0, packetizer=PacketizerConfig(), link=Link(**EXACT),
                 channel=make_channel("bernoulli", loss=0.0), policy=make_policy("none"),
                 receiver=ReceiverConfig(), rng=0)
    assert HEADER_BYTES == 19


def test_packets_argument_must_match_the_image():
    prep = Prep(1, 1, 4)
    pk = packetize(ByteCodec(), prep, 5, PacketizerConfig(layout="row", tile=1), limit=1172)
    with pytest.raises(ValueError, match="image_id 5"):
        transmit(ByteCodec(), prep, image_id=6, packetizer=PacketizerConfig(layout="row", tile=1),
                 link=Link(**EXACT), channel=make_channel("bernoulli", loss=0.0), policy=make_policy("none"),
                 receiver=ReceiverConfig(), rng=np.random.default_rng(0), packets=pk)


def test_end_to_end_with_the_tiny_codec():
    """Image → tiny (random) autoencoder → uniform quantizer + range coder → lossy channel →
    complement → decoded image."""
    import torch

    from sim.codec.base import Codec
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer
    from sim.codec.tiny import TinyModel
    from sim.codec.tiny_net import TinyAutoencoder

    with torch.random.fork_rng():
        torch.manual_seed(0)
        codec = Codec(TinyModel(TinyAutoencoder(widths=(8, 8, 8))), make_quantizer("uniform", bits=6),
                      make_entropy_coder("range"))
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([yy * 4, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)
    prep = codec.prepare(codec.encode(image))
    assert prep.shape == (4, 8, 8)
    sent = codec.dequantize(prep.symbols, prep.side)
    for policy in ("resend", "complement", "hybrid"):
        t = transmit(codec, prep, image_id=0, packetizer=PacketizerConfig(layout="tile", tile=2),
                     link=Link(rate_bps=1e6, delay_s=0.01), channel=make_channel("bernoulli", loss=0.3),
                     policy=make_policy(policy, **INTERP.get(policy, {})), receiver=ReceiverConfig(timeout_s=0.02),
                     rng=np.random.default_rng(1))
        assert t.stats["first_pass_lost_share"] > 0
        assert np.array_equal(t.latent[:, ~t.missing], sent[:, ~t.missing])
        assert not t.latent[:, t.missing].any()  # the engine does not repair: missing cells are 0
        pol = make_policy(policy, **INTERP.get(policy, {}))
        repaired, complemented = pol.repair(t.latent, t.missing, t.repair_rng, noise_std=t.noise_std)
        assert complemented == (policy != "resend" and bool(t.missing.any()))
        out = codec.decode(repaired)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
