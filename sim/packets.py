"""Packetizer: one image's quantized latent → header packet(s) + data packets, and back.

Wire format (little-endian, all packets start with the same 19-byte header)::

    offset size field
    0      4    image_id   u32   which image (the runner's id)
    4      2    seq        u16   0 .. total-1; seqs 0 .. n_header-1 are header packets
    6      2    total      u16   packets of this image (header + data): every packet says
                                 it, so the receiver learns the count from any packet
    8      1    n_header   u8    how many header packets (seqs below it)
    9      2    group      u16   data: cell group of the layout; header: chunk index
    11     2    part       u16   data: which piece of the group (heap index, see below);
                                 header: 0
    13     2    length     u16   payload bytes after this header
    15     4    crc        u32   zlib.crc32 of the payload

**Cell map.** ``(group, part)`` is the whole cell-map descriptor: the header packet says
the layout, ``tile`` and the latent geometry, so both ends compute the cell groups with
:func:`cell_groups` and a piece of a group with :func:`part_cells`. ``part`` numbers pieces
as a binary heap: 1 is the whole group, 2 and 3 its first and second half (of the group's
cells in their canonical order), 4..7 the quarters, and so on. A group whose coded payload
does not fit in one packet is halved until every piece fits (a tile splits into a top and a
bottom half, which split again); one cell that does not fit is refused.

**Layouts** (``k`` = ``tile``; ``h × w`` latent cells, raster index ``y·w + x``):

- ``tile``: k × k blocks in raster order of blocks (edge blocks may be smaller); the cells
  of a block in raster order. Losing one packet leaves one square hole.
- ``row``: runs of k² consecutive cells in raster order (k²/w whole rows when w divides
  k²). Losing one packet leaves a horizontal stripe.
- ``interleave``: P = ⌈h·w / k²⌉ groups; cell (y, x) goes to group (x + s·y) mod P with
  s = round(√P). For P ≥ 4 no two cells of a group are neighbours (8-neighbourhood), so one
  loss leaves scattered single-cell holes on a lattice with spacing about √P.

The first two layouts have ⌈h/k⌉·⌈w/k⌉ and ⌈h·w/k²⌉ groups; empty groups (possible with
``interleave``) get no packet.

**Header packets** carry, after the common header, a 14-byte geometry record (layout u8,
tile u16, C u16, h u16, w u16, symbols per cell S u8, side-info length u32) and a chunk of
the side info (quantizer ranges/palette + entropy model). Side info larger than one packet
is cut into chunks, one per header packet; every header packet repeats the geometry record.

**Feedback** (receiver → sender): a 9-byte header (image_id u32, format u8, first u16,
count u16) and a body. Format 0 lists missing seqs (u16 each); format 1 is a bitmap of
``count`` seqs from ``first`` (bit i of byte i//8, LSB first, set = missing); format 2 is
the final ACK (no body). The receiver picks the smaller of list and bitmap; a NACK larger
than the packet limit is cut into several packets.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sim.errors import ConfigError, InputError

__all__ = [
    "LAYOUTS", "PacketizerConfig", "PacketHeader", "Geometry", "Packets", "PacketError",
    "HEADER", "HEADER_BYTES", "GEOMETRY", "GEOMETRY_BYTES", "FEEDBACK", "FEEDBACK_BYTES",
    "MAX_PACKETS", "MIN_PACKET_BYTES", "cell_groups", "part_cells", "packetize", "parse_packet", "crc_ok",
    "parse_geometry", "pack_feedback", "unpack_feedback",
]

LAYOUTS = ("tile", "row", "interleave")
HEADER = struct.Struct("<IHHBHHHI")
HEADER_BYTES = HEADER.size  # 19
GEOMETRY = struct.Struct("<BHHHHBI")
GEOMETRY_BYTES = GEOMETRY.size  # 14
FEEDBACK = struct.Struct("<IBHH")
FEEDBACK_BYTES = FEEDBACK.size  # 9
MAX_PACKETS = 0xFFFF  # seq and total are u16
FB_LIST, FB_BITMAP, FB_ACK = 0, 1, 2
MIN_PACKET_BYTES = HEADER_BYTES + GEOMETRY_BYTES + 1  # smallest packet limit: a header packet with 1 side byte


class PacketError(InputError):
    """A packet's bytes cannot be parsed (too short, length field disagrees, ...)."""


