"""Packetizer: layouts, header/CRC, MTU splitting, header packets, feedback packets."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.packets import (
    GEOMETRY_BYTES, HEADER_BYTES, PacketError, PacketHeader, PacketizerConfig, cell_groups, crc_ok,
    interleave_stride, pack_feedback, packetize, parse_geometry, parse_packet, part_cells,
    unpack_feedback,
)


class BytesCodec:
    """Fake codec: ``per_cell`` bytes per cell (the symbols of channel 0, repeated)."""

    def __init__(self, per_cell: int = 2):
        self.per_cell = per_cell

    def code_cells(self, prep, cells):
        sym = prep.symbols.reshape(prep.symbols.shape[0], -1)[0, cells].astype(np.uint8)
        return np.repeat(sym, self.per_cell).tobytes()


class Prep:
    def __init__(self, c, h, w, side=b"side-info"):
        self.symbols = (np.arange(c * h * w).reshape(c, h, w) * 7) % 251
        self.side, self.shape = side, (c, h, w)


@pytest.fixture(scope="module")
def real_codec():
    """The tiny codec contract with a real quantizer and range coder (no model needed here)."""
    from sim.codec.base import Codec
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import make_quantizer

    codec = Codec(None, make_quantizer("uniform", bits=6), make_entropy_coder("range"))
    latent = np.random.default_rng(0).standard_normal((4, 16, 16)).astype(np.float32)
    return codec, codec.prepare(latent)


def test_config_refuses_bad_values_naming_the_field():
    with pytest.raises(ConfigError, match="packetizer.layout = 'tiles'"):
        PacketizerConfig(layout="tiles")
    with pytest.raises(ConfigError, match="packetizer.tile = 0"):
        PacketizerConfig(tile=0)
    with pytest.raises(TypeError):  # the link's MTU is the only one
        PacketizerConfig(mtu=1200)
    with pytest.raises(ConfigError, match="packetizer.tile"):
        PacketizerConfig(tile=2.0)


@pytest.mark.parametrize("layout", ["tile", "row", "interleave"])
@pytest.mark.parametrize("h,w,k", [(16, 16, 4), (13, 10, 4), (7, 9, 1), (5, 3, 8)])
def test_every_cell_in_exactly_one_group(layout, h, w, k):
    groups = cell_groups(layout, k, h, w)
    cells = np.concatenate(groups)
    assert np.array_equal(np.sort(cells), np.arange(h * w))


@pytest.mark.parametrize("layout", ["tile", "row", "interleave"])
def test_every_cell_in_exactly_one_packet_after_splits(layout):
    prep = Prep(4, 12, 20)
    pk = packetize(BytesCodec(per_cell=10), prep, 5, PacketizerConfig(layout=layout, tile=6), limit=120)
    assert any(pk.cells[s] is not None and len(pk.cells[s]) < 36 for s in range(pk.total))  # splits happened
    cells = np.concatenate([c for c in pk.cells if c is not None])
    assert np.array_equal(np.sort(cells), np.arange(12 * 20))
    assert pk.sizes.max() <= 120


def test_tile_loss_is_a_square_hole():
    h = w = 16
    k = 4
    pk = packetize(BytesCodec(), Prep(4, h, w), 1, PacketizerConfig(layout="tile", tile=k), limit=1172)
    assert pk.total == pk.n_header + (h // k) * (w // k)
    for seq in range(pk.n_header, pk.total):
        hole = np.zeros(h * w, bool)
        hole[pk.cells[seq]] = True
        ys, xs = np.nonzero(hole.reshape(h, w))
        assert hole.sum() == k * k
        assert ys.max() - ys.min() == k - 1 and xs.max() - xs.min() == k - 1


def test_tile_split_gives_top_and_bottom_halves():
    tile = cell_groups("tile", 4, 8, 8)[0]
    top, bottom = part_cells(tile, 2), part_cells(tile, 3)
    assert np.array_equal(np.divmod(top, 8)[0], [0, 0, 0, 0, 1, 1, 1, 1])
    assert np.array_equal(np.divmod(bottom, 8)[0], [2, 2, 2, 2, 3, 3, 3, 3])
    assert np.array_equal(part_cells(tile, 1), tile)
    assert part_cells(np.array([5]), 2) is None and part_cells(tile, 0) is None


@pytest.mark.parametrize("h,w,k", [(32, 32, 8), (32, 32, 4), (13, 17, 3), (8, 8, 2), (20, 30, 5)])
def test_interleave_loss_is_scattered(h, w, k):
    groups = cell_groups("interleave", k, h, w)
    assert len(groups) >= 4
    for g in groups:
        y, x = np.divmod(g, w)
        dy = np.abs(y[:, None] - y[None, :])
        dx = np.abs(x[:, None] - x[None, :])
        near = (dy <= 1) & (dx <= 1)
        np.fill_diagonal(near, False)
        assert not near.any()  # no two cells of a packet touch, diagonals included
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= max(2, h // 2)


def test_interleave_is_balanced_when_groups_divide_the_width():
    groups = cell_groups("interleave", 8, 32, 32)  # P = 16, s = 4
    assert interleave_stride(16) == 4
    assert {len(g) for g in groups} == {64}


def test_row_layout_is_raster_runs():
    groups = cell_groups("row", 2, 3, 5)
    assert [g.tolist() for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]


def test_header_round_trip_and_crc_detects_any_flipped_bit():
    head = PacketHeader(image_id=2 ** 32 - 1, seq=7, total=300, n_header=2, group=5, part=3, length=4,
                        crc=zlib.crc32(b"abcd"))
    data = head.pack() + b"abcd"
    assert len(head.pack()) == HEADER_BYTES == 19
    got, payload = parse_packet(data)
    assert got == head and payload == b"abcd" and crc_ok(got, payload)
    for bit in range(8 * len(payload)):
        flipped = bytearray(payload)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not crc_ok(got, bytes(flipped))
    with pytest.raises(PacketError):
        parse_packet(data[:10])
    with pytest.raises(PacketError, match="length field"):
        parse_packet(data + b"x")


def test_packets_carry_header_fields_and_decode_on_their_own(real_codec):
    codec, prep = real_codec
    pk = packetize(codec, prep, 42, PacketizerConfig(layout="interleave", tile=4), limit=60)
    assert pk.sizes.max() <= 60
    flat = prep.symbols.reshape(prep.symbols.shape[0], -1)
    seen = np.zeros(prep.n_cells, bool)
    for seq, raw in enumerate(pk.data):
        head, payload = parse_packet(raw)
        assert (head.image_id, head.seq, head.total, head.n_header) == (42, seq, pk.total, pk.n_header)
        assert crc_ok(head, payload) and len(raw) == pk.sizes[seq]
        if seq < pk.n_header:
            continue
        cells = part_cells(cell_groups("interleave", 4, 16, 16)[head.group], head.part)
        assert np.array_equal(cells, pk.cells[seq])
        sym = codec.decode_cells(payload, len(cells), prep.side)  # decodable on its own
        assert np.array_equal(sym, flat[:, cells])
        seen[cells] = True
    assert seen.all()


def test_side_info_larger_than_a_packet_is_split_over_header_packets():
    side = bytes(range(256)) * 3
    prep = Prep(4, 8, 8, side=side)
    pk = packetize(BytesCodec(), prep, 0, PacketizerConfig(layout="tile", tile=4), limit=200)
    chunk = 200 - HEADER_BYTES - GEOMETRY_BYTES
    assert pk.n_header == -(-len(side) // chunk) == 5
    bodies = [parse_packet(pk.data[i])[1] for i in range(pk.n_header)]
    geo = parse_geometry(bodies[0])
    assert (geo.layout, geo.tile, geo.shape, geo.symbols_per_cell, geo.side_len) == ("tile", 4, (4, 8, 8), 4, len(side))
    assert b"".join(b[GEOMETRY_BYTES:] for b in bodies) == side
    assert all(parse_geometry(b) == geo for b in bodies)


def test_link_limit_and_unsplittable_cell():
    pk = packetize(BytesCodec(per_cell=10), Prep(4, 8, 8), 0, PacketizerConfig(tile=4), limit=100)
    assert pk.limit == 100 and pk.sizes.max() <= 100
    with pytest.raises(ConfigError, match="one latent cell codes to 100 bytes.*raise link.mtu"):
        packetize(BytesCodec(per_cell=100), Prep(4, 8, 8), 0, PacketizerConfig(tile=4), limit=100)
    with pytest.raises(ConfigError, match=r"packet limit 33 bytes \(link.mtu − link.header_bytes\): expected an "
                                          r"integer in \[34, 65535\]"):
        packetize(BytesCodec(), Prep(4, 8, 8), 0, PacketizerConfig(), limit=33)
    with pytest.raises(ConfigError, match="image_id"):
        packetize(BytesCodec(), Prep(4, 8, 8), -1, PacketizerConfig(), limit=1172)


def test_feedback_list_bitmap_ack_round_trip():
    list_nack = pack_feedback(9, [3, 70], 1000, 1200)
    assert len(list_nack) == 1 and len(list_nack[0]) == 9 + 4
    bitmap = pack_feedback(9, list(range(0, 1000, 3)), 1000, 1200)
    assert len(bitmap) == 1 and len(bitmap[0]) == 9 + 125
    chunked = pack_feedback(9, list(range(0, 5000, 2)), 5000, 100)
    assert len(chunked) > 1 and max(len(p) for p in chunked) <= 100
    for packets, want in ((list_nack, [3, 70]), (bitmap, list(range(0, 1000, 3))),
                          (chunked, list(range(0, 5000, 2)))):
        image_id, seqs = unpack_feedback(packets)
        assert image_id == 9 and seqs.tolist() == want
    ack = pack_feedback(9, [], 1000, 1200)
    assert len(ack) == 1 and len(ack[0]) == 9 and unpack_feedback(ack) == (9, None)
