"""Entropy coders: integer symbols of any subset of latent cells (S, n) ↔ bytes.

``range``  constriction's range coder with a static categorical model per symbol row (per
           latent channel for ``uniform``, one for ``palette``), fitted on this image's
           histogram; the model's frequencies are quantized to the precision (6–16 bits)
           that minimises model bytes + ideal payload bytes.
``zlib``   symbols in the smallest unsigned dtype, row-major, ``zlib`` level 9.

Every payload is decodable on its own with only the model (sent once per image as side
info). Both coders are deterministic. Formats: ``docs/codec-bitstream.md``.

Corrupted payloads (delivered when the link CRC is off) never crash or hang a decoder:
``range`` returns in-range symbols, or raises :class:`~sim.errors.InputError` where
constriction detects an impossible code word or the payload is not whole 32-bit words;
``zlib`` raises :class:`~sim.errors.InputError` on almost any corruption (its Adler-32
check). The receiver treats :class:`~sim.errors.InputError` as a lost packet.
"""

from __future__ import annotations

import difflib
import zlib

import constriction
import numpy as np

from sim.errors import ConfigError, InputError

__all__ = ["RangeCoder", "ZlibCoder", "ENTROPY_CODERS", "make_entropy_coder"]

_MAX_ALPHABET = 1 << 16
_MAX_ROWS = 64  # symbol rows (latent channels) per cell


# -- shared helpers -------------------------------------------------------------------
def _varints(values) -> bytes:
    out = bytearray()
    for v in values:
        v = int(v)
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


