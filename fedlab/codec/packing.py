"""Pure packing kernels: b-bit codes, base-3 trits, sorted index sets.

Every ``unpack_*`` function checks what it reads (no code outside its range, zero padding,
strictly increasing indices below the tensor size) and raises
:class:`~fedlab.codec.errors.CodecError` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlab.codec.errors import CodecError
from fedlab.protocol.container import Reader

__all__ = [
    "INDEX_MODES",
    "check_segments",
    "pack_bits",
    "pack_indices",
    "pack_trits",
    "packed_bits_size",
    "packed_trits_size",
    "unpack_bits",
    "unpack_indices",
    "unpack_trits",
    "varint_gaps_size",
]

INDEX_MODES = ("auto", "bitmap", "varint")
_BITMAP, _VARINT = 0, 1
_TRIT_WEIGHTS = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
# 243 valid bytes × 5 trits each: the decoding table of pack_trits.
_TRIT_TABLE = (np.arange(243)[:, None] // np.array([1, 3, 9, 27, 81])[None, :] % 3).astype(np.uint8)


def packed_bits_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned ``codes < 2**bits`` (bits in 1, 2, 4, 8), first code in the low bits."""
    codes = np.asarray(codes, dtype=np.uint8)
    if bits == 8:
        return codes.tobytes()
    if bits == 1:
        return np.packbits(codes, bitorder="little").tobytes()
    per = 8 // bits
    padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
    padded[: codes.size] = codes
    groups = padded.reshape(-1, per)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for j in range(per):
        out |= groups[:, j] << np.uint8(j * bits)
    return out.tobytes()


def unpack_bits(r: Reader, count: int, bits: int, *, limit: int, what: str) -> np.ndarray:
    """Read ``count`` codes of ``bits`` bits; every code must be ``< limit``."""
    raw = r.array(packed_bits_size(count, bits), "u1", what)
    if bits == 8:
        codes = raw
    elif bits == 1:
        codes = np.unpackbits(raw, bitorder="little")
    else:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        codes = np.empty((raw.size, per), dtype=np.uint8)
        for j in range(per):
            codes[:, j] = (raw >> np.uint8(j * bits)) & mask
        codes = codes.reshape(-1)
    if codes[count:].any():
        raise CodecError(f"{what}: non-zero padding bits")
    codes = codes[:count]
    if limit < (1 << bits) and codes.size and int(codes.max()) >= limit:
        raise CodecError(f"{what}: code {int(codes.max())} out of range (< {limit})")
    return codes


def packed_trits_size(count: int) -> int:
    """Bytes taken by ``count`` base-3 digits, five per byte."""
    return (count + 4) // 5


def pack_trits(trits: np.ndarray) -> bytes:
    """Pack digits in {0, 1, 2} five to a byte (3**5 = 243 ≤ 256: 1.6 bits per digit)."""
    padded = np.zeros(packed_trits_size(trits.size) * 5, dtype=np.uint8)
    padded[: trits.size] = trits
    return (padded.reshape(-1, 5) * _TRIT_WEIGHTS).sum(axis=1, dtype=np.uint8).tobytes()


def unpack_trits(r: Reader, count: int, *, what: str) -> np.ndarray:
    raw = r.array(packed_trits_size(count), "u1", what)
    if raw.size and int(raw.max()) >= 243:
        raise CodecError(f"{what}: byte {int(raw.max())} is not five base-3 digits")
    trits = _TRIT_TABLE[raw].reshape(-1)
    if trits[count:].any():
        raise CodecError(f"{what}: non-zero padding digits")
    return trits[:count]


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    lengths = np.ones(values.shape, dtype=np.int64)
    for j in range(1, 5):
        lengths += values >= (1 << (7 * j))
    return lengths


def varint_gaps_size(indices: np.ndarray) -> int:
    """Bytes of the gap-varint encoding of sorted unique ``indices``."""
    return int(_varint_lengths(_gaps(indices)).sum())


def _gaps(indices: np.ndarray) -> np.ndarray:
    idx = indices.astype(np.int64)
    return np.diff(idx, prepend=-1) - 1


