"""The transmission engine: one image's packets from sender to receiver over a link and a
channel, in simulated time (SimPy), until the receiver's policy decodes.

Processes (SimPy, all times in simulated seconds, t = 0 when the first bit is sent)::

    sender ──burst──▶ link (rate, delay, jitter) ──▶ channel (loss / bit errors) ──▶ receiver
       ▲                                                                                │
       └────────────── reverse link (NACK list / final ACK, lossless) ◀────────────────┘

**Bursts, not packets.** A transmission *pass* (the first one, or a retransmission round)
is one burst: the sender serialises its packets back to back, the link gives every packet
its own arrival time at once (``link.arrival_times``) and the channel draws the burst's
losses at once (``state.transmit``). The SimPy processes (sender, receiver timer, reverse
path) then step from decision to decision. Every packet still has its own send and
arrival time; only the bookkeeping is per burst, which keeps the engine well above 100k
simulated packets/s (``benchmarks/bench_engine.py``).

**Receiver rules** (``docs/engine.md`` has the full protocol):

- It learns the image's packet count and header count from any intact packet: every
  header carries ``total`` and ``n_header``.
- A pass is over, and the receiver decides, at the first of: every packet of the pass
  arrived (*all_arrived*); the pass's last packet arrived after a gap, plus the link's jitter
  bound (*gap*); or, the last packet lost, its nominal arrival + jitter bound +
  ``timeout_s`` (*timeout*).
- Missing header packets are always NACKed (nothing decodes without the side info). For
  missing data the policy decides: NACK them (resend) or decode now. The NACK goes over
  the reverse path; the sender retransmits when it has arrived.
- A policy's ``cutoff_s`` is a hard deadline: the receiver decodes then with what has
  arrived, if it has the header (else as soon as the header arrives).
- If no packet of a pass arrives and the receiver has never heard of the image, it stays
  silent; the sender's own timer then resends the header packets.
- Corrupted payloads (``bsc`` with ``crc: false``): header packets and packets whose
  header fields disagree are discarded; data payloads with a wrong CRC are decoded
  anyway (counted in ``packets_corrupted``) and treated as lost only if decoding raises.

Simulated time (``stats``) and wall-clock compute time (``wall``) are kept apart.
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import simpy

from channels.base import run_lengths
from sim.errors import ConfigError, LatentcastError
from sim.packets import (
    HEADER, HEADER_BYTES, GEOMETRY_BYTES, PacketizerConfig, Packets, cell_groups, pack_feedback,
    packetize, parse_geometry, part_cells, unpack_feedback,
)
from sim.policies.base import Decision

__all__ = ["ReceiverConfig", "Transmission", "transmit", "received_noise_std", "MAX_PASSES"]

MAX_PASSES = 256  # safety stop: a header that never gets through ends the transfer here
_unpack_header = HEADER.unpack_from
_crc32 = zlib.crc32


@dataclass(frozen=True)
class ReceiverConfig:
    """Receiver settings (the scenario's ``receiver:`` keys the engine uses).

    timeout_s : float ≥ 0
        Loss-detection timer, seconds after the nominal arrival of a pass's last packet
        (plus the link's jitter bound) when that packet is lost.
    """

    timeout_s: float = 0.1

    def __post_init__(self):
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"receiver.timeout_s = {t!r}: expected a time ≥ 0 (seconds)")


@dataclass
class Transmission:
    """What one image's transfer gave the receiver, before any repair.

    latent : (C, h, w) float32 — the received, dequantized latent (channel noise added);
        missing cells are 0
    missing : (h, w) bool — cells missing when the receiver decoded
    stats : dict — simulated, deterministic quantities (same seed → same dict)
    wall : dict — measured wall-clock seconds: ``engine_s`` (simulation, packetizing,
        payload decoding)
    noise_std : float — the noise in the received values (:func:`received_noise_std`:
        quantization and channel), which a complement method takes as its ``noise_std``
    repair_rng : numpy.random.Generator — the repair stage's stream of this transmission
    """

    latent: np.ndarray
    missing: np.ndarray
    stats: dict
    wall: dict
    noise_std: float
    repair_rng: np.random.Generator


@lru_cache(maxsize=256)
def _worst_feedback_sizes(total: int, limit: int) -> np.ndarray:
    """Sizes of the largest possible NACK (every seq missing), bytes."""
    return np.array([len(p) for p in pack_feedback(0, np.arange(total), total, limit)])


@dataclass
class _Burst:
    seqs: np.ndarray
    arrivals: np.ndarray
    lost: np.ndarray
    delivered: list
    nominal_last: float
    sender_timer: float


class _Session:
    """State of one transfer: the sender, the receiver and the counters."""

    def __init__(self, codec, prep, image_id, packets: Packets, link, channel, policy,
                 receiver: ReceiverConfig, rng: np.random.Generator, trace):
        self.codec, self.link, self.channel, self.policy = codec, link, channel, policy
        self.pk, self.image_id, self.trace = packets, image_id, trace
        self.timeout = float(receiver.timeout_s)
        self.delay, self.jitter = float(link.delay_s), float(link.jitter_s)
        self.hb = int(link.header_bytes)
        self.cutoff = policy.cutoff_s
        ch_rng, self.link_rng, self.noise_rng, self.repair_rng = rng.spawn(4)
        self.state = channel.start(ch_rng)
        self.env = simpy.Environment()
        self.to_rx = simpy.Store(self.env)
        self.to_tx = simpy.Store(self.env)
        total = packets.total
        worst = _worst_feedback_sizes(total, packets.limit)
        self.worst_feedback_s = (float(link.serialization_s(worst, reverse=True).sum())
                                 + self.delay + self.jitter)
        self.tx_free = 0.0
        self.c = dict(packets_sent=0, packets_lost=0, packets_corrupted=0, packets_discarded=0,
                      bytes_forward=0, bytes_reverse=0, nack_packets=0, ack_packets=0, rounds=0)
        self.first_lost_cells = 0
        self.lost_flags: list[np.ndarray] = []  # each pass's loss flags, in wire order
        # receiver state
        self.known = None  # (image_id, total, n_header) learned from the first intact packet
        self.have: list[bool] = []
        self.n_have = 0
        self.chunks: dict[int, bytes] = {}
        self.header_done = False
        self.buffer: list = []
        self.pieces: list = []  # (cells, symbols) decoded so far
        self.n_got = 0  # cells in self.pieces (exact unless corrupted packets overlap)
        self.pending = None  # reason to decode as soon as the header is complete
        self.decoded_at = None
        self.end = None

    # -- helpers -----------------------------------------------------------------------
    def log(self, t, event, detail=None):
        if self.trace is not None:
            self.trace.append((float(t), event, detail))

    def _reverse_oneway(self, packets) -> float:
        sizes = np.fromiter((len(p) for p in packets), np.int64, len(packets))
        return float(self.link.serialization_s(sizes, reverse=True).sum()) + self.delay + self.jitter

    # -- sender ------------------------------------------------------------------------
    def sender(self):
        env = self.env
        seqs = np.arange(self.pk.total)
        while True:
            if self.c["rounds"] >= MAX_PASSES:
                if self.decoded_at is None:
                    self.finish(env.now, "no_header")
                return
            start = max(env.now, self.tx_free)
            if start > env.now:
                yield env.timeout(start - env.now)
            burst = self.send(seqs)
            self.to_rx.put(burst)
            get = self.to_tx.get()
            got = yield get | env.timeout(burst.sender_timer - env.now)
            if get not in got:
                get.cancel()
                self.log(env.now, "sender_timeout", self.c["rounds"])
                seqs = np.arange(self.pk.n_header)
                continue
            _, seqs = unpack_feedback(got[get])
            if seqs is None:
                self.log(env.now, "ack_arrive")
                return
            self.log(env.now, "nack_arrive", tuple(seqs.tolist()))

    def send(self, seqs: np.ndarray) -> _Burst:
        now, pk, c = self.env.now, self.pk, self.c
        sizes = pk.sizes[seqs]
        ser = self.link.serialization_s(sizes)
        busy = float(ser.sum())
        arrivals = np.asarray(self.link.arrival_times(now, sizes, self.link_rng), dtype=np.float64)
        lost, delivered = self.state.transmit([pk.data[s] for s in seqs.tolist()])
        lost = np.asarray(lost, dtype=bool)
        self.tx_free = now + busy
        nominal_last = now + busy + self.delay
        c["rounds"] += 1
        c["packets_sent"] += len(seqs)
        c["packets_lost"] += int(lost.sum())
        self.lost_flags.append(lost)
        c["bytes_forward"] += int(sizes.sum()) + self.hb * len(seqs)
        if c["rounds"] == 1:
            self.first_lost_cells = sum(len(pk.cells[s]) for s in seqs[lost].tolist() if pk.cells[s] is not None)
        if self.trace is not None:
            starts = now + np.concatenate(([0.0], np.cumsum(ser)[:-1]))
            for s, t in zip(seqs.tolist(), starts.tolist()):
                self.log(t, "send", s)
            for s, t, gone in zip(seqs.tolist(), arrivals.tolist(), lost.tolist()):
                self.log(t, "lost" if gone else "arrive", s)
        timer = nominal_last + self.jitter + 2 * self.timeout + self.worst_feedback_s
        return _Burst(seqs, arrivals, lost, delivered, nominal_last, timer)

    # -- receiver ----------------------------------------------------------------------
    def receiver(self):
        env = self.env
        while True:
            get = self.to_rx.get()
            if self.header_done and self.cutoff is not None and self.pending is None:
                got = yield get | env.timeout(max(0.0, self.cutoff - env.now))
                if get not in got:
                    get.cancel()
                    self.finish(env.now, "deadline")
                    return
                burst = got[get]
            else:
                burst = yield get
            t, action, nack = self.round(burst)
            if t > env.now:
                yield env.timeout(t - env.now)
            if action == "decode":
                return
            if action == "nack":
                if self.trace is not None:
                    self.log(t, "nack", tuple(unpack_feedback(nack)[1].tolist()))
                env.process(self.feedback(nack, "nack_packets"))

    def round(self, b: _Burst):
        """Walk one burst's arrivals; returns (time, "decode" | "nack" | "silent", nack packets)."""
        cutoff = math.inf if self.cutoff is None else self.cutoff
        if not b.lost.any():
            t_dec, how = float(b.arrivals.max()), "all_arrived"
        elif not b.lost[-1]:
            t_dec, how = float(b.arrivals[-1]) + self.jitter, "gap"
        else:
            t_dec, how = b.nominal_last + self.jitter + self.timeout, "timeout"
        rx = np.flatnonzero(~b.lost)
        rx = rx[np.argsort(b.arrivals[rx], kind="stable")]
        if rx.size:
            t_dec = max(t_dec, float(b.arrivals[rx[-1]]))
        arrivals, delivered = b.arrivals.tolist(), b.delivered
        for i in rx.tolist():
            a = arrivals[i]
            if a > cutoff and self.pending is None:
                if self.header_done:
                    return self.finish(cutoff, "deadline")
                self.pending = "deadline"
            self.accept(delivered[i])
            if self.header_done and (self.pending is not None or self.n_have == len(self.have)):
                return self.finish(a, self.pending or "complete")
        if t_dec > cutoff and self.pending is None:
            if self.header_done:
                return self.finish(cutoff, "deadline")
            self.pending = "deadline"
        if self.known is None:
            return t_dec, "silent", None
        self.log(t_dec, how, self.c["rounds"])
        n_header = self.known[2]
        missing = [s for s, ok in enumerate(self.have) if not ok]
        header_missing = [s for s in missing if s < n_header]
        if len(header_missing) == len(missing):  # only header packets missing
            self.pending = self.pending or "complete"
            return t_dec, "nack", self.nack(header_missing)
        if self.pending is None:
            nack = self.nack(missing)
            if t_dec < cutoff and self.decide(t_dec, missing, nack):
                return t_dec, "nack", nack
            reason = "policy" if t_dec < cutoff else "deadline"
            if self.header_done:
                return self.finish(t_dec, reason)
            self.pending = reason
        return t_dec, "nack", self.nack(header_missing)

    def decide(self, t: float, missing: list, nack: list) -> bool:
        pk, n_header = self.pk, self.known[2]
        data_missing = [s for s in missing if s >= n_header]
        if self.header_done:
            n_cells = self.n_cells
            got = int(self.got_mask().sum()) if self.c["packets_corrupted"] else self.n_got
            missing_cells = n_cells - got
        else:  # no geometry yet: count data packets instead of cells
            n_cells, missing_cells = len(self.have) - n_header, len(data_missing)
        serial = float(self.link.serialization_s(pk.sizes[np.asarray(missing)]).sum())
        eta = (max(t + self._reverse_oneway(nack), self.tx_free) + serial + self.delay
               + self.jitter + self.timeout)
        d = Decision(now_s=t, rounds=self.c["rounds"], missing_cells=missing_cells, n_cells=n_cells,
                     missing_packets=len(data_missing), eta_s=eta)
        return bool(self.policy.decide(d)) and self.c["rounds"] < MAX_PASSES

    def nack(self, seqs: list) -> list:
        return pack_feedback(self.image_id, seqs, len(self.have), self.pk.limit)

    def feedback(self, packets: list, key: str):
        """Reverse path: feedback packets serialised back to back, lossless."""
        sizes = np.fromiter((len(p) for p in packets), np.int64, len(packets))
        arrivals = self.link.arrival_times(self.env.now, sizes, self.link_rng, reverse=True)
        self.c["bytes_reverse"] += int(sizes.sum()) + self.hb * len(packets)
        self.c[key] += len(packets)
        yield self.env.timeout(float(np.max(arrivals)) - self.env.now)
        self.to_tx.put(packets)

    def finish(self, t: float, reason: str):
        """Decode at simulated time ``t``: freeze what has arrived, ACK the sender."""
        self.decoded_at, self.end = float(t), reason
        self.log(t, "decode", reason)
        if reason != "no_header":
            ack = pack_feedback(self.image_id, [], len(self.have), self.pk.limit)
            self.log(t, "ack")
            self.env.process(self._after(t, ack))
        return float(t), "decode", None

    def _after(self, t, ack):
        if t > self.env.now:
            yield self.env.timeout(t - self.env.now)
        yield from self.feedback(ack, "ack_packets")

    # -- packet handling -----------------------------------------------------------------
    def accept(self, raw: bytes):
        """Take one delivered packet (arrival order); discard what cannot be trusted."""
        c = self.c
        try:
            image_id, seq, total, n_header, group, part, length, crc = _unpack_header(raw)
        except struct.error:
            c["packets_discarded"] += 1
            return
        payload = raw[HEADER_BYTES:]
        intact = length == len(payload) and _crc32(payload) == crc
        known = self.known
        if known is None:
            if not intact or seq >= total or n_header == 0 or n_header > total:
                c["packets_discarded"] += 1
                return
            known = self.known = (image_id, total, n_header)
            self.have = [False] * total
        have = self.have
        if (image_id != known[0] or total != known[1] or n_header != known[2]
                or length != len(payload) or seq >= total or have[seq]):
            c["packets_discarded"] += 1
            return
        if seq < n_header:
            if not intact or group != seq:
                c["packets_discarded"] += 1
                return
            have[seq] = True
            self.n_have += 1
            self.chunks[seq] = payload
            if len(self.chunks) == n_header:
                self.open_header()
            return
        if not intact:
            c["packets_corrupted"] += 1
        have[seq] = True
        self.n_have += 1
        if self.header_done:
            self.decode_data(seq, group, part, payload)
        else:
            self.buffer.append((seq, group, part, payload))

    def open_header(self):
        chunks = [self.chunks[i] for i in range(len(self.chunks))]
        geo = parse_geometry(chunks[0])
        side = b"".join(ch[GEOMETRY_BYTES:] for ch in chunks)
        if len(side) != geo.side_len:
            raise LatentcastError(f"header packets carry {len(side)} side-info bytes, geometry says {geo.side_len}")
        self.geometry, self.side = geo, side
        _, h, w = geo.shape
        self.n_cells = h * w
        self.n_symbols = geo.symbols_per_cell
        self.groups = cell_groups(geo.layout, geo.tile, h, w)
        self.header_done = True
        for item in self.buffer:
            self.decode_data(*item)
        self.buffer = []

    def decode_data(self, seq, group, part, payload):
        """Decode one data payload into its cells; a payload that fails counts as lost."""
        groups = self.groups
        if group >= len(groups):
            cells = None
        elif part == 1:
            cells = groups[group]
        else:
            cells = part_cells(groups[group], part)
        n = 0 if cells is None else len(cells)
        sym = None
        if n:
            try:
                sym = self.codec.decode_cells(payload, n, self.side)
            except LatentcastError:
                pass
        if sym is None or getattr(sym, "shape", None) != (self.n_symbols, n):
            self.have[seq] = False
            self.n_have -= 1
            self.c["packets_discarded"] += 1
            return
        self.pieces.append((cells, sym))
        self.n_got += n

    def got_mask(self) -> np.ndarray:
        got = np.zeros(self.n_cells, dtype=bool)
        if self.pieces:
            got[np.concatenate([p[0] for p in self.pieces])] = True
        return got

    def symbols(self) -> np.ndarray:
        """(S, h·w) symbols received so far; zeros where nothing arrived."""
        out = np.zeros((self.n_symbols, self.n_cells), dtype=np.int64)
        if self.pieces:
            cells, syms = zip(*self.pieces)
            out[:, np.concatenate(cells)] = np.concatenate(syms, axis=1)
        return out


def received_noise_std(codec, side: bytes, channel=None, values: np.ndarray | None = None) -> float:
    """Standard deviation of the noise in received latent values (latent units): the codec's
    quantization error (``codec.quantization_noise_std(side)``, where it has a closed form) and,
    for a channel with ``noise_std`` (awgn), its noise on ``values`` (the clean received
    values); independent, so their variances add."""
    quant = getattr(codec, "quantization_noise_std", None)
    q = (quant(side) if quant is not None else None) or 0.0
    noise_std = getattr(channel, "noise_std", None)
    c = noise_std(values) if noise_std is not None and values is not None and values.size else 0.0
    return math.hypot(q, c)


def transmit(codec, prep, *, image_id: int, packetizer: PacketizerConfig, link, channel, policy,
             receiver: ReceiverConfig, rng: np.random.Generator, trace: list | None = None,
             packets: Packets | None = None) -> Transmission:
    """Send one prepared image and return what the receiver received when it decoded (no repair:
    :mod:`sim.stages` repairs, decodes and scores).

    Parameters
    ----------
    codec : sim.codec.Codec — ``code_cells``, ``decode_cells``, ``dequantize``
    prep : sim.codec.Prepared — the image's symbols (S, h, w), side info, latent shape
    image_id : int in [0, 2³²), written in every packet header
    packetizer : PacketizerConfig. Packets are at most ``link.max_payload = link.mtu −
        link.header_bytes`` bytes (our header included): the link's MTU is the only MTU.
    link : channels.Link (or anything with ``serialization_s``, ``arrival_times``,
        ``delay_s``, ``jitter_s``, ``header_bytes``, ``max_payload``)
    channel : a channel from ``channels.make_channel``; if it has ``add_noise(values, rng)``
        (awgn), the received latent values get that noise (the quantized symbols travel
        as they are; the noise models analog transmission of the dequantized values). The
        transmission's ``noise_std`` is the noise in the received values
        (:func:`received_noise_std`: quantization and channel), as a receiver that knows its
        quantizer and its SNR would work it out
    policy : a policy from ``sim.policies.make_policy``
    receiver : ReceiverConfig
    rng : numpy.random.Generator. Spawned into four independent streams (channel, link
        jitter, awgn noise, repair), so two calls with generators from the same seed see
        the same first-pass channel realisation whatever the policy.
    trace : list, optional. (time_s, event, detail) tuples are appended, sorted by time:
        ``send``/``arrive``/``lost`` (seq), ``all_arrived``/``gap``/``timeout`` (pass number),
        ``nack`` (seqs) / ``nack_arrive``, ``sender_timeout``, ``decode`` (reason), ``ack`` /
        ``ack_arrive``.
    packets : Packets, optional. Reuse ``packetize`` output across policies (it must have
        been made for this codec, prep, image_id and packetizer).

    Returns
    -------
    Transmission
    """
    wall0 = time.perf_counter()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if packets is None:
        packets = packetize(codec, prep, image_id, packetizer, limit=int(link.max_payload))
    elif (HEADER.unpack_from(packets.data[0])[0] != image_id
          or packets.geometry.shape != tuple(int(v) for v in prep.shape)):
        raise ValueError(f"packets= were cut for image_id {HEADER.unpack_from(packets.data[0])[0]} with latent "
                         f"{packets.geometry.shape}, not image_id {image_id} with latent {tuple(prep.shape)}")
    elif int(packets.sizes.max()) > int(link.max_payload):
        raise ConfigError(f"packets of up to {int(packets.sizes.max())} bytes do not fit the link "
                          f"(max payload {link.max_payload} = link.mtu − link.header_bytes)")
    s = _Session(codec, prep, image_id, packets, link, channel, policy, receiver, rng, trace)
    s.env.process(s.sender())
    s.env.process(s.receiver())
    s.env.run()
    if s.decoded_at is None:  # cannot happen: sender or receiver always finishes
        raise LatentcastError("engine: the transfer ended without a decode")

    c, h, w = (int(v) for v in prep.shape)
    if s.header_done:
        got = s.got_mask()
        latent = np.asarray(codec.dequantize(s.symbols().reshape(-1, h, w), s.side), dtype=np.float32)
    else:
        got = np.zeros(h * w, dtype=bool)
        latent = np.zeros((c, h, w), dtype=np.float32)
    missing = ~got.reshape(h, w)
    latent[:, missing] = 0.0
    known = ~missing
    noise_std = received_noise_std(codec, s.side, channel, latent[:, known]) if s.header_done and got.any() else 0.0
    add_noise = getattr(channel, "add_noise", None)
    if callable(add_noise) and got.any():
        latent[:, known] = add_noise(latent[:, known], s.noise_rng)
    if trace is not None:
        trace.sort(key=lambda e: e[0])

    pk, k = packets, s.c
    n_missing = int(missing.sum())
    stats = {
        "image_id": int(image_id),
        "policy": policy.kind,
        "packets": pk.total,
        "header_packets": pk.n_header,
        "data_packets": pk.total - pk.n_header,
        "packets_sent": k["packets_sent"],
        "packets_lost": k["packets_lost"],
        "loss_runs": run_lengths(np.concatenate(s.lost_flags)),
        "packets_retransmitted": k["packets_sent"] - pk.total,
        "packets_corrupted": k["packets_corrupted"],
        "packets_discarded": k["packets_discarded"],
        "bytes_forward": k["bytes_forward"],
        "bytes_retransmitted": k["bytes_forward"] - int(pk.sizes.sum()) - s.hb * pk.total,
        "bytes_reverse": k["bytes_reverse"],
        "bytes_side": len(pk.side),
        "bytes_payload": pk.payload_bytes,
        "nack_packets": k["nack_packets"],
        "ack_packets": k["ack_packets"],
        "rounds": k["rounds"],
        "time_to_image_s": s.decoded_at,
        "end": s.end,
        "first_pass_lost_share": s.first_lost_cells / (h * w),
        "missing_cells": n_missing,
        "missing_share": n_missing / (h * w),
        "packet_limit_bytes": pk.limit,
    }
    return Transmission(latent, missing, stats, {"engine_s": time.perf_counter() - wall0}, noise_std, s.repair_rng)
