"""Downlink delta encoding: send the new global model against the device's last version.

Two modes:

* **lossless** (``codec=None``): the XOR of the float32 bit patterns of new and old,
  split into byte planes (sign/exponent bytes together, where unchanged bits are zeros)
  and DEFLATE-compressed. ``decode`` rebuilds the new model bit for bit.
* **lossy** (a :class:`~fedlab.codec.base.Codec`): ``new − base`` through that codec. The
  device then holds ``base + decoded``, not ``new``: the server must keep, per device,
  what the device holds — ``held = downlink.decode(payload, held)`` — and encode the next
  broadcast against it (so errors never accumulate; both sides compute the same float32
  sum, bit for bit).

Every payload names the base it was computed against (the first 8 bytes of a SHA-256 of
its shapes and float32 bytes): applying it to any other model is a ``CodecError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Codec, CodecState, _expect_keys, check_arrays, from_config, register
from fedlab.codec.entropy import Zlib
from fedlab.codec.errors import CodecError
from fedlab.protocol.container import KIND_DELTA, config_bytes, pack_container, unpack_container

__all__ = ["ModelDelta", "model_digest"]

_DIGEST = 8


def model_digest(arrays: Sequence[np.ndarray]) -> bytes:
    """8-byte digest of a model (its shapes and float32 values)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype="<f4")
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.digest()[:_DIGEST]


@register("model_delta")
@dataclass(frozen=True, slots=True)
class ModelDelta:
    """Encode a model broadcast as a delta against the version a device already holds.

    Parameters
    ----------
    codec : Codec, optional
        Lossy codec for ``new − base``; ``None`` (default) is the exact XOR mode.
    """

    codec: Codec | None = None
    name: ClassVar[str] = "model_delta"

    def __post_init__(self) -> None:
        if self.codec is not None and not isinstance(self.codec, Codec):
            raise TypeError(f"codec must be a Codec or None, got {self.codec!r}")

    @property
    def _wire_config(self) -> bytes:
        inner = None if self.codec is None else self.codec.get_config()
        return config_bytes([{"name": self.name, "codec": inner}])

    def encode(
        self,
        new: Sequence[np.ndarray],
        base: Sequence[np.ndarray],
        state: CodecState | None = None,
    ) -> bytes:
        """The payload that turns ``base`` (what the device holds) into ``new``.

        ``state`` seeds a stochastic lossy codec (a fresh one by default).
        """
        new_a, base_a = check_arrays(new), check_arrays(base)
        shapes = tuple(a.shape for a in new_a)
        if tuple(b.shape for b in base_a) != shapes:
            raise ValueError(
                f"base shapes {[b.shape for b in base_a]} differ from the model's {list(shapes)}"
            )
        body = model_digest(base_a)
        if self.codec is None:
            xor = np.concatenate(
                [
                    (n.view("<u4") ^ b.view("<u4")).ravel()
                    for n, b in zip(
                        (np.ascontiguousarray(a, "<f4") for a in new_a),
                        (np.ascontiguousarray(a, "<f4") for a in base_a),
                        strict=True,
                    )
                ]
                or [np.zeros(0, "<u4")]
            )
            planes = xor.view(np.uint8).reshape(-1, 4).T.tobytes()
            body += Zlib(6).compress(planes)
        else:
            diff = [n - b for n, b in zip(new_a, base_a, strict=True)]
            payload, _ = self.codec.encode(diff, state or self.codec.init_state())
            body += payload
        return pack_container(KIND_DELTA, self._wire_config, shapes, body)

    def decode(self, payload: bytes, base: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """The model the device holds after applying ``payload`` to ``base``."""
        base_a = check_arrays(base)
        shapes = tuple(a.shape for a in base_a)
        box = unpack_container(payload, kind=KIND_DELTA, shapes=shapes)
        if box.config != self._wire_config:
            raise CodecError(
                f"downlink payload was encoded with {box.config.decode(errors='replace')!r}, "
                f"this decoder expects {self._wire_config.decode()!r}"
            )
        if len(box.body) < _DIGEST:
            raise CodecError("truncated: downlink payload has no base digest")
        if bytes(box.body[:_DIGEST]) != model_digest(base_a):
            raise CodecError(
                f"downlink delta is against model {bytes(box.body[:_DIGEST]).hex()}, the "
                f"device holds {model_digest(base_a).hex()}"
            )
        rest = box.body[_DIGEST:]
        if self.codec is None:
            total = sum(a.size for a in base_a)
            planes = Zlib(6).decompress(rest, 4 * total)
            if len(planes) != 4 * total:
                raise CodecError(f"downlink delta holds {len(planes)} bytes, expected {4 * total}")
            xor = np.frombuffer(planes, np.uint8).reshape(4, total).T.copy().view("<u4").ravel()
            out, at = [], 0
            for b in base_a:
                bits = np.ascontiguousarray(b, "<f4").view("<u4").ravel() ^ xor[at : at + b.size]
                at += b.size
                out.append(bits.view("<f4").reshape(b.shape).astype(np.float32))
        else:
            diff = self.codec.decode(bytes(rest), shapes)
            out = [b + d for b, d in zip(base_a, diff, strict=True)]
        for k, a in enumerate(out):
            if not np.all(np.isfinite(a)):
                raise CodecError(f"downlink tensor {k} decodes to non-finite values")
        return tuple(out)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "codec": None if self.codec is None else self.codec.get_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelDelta:
        _expect_keys(config, cls.name, ("codec",))
        inner = config.get("codec")
        return cls(None if inner is None else from_config(inner))
