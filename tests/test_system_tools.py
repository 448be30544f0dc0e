"""A missing Debian tool is a skip with a reason on a laptop, and a failure in CI."""

from __future__ import annotations

import pytest

from tests.system_tools import in_ci, missing_tool


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_missing_tool_fails_in_ci(monkeypatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="shellcheck is missing: apt-get .*CI=true"):
        missing_tool("shellcheck", "apt-get install shellcheck")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_tool_skips_with_its_reason_elsewhere(monkeypatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="chromium is missing: make system-deps"):
        missing_tool("chromium", "make system-deps")
