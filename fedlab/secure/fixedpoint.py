"""Fixed-point encoding of clipped updates into the ring Z_(2^bits), with cohort headroom.

A client's update ``x`` (float, any shape) becomes an integer vector
``[n, q_0, ..., q_(d-1)]`` modulo ``2**ring_bits``:

* ``n`` is the client's ``num_examples`` (capped at ``max_examples``), carried *inside* the
  masked vector so the server learns only the cohort total, never one client's count;
* ``q_j = round(w * clip(x_j, -clip, clip) * scale)`` with ``w = n / max_examples`` when
  ``weighted`` (so the unmasked sum is ``sum_i n_i x_i / max_examples``: weighted FedAvg works
  under secure aggregation) and ``w = 1`` otherwise;
* ``scale = levels / clip`` where ``levels = (2**(ring_bits-1) - 1) // max_clients - noise_bound``:
  the sum of up to ``max_clients`` encoded values (plus bounded integer noise from a DP hook)
  never wraps, so the signed sum decodes exactly.

The decoded sum differs from the exact float sum by at most ``0.5 / scale`` per client and
coordinate (round-to-nearest), times ``max_examples`` when weighted: :attr:`FixedPoint.sum_error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["FixedPoint", "IntegerNoise"]

#: A client-side integer noise hook (distributed DP): given the encoded update as int64
#: (without the ``num_examples`` slot) returns integer noise of the same shape, each entry
#: within ``[-noise_bound, noise_bound]``. See :mod:`fedlab.secure.dp`.
IntegerNoise = Callable[[np.ndarray], np.ndarray]

_DTYPES: dict[int, tuple[Any, Any]] = {32: (np.uint32, np.int32), 64: (np.uint64, np.int64)}


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """Fixed-point codec for one secure-aggregation round.

    Parameters
    ----------
    clip : float
        Per-coordinate bound; coordinates are clipped to ``[-clip, clip]`` before encoding.
    max_clients : int
        The most clients whose vectors can be summed without wrapping (the invited cohort).
    max_examples : int
        Cap on ``num_examples``; larger claims are clamped on the client.
    ring_bits : int
        32 (4 bytes per coordinate: no expansion over float32) or 64.
    weighted : bool
        Pre-weight the update by ``num_examples / max_examples`` (weighted FedAvg).
    noise_bound : int
        Headroom reserved per client and coordinate for integer noise (0 = no noise hook).
    """

    clip: float
    max_clients: int
    max_examples: int = 1
    ring_bits: int = 32
    weighted: bool = True
    noise_bound: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.clip, bool) or not isinstance(self.clip, int | float):
            raise TypeError(f"clip must be a number, got {self.clip!r}")
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be finite and > 0, got {self.clip!r}")
        for name in ("max_clients", "max_examples", "noise_bound"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {self.max_clients!r}")
        if self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {self.max_examples!r}")
        if self.noise_bound < 0:
            raise ValueError(f"noise_bound must be >= 0, got {self.noise_bound!r}")
        if self.ring_bits not in _DTYPES:
            raise ValueError(f"ring_bits must be 32 or 64, got {self.ring_bits!r}")
        if not isinstance(self.weighted, bool):
            raise TypeError(f"weighted must be a bool, got {self.weighted!r}")
        half = 1 << (self.ring_bits - 1)
        if self.max_clients * self.max_examples >= half:
            raise ValueError(
                f"max_clients * max_examples = {self.max_clients * self.max_examples} "
                f"does not fit a {self.ring_bits}-bit ring; use ring_bits=64"
            )
        if self.levels < 1:
            raise ValueError(
                f"no resolution left: {self.max_clients} clients with noise_bound="
                f"{self.noise_bound} in a {self.ring_bits}-bit ring; use ring_bits=64"
            )

    # -- derived -------------------------------------------------------------------------
    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        """The ring's numpy dtype (``uint32`` or ``uint64``: arithmetic wraps mod 2^bits)."""
        return _DTYPES[self.ring_bits][0]

    @property
    def levels(self) -> int:
        """The largest encoded magnitude of one client's coordinate.

        At most 2^52, so float64 scaling stays exact in a 64-bit ring.
        """
        room = ((1 << (self.ring_bits - 1)) - 1) // self.max_clients - self.noise_bound
        return min(room, 1 << 52)

    @property
    def scale(self) -> float:
        """Integer steps per unit of update."""
        return self.levels / self.clip

    @property
    def resolution(self) -> float:
        """One integer step, in update units (the weighted sum's step is this x max_examples)."""
        return 1.0 / self.scale

    def sum_error(self, num_clients: int) -> float:
        """Bound on |decoded sum - float sum| per coordinate for ``num_clients`` (no noise)."""
        step = self.resolution * (self.max_examples if self.weighted else 1)
        return 0.5 * step * num_clients + 1e-12 * self.clip * num_clients

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (papermill parameters, device JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixedPoint:
        """Rebuild from :meth:`to_dict`."""
        return cls(**data)

    # -- kernels -------------------------------------------------------------------------
    def encode(
        self,
        update: np.ndarray,
        num_examples: int,
        *,
        noise: IntegerNoise | None = None,
    ) -> np.ndarray:
        """Encode one client's update as a ring vector of length ``update.size + 1``.

        Parameters
        ----------
        update : ndarray
            The (already L2-clipped, if DP) update; flattened, coordinates clipped to ``clip``.
        num_examples : int
            The client's example count (>= 0); clamped to ``max_examples``.
        noise : callable, optional
            Distributed-DP hook adding integer noise within ``noise_bound`` (see
            :mod:`fedlab.secure.dp`).

        Returns
        -------
        ndarray
            ``dtype`` vector ``[n, q_0, ..., q_(d-1)]``.
        """
        if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
            raise TypeError(f"num_examples must be an int, got {num_examples!r}")
        if num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {num_examples!r}")
        x = np.asarray(update, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise ValueError(f"update has {int(np.sum(~np.isfinite(x)))} non-finite values")
        n = min(int(num_examples), self.max_examples)
        weight = n / self.max_examples if self.weighted else 1.0
        q = np.rint(np.clip(x, -self.clip, self.clip) * (weight * self.scale)).astype(np.int64)
        if noise is not None:
            z = np.asarray(noise(q.copy()))
            if z.shape != q.shape or not np.issubdtype(z.dtype, np.integer):
                raise ValueError(
                    f"noise hook must return integers of shape {q.shape}, got {z.dtype} {z.shape}"
                )
            if z.size and int(np.max(np.abs(z))) > self.noise_bound:
                raise ValueError(
                    f"noise hook exceeded noise_bound={self.noise_bound}: "
                    f"max |noise| = {int(np.max(np.abs(z)))}"
                )
            q = q + z.astype(np.int64)
        out = np.empty(x.size + 1, dtype=self.dtype)
        out[0] = n
        out[1:] = q.astype(_DTYPES[self.ring_bits][1]).view(self.dtype)
        return out

    def decode_sum(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """Decode a ring sum of encoded vectors.

        Returns
        -------
        (ndarray, int)
            The float64 sum (``sum_i n_i x_i`` when weighted, ``sum_i x_i`` otherwise) and the
            total ``num_examples``.
        """
        total = np.asarray(total)
        if total.dtype != self.dtype or total.ndim != 1 or total.size < 1:
            raise ValueError(
                f"expected a 1-D {np.dtype(self.dtype).name} ring vector, "
                f"got {total.dtype} {total.shape}"
            )
        signed = total.view(_DTYPES[self.ring_bits][1]).astype(np.float64)
        examples = int(total[0])
        factor = self.resolution * (self.max_examples if self.weighted else 1)
        return signed[1:] * factor, examples
