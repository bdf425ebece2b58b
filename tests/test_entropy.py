"""Entropy coders: exact round trips (whole latents and any subset of cells, also through
``Codec``), determinism, corrupted payloads, validation, and sizes against the ideal."""

from __future__ import annotations

import numpy as np
import pytest

from sim.codec.base import Codec
from sim.codec.entropy import ENTROPY_CODERS, RangeCoder, ZlibCoder, make_entropy_coder
from sim.codec.quantizers import make_quantizer
from sim.errors import ConfigError, InputError

from helpers import synthetic_latent

QUANTIZER_CONFIGS = [
    {"kind": "uniform", "bits": 6},
    {"kind": "uniform", "bits": 2},
    {"kind": "uniform", "bits": 10},  # alphabet 1024: zlib packs uint16
    {"kind": "palette", "colors": 256},
    {"kind": "palette", "colors": 16, "dither": False},
]
CODERS = ["range", "zlib"]


@pytest.fixture(scope="module")
def latent() -> np.ndarray:
    return synthetic_latent(np.random.default_rng(0), h=24, w=20)


def _codec(qconf: dict, coder: str) -> Codec:
    return Codec(None, make_quantizer(**qconf), make_entropy_coder(coder))


# -- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("qconf", QUANTIZER_CONFIGS, ids=lambda q: "-".join(map(str, q.values())))
def test_codec_round_trip_whole_and_subsets(qconf, coder, latent):
    codec = _codec(qconf, coder)
    prep = codec.prepare(latent)
    s = codec.quantizer.symbols_per_cell(latent.shape[0])
    assert prep.symbols.shape == (s,) + latent.shape[1:] and prep.symbols.dtype == np.int64
    flat = prep.symbols.reshape(s, -1)
    rng = np.random.default_rng(1)
    subsets = [np.arange(prep.n_cells), np.array([], np.int64), np.array([prep.n_cells - 1]),
               rng.permutation(prep.n_cells)[:37], np.sort(rng.choice(prep.n_cells, 200, replace=False))]
    for cells in subsets:
        data = codec.code_cells(prep, cells)
        got = codec.decode_cells(data, len(cells), prep.side)
        assert got.shape == (s, len(cells)) and got.dtype == np.int64
        assert np.array_equal(got, flat[:, cells])
        values = codec.dequantize(got, prep.side)
        assert values.shape == (latent.shape[0], len(cells)) and values.dtype == np.float32
    whole = codec.decode_cells(codec.code_cells(prep, np.arange(prep.n_cells)), prep.n_cells, prep.side)
    assert np.array_equal(codec.dequantize(whole.reshape(prep.symbols.shape), prep.side),
                          codec.quantizer.dequantize(prep.symbols, codec.quantizer.fit(latent)))


@pytest.mark.parametrize("coder", CODERS)
def test_every_symbol_of_the_alphabet_codes_even_if_absent_from_the_fit(coder):
    c = make_entropy_coder(coder)
    model = c.fit(np.zeros((2, 3, 3), np.int64), 64)  # fitted on symbol 0 only
    sym = np.array([[0, 63, 5, 0], [1, 0, 0, 62]])
    assert np.array_equal(c.decode(c.encode(sym, model), 4, model), sym)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("qconf", QUANTIZER_CONFIGS[::3], ids=["uniform", "palette"])
def test_same_input_same_bytes(qconf, coder, latent):
    a, b = _codec(qconf, coder).prepare(latent), _codec(qconf, coder).prepare(latent.copy())
    assert a.side == b.side and np.array_equal(a.symbols, b.symbols)
    cells = np.arange(0, a.n_cells, 3)
    assert _codec(qconf, coder).code_cells(a, cells) == _codec(qconf, coder).code_cells(b, cells)


# -- corrupted payloads and bad input ------------------------------------------------------
@pytest.mark.parametrize("coder", CODERS)
def test_garbage_payloads_decode_in_range_or_raise_input_error(coder, latent):
    codec = _codec({"kind": "uniform", "bits": 6}, coder)
    prep = codec.prepare(latent)
    rng = np.random.default_rng(2)
    good = codec.code_cells(prep, np.arange(100))
    accepted = 0  # garbage with n >= 1 that decoded without an error
    for trial in range(300):
        n = int(rng.integers(0, 150))
        if trial % 3 == 0:
            data = rng.bytes(int(rng.integers(0, 120)))
        elif trial % 3 == 1:
            data = rng.bytes(4 * int(rng.integers(0, 30)))  # whole words: range decodes these
        else:  # the real payload with a few bits flipped, as a link without CRC delivers it
            flipped = np.frombuffer(good, np.uint8).copy()
            flipped[rng.integers(len(flipped), size=3)] ^= (1 << rng.integers(8, size=3)).astype(np.uint8)
            data, n = flipped.tobytes(), 100
        try:
            got = codec.decode_cells(data, n, prep.side)
        except InputError:
            continue
        assert got.shape == (4, n) and got.dtype == np.int64
        if n:
            accepted += 1
            assert got.min() >= 0 and got.max() < 64
    if coder == "zlib":  # Adler-32 and the length check catch every one of these
        assert accepted == 0
    else:  # the range coder decodes most garbage to in-range garbage
        assert accepted > 100


