"""Validated (features, labels) pairs, the unit every loader and partitioner returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LabeledArrays"]


@dataclass(frozen=True, slots=True)
class LabeledArrays:
    """Features ``x`` and integer labels ``y`` with matching first dimension.

    Optional ``groups`` holds a per-example group id (a device or a user), used by the
    natural-by-device partitioner; optional ``time`` holds a per-example time index.
    """

    x: np.ndarray
    y: np.ndarray
    name: str = ""
    groups: np.ndarray | None = field(default=None)
    time: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or not isinstance(self.y, np.ndarray):
            raise TypeError(
                f"x and y must be numpy arrays, got {type(self.x).__name__} and "
                f"{type(self.y).__name__}"
            )
        if self.y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {self.y.shape}")
        if not np.issubdtype(self.y.dtype, np.integer):
            raise TypeError(f"y must hold integer labels, got dtype {self.y.dtype}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        for label, extra in (("groups", self.groups), ("time", self.time)):
            if extra is not None and (extra.ndim != 1 or len(extra) != len(self.y)):
                raise ValueError(
                    f"{label} must be 1-D with {len(self.y)} entries, got shape {extra.shape}"
                )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Largest label + 1 (0 for an empty set)."""
        return int(self.y.max()) + 1 if len(self.y) else 0

    def take(self, index: np.ndarray) -> LabeledArrays:
        """Return the rows at ``index`` (groups and time follow)."""
        return LabeledArrays(
            self.x[index],
            self.y[index],
            name=self.name,
            groups=None if self.groups is None else self.groups[index],
            time=None if self.time is None else self.time[index],
        )
