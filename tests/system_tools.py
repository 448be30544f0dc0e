"""Tests that drive a Debian tool (Chromium, shellcheck): skip where it is missing, fail in CI.

On a developer's Mac or a conda environment the Debian packages `make test` installs may be
impossible to get; those tests then skip and say why. In CI (``CI=true``, as GitHub Actions,
GitLab and most runners set it) a missing tool is a broken runner, and a skip would hide it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the ``CI`` environment variable says so (``true``/``1``/``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing_tool(what: str, how: str) -> NoReturn:
    """Skip the calling test because ``what`` is missing (``how`` installs it); fail in CI."""
    message = f"{what} is missing: {how}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing tool fails the run instead of skipping)")
    pytest.skip(message)