class _Reader:
    """Reads LEB128 varints from bytes; InputError past the end or on absurd values."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 35:
                raise InputError(f"{self.what}: truncated or malformed")
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    def done(self) -> None:
        if self.pos != len(self.data):
            raise InputError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


def _read_varints(data: bytes, what: str) -> np.ndarray:
    """All LEB128 varints of ``data`` (each < 2**35), vectorised → int64 array."""
    a = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(a < 0x80)
    if len(a) and (len(ends) == 0 or ends[-1] != len(a) - 1):
        raise InputError(f"{what}: truncated")
    starts = np.r_[0, ends[:-1] + 1]
    lengths = ends - starts + 1
    if len(a) and lengths.max() > 5:
        raise InputError(f"{what}: malformed")
    group = np.repeat(np.arange(len(ends)), lengths)
    shift = 7 * (np.arange(len(a)) - starts[group])
    parts = (a & 0x7F).astype(np.int64) << shift
    return np.bincount(group, weights=parts, minlength=len(ends)).astype(np.int64)  # exact below 2**53


def _check_fit(symbols: np.ndarray, alphabet_size: int, who: str) -> np.ndarray:
    symbols = np.asarray(symbols)
    if isinstance(alphabet_size, bool) or not isinstance(alphabet_size, (int, np.integer)) \
            or not 2 <= alphabet_size <= _MAX_ALPHABET:
        raise InputError(f"{who}: alphabet_size = {alphabet_size!r}, expected an integer in [2, {_MAX_ALPHABET}]")
    if symbols.ndim < 2 or not 1 <= symbols.shape[0] <= _MAX_ROWS or symbols[0].size == 0 \
            or not np.issubdtype(symbols.dtype, np.integer):
        raise InputError(f"{who}: expected integer symbols (S, h, w) with 1 <= S <= {_MAX_ROWS} "
                         f"and at least one cell, got {symbols.dtype} {symbols.shape}")
    flat = symbols.reshape(symbols.shape[0], -1)
    if flat.min() < 0 or flat.max() >= alphabet_size:
        raise InputError(f"{who}: symbols outside [0, {alphabet_size})")
    return flat


def _check_encode(symbols: np.ndarray, rows: int, alphabet: int, who: str) -> np.ndarray:
    symbols = np.asarray(symbols)
    if symbols.ndim != 2 or symbols.shape[0] != rows or not np.issubdtype(symbols.dtype, np.integer):
        raise InputError(f"{who}: expected integer symbols of shape ({rows}, n), got {symbols.dtype} {symbols.shape}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise InputError(f"{who}: symbols outside [0, {alphabet})")
    return symbols


def _check_n(n_cells, who: str) -> int:
    if isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 0:
        raise InputError(f"{who}: n_cells = {n_cells!r}, expected a non-negative integer")
    return int(n_cells)


# -- range coder ----------------------------------------------------------------------
class RangeCoder:
    """constriction range coder, one static categorical model per symbol row.

    Model (side info): per row, this image's symbol histogram with frequencies quantized
    to ``P`` bits (``f = max(1, round(count · 2**P / n))`` for symbols that occur, 0 for
    the others), ``P`` in [6, 16] chosen to minimise model bytes + ideal payload bytes.
    constriction gives symbols of frequency 0 their smallest probability, so every symbol
    of the alphabet can still be coded and anything decodes to symbols in range.

    Payload: the S rows of the n cells, row after row, in one range-coder stream; the
    constriction words as little-endian uint32 (a whole number of 4-byte words; at least
    one word for n ≥ 1, nothing for n = 0).
    """

    name = "range"
    precisions = range(6, 17)

    def __init__(self):
        self._cache: tuple[bytes, int, list] | None = None  # the last model parsed

    def config(self) -> str:
        return self.name

    # model ------------------------------------------------------------------------
    def fit(self, symbols: np.ndarray, alphabet_size: int) -> bytes:
        """(S, h, w) symbols → model bytes (header + per-row frequency tables)."""
        flat = _check_fit(symbols, alphabet_size, "range coder")
        counts = [np.bincount(row, minlength=alphabet_size) for row in flat]
        n = flat.shape[1]
        best = None
        for p in self.precisions:
            freqs = [np.where(c > 0, np.maximum(1, np.rint(c * float(1 << p) / n)), 0).astype(np.int64)
                     for c in counts]
            model = self._serialize(freqs, alphabet_size, p)
            ideal = sum(-(c[c > 0] * np.log2(f[c > 0] / f.sum())).sum() for c, f in zip(counts, freqs)) / 8
            if best is None or len(model) + ideal < best[0]:
                best = (len(model) + ideal, model)
        return best[1]

    @staticmethod
    def _serialize(freqs: list[np.ndarray], alphabet_size: int, precision: int) -> bytes:
        body = bytearray()
        for f in freqs:
            nz = np.flatnonzero(f)
            lo, hi = int(nz[0]), int(nz[-1])
            body += _varints([lo, hi - lo]) + _varints(f[lo:hi + 1])
        packed = zlib.compress(bytes(body), 9)
        use_zlib = len(packed) < len(body)
        return _varints([len(freqs), alphabet_size, precision, int(use_zlib)]) + (packed if use_zlib else bytes(body))

    @staticmethod
    def probabilities(model: bytes) -> np.ndarray:
        """Model bytes → (S, alphabet) float64 probability rows as given to constriction.

        Raises
        ------
        InputError
            Malformed model bytes.
        """
        r = _Reader(model, "range coder model")
        rows, alphabet, precision, use_zlib = (r.varint() for _ in range(4))
        if not (1 <= rows <= _MAX_ROWS and 2 <= alphabet <= _MAX_ALPHABET and precision <= 32 and use_zlib <= 1):
            raise InputError("range coder model: bad header")
        body = model[r.pos:]
        if use_zlib:
            try:
                d = zlib.decompressobj()
                body = d.decompress(body, rows * (alphabet + 2) * 5 + 1)  # bounded
            except zlib.error as err:
                raise InputError(f"range coder model: {err}") from None
            if not d.eof or d.unused_data:
                raise InputError("range coder model: zlib stream incomplete or too long")
        vals = _read_varints(body, "range coder model")
        freq, pos = np.zeros((rows, alphabet), np.float64), 0
        for row in freq:
            if pos + 2 > len(vals) or vals[pos] + vals[pos + 1] >= alphabet:
                raise InputError("range coder model: frequency table truncated or beyond the alphabet")
            lo, span = int(vals[pos]), int(vals[pos + 1])
            if pos + 3 + span > len(vals):
                raise InputError("range coder model: frequency table truncated")
            row[lo:lo + span + 1] = vals[pos + 2:pos + 3 + span]
            pos += 3 + span
        if pos != len(vals):
            raise InputError("range coder model: unexpected trailing bytes")
        total = freq.sum(axis=1, keepdims=True)
        if (total <= 0).any():
            raise InputError("range coder model: a row has no symbol of nonzero frequency")
        return freq / total

    def _models(self, model: bytes) -> tuple[int, list]:
        """Model bytes → (alphabet size, one constriction ``Categorical`` per row); cached."""
        if self._cache is None or self._cache[0] != model:
            probs = self.probabilities(model)
            cats = [constriction.stream.model.Categorical(p, perfect=False) for p in probs]
            self._cache = (model, probs.shape[1], cats)
        return self._cache[1:]

    # payload ----------------------------------------------------------------------
    def encode(self, symbols: np.ndarray, model: bytes) -> bytes:
        """(S, n) symbols of any n cells → one range-coded stream, decodable on its own."""
        alphabet, models = self._models(model)
        symbols = _check_encode(symbols, len(models), alphabet, "range coder")
        if symbols.shape[1] == 0:
            return b""
        enc = constriction.stream.queue.RangeEncoder()
        for row, m in zip(symbols, models):
            enc.encode(np.ascontiguousarray(row, dtype=np.int32), m)
        return enc.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, n_cells: int, model: bytes) -> np.ndarray:
        """Inverse of :meth:`encode`: (S, n_cells) int64 symbols.

        Raises
        ------
        InputError
            The payload is not a whole number of 32-bit words, or constriction finds a
            code word no symbol maps to (a corrupted payload; treat as a lost packet).
        """
        _, models = self._models(model)
        n = _check_n(n_cells, "range coder")
        if n == 0:
            return np.zeros((len(models), 0), np.int64)
        if len(data) % 4:
            raise InputError(f"range coder: payload of {len(data)} bytes is not whole 32-bit words")
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
        try:
            return np.stack([dec.decode(m, n) for m in models]).astype(np.int64)
        except (AssertionError, ValueError, RuntimeError) as err:
            raise InputError(f"range coder: corrupted payload ({err})") from None


# -- zlib -----------------------------------------------------------------------------
class ZlibCoder:
    """Symbols as the smallest unsigned dtype (uint8/uint16), row-major, zlib level 9.

    Model (side info): varints S and alphabet size, 2–4 bytes. Payload: the zlib stream
    of the (S, n) array in little-endian; nothing for n = 0.
    """

    name = "zlib"

    def config(self) -> str:
        return self.name

    def fit(self, symbols: np.ndarray, alphabet_size: int) -> bytes:
        """(S, h, w) symbols → model bytes: varints S, alphabet size."""
        flat = _check_fit(symbols, alphabet_size, "zlib coder")
        return _varints([flat.shape[0], alphabet_size])

    @staticmethod
    def _parse(model: bytes) -> tuple[int, int, np.dtype]:
        r = _Reader(model, "zlib coder model")
        rows, alphabet = r.varint(), r.varint()
        r.done()
        if not (1 <= rows <= _MAX_ROWS and 2 <= alphabet <= _MAX_ALPHABET):
            raise InputError("zlib coder model: bad header")
        return rows, alphabet, np.dtype("<u1" if alphabet <= 256 else "<u2")

    def encode(self, symbols: np.ndarray, model: bytes) -> bytes:
        """(S, n) symbols of any n cells → zlib bytes, decodable on their own."""
        rows, alphabet, dtype = self._parse(model)
        symbols = _check_encode(symbols, rows, alphabet, "zlib coder")
        if symbols.shape[1] == 0:
            return b""
        return zlib.compress(np.ascontiguousarray(symbols, dtype=dtype).tobytes(), 9)

    def decode(self, data: bytes, n_cells: int, model: bytes) -> np.ndarray:
        """Inverse of :meth:`encode`: (S, n_cells) int64 symbols.

        Raises
        ------
        InputError
            Not a valid zlib stream (bad header, Adler-32 mismatch), the wrong length, or
            symbols outside the alphabet: a corrupted payload; treat as a lost packet.
        """
        rows, alphabet, dtype = self._parse(model)
        n = _check_n(n_cells, "zlib coder")
        if n == 0:
            return np.zeros((rows, 0), np.int64)
        size = rows * n * dtype.itemsize
        try:
            d = zlib.decompressobj()
            raw = d.decompress(data, size + 1)  # bounded: a corrupted stream cannot balloon
        except zlib.error as err:
            raise InputError(f"zlib coder: corrupted payload ({err})") from None
        if len(raw) != size or not d.eof or d.unused_data:
            raise InputError(f"zlib coder: corrupted payload (expected {size} bytes in one zlib stream)")
        out = np.frombuffer(raw, dtype).reshape(rows, n).astype(np.int64)
        if out.max() >= alphabet:
            raise InputError(f"zlib coder: corrupted payload (symbols outside [0, {alphabet}))")
        return out


ENTROPY_CODERS = {"range": RangeCoder, "zlib": ZlibCoder}


def make_entropy_coder(name: str = "range"):
    """An entropy coder by registry name.

    Raises
    ------
    ConfigError
        Unknown ``name``.
    """
    if name not in ENTROPY_CODERS:
        hint = difflib.get_close_matches(str(name), ENTROPY_CODERS, n=1)
        raise ConfigError(f"codec.entropy = {name!r}: expected one of {', '.join(ENTROPY_CODERS)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return ENTROPY_CODERS[name]()
