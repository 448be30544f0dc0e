"""The codec interface, per-client codec state, and the stage chain.

A :class:`Codec` turns one update (a sequence of float arrays) into bytes and back::

    payload, state = codec.encode(delta, state)       # client side, state kept per client
    delta_hat = codec.decode(payload, shapes)         # server side, CodecError on garbage

Codecs are frozen value objects that round-trip through plain dicts
(:meth:`Codec.get_config` / :func:`from_config`). A chain is built from at most one
*sparsifier* (which elements), at most one *quantizer* (how each value is written; float32
when absent) and at most one *entropy coder* (zlib/lzma over the body), in that order:
``chain(TopK(0.01), QSGD(bits=4), Zlib())``. :class:`~fedlab.codec.error_feedback.ErrorFeedback`
wraps a whole codec. Any single stage is itself a codec (a chain of one).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.errors import CodecError
from fedlab.protocol.container import (
    KIND_STATE,
    KIND_UPDATE,
    Reader,
    Shapes,
    check_shapes,
    config_bytes,
    pack_container,
    unpack_container,
)

__all__ = [
    "Chain",
    "Codec",
    "CodecState",
    "EntropyCoder",
    "Quantizer",
    "Sparsifier",
    "Stage",
    "chain",
    "check_arrays",
    "decode",
    "from_config",
    "register",
    "segments",
]

Arrays = tuple[np.ndarray, ...]
_REGISTRY: dict[str, Callable[[Mapping[str, Any]], Codec]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make ``from_config({"name": name, ...})`` build this codec."""

    def wrap(cls: type) -> type:
        _REGISTRY[name] = cls.from_config  # type: ignore[attr-defined]
        return cls

    return wrap


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class CodecState:
    """What one client's encoder carries from one update to the next.

    An explicit value the caller keeps (on the device, or per client in the simulator):
    ``encode`` never mutates it and returns the next one.

    Attributes
    ----------
    seed : int
        Seeds the encoder's randomness (stochastic rounding, random-k); give every client
        its own (its id) so their rounding noise is independent.
    step : int
        How many updates were encoded from this state's lineage (the randomness of update
        ``step`` is drawn from ``(seed, step)``: reproducible, never reused).
    residual : tuple of arrays, optional
        Error-feedback memory (what earlier updates failed to send), float32, read-only.
    """

    seed: int = 0
    step: int = 0
    residual: Arrays | None = None

    def __post_init__(self) -> None:
        for name in ("seed", "step"):
            value = _int(getattr(self, name), name)
            if not 0 <= value < 2**63:
                raise ValueError(f"{name} must be in [0, 2**63), got {value!r}")
            object.__setattr__(self, name, value)
        if self.residual is not None:
            frozen = []
            for r in self.residual:
                a = np.array(r, dtype=np.float32)  # a private copy
                a.setflags(write=False)
                frozen.append(a)
            object.__setattr__(self, "residual", tuple(frozen))

    def rng(self) -> np.random.Generator:
        """The generator of update ``step``."""
        return np.random.default_rng([self.seed, self.step])

    def advanced(self, residual: Arrays | None = None) -> CodecState:
        """The state after one more update (with ``residual`` as the new memory)."""
        return CodecState(seed=self.seed, step=self.step + 1, residual=residual)

    def residual_norm(self) -> float:
        """L2 norm of the error-feedback memory (0 without one)."""
        if self.residual is None:
            return 0.0
        return math.sqrt(sum(float(np.dot(r.ravel(), r.ravel())) for r in self.residual))

    def to_bytes(self) -> bytes:
        """The state in the codec wire container (what a device writes to disk between
        rounds): seed and step in the config, the residual as float32 tensors."""
        residual = self.residual or ()
        config = config_bytes({"seed": self.seed, "step": self.step, "residual": bool(residual)})
        body = b"".join(r.astype("<f4").tobytes() for r in residual)
        return pack_container(KIND_STATE, config, tuple(r.shape for r in residual), body)

    @classmethod
    def from_bytes(cls, data: bytes, shapes: Sequence[Sequence[int]] | None = None) -> CodecState:
        """Read :meth:`to_bytes` back; ``shapes`` (the model's) must match a saved residual.
        A damaged or foreign file is a :class:`CodecError`."""
        expected = None if shapes is None else check_shapes(shapes)
        box = unpack_container(data, kind=KIND_STATE)
        try:
            config = json.loads(box.config)
            seed, step, has = config["seed"], config["step"], config["residual"]
            if set(config) != {"seed", "step", "residual"} or not isinstance(has, bool):
                raise ValueError(f"unexpected state config {config!r}")
            if has and expected is not None and box.shapes != expected:
                raise ValueError(f"saved residual shapes {box.shapes}, expected {expected}")
            if not has and box.shapes:
                raise ValueError("shapes declared without a residual")
            sizes = [math.prod(s) for s in box.shapes]
            if len(box.body) != 4 * sum(sizes):
                raise ValueError(f"{len(box.body)} residual bytes for shapes {box.shapes}")
            flat = np.frombuffer(box.body, dtype="<f4")
            residual = (
                tuple(
                    seg.reshape(s) for seg, s in zip(segments(flat, sizes), box.shapes, strict=True)
                )
                if has
                else None
            )
            if residual is not None and not all(np.isfinite(r).all() for r in residual):
                raise ValueError("the saved residual holds non-finite values")
            return cls(seed=seed, step=step, residual=residual)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise CodecError(f"not a valid codec state: {exc}") from None


