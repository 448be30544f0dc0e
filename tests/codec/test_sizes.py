"""Exact bytes on the wire: the payload length is the documented layout, to the byte."""

from __future__ import annotations

import math

import pytest

from fedlab.codec import QSGD, CodecState, RandomK, Sign, Ternary, TopK, chain
from fedlab.protocol.container import config_bytes

from .conftest import SHAPES, SMALL, codecs, update


def leb128_len(value: int) -> int:
    return max(1, math.ceil(value.bit_length() / 7))


def header_len(codec, shapes) -> int:
    """magic 4 + version 1 + kind 1 + config (length varint + JSON) + shapes + crc 4."""
    cfg = len(config_bytes([s.get_config() for s in codec.stages]))
    dims = sum(1 + sum(leb128_len(d) for d in s) for s in shapes)
    return 4 + 1 + 1 + leb128_len(cfg) + cfg + leb128_len(len(shapes)) + dims + 4


SIZES = [math.prod(s) for s in SHAPES]


def k(ratio: float, n: int) -> int:
    return min(n, max(1, math.ceil(ratio * n))) if n else 0


T = len(SIZES)  # one float32 scale per tensor, then every value's code
N = sum(SIZES)


def ks(ratio: float) -> int:
    return sum(k(ratio, n) for n in SIZES)


@pytest.mark.parametrize(
    ("codec", "body"),
    [
        (chain(), 4 * N),
        (QSGD(bits=8), 4 * T + N),
        (QSGD(bits=4), 4 * T + math.ceil(N / 2)),
        (QSGD(bits=2), 4 * T + math.ceil(N / 4)),
        (Ternary(), 4 * T + math.ceil(N / 5)),
        (Sign(), 4 * T + math.ceil(N / 8)),
        # top-k: one index-mode byte and a bitmap of the whole update, then the values
        (TopK(0.25, index="bitmap"), 1 + math.ceil(N / 8) + 4 * ks(0.25)),
        (
            chain(TopK(0.1, index="bitmap"), QSGD(bits=4)),
            1 + math.ceil(N / 8) + 4 * T + math.ceil(ks(0.1) / 2),
        ),
        # random-k: a 4-byte seed instead of indices
        (chain(RandomK(0.01), Ternary()), 4 + 4 * T + math.ceil(ks(0.01) / 5)),
        (chain(RandomK(0.5), Sign()), 4 + 4 * T + math.ceil(ks(0.5) / 8)),
    ],
    ids=lambda v: v if isinstance(v, int) else str(v.get_config() if hasattr(v, "stages") else ""),
)
def test_payload_length_is_the_layout_to_the_byte(codec, body: int) -> None:
    chained = chain(codec)
    payload, _ = codec.encode(update(), CodecState(seed=1))
    assert len(payload) == header_len(chained, SHAPES) + body
    assert len(payload) == codec.size_bound(SHAPES)  # fixed-size codecs: the bound is exact


def test_dense_float32_costs_its_values_plus_a_small_header() -> None:
    payload, _ = chain().encode(update(), CodecState())
    dense = 4 * sum(SIZES)
    assert dense == 4 * 38_282  # the digits CNN
    assert 0 < len(payload) - dense <= 64


def test_varint_indices_cost_about_a_byte_at_one_percent() -> None:
    x = update()
    payload, _ = TopK(0.01, index="varint").encode(x, CodecState())
    values = 4 * sum(k(0.01, n) for n in SIZES)
    indices = len(payload) - header_len(chain(TopK(0.01, index="varint")), SHAPES) - values
    assert (
        sum(k(0.01, n) for n in SIZES) + len(SIZES)
        <= indices
        <= 2 * sum(k(0.01, n) for n in SIZES) + len(SIZES)
    )


@pytest.mark.parametrize("name", sorted(codecs()))
@pytest.mark.parametrize("shapes", [SHAPES, SMALL], ids=["digits_cnn", "small"])
def test_every_payload_is_within_its_size_bound(name: str, shapes) -> None:
    codec = codecs()[name]
    for seed in range(3):
        payload, _ = codec.encode(update(shapes, seed=seed), codec.init_state(seed=seed))
        assert len(payload) <= codec.size_bound(shapes)


def test_auto_index_mode_takes_the_smaller_encoding() -> None:
    x = update()
    auto = len(TopK(0.3).encode(x, CodecState())[0])
    bitmap = len(TopK(0.3, index="bitmap").encode(x, CodecState())[0])
    varint = len(TopK(0.3, index="varint").encode(x, CodecState())[0])
    assert auto <= min(bitmap, varint) + 64  # configs differ by a few bytes of JSON
    assert len(TopK(0.01).encode(x, CodecState())[0]) < len(
        TopK(0.01, index="bitmap").encode(x, CodecState())[0]
    )
