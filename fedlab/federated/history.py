"""``History``: the immutable record of a federation's rounds, with export."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.federated.types import RoundResult

__all__ = ["History"]

_CSV_SCALARS = (
    "round_index",
    "num_examples",
    "train_loss",
    "test_accuracy",
    "test_loss",
    "bytes_up",
    "bytes_down",
    "sim_time_s",
    "wall_time_s",
)


@dataclass(frozen=True, slots=True)
class History:
    """A tuple of :class:`RoundResult`, oldest first. ``append`` returns a new History."""

    rounds: tuple[RoundResult, ...] = ()

    def __len__(self) -> int:
        return len(self.rounds)

    def __iter__(self) -> Iterator[RoundResult]:
        return iter(self.rounds)

    def __getitem__(self, index: int) -> RoundResult:
        return self.rounds[index]

    def append(self, result: RoundResult) -> History:
        """A new History with ``result`` added; round indices must increase."""
        if self.rounds and result.round_index <= self.rounds[-1].round_index:
            raise ValueError(
                f"round {result.round_index} does not follow round {self.rounds[-1].round_index}"
            )
        return History((*self.rounds, result))

    def series(self, field: str) -> np.ndarray:
        """One field across rounds as an array (``"test_accuracy"``, ``"bytes_up"``…)."""
        if field not in RoundResult.__dataclass_fields__:
            raise ValueError(f"RoundResult has no field {field!r}")
        values = [getattr(r, field) for r in self.rounds]
        if values and isinstance(values[0], tuple):
            return np.array([len(v) for v in values])
        return np.asarray(values, dtype=np.float64)

    def best_accuracy(self) -> float:
        """Highest evaluated test accuracy (NaN if never evaluated)."""
        acc = self.series("test_accuracy")
        return float(np.nanmax(acc)) if np.isfinite(acc).any() else math.nan

    def last_accuracy(self) -> float:
        """Test accuracy of the last evaluated round (NaN if never evaluated)."""
        acc = self.series("test_accuracy")
        finite = acc[np.isfinite(acc)]
        return float(finite[-1]) if len(finite) else math.nan

    def rounds_to_accuracy(self, target: float) -> int | None:
        """First round (1-based count) whose test accuracy reaches ``target``, or None."""
        for i, r in enumerate(self.rounds, start=1):
            if r.test_accuracy >= target:
                return i
        return None

    def totals(self) -> dict[str, float]:
        """Bytes, simulated and wall time summed over rounds."""
        return {
            "rounds": len(self),
            "bytes_up": float(self.series("bytes_up").sum()),
            "bytes_down": float(self.series("bytes_down").sum()),
            "sim_time_s": float(self.series("sim_time_s").sum()),
            "wall_time_s": float(self.series("wall_time_s").sum()),
        }

    def stage_names(self) -> tuple[str, ...]:
        """Client stages that recorded upload bytes, in pipeline order (``"update"`` first:
        the raw float tensors)."""
        names: dict[str, None] = {}
        for r in self.rounds:
            names.update(dict.fromkeys(k for k, _ in r.stage_bytes))
        return tuple(names)

    def stage_bytes(self, stage: str) -> np.ndarray:
        """Upload bytes after client stage ``stage`` per round (0 where it did not run):
        ``stage_bytes("update")`` is what dense float32 would have cost, the last stage's
        is what was sent."""
        if stage not in self.stage_names():
            raise ValueError(f"no client stage {stage!r} recorded; stages: {self.stage_names()}")
        return np.asarray([dict(r.stage_bytes).get(stage, 0) for r in self.rounds], np.int64)

    def to_records(self) -> list[dict[str, Any]]:
        """Plain dicts, one per round (JSON-ready)."""
        return [r.to_dict() for r in self.rounds]

    def deterministic_records(self) -> list[dict[str, Any]]:
        """Records without host-speed fields: equal for equal seeds."""
        return [r.deterministic_view() for r in self.rounds]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> History:
        """Rebuild from :meth:`to_records` output."""
        history = cls()
        for record in records:
            history = history.append(RoundResult.from_dict(record))
        return history

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of the records (NaN as ``null``); written to ``path`` when given."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        text = json.dumps(
            [{k: clean(v) for k, v in r.items()} for r in self.to_records()], indent=1
        )
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV, one row per round: the scalars, counts of each client outcome, the upload
        bytes after each client stage (``bytes_after_<stage>``) and the updates each server
        stage refused (``rejected_by_<stage>``)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        counts = ("selected", "completed", "dropped", "stragglers", "failed", "rejected")
        stages = self.stage_names()
        refusers = sorted({k for r in self.rounds for k, _ in r.stage_rejections})
        writer.writerow(
            [
                *_CSV_SCALARS,
                *(f"n_{c}" for c in counts),
                *(f"bytes_after_{s}" for s in stages),
                *(f"rejected_by_{s}" for s in refusers),
            ]
        )
        for r in self.rounds:
            sizes, refused = dict(r.stage_bytes), dict(r.stage_rejections)
            writer.writerow(
                [getattr(r, f) for f in _CSV_SCALARS]
                + [len(getattr(r, c)) for c in counts]
                + [sizes.get(s, 0) for s in stages]
                + [refused.get(s, 0) for s in refusers]
            )
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text