def check_arrays(arrays: Any) -> Arrays:
    """``arrays`` as a tuple of finite float32 arrays (``TypeError``/``ValueError`` quoting
    what was wrong; the input is never modified)."""
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
        raise TypeError(f"an update must be a sequence of arrays, got {type(arrays).__name__}")
    out = []
    for i, a in enumerate(arrays):
        arr = np.asarray(a)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"tensor {i} must hold real numbers, got dtype {arr.dtype}")
        if arr.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            bad = arr[~np.isfinite(arr)].ravel()[0]
            raise ValueError(f"tensor {i} holds a non-finite value ({bad!r}) after float32")
        out.append(arr)
    check_shapes([a.shape for a in out])
    return tuple(out)


class Codec(ABC):
    """Update compression: ``encode(arrays, state) -> (bytes, state)``, ``decode(bytes,
    shapes) -> arrays``. Subclasses are frozen dataclasses registered by name."""

    __slots__ = ()
    name: ClassVar[str]

    def init_state(self, *, seed: int = 0) -> CodecState:
        """A fresh per-client state (give every client its own ``seed``)."""
        return CodecState(seed=seed)

    @abstractmethod
    def encode(self, arrays: Sequence[np.ndarray], state: CodecState) -> tuple[bytes, CodecState]:
        """Encode one update (the client-encode stage calls this).

        Parameters
        ----------
        arrays : sequence of arrays
            The update (``delta = local − global``), any real dtype; cast to float32.
        state : CodecState
            This client's state; never modified.

        Returns
        -------
        payload : bytes
            The self-describing payload; ``len(payload)`` is the exact cost on the wire.
        state : CodecState
            The state to keep for this client's next update.

        Raises
        ------
        TypeError, ValueError
            A non-numeric or non-finite update, or a state that does not fit it.
        """

    @abstractmethod
    def decode(self, payload: bytes, shapes: Sequence[Sequence[int]]) -> Arrays:
        """Decode a payload (the server-decode stage calls this).

        Parameters
        ----------
        payload : bytes
            What a client sent (untrusted).
        shapes : sequence of shapes
            The global model's tensor shapes: the payload must declare exactly these.

        Returns
        -------
        tuple of float32 arrays
            The update the server aggregates, finite, one array per shape.

        Raises
        ------
        CodecError
            For any malformed payload (the only exception garbage can raise).
        """

    @abstractmethod
    def size_bound(self, shapes: Sequence[Sequence[int]]) -> int:
        """An upper bound on the bytes of any payload for ``shapes`` (before entropy
        coding expands incompressible bodies by at most a few bytes per kilobyte)."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Plain-dict config; :func:`from_config` rebuilds an equal codec."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: Mapping[str, Any]) -> Codec:
        """Rebuild from :meth:`get_config`."""

    def roundtrip(
        self, arrays: Sequence[np.ndarray], state: CodecState
    ) -> tuple[Arrays, int, CodecState]:
        """``decode(encode(arrays))``: what the server will see, the bytes it cost, the
        next state (a convenience for simulators and benchmarks)."""
        payload, new_state = self.encode(arrays, state)
        return self.decode(payload, [np.shape(a) for a in arrays]), len(payload), new_state


class Stage(Codec):
    """One step of a chain; on its own it is a chain of one."""

    __slots__ = ()
    role: ClassVar[str]

    def encode(self, arrays: Sequence[np.ndarray], state: CodecState) -> tuple[bytes, CodecState]:
        return Chain((self,)).encode(arrays, state)

    def decode(self, payload: bytes, shapes: Sequence[Sequence[int]]) -> Arrays:
        return Chain((self,)).decode(payload, shapes)

    def size_bound(self, shapes: Sequence[Sequence[int]]) -> int:
        return Chain((self,)).size_bound(shapes)


class Sparsifier(Stage):
    """Chooses which elements of each tensor are sent.

    Kernels work on the whole update at once: the tensors flattened and concatenated
    (``sizes`` gives each tensor's segment), indices are positions in that vector.
    """

    __slots__ = ()
    role = "sparsifier"

    def count(self, size: int) -> int:
        """How many of ``size`` elements are sent (fixed by the config: never read)."""
        raise NotImplementedError

    @abstractmethod
    def select(
        self, flat: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, np.ndarray]:
        """The index bytes and the sorted positions chosen in ``flat``."""

    @abstractmethod
    def read(self, r: Reader, sizes: Sequence[int]) -> np.ndarray:
        """Read what :meth:`select` wrote: sorted positions, ``count(n)`` in each segment."""

    @abstractmethod
    def index_bound(self, sizes: Sequence[int]) -> int:
        """Upper bound on the index bytes."""

    def rescale(self, size: int) -> float:
        """Factor applied to decoded values (``size/k`` for unbiased random-k)."""
        return 1.0


class Quantizer(Stage):
    """Writes the chosen values (concatenated; ``counts`` per tensor)."""

    __slots__ = ()
    role = "quantizer"

    @abstractmethod
    def write(
        self, values: np.ndarray, counts: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, Callable[[], np.ndarray]]:
        """The bytes of the values (``counts[i]`` of them belong to tensor ``i``) and the
        function that computes the float32 values :meth:`read` will decode from them, the
        same way (error feedback calls it, so it never has to decode its own payload)."""

    @abstractmethod
    def read(self, r: Reader, counts: Sequence[int]) -> np.ndarray:
        """Read ``sum(counts)`` float32 values."""

    @abstractmethod
    def value_bound(self, counts: Sequence[int]) -> int:
        """Exact bytes :meth:`write` produces for ``counts``."""


def segments(values: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Views of ``values`` cut into consecutive pieces of ``counts``."""
    out, at = [], 0
    for c in counts:
        out.append(values[at : at + c])
        at += c
    return out


class EntropyCoder(Stage):
    """Lossless compression of the whole body."""

    __slots__ = ()
    role = "entropy"

    @abstractmethod
    def compress(self, body: bytes) -> bytes: ...

    @abstractmethod
    def decompress(self, data: bytes | memoryview, max_size: int) -> bytes:
        """Inverse of :meth:`compress`; never produces (or allocates for) more than
        ``max_size`` bytes: a bigger or unfinished stream is a ``CodecError``."""

    def overhead(self, size: int) -> int:
        """Worst-case expansion of an incompressible body of ``size`` bytes."""
        return 64 + size // 64


@register("float32")
@dataclass(frozen=True, slots=True)
class Float32(Quantizer):
    """Values as raw little-endian float32 (the implicit quantizer of a chain)."""

    name: ClassVar[str] = "float32"

    def write(
        self, values: np.ndarray, counts: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, Callable[[], np.ndarray]]:
        return values.astype("<f4").tobytes(), lambda: values

    def read(self, r: Reader, counts: Sequence[int]) -> np.ndarray:
        return r.array(sum(counts), "<f4", "float32 values")

    def value_bound(self, counts: Sequence[int]) -> int:
        return 4 * sum(counts)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Float32:
        _expect_keys(config, cls.name, ())
        return cls()


def _expect_keys(config: Mapping[str, Any], name: str, keys: Sequence[str]) -> None:
    if not isinstance(config, Mapping):
        raise TypeError(f"a codec config must be a dict, got {config!r}")
    if config.get("name") != name:
        raise ValueError(f"config is not a {name!r} codec: {dict(config)!r}")
    extra = set(config) - {"name", *keys}
    if extra:
        raise ValueError(f"unknown {name} config keys {sorted(extra)} in {dict(config)!r}")


_ORDER = {"sparsifier": 0, "quantizer": 1, "entropy": 2}


@register("chain")
@dataclass(frozen=True, slots=True)
class Chain(Codec):
    """Sparsifier → quantizer → entropy coder (each optional), written as one payload."""

    stages: tuple[Stage, ...] = ()
    name: ClassVar[str] = "chain"
    sparsifier: Sparsifier | None = field(init=False, repr=False, compare=False)
    quantizer: Quantizer = field(init=False, repr=False, compare=False)
    entropy: EntropyCoder | None = field(init=False, repr=False, compare=False)
    wire_config: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        last = -1
        for s in stages:
            if not isinstance(s, Stage):
                raise TypeError(
                    f"a chain holds sparsifier, quantizer and entropy stages, got {s!r}"
                    + (" (ErrorFeedback wraps a whole chain)" if isinstance(s, Codec) else "")
                )
            rank = _ORDER[s.role]
            if rank <= last:
                raise ValueError(
                    "a chain is at most one sparsifier, then at most one quantizer, then at "
                    f"most one entropy coder, got {[st.name for st in stages]}"
                )
            last = rank
        object.__setattr__(self, "stages", stages)
        by_role = {s.role: s for s in stages}
        object.__setattr__(self, "sparsifier", by_role.get("sparsifier"))
        object.__setattr__(self, "quantizer", by_role.get("quantizer", Float32()))
        object.__setattr__(self, "entropy", by_role.get("entropy"))
        object.__setattr__(self, "wire_config", config_bytes([s.get_config() for s in stages]))

    # -- encoding ----------------------------------------------------------------------
    def encode(self, arrays: Sequence[np.ndarray], state: CodecState) -> tuple[bytes, CodecState]:
        if not isinstance(state, CodecState):
            raise TypeError(f"state must be a CodecState, got {type(state).__name__}")
        payload, _ = self.encode_checked(check_arrays(arrays), state, reconstruct=False)
        return payload, state.advanced(state.residual)

    def encode_checked(
        self, checked: Arrays, state: CodecState, *, reconstruct: bool = True
    ) -> tuple[bytes, np.ndarray | None]:
        """Encode arrays :func:`check_arrays` accepted; the payload and (``reconstruct``)
        flattened and concatenated, exactly what :meth:`decode` will return for it."""
        rng = state.rng()
        sizes = [a.size for a in checked]
        flat = np.concatenate([a.reshape(-1) for a in checked]) if checked else np.zeros(0)
        body = b""
        if self.sparsifier is None:
            values, counts = flat, sizes
        else:
            body, chosen = self.sparsifier.select(flat, sizes, rng)
            values = flat[chosen]
            counts = [self.sparsifier.count(n) for n in sizes]
        value_bytes, sent_values = self.quantizer.write(values, counts, rng)
        body += value_bytes
        sent = None
        if reconstruct and self.sparsifier is None:
            sent = sent_values().astype(np.float32, copy=False)
        elif reconstruct:
            sent = self._scatter(sizes, counts, chosen, sent_values().astype(np.float32))
        if self.entropy is not None:
            body = self.entropy.compress(body)
        shapes = tuple(a.shape for a in checked)
        return pack_container(KIND_UPDATE, self.wire_config, shapes, body), sent

    def _scatter(
        self, sizes: Sequence[int], counts: Sequence[int], idx: np.ndarray, values: np.ndarray
    ) -> np.ndarray:
        """The dense vector the decoder builds from chosen positions and their values."""
        assert self.sparsifier is not None
        factors = [self.sparsifier.rescale(n) for n in sizes]
        if any(f != 1.0 for f in factors):
            values = values * np.repeat(np.asarray(factors, np.float32), counts)
        flat = np.zeros(sum(sizes), dtype=np.float32)
        flat[idx] = values
        return flat

    # -- decoding ----------------------------------------------------------------------
    def _raw_bound(self, shapes: Shapes) -> int:
        sizes = [math.prod(s) for s in shapes]
        if self.sparsifier is None:
            return self.quantizer.value_bound(sizes)
        counts = [self.sparsifier.count(n) for n in sizes]
        return self.sparsifier.index_bound(sizes) + self.quantizer.value_bound(counts)

    def size_bound(self, shapes: Sequence[Sequence[int]]) -> int:
        checked = check_shapes(shapes)
        raw = self._raw_bound(checked)
        if self.entropy is not None:
            raw += self.entropy.overhead(raw)
        header = pack_container(KIND_UPDATE, self.wire_config, checked, b"")
        return len(header) + raw

    def decode(self, payload: bytes, shapes: Sequence[Sequence[int]]) -> Arrays:
        expected = check_shapes(shapes)
        box = unpack_container(payload, kind=KIND_UPDATE, shapes=expected)
        if box.config != self.wire_config:
            raise CodecError(
                f"payload was encoded with {box.config.decode(errors='replace')!r}, "
                f"this decoder expects {self.wire_config.decode()!r}"
            )
        return self._decode_body(box.body, expected)

    def _decode_body(self, body: bytes | memoryview, shapes: Shapes) -> Arrays:
        if self.entropy is not None:
            body = self.entropy.decompress(body, self._raw_bound(shapes))
        r = Reader(body)
        sizes = [math.prod(s) for s in shapes]
        if self.sparsifier is None:
            flat = self.quantizer.read(r, sizes).astype(np.float32)
            r.expect_end()
        else:
            # Values have a size fixed by the config: a body too short for them is refused
            # before any index is read or generated (random-k allocates per element).
            counts = [self.sparsifier.count(n) for n in sizes]
            need = self.quantizer.value_bound(counts)
            if r.remaining < need:
                raise CodecError(f"truncated: {r.remaining} body bytes, values need {need}")
            idx = self.sparsifier.read(r, sizes)
            values = self.quantizer.read(r, counts).astype(np.float32)
            r.expect_end()
            flat = self._scatter(sizes, counts, idx, values)
        out = [seg.reshape(s) for seg, s in zip(segments(flat, sizes), shapes, strict=True)]
        if not np.all(np.isfinite(flat)):
            bad = next(k for k, a in enumerate(out) if not np.all(np.isfinite(a)))
            raise CodecError(f"tensor {bad} decodes to non-finite values")
        return tuple(out)

    # -- config ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "stages": [s.get_config() for s in self.stages]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Chain:
        _expect_keys(config, cls.name, ("stages",))
        stages = config.get("stages", [])
        if not isinstance(stages, list | tuple):
            raise TypeError(f"chain stages must be a list, got {stages!r}")
        return cls(tuple(from_config(s) for s in stages))  # type: ignore[misc]


def chain(*stages: Codec) -> Chain:
    """``chain(TopK(0.01), QSGD(bits=4), Zlib())``: one codec from stages (nested chains
    are flattened)."""
    flat: list[Stage] = []
    for s in stages:
        if isinstance(s, Chain):
            flat.extend(s.stages)
        else:
            flat.append(s)  # type: ignore[arg-type]  # Chain checks the type
    return Chain(tuple(flat))


def from_config(config: Mapping[str, Any]) -> Codec:
    """Build any codec from its :meth:`Codec.get_config` dict (``ValueError``/``TypeError``
    naming what is wrong)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"a codec config must be a dict, got {config!r}")
    name = config.get("name")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown codec {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](config)


def decode(payload: bytes, shapes: Sequence[Sequence[int]]) -> Arrays:
    """Decode a payload with the codec its header names (a server that accepts whatever
    codec its clients were told to use). Any malformed input is a ``CodecError``."""
    expected = check_shapes(shapes)
    box = unpack_container(payload, kind=KIND_UPDATE, shapes=expected)
    try:
        stages = json.loads(box.config)
        if not isinstance(stages, list):
            raise TypeError(f"stage list expected, got {stages!r}")
        codec = Chain.from_config({"name": "chain", "stages": stages})
    except (ValueError, TypeError, RecursionError, KeyError) as exc:
        raise CodecError(f"payload names an invalid codec: {exc}") from None
    if codec.wire_config != box.config:
        raise CodecError("payload codec config is not in canonical form")
    return codec._decode_body(box.body, expected)