@dataclass(frozen=True)
class PacketizerConfig:
    """How latent cells are cut into packets (the scenario's ``packetizer:`` keys).

    Parameters
    ----------
    layout : {"tile", "row", "interleave"}
        Which cells share a packet (see the module docstring).
    tile : int ≥ 1
        k: a packet holds k × k cells (``tile``) or k² cells (``row``, ``interleave``),
        before any split to fit the packet size limit.

    The packet size limit is not the packetizer's: it comes from the link, whose ``mtu``
    is the only MTU (bytes on the wire per packet, IP/UDP ``header_bytes`` included), so a
    packet, our 19-byte header included, has at most ``link.max_payload = link.mtu −
    link.header_bytes`` bytes (see :func:`packetize`).
    """

    layout: str = "tile"
    tile: int = 8

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ConfigError(f"packetizer.layout = {self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if isinstance(self.tile, bool) or not isinstance(self.tile, (int, np.integer)) or not 1 <= self.tile <= 0xFFFF:
            raise ConfigError(f"packetizer.tile = {self.tile!r}: expected an integer in [1, 65535]")


@dataclass(frozen=True)
class PacketHeader:
    """The 19-byte header every packet starts with (fields as in the module docstring)."""

    image_id: int
    seq: int
    total: int
    n_header: int
    group: int
    part: int
    length: int
    crc: int

    def pack(self) -> bytes:
        return HEADER.pack(self.image_id, self.seq, self.total, self.n_header, self.group,
                           self.part, self.length, self.crc)

    @classmethod
    def unpack(cls, data: bytes) -> "PacketHeader":
        if len(data) < HEADER_BYTES:
            raise PacketError(f"packet of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
        return cls(*HEADER.unpack_from(data))


@dataclass(frozen=True)
class Geometry:
    """What the header packet tells the receiver: layout, latent shape, side-info length."""

    layout: str
    tile: int
    shape: tuple[int, int, int]  # (C, h, w) latent
    symbols_per_cell: int
    side_len: int

    def pack(self) -> bytes:
        c, h, w = self.shape
        return GEOMETRY.pack(LAYOUTS.index(self.layout), self.tile, c, h, w,
                             self.symbols_per_cell, self.side_len)


def parse_geometry(body: bytes) -> Geometry:
    """Geometry record at the start of a header packet's payload."""
    if len(body) < GEOMETRY_BYTES:
        raise PacketError(f"header packet payload of {len(body)} bytes has no geometry record")
    lay, tile, c, h, w, s, side_len = GEOMETRY.unpack_from(body)
    if lay >= len(LAYOUTS) or not (tile and c and h and w and s):
        raise PacketError("header packet: malformed geometry record")
    return Geometry(LAYOUTS[lay], tile, (c, h, w), s, side_len)


# --------------------------------------------------------------------------- layouts


def interleave_stride(groups: int) -> int:
    """s = round(√P), at least 1: the lattice step of the ``interleave`` layout."""
    return max(1, int(round(math.sqrt(groups))))


@lru_cache(maxsize=64)
def cell_groups(layout: str, tile: int, h: int, w: int) -> tuple[np.ndarray, ...]:
    """The layout's cell groups: raster cell indices (int64, canonical order) per group.

    Empty groups (``interleave`` only) are kept so that group indices match on both ends.
    Cached: both sender and receiver call it once per geometry.
    """
    n, k = h * w, tile
    if layout == "tile":
        idx = np.arange(n, dtype=np.int64).reshape(h, w)
        out = [idx[y:y + k, x:x + k].ravel() for y in range(0, h, k) for x in range(0, w, k)]
    elif layout == "row":
        out = [np.arange(i, min(i + k * k, n), dtype=np.int64) for i in range(0, n, k * k)]
    elif layout == "interleave":
        p = -(-n // (k * k))
        s = interleave_stride(p)
        yy, xx = np.divmod(np.arange(n, dtype=np.int64), w)
        g = (xx + s * yy) % p
        order = np.argsort(g, kind="stable")
        out = np.split(order, np.cumsum(np.bincount(g, minlength=p))[:-1])
    else:
        raise ConfigError(f"packetizer.layout = {layout!r}: expected one of {', '.join(LAYOUTS)}")
    for a in out:
        a.flags.writeable = False
    return tuple(out)


def part_cells(cells: np.ndarray, part: int) -> np.ndarray | None:
    """The piece ``part`` (heap index ≥ 1) of a group's ``cells``; None if it does not exist.

    Part 1 is the whole group; the children of part q are 2q (first half: ``cells[:n//2]``)
    and 2q+1 (second half). A piece is split only if it has at least two cells.
    """
    if part < 1:
        return None
    for bit in bin(part)[3:]:
        n = len(cells)
        if n < 2:
            return None
        cells = cells[n // 2:] if bit == "1" else cells[:n // 2]
    return cells


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class Packets:
    """One image's packets, ready for the wire.

    data : list of bytes, by seq (header packets first)
    sizes : (total,) int64 packet sizes in bytes (our header included, link header not)
    cells : per seq, the raster cell indices of a data packet (None for header packets)
    n_header : number of header packets
    geometry : what the header packets announce
    side : the side info the header packets carry
    limit : the packet size limit used, bytes
    """

    data: list
    sizes: np.ndarray
    cells: list
    n_header: int
    geometry: Geometry
    side: bytes
    limit: int

    @property
    def total(self) -> int:
        return len(self.data)

    @property
    def payload_bytes(self) -> int:
        """Entropy-coded payload bytes of the data packets (headers excluded)."""
        return int(self.sizes[self.n_header:].sum()) - HEADER_BYTES * (self.total - self.n_header)


def _split_to_fit(codec, prep, cells: np.ndarray, room: int, where: str) -> list[tuple[int, np.ndarray, bytes]]:
    """[(part, cells, payload)] covering ``cells``, each payload ≤ ``room`` bytes."""
    out, stack = [], [(1, cells)]
    while stack:
        part, c = stack.pop()
        payload = codec.code_cells(prep, c)
        if len(payload) <= room:
            out.append((part, c, payload))
            continue
        if len(c) < 2:
            raise ConfigError(f"{where}: one latent cell codes to {len(payload)} bytes, more than the "
                              f"{room} bytes a packet has for payload; raise link.mtu")
        if 2 * part + 1 > 0xFFFF:
            raise ConfigError(f"{where}: a cell group needs more than 15 halvings to fit; "
                              f"lower packetizer.tile or raise link.mtu")
        n = len(c)
        stack.append((2 * part + 1, c[n // 2:]))
        stack.append((2 * part, c[:n // 2]))  # popped first: pieces come out in order
    return out


def packetize(codec, prep, image_id: int, config: PacketizerConfig, limit: int) -> Packets:
    """Cut one prepared image into packets of at most ``limit`` bytes.

    Parameters
    ----------
    codec : sim.codec.Codec (anything with ``code_cells(prep, cells) -> bytes``)
    prep : sim.codec.Prepared — ``symbols`` (S, h, w), ``side`` bytes, ``shape`` (C, h, w)
    image_id : int in [0, 2³²)
    config : PacketizerConfig
    limit : int ≥ 34
        Largest packet in bytes, our 19-byte header included: the link's ``max_payload``
        (``link.mtu − link.header_bytes``; the link adds its ``header_bytes`` on the wire).

    Returns
    -------
    Packets. Each data payload is ``codec.code_cells(prep, cells)`` of its cells, decodable
    on its own with the side info.

    Raises
    ------
    ConfigError
        The packet limit cannot hold one cell, or the image needs more than 65535 packets.
    """
    if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) or not 0 <= image_id < 2 ** 32:
        raise ConfigError(f"image_id = {image_id!r}: expected an integer in [0, 2**32)")
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not MIN_PACKET_BYTES <= limit <= 0xFFFF:
        raise ConfigError(f"packet limit {limit!r} bytes (link.mtu − link.header_bytes): expected an integer in "
                          f"[{MIN_PACKET_BYTES}, 65535]")
    limit = int(limit)
    c, h, w = (int(v) for v in prep.shape)
    s = int(prep.symbols.shape[0])
    side = bytes(prep.side)
    geometry = Geometry(config.layout, int(config.tile), (c, h, w), s, len(side))
    if max(c, h, w) > 0xFFFF or s > 0xFF or len(side) >= 2 ** 32:
        raise ConfigError(f"latent shape {prep.shape} with {s} symbols per cell does not fit the header packet")
    where = f"packet limit {limit} bytes (link.mtu − link.header_bytes)"

    pieces = []  # (group, part, cells, payload)
    room = limit - HEADER_BYTES
    code = codec.code_cells
    for g, cells in enumerate(cell_groups(config.layout, int(config.tile), h, w)):
        if len(cells):
            payload = code(prep, cells)
            if len(payload) <= room:
                pieces.append((g, 1, cells, payload))
            else:
                pieces.extend((g, part, pc, pl) for part, pc, pl in _split_to_fit(codec, prep, cells, room, where))

    chunk = limit - HEADER_BYTES - GEOMETRY_BYTES
    n_header = max(1, -(-len(side) // chunk))
    total = n_header + len(pieces)
    if n_header > 0xFF or total > MAX_PACKETS:
        raise ConfigError(f"{where}: this image needs {n_header} header and {len(pieces)} data packets; "
                          f"at most 255 and {MAX_PACKETS} in all are allowed: raise packetizer.tile or link.mtu")
    geo = geometry.pack()
    data, cells_by_seq = [], []
    pack, crc32 = HEADER.pack, zlib.crc32
    for i in range(n_header):
        body = geo + side[i * chunk:(i + 1) * chunk]
        data.append(pack(image_id, i, total, n_header, i, 0, len(body), crc32(body)) + body)
        cells_by_seq.append(None)
    for seq, (g, part, pc, pl) in enumerate(pieces, start=n_header):
        data.append(pack(image_id, seq, total, n_header, g, part, len(pl), crc32(pl)) + pl)
        cells_by_seq.append(pc)
    sizes = np.fromiter((len(d) for d in data), dtype=np.int64, count=total)
    assert sizes.max() <= limit
    return Packets(data, sizes, cells_by_seq, n_header, geometry, side, limit)


def parse_packet(data: bytes) -> tuple[PacketHeader, bytes]:
    """(header, payload) of a packet; PacketError if too short or the length field disagrees.

    The CRC is not checked here: see :func:`crc_ok`.
    """
    head = PacketHeader.unpack(data)
    payload = data[HEADER_BYTES:]
    if head.length != len(payload):
        raise PacketError(f"packet length field says {head.length} bytes, payload has {len(payload)}")
    return head, payload


def crc_ok(header: PacketHeader, payload: bytes) -> bool:
    """True when the payload's CRC32 matches the header's."""
    return zlib.crc32(payload) == header.crc


# --------------------------------------------------------------------------- feedback


def pack_feedback(image_id: int, missing, total: int, limit: int) -> list[bytes]:
    """NACK packet(s) for the missing seqs, or one ACK packet if ``missing`` is empty.

    Parameters
    ----------
    missing : sorted ints in [0, total)
    limit : largest packet, bytes (≥ 11)

    The smaller encoding wins: a list (2 bytes per seq) or a bitmap over [0, total)
    (⌈total/8⌉ bytes); either is cut into packets of at most ``limit`` bytes.
    """
    missing = np.asarray(missing, dtype=np.int64)
    if missing.size == 0:
        return [FEEDBACK.pack(image_id, FB_ACK, 0, 0)]
    room = limit - FEEDBACK_BYTES
    if 2 * missing.size <= -(-total // 8):
        per = room // 2
        return [FEEDBACK.pack(image_id, FB_LIST, 0, len(part)) + part.astype("<u2").tobytes()
                for part in (missing[i:i + per] for i in range(0, missing.size, per))]
    bits = np.zeros(total, dtype=bool)
    bits[missing] = True
    per = 8 * room
    return [FEEDBACK.pack(image_id, FB_BITMAP, i, min(per, total - i))
            + np.packbits(bits[i:i + per], bitorder="little").tobytes()
            for i in range(0, total, per)]


def unpack_feedback(packets: list[bytes]) -> tuple[int, np.ndarray | None]:
    """(image_id, sorted missing seqs) from NACK packets; seqs is None for an ACK."""
    out, image_id = [], None
    for p in packets:
        if len(p) < FEEDBACK_BYTES:
            raise PacketError(f"feedback packet of {len(p)} bytes is shorter than its header")
        image_id, fmt, first, count = FEEDBACK.unpack_from(p)
        body = p[FEEDBACK_BYTES:]
        if fmt == FB_ACK:
            return image_id, None
        if fmt == FB_LIST:
            out.append(np.frombuffer(body, "<u2", count=count).astype(np.int64))
        elif fmt == FB_BITMAP:
            bits = np.unpackbits(np.frombuffer(body, np.uint8), count=count, bitorder="little")
            out.append(first + np.flatnonzero(bits))
        else:
            raise PacketError(f"feedback packet format {fmt}: expected 0 (list), 1 (bitmap) or 2 (ack)")
    return image_id, np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)
