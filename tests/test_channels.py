"""Channel and link models against their closed forms (docs/channels.md, NOTES-channels.md).

Monte-Carlo checks use seeded generators and a tolerance of 5 standard errors unless a
comment says otherwise: a correct model fails one check with probability ~6·10⁻⁷, while
the errors these tests are meant to catch (wrong ordering, off-by-one sojourns, XOR
cancellation, a wrong formula) shift the estimate by far more than 5 SE at these sizes.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import yaml

from channels import (CHANNELS, Bernoulli, Channel, ChannelState, GilbertElliott,
                      as_config, make_channel, make_link)
from channels.bsc import bpsk_ber
from sim.errors import ConfigError

N = 1_000_000  # packets for rate estimates; ~30 ms per GE draw


def rng(seed=1234):
    return np.random.default_rng(seed)


def loss_runs(lost: np.ndarray) -> np.ndarray:
    """Lengths of runs of consecutive losses, the run cut off by the end left out."""
    edges = np.diff(np.concatenate([[0], lost.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = ends < lost.size
    return (ends - starts)[keep]


def block_mean_se(lost: np.ndarray, stat, blocks: int = 50) -> tuple[float, float]:
    """Mean and standard error of ``stat`` over contiguous blocks (batch means).

    Blocks of 20 000 packets are much longer than the chain's memory (≈ 1/(p+r) packets),
    so block statistics are close to independent and std/√blocks is an honest SE even
    where single packets or runs are correlated.
    """
    values = np.array([stat(b) for b in np.array_split(lost, blocks)])
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(blocks))


def mean_run(lost: np.ndarray) -> float:
    """Losses per run start: the mean loss-run length of a block."""
    starts = int(lost[0]) + np.count_nonzero(np.diff(lost.astype(np.int8)) == 1)
    return lost.sum() / starts


def ge_loss_se(ch: GilbertElliott, n: int) -> float:
    """Asymptotic SE of the loss rate of n GE packets, from the chain's autocorrelation.

    Var = p_E(1−p_E) + 2·(e_B − e_G)²·π_B·π_G·λ/(1−λ), λ = 1−p−r: the loss indicator's
    covariance at lag m is (e_B − e_G)²·π_B·π_G·λ^m.
    """
    p, r, h, k = ch.parameters()
    pe, pib = ch.stationary_loss(), ch.bad_probability()
    lam = 1.0 - p - r
    var = pe * (1 - pe) + 2 * (k - h) ** 2 * pib * (1 - pib) * lam / (1 - lam)
    return math.sqrt(var / n)


# ---------------------------------------------------------------- registry and errors


def test_registry_names_every_model():
    assert set(CHANNELS) == {"bernoulli", "gilbert_elliott", "trace", "bsc", "awgn"}
    for kind, cls in CHANNELS.items():
        assert cls.kind == kind


def test_unknown_kind_lists_kinds_and_suggests():
    with pytest.raises(ConfigError, match=r"did you mean 'gilbert_elliott'") as err:
        make_channel("gilbert_eliot", loss=0.1, burst=3)
    assert "bernoulli" in str(err.value) and "awgn" in str(err.value)
    with pytest.raises(ConfigError, match="channel.kind"):
        make_channel(3)


def test_unknown_and_missing_keys():
    with pytest.raises(ConfigError, match=r"channel.los: unknown key.*did you mean 'loss'"):
        make_channel("bernoulli", los=0.1)
    with pytest.raises(ConfigError, match=r"channel.loss missing"):
        make_channel("bernoulli")
    with pytest.raises(ConfigError, match=r"link.delay_s missing"):
        make_link(rate_bps=1e6)
    with pytest.raises(ConfigError, match=r"link.rate: unknown key.*did you mean 'rate_bps'"):
        make_link(rate=1e6, delay_s=0.0)


BAD = [
    # (kind, kwargs, text the message must contain)
    ("bernoulli", {"loss": 1.3}, "channel.loss = 1.3: expected a probability in [0, 1]"),
    ("bernoulli", {"loss": -0.1}, "channel.loss = -0.1"),
    ("bernoulli", {"loss": float("nan")}, "channel.loss = nan"),
    ("bernoulli", {"loss": True}, "channel.loss = True"),
    ("bernoulli", {"loss": None}, "channel.loss = None"),
    ("bernoulli", {"loss": "1e-5"}, "channel.loss = '1e-5': expected a number"),
    ("gilbert_elliott", {"p": 1.2, "r": 0.5}, "channel.p = 1.2"),
    ("gilbert_elliott", {"p": 0.1, "r": -1}, "channel.r = -1"),
    ("gilbert_elliott", {"p": 0.1, "r": 0.5, "h": 2}, "channel.h = 2"),
    ("gilbert_elliott", {"p": 0.1, "r": 0.5, "k": -0.5}, "channel.k = -0.5"),
    ("gilbert_elliott", {"p": 0.1}, "channel.r missing"),
    ("gilbert_elliott", {"r": 0.1, "h": 0.5}, "channel.p missing"),
    ("gilbert_elliott", {"loss": 0.1}, "channel.burst missing"),
    ("gilbert_elliott", {"loss": 1.0, "burst": 3}, "channel.loss = 1.0"),
    ("gilbert_elliott", {"loss": 0.1, "burst": 0.5}, "channel.burst = 0.5"),
    ("gilbert_elliott", {"loss": 0.9, "burst": 2}, "channel.loss = 0.9 with channel.burst = 2"),
    ("gilbert_elliott", {"loss": 0.1, "burst": 3, "p": 0.1}, "not both"),
    ("gilbert_elliott", {"loss": 0.1, "burst": 3, "h": 0.1}, "h = 0.1"),
    ("gilbert_elliott", {}, "needs either"),
    ("bsc", {"ber": 0.6}, "channel.ber = 0.6: expected a probability in [0, 0.5]"),
    ("bsc", {"ber": -1e-3}, "channel.ber = -0.001"),
    ("bsc", {"ebn0_db": float("inf")}, "channel.ebn0_db = inf"),
    ("bsc", {"ebn0_db": "6"}, "channel.ebn0_db = '6'"),
    ("bsc", {"ber": 1e-3, "ebn0_db": 6}, "exactly one of ber and ebn0_db, got both"),
    ("bsc", {}, "got neither"),
    ("bsc", {"ber": 1e-3, "crc": "yes"}, "channel.crc = 'yes': expected true or false"),
    ("bsc", {"ber": 1e-3, "crc": 1}, "channel.crc = 1"),
    ("awgn", {"snr_db": float("nan")}, "channel.snr_db = nan"),
    ("awgn", {"snr_db": [10]}, "channel.snr_db = [10]"),
    ("trace", {"path": 5}, "channel.path = 5"),
    ("trace", {"path": ""}, "channel.path = ''"),
]


@pytest.mark.parametrize("kind, kwargs, text", BAD, ids=[f"{k}-{t[:28]}" for k, _, t in BAD])
def test_bad_parameters_are_refused_naming_field_and_value(kind, kwargs, text):
    with pytest.raises(ConfigError) as err:
        make_channel(kind, **kwargs)
    assert text in str(err.value)


BAD_LINK = [
    ({"rate_bps": 0, "delay_s": 0.01}, "link.rate_bps = 0: expected a rate > 0"),
    ({"rate_bps": -5.0, "delay_s": 0.01}, "link.rate_bps = -5.0"),
    ({"rate_bps": 1e6, "delay_s": -0.01}, "link.delay_s = -0.01"),
    ({"rate_bps": 1e6, "delay_s": 0.01, "reverse_rate_bps": 0.0}, "link.reverse_rate_bps = 0.0"),
    ({"rate_bps": 1e6, "delay_s": 0.01, "jitter_s": -1}, "link.jitter_s = -1"),
    ({"rate_bps": 1e6, "delay_s": 0.01, "mtu": 63}, "link.mtu = 63: expected an integer ≥ 64"),
    ({"rate_bps": 1e6, "delay_s": 0.01, "mtu": 1500.0}, "link.mtu = 1500.0"),
    ({"rate_bps": 1e6, "delay_s": 0.01, "header_bytes": -1}, "link.header_bytes = -1"),
    ({"rate_bps": 1e6, "delay_s": 0.01, "mtu": 64, "header_bytes": 64}, "link.header_bytes = 64"),
    ({"rate_bps": "2.0e6", "delay_s": 0.01}, "link.rate_bps = '2.0e6': expected a number"),
]


@pytest.mark.parametrize("kwargs, text", BAD_LINK, ids=[t[:30] for _, t in BAD_LINK])
def test_bad_link_parameters_are_refused(kwargs, text):
    with pytest.raises(ConfigError) as err:
        make_link(**kwargs)
    assert text in str(err.value)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        Bernoulli(loss=2)


# ---------------------------------------------------------------- Bernoulli


def test_bernoulli_loss_rate():
    lost = make_channel("bernoulli", loss=0.1).start(rng()).losses(N)
    se = math.sqrt(0.1 * 0.9 / N)  # i.i.d.: binomial SE
    assert abs(lost.mean() - 0.1) <= 5 * se


def test_bernoulli_extremes_and_transmit():
    assert not make_channel("bernoulli", loss=0).start(rng()).losses(1000).any()
    assert make_channel("bernoulli", loss=1).start(rng()).losses(1000).all()
    payloads = [bytes([i]) * 10 for i in range(200)]
    lost, delivered = make_channel("bernoulli", loss=0.5).start(rng()).transmit(payloads)
    assert lost.shape == (200,) and lost.dtype == bool and 0 < lost.sum() < 200
    for sent, got, gone in zip(payloads, delivered, lost):
        assert got == (b"" if gone else sent)


# ---------------------------------------------------------------- Gilbert–Elliott


def test_ge_stationary_loss_general_parameters():
    ch = make_channel("gilbert_elliott", p=0.05, r=0.3, h=0.2, k=0.97)
    p, r, h, k = 0.05, 0.3, 0.2, 0.97
    assert ch.stationary_loss() == pytest.approx((1 - k) * r / (p + r) + (1 - h) * p / (p + r), rel=1e-12)
    lost = ch.start(rng()).losses(N)
    # SE from the chain's autocorrelation (ge_loss_se); the start in Good biases the mean
    # by ≈ π_B·(e_B−e_G)·λ/(1−λ)/N ≈ 2e-7, negligible.
    assert abs(lost.mean() - ch.stationary_loss()) <= 5 * ge_loss_se(ch, N)


def test_ge_loss_burst_form():
    ch = make_channel("gilbert_elliott", loss=0.1, burst=4)
    p, r, h, k = ch.parameters()
    assert (r, h, k) == (0.25, 0.0, 1.0) and p == pytest.approx(0.1 * 0.25 / 0.9, rel=1e-12)
    assert ch.stationary_loss() == pytest.approx(0.1, rel=1e-12)
    assert ch.mean_burst() == pytest.approx(4.0, rel=1e-12)
    lost = ch.start(rng(7)).losses(N)
    assert abs(lost.mean() - 0.1) <= 5 * ge_loss_se(ch, N)


def test_simple_gilbert_mean_burst_and_histogram():
    ch = make_channel("gilbert_elliott", p=0.03, r=0.25)
    runs = loss_runs(ch.start(rng(3)).losses(N))
    r, n_runs = 0.25, runs.size
    # Loss runs are Bad sojourns: i.i.d. Geometric(r), mean 1/r, variance (1−r)/r².
    se = math.sqrt((1 - r) / r**2 / n_runs)
    assert abs(runs.mean() - 1 / r) <= 5 * se
    assert ch.mean_burst() == pytest.approx(1 / r, rel=1e-12)
    # Histogram: bin j holds n_runs·r(1−r)^(j−1); each count is binomial(n_runs, q_j),
    # SD √(n_runs·q_j(1−q_j)). Bins 1..10 and the tail ≥ 11, 5 SD each.
    counts = np.bincount(np.minimum(runs, 11), minlength=12)[1:]
    q = np.array([r * (1 - r) ** (j - 1) for j in range(1, 11)] + [(1 - r) ** 10])
    assert np.all(np.abs(counts - n_runs * q) <= 5 * np.sqrt(n_runs * q * (1 - q)))


def test_gilbert_mean_loss_run_with_h():
    p, r, h = 0.02, 0.2, 0.3
    ch = make_channel("gilbert_elliott", p=p, r=r, h=h)
    theory = 1 / (1 - (1 - r) * (1 - h))
    assert ch.mean_burst() == pytest.approx(theory, rel=1e-12)
    runs = loss_runs(ch.start(rng(5)).losses(N))
    # A run goes on while the chain stays in Bad and loses: i.i.d. Geometric(q),
    # q = 1 − (1−r)(1−h), mean 1/q, variance (1−q)/q².
    qq = 1 / theory
    assert abs(runs.mean() - theory) <= 5 * math.sqrt((1 - qq) / qq**2 / runs.size)


def test_ge_mean_burst_general_parameters():
    ch = make_channel("gilbert_elliott", p=0.05, r=0.3, h=0.2, k=0.97)
    # Loss runs are weakly dependent here (k < 1): batch means over 50 blocks for the SE.
    mean, se = block_mean_se(ch.start(rng(11)).losses(N), mean_run)
    assert abs(mean - ch.mean_burst()) <= 5 * se


def test_ge_resend_inside_burst_is_lost_more_often():
    ch = make_channel("gilbert_elliott", loss=0.1, burst=4)
    p, r, _, _ = ch.parameters()
    lost = ch.start(rng(9)).losses(N)
    for m in (1, 3, 10):
        theory = ch.bad_probability() + (1 - ch.bad_probability()) * (1 - p - r) ** m
        cond = lambda b, m=m: b[m:][b[:-m]].mean()  # P(lost at t+m | lost at t)
        mean, se = block_mean_se(lost, cond)  # batch means: pairs in one burst are correlated
        assert abs(mean - theory) <= 5 * se
        assert theory > 0.1


def test_ge_transition_comes_before_the_loss_draw():
    # netem order: from Good, transition first; with p = 1 the first packet is in Bad.
    assert make_channel("gilbert_elliott", p=1, r=0).start(rng()).losses(1).tolist() == [True]
    alternate = make_channel("gilbert_elliott", p=1, r=1).start(rng()).losses(6)
    assert alternate.tolist() == [True, False, True, False, True, False]
    # p = 0 never leaves Good: only Good's losses (1 − k) happen.
    assert not make_channel("gilbert_elliott", p=0, r=0.5).start(rng()).losses(10_000).any()


def test_ge_state_carries_across_calls():
    state = make_channel("gilbert_elliott", p=1, r=0).start(rng())
    state.losses(1)
    assert state.bad and state.losses(5).all()
    state = make_channel("gilbert_elliott", p=1, r=1).start(rng())
    assert state.losses(3).tolist() == [True, False, True]
    assert state.losses(3).tolist() == [False, True, False]  # continues the alternation
    # Calls of mixed sizes (short ones take a Python path, long ones a vectorised one)
    # have the same statistics as one long call.
    ch = make_channel("gilbert_elliott", loss=0.2, burst=5)
    state = ch.start(rng(21))
    sizes = rng(22).choice([1, 2, 7, 64, 65, 300], size=N // 70)
    lost = np.concatenate([state.losses(n) for n in sizes])
    assert abs(lost.mean() - 0.2) <= 5 * ge_loss_se(ch, lost.size)
    assert abs(loss_runs(lost).mean() - 5) <= 5 * math.sqrt(0.8 / 0.04 / loss_runs(lost).size)


def test_ge_transmit_matches_losses():
    ch = make_channel("gilbert_elliott", loss=0.3, burst=3)
    payloads = [b"x" * 50] * 500
    lost, delivered = ch.start(rng(4)).transmit(payloads)
    assert np.array_equal(lost, ch.start(rng(4)).losses(500))
    assert [d == b"" for d in delivered] == lost.tolist()
    assert ch.start(rng()).expected_loss_rate(400) == pytest.approx(0.3)


# ---------------------------------------------------------------- trace


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "loss.txt"
    path.write_text("# irtt, 10 ms spacing\n0\n1\n\n1  # burst\n0\n# comment\n0\n1\n")
    return path  # pattern 0 1 1 0 0 1


def test_trace_replays_exactly_with_offset_and_wraparound(trace_file):
    pattern = [False, True, True, False, False, True]
    ch = make_channel("trace", path=str(trace_file))
    assert ch.pattern.tolist() == pattern
    assert ch.start(rng()).losses(6).tolist() == pattern
    state = make_channel("trace", path=str(trace_file), offset=4).start(rng())
    assert state.losses(3).tolist() == [False, True, False]  # 4, 5, wrap to 0
    assert state.losses(8).tolist() == (pattern * 3)[1:9]
    assert state.expected_loss_rate(100) == pytest.approx(0.5)
    # fresh states restart at the offset, whatever the rng
    assert make_channel("trace", path=trace_file, offset=4).start(rng(99)).losses(2).tolist() == [False, True]


def test_trace_transmit(trace_file):
    lost, delivered = make_channel("trace", path=str(trace_file)).start(rng()).transmit([b"a", b"b", b"c"])
    assert lost.tolist() == [False, True, True] and delivered == [b"a", b"", b""]


def test_trace_errors_name_file_and_line(tmp_path, trace_file):
    bad = tmp_path / "bad.txt"
    bad.write_text("0\n1\n# fine\n\n2\n")
    with pytest.raises(ConfigError, match=rf"{bad}:5: trace value '2' on line 5"):
        make_channel("trace", path=str(bad))
    bad.write_text("0\n1 0\n")
    with pytest.raises(ConfigError, match="line 2"):
        make_channel("trace", path=str(bad))
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=f"channel.path = '{missing}': trace file not found"):
        make_channel("trace", path=str(missing))
    bad.write_text("# nothing\n\n")
    with pytest.raises(ConfigError, match="no packets"):
        make_channel("trace", path=str(bad))
    with pytest.raises(ConfigError, match="channel.offset = 6: expected an index below the trace length 6"):
        make_channel("trace", path=str(trace_file), offset=6)
    with pytest.raises(ConfigError, match="channel.offset = -1"):
        make_channel("trace", path=str(trace_file), offset=-1)
    with pytest.raises(ConfigError, match="channel.offset = 1.5"):
        make_channel("trace", path=str(trace_file), offset=1.5)


# ---------------------------------------------------------------- BSC


@pytest.mark.parametrize("ebn0_db, noted", [(0, 7.87e-2), (4, 1.25e-2), (6, 2.39e-3), (8, 1.91e-4), (10, 3.87e-6)])
def test_bpsk_ber_matches_notes(ebn0_db, noted):
    # NOTES gives 3 significant digits. At 0 dB the exact value is 7.86496e-2, which NOTES
    # rounds (via 7.865e-2) to 7.87e-2: allow 1e-3 relative rather than half a last digit.
    assert bpsk_ber(ebn0_db) == pytest.approx(noted, rel=1e-3)
    assert make_channel("bsc", ebn0_db=ebn0_db).bit_error_rate == bpsk_ber(ebn0_db)


def test_bsc_packet_error_rate_closed_form_and_monte_carlo():
    state = make_channel("bsc", ber=1e-5).start(rng())
    assert state.expected_loss_rate(12_000) == pytest.approx(0.113, abs=5e-4)  # NOTES, 3 digits
    n = 200_000
    lost = state.losses(n, bits_per_packet=12_000)
    pe = 1 - (1 - 1e-5) ** 12_000
    assert abs(lost.mean() - pe) <= 5 * math.sqrt(pe * (1 - pe) / n)  # i.i.d. packets
    with pytest.raises(TypeError, match="bits_per_packet"):
        state.losses(10)


def test_bsc_crc_erases_packets_with_errors():
    ber, size, n = 1e-3, 125, 20_000
    payloads = [bytes([i % 256]) * size for i in range(n)]
    lost, delivered = make_channel("bsc", ber=ber).start(rng(2)).transmit(payloads)
    pe = 1 - (1 - ber) ** (8 * size)
    assert abs(lost.mean() - pe) <= 5 * math.sqrt(pe * (1 - pe) / n)
    assert all(d == (b"" if gone else p) for p, d, gone in zip(payloads, delivered, lost))


def flipped(a: list[bytes], b: list[bytes]) -> np.ndarray:
    """Per byte of the concatenated payloads, how many bits differ (uint8)."""
    x = np.frombuffer(b"".join(a), dtype=np.uint8)
    y = np.frombuffer(b"".join(b), dtype=np.uint8)
    return np.bitwise_count(x ^ y)


def test_bsc_without_crc_delivers_corrupted_payloads():
    ber, size, n = 1e-3, 100, 5_000
    payloads = [bytes(rng(i).integers(0, 256, size, dtype=np.uint8)) for i in range(n)]
    state = make_channel("bsc", ber=ber, crc=False).start(rng(8))
    lost, delivered = state.transmit(payloads)
    assert not lost.any() and [len(d) for d in delivered] == [size] * n
    flips = int(flipped(payloads, delivered).sum(dtype=np.int64))
    bits = 8 * size * n
    # total flips ~ Binomial(bits, ber): mean BER·bits, SD √(bits·ber·(1−ber)) ≈ 63
    assert abs(flips - ber * bits) <= 5 * math.sqrt(bits * ber * (1 - ber))
    assert state.expected_loss_rate(800) == 0.0
    assert not state.losses(10).any()


def test_bsc_without_crc_packet_by_packet():
    # One packet per call (the engine's worst case): mostly no error at all, sometimes
    # several; the total must still be Binomial(bits, ber).
    ber, size, n = 1e-5, 1172, 20_000
    payload = bytes(range(256)) * 4 + bytes(148)
    state = make_channel("bsc", ber=ber, crc=False).start(rng(12))
    delivered = [state.transmit([payload])[1][0] for _ in range(n)]
    flips = flipped([payload] * n, delivered).reshape(n, size).sum(axis=1, dtype=np.int64)
    bits = 8 * size * n
    assert abs(flips.sum() - ber * bits) <= 5 * math.sqrt(bits * ber * (1 - ber))
    assert flips.max() >= 2  # packets with several errors occurred


def test_bsc_flip_positions_are_distinct_and_uniform():
    # At BER 0.5 many positions collide when drawn; they must be redrawn, not XOR-cancelled.
    n = 20_000
    payloads = [b"\x00\x00\x00\x00"] * n
    _, delivered = make_channel("bsc", ber=0.5, crc=False).start(rng(6)).transmit(payloads)
    x = np.frombuffer(b"".join(delivered), dtype=np.uint8)
    flips = np.unpackbits(x).reshape(n, 32)  # payloads are all zero
    # per packet Binomial(32, 0.5): mean 16, SD √8; per bit position frequency 0.5 ± √(0.25/n)
    assert abs(flips.sum(axis=1).mean() - 16) <= 5 * math.sqrt(8 / n)
    assert np.all(np.abs(flips.mean(axis=0) - 0.5) <= 5 * math.sqrt(0.25 / n))


def test_bsc_edge_cases():
    payloads = [b"", b"abc", b""]
    lost, delivered = make_channel("bsc", ber=0.0, crc=False).start(rng()).transmit(payloads)
    assert delivered == payloads and not lost.any()
    lost, delivered = make_channel("bsc", ber=0.5).start(rng()).transmit(payloads)
    assert lost.tolist()[0] is False and lost.tolist()[2] is False  # no bits, no errors
    lost, delivered = make_channel("bsc", ber=0.01, crc=False).start(rng()).transmit([])
    assert lost.shape == (0,) and delivered == []
    # tiny BERs (20 dB: 1e-45; 40 dB underflows to 0) draw huge gaps: no overflow, no errors
    for db in (20.0, 40.0):
        for crc in (True, False):
            lost, delivered = make_channel("bsc", ebn0_db=db, crc=crc).start(rng()).transmit(payloads * 100)
            assert not lost.any() and delivered == payloads * 100


# ---------------------------------------------------------------- AWGN


def test_awgn_measured_snr():
    x = rng(1).normal(0.3, 2.0, N)
    state = make_channel("awgn", snr_db=10).start(rng(2))
    y = state.add_noise(x)
    snr = 10 * math.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    # noise power estimate: relative SE √(2/N) → 10·log10(e)·√(2/N) ≈ 0.006 dB
    assert abs(snr - 10) <= 5 * 10 * math.log10(math.e) * math.sqrt(2 / N)
    assert not state.losses(100).any()
    lost, delivered = state.transmit([b"ab", b"c"])
    assert not lost.any() and delivered == [b"ab", b"c"]
    assert state.expected_loss_rate(100) == 0.0


def test_awgn_dtype_shape_and_zero_signal():
    ch = make_channel("awgn", snr_db=0)
    z = np.ones((4, 8, 8), dtype=np.float32)
    out = ch.add_noise(z, rng())
    assert out.dtype == np.float32 and out.shape == z.shape and not np.array_equal(out, z)
    assert np.array_equal(ch.add_noise(np.zeros(5), rng()), np.zeros(5))
    assert np.array_equal(ch.add_noise(z, rng(3)), ch.start(rng(3)).add_noise(z))
    # the noise std the receiver is told: √(mean(z²) / 10^(snr/10)); 2² = 4 at 6.0206 dB = 10·log10(4) → σ = 1
    assert ch.noise_std(z) == 1.0
    assert make_channel("awgn", snr_db=10 * math.log10(4)).noise_std(np.full(3, 2.0)) == pytest.approx(1.0, rel=1e-12)
    assert ch.noise_std(np.zeros(5)) == 0.0


# ---------------------------------------------------------------- link


def test_link_loss_free_burst_arrival_is_exact():
    # dyadic numbers: every step is exact in binary floating point, so == holds
    link = make_link(rate_bps=2.0**20, delay_s=0.03125, header_bytes=28)
    sizes = np.array([1172, 1172, 500, 0, 64])
    t = link.arrival_times(0.5, sizes)
    assert t[-1] == 0.5 + sum(8 * (s + 28) / 2.0**20 for s in sizes) + 0.03125
    assert np.all(np.diff(t) > 0)
    assert link.serialization_s(1172) == 8 * 1200 / 2.0**20


def test_link_arrival_general_rate_and_reverse():
    link = make_link(rate_bps=2.0e6, delay_s=0.02, reverse_rate_bps=1.0e5)
    sizes = np.full(100, 1172)
    assert link.arrival_times(1.0, sizes)[-1] == pytest.approx(1.0 + 100 * 8 * 1200 / 2e6 + 0.02, rel=1e-12)
    assert link.arrival_times(0.0, sizes[:3], reverse=True)[-1] == pytest.approx(3 * 8 * 1200 / 1e5 + 0.02, rel=1e-12)
    assert make_link(rate_bps=1e6, delay_s=0).reverse_rate == 1e6
    assert link.max_payload == 1172
    assert link.arrival_times(0.0, np.zeros(0, dtype=int)).shape == (0,)
    with pytest.raises(ValueError, match="payload sizes"):
        link.arrival_times(0.0, np.array([1173]))


def test_link_jitter_bounds_mean_and_reordering():
    link = make_link(rate_bps=1e9, delay_s=0.01, jitter_s=0.005)
    sizes = np.full(100_000, 100)
    base = make_link(rate_bps=1e9, delay_s=0.01).arrival_times(0.0, sizes)
    extra = link.arrival_times(0.0, sizes, rng(3)) - base
    assert extra.min() >= 0 and extra.max() <= 0.005 + 1e-12  # + rounding of t + u − t
    # Uniform[0, J]: mean J/2, SD J/√12
    assert abs(extra.mean() - 0.0025) <= 5 * 0.005 / math.sqrt(12 * sizes.size)
    assert np.any(np.diff(link.arrival_times(0.0, sizes, rng(3))) < 0)  # packets reorder
    with pytest.raises(TypeError, match="rng"):
        link.arrival_times(0.0, sizes)


# ---------------------------------------------------------------- determinism, round trips


def all_channels(trace_path):
    return [
        make_channel("bernoulli", loss=0.2),
        make_channel("gilbert_elliott", loss=0.1, burst=4),
        make_channel("gilbert_elliott", p=0.05, r=0.3, h=0.2, k=0.97),
        make_channel("trace", path=str(trace_path), offset=2),
        make_channel("bsc", ber=1e-3),
        make_channel("bsc", ebn0_db=4.0, crc=False),
        make_channel("awgn", snr_db=3.0),
    ]


def test_same_seed_same_result(trace_file):
    payloads = [bytes(range(200))] * 300
    for ch in all_channels(trace_file):
        a, b, c = ch.start(rng(5)), ch.start(rng(5)), ch.start(rng(6))
        la, da = a.transmit(payloads)
        lb, db = b.transmit(payloads)
        assert np.array_equal(la, lb) and da == db, ch
        assert np.array_equal(a.losses(1000, bits_per_packet=1600), b.losses(1000, bits_per_packet=1600))
        if ch.kind in ("bernoulli", "gilbert_elliott") or (ch.kind == "bsc" and ch.crc):
            assert not np.array_equal(la, c.transmit(payloads)[0]), ch


def test_interface_yaml_round_trip_and_pickle(trace_file):
    for ch in all_channels(trace_file):
        assert isinstance(ch, Channel) and isinstance(ch.start(rng()), ChannelState)
        text = yaml.safe_dump(as_config(ch))
        cfg = yaml.safe_load(text)
        assert make_channel(**cfg) == ch
        assert pickle.loads(pickle.dumps(ch)) == ch
    link = make_link(rate_bps=2.0e6, delay_s=0.02, jitter_s=0.001)
    assert make_link(**yaml.safe_load(yaml.safe_dump(as_config(link)))) == link
    assert as_config(link) == {"rate_bps": 2.0e6, "delay_s": 0.02, "jitter_s": 0.001,
                               "mtu": 1200, "header_bytes": 28}


def test_channels_refuse_a_non_generator():
    with pytest.raises(TypeError, match="Generator"):
        make_channel("bernoulli", loss=0.1).start(np.random.RandomState(1))
    with pytest.raises(TypeError, match="Generator"):
        make_channel("bernoulli", loss=0.1).start(None)