def test_zlib_rejects_every_corruption_in_the_sample(latent):
    codec = _codec({"kind": "palette", "colors": 32}, "zlib")
    prep = codec.prepare(latent)
    good = codec.code_cells(prep, np.arange(prep.n_cells))
    rng = np.random.default_rng(3)
    for _ in range(50):
        bad = bytearray(good)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        with pytest.raises(InputError, match="zlib coder: corrupted payload"):
            codec.decode_cells(bytes(bad), prep.n_cells, prep.side)


def test_range_payload_not_whole_words_and_bad_models_raise_input_error():
    rc = RangeCoder()
    model = rc.fit(np.arange(8).reshape(1, 2, 4), 8)
    with pytest.raises(InputError, match="not whole 32-bit words"):
        rc.decode(b"\x01\x02\x03", 2, model)
    for coder in (RangeCoder(), ZlibCoder()):
        for bad in (b"", b"\xff\xff\xff", model + b"\x00", b"\x01\x02\x08\x00\x00\x05\x01"):
            with pytest.raises(InputError):
                coder.decode(b"\x00" * 8, 2, bad)


@pytest.mark.parametrize("coder", CODERS)
def test_bad_symbols_raise_input_error(coder):
    c = make_entropy_coder(coder)
    with pytest.raises(InputError, match="outside"):
        c.fit(np.full((1, 2, 2), 8), 8)
    with pytest.raises(InputError):
        c.fit(np.zeros((1, 0, 0), np.int64), 8)
    model = c.fit(np.zeros((2, 2, 2), np.int64), 8)
    with pytest.raises(InputError, match="shape"):
        c.encode(np.zeros((3, 4), np.int64), model)
    with pytest.raises(InputError, match="outside"):
        c.encode(np.full((2, 4), 9), model)
    with pytest.raises(InputError, match="n_cells"):
        c.decode(b"", -1, model)


def test_registry_and_unknown_name():
    assert set(ENTROPY_CODERS) == {"range", "zlib"}
    assert isinstance(make_entropy_coder("range"), RangeCoder)
    with pytest.raises(ConfigError) as err:
        make_entropy_coder("rnage")
    assert "codec.entropy = 'rnage': expected one of range, zlib (did you mean 'range'?)" in str(err.value)


# -- sizes ------------------------------------------------------------------------------
def _entropy_bytes(flat: np.ndarray) -> float:
    total = 0.0
    for row in flat:
        c = np.bincount(row)
        c = c[c > 0]
        total -= (c * np.log2(c / c.sum())).sum()
    return total / 8


def test_range_coder_near_ideal_and_no_larger_than_zlib():
    z = synthetic_latent(np.random.default_rng(4), h=64, w=64)
    q = make_quantizer("uniform", bits=6)
    flat = q.quantize(z, q.fit(z)).reshape(4, -1)
    rc, zc = RangeCoder(), ZlibCoder()
    model = rc.fit(flat[:, :, None], 64)
    payload = rc.encode(flat, model)
    probs = rc.probabilities(model)
    ideal = -sum(np.log2(probs[i][flat[i]]).sum() for i in range(4)) / 8  # cross-entropy, bytes
    assert ideal <= len(payload) <= 1.01 * ideal + 8
    assert ideal <= 1.02 * _entropy_bytes(flat)  # the quantized model costs < 2 %
    assert len(model) < 0.03 * len(payload)
    zlib_total = len(zc.encode(flat, zc.fit(flat[:, :, None], 64))) + len(zc.fit(flat[:, :, None], 64))
    assert len(payload) + len(model) < zlib_total
    # a packet of 64 cells: at most one 32-bit word above its ideal size
    cells = np.arange(1000, 1064)
    sub_ideal = -sum(np.log2(probs[i][flat[i, cells]]).sum() for i in range(4)) / 8
    assert len(rc.encode(flat[:, cells], model)) <= sub_ideal + 4 + 1
