"""Helpers that keep notebooks thin: recording results for tests, and small tables.

A notebook's ``parameters`` cell holds ``RESULTS_PATH``; the papermill runner sets it, and
every :meth:`Recorder.record` call rewrites that JSON file atomically, so the tests (and
``make run``'s summary) read what the notebook measured, even if a later cell fails.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Recorder", "markdown_table", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats to plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or isinstance(value, int | str):
        return value
    raise TypeError(f"cannot record a {type(value).__name__} as JSON: {value!r}")


class Recorder:
    """Collects a notebook's results and mirrors them to a JSON file.

    Parameters
    ----------
    path : str or Path, optional
        Output file; empty or None keeps results in memory only (interactive use).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.results: dict[str, Any] = {}

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` and rewrite the file; returns ``value``."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        self.results[key] = to_jsonable(value)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(self.results, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        return value

    def headline(self, name: str, value: float, *, unit: str = "") -> None:
        """The one number ``make run`` prints for this notebook."""
        self.record("headline", {"name": name, "value": value, "unit": unit})


def markdown_table(rows: Sequence[Mapping[str, Any]], *, floatfmt: str = ".4g") -> str:
    """A Markdown table from a list of dicts (columns from the first row)."""
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