def _encode_varints(values: np.ndarray) -> bytes:
    lengths = _varint_lengths(values)
    total = int(lengths.sum())
    out = np.empty(total, dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    for j in range(int(lengths.max(initial=0))):
        has = lengths > j
        byte = (values[has] >> (7 * j)) & 0x7F
        more = lengths[has] > j + 1
        out[starts[has] + j] = (byte | (more.astype(np.int64) << 7)).astype(np.uint8)
    return out.tobytes()


def pack_indices(indices: np.ndarray, size: int, mode: str = "auto") -> bytes:
    """Sorted unique indices into a tensor of ``size`` elements, as a bitmap (``size/8``
    bytes) or gap varints (about one byte per index at 1 % density); ``"auto"`` picks the
    smaller. One leading byte says which."""
    if mode == "auto":
        mode = "bitmap" if (size + 7) // 8 <= varint_gaps_size(indices) else "varint"
    if mode == "bitmap":
        bitmap = np.zeros(size, dtype=np.uint8)
        bitmap[indices] = 1
        return bytes((_BITMAP,)) + np.packbits(bitmap, bitorder="little").tobytes()
    return bytes((_VARINT,)) + _encode_varints(_gaps(indices))


def unpack_indices(r: Reader, count: int, size: int, *, what: str) -> np.ndarray:
    """Read ``count`` strictly increasing indices below ``size`` written by pack_indices."""
    mode = r.byte(f"{what} mode")
    if mode == _BITMAP:
        raw = r.array((size + 7) // 8, "u1", f"{what} bitmap")
        bits = np.unpackbits(raw, bitorder="little")
        if bits[size:].any():
            raise CodecError(f"{what}: bitmap padding bits set")
        idx = np.flatnonzero(bits[:size])
        if idx.size != count:
            raise CodecError(f"{what}: bitmap selects {idx.size} elements, expected {count}")
        return idx
    if mode != _VARINT:
        raise CodecError(f"{what}: unknown index mode {mode}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    # Varints are at most 5 bytes: the terminators among the next 5*count bytes bound it.
    window = np.frombuffer(r.data[r.pos : r.pos + 5 * count], dtype=np.uint8)
    ends = np.flatnonzero(window < 0x80)
    if ends.size < count:
        raise CodecError(f"truncated: {what} needs {count} varints, found {ends.size}")
    ends = ends[:count]
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > 5:
        raise CodecError(f"{what}: varint longer than 5 bytes")
    values = np.zeros(count, dtype=np.int64)
    for j in range(int(lengths.max())):
        has = lengths > j
        values[has] |= (window[starts[has] + j].astype(np.int64) & 0x7F) << (7 * j)
    if np.any((lengths > 1) & (window[ends] == 0)):
        raise CodecError(f"{what}: overlong varint")
    r.take(int(ends[-1]) + 1, what)
    idx = np.cumsum(values + 1) - 1
    if int(idx[-1]) >= size:
        raise CodecError(f"{what}: index {int(idx[-1])} out of range (size {size})")
    return idx


def check_segments(idx: np.ndarray, counts: Sequence[int], sizes: Sequence[int]) -> None:
    """Sorted positions ``idx`` in the concatenation of tensors of ``sizes`` must hold
    exactly ``counts[i]`` positions inside tensor ``i``."""
    size = np.asarray(sizes, dtype=np.int64)
    count = np.asarray(counts, dtype=np.int64)
    ends: np.ndarray = np.cumsum(size)
    starts: np.ndarray = ends - size
    at: np.ndarray = np.cumsum(count) - count
    full = count > 0
    if not full.any():
        return
    first = idx[at[full]]
    last = idx[at[full] + count[full] - 1]
    if np.any(first < starts[full]) or np.any(last >= ends[full]):
        bad = int(np.flatnonzero(full)[np.argmax((first < starts[full]) | (last >= ends[full]))])
        raise CodecError(f"indices of tensor {bad} fall outside it (expected {counts[bad]} there)")
