"""The fedlab logger: library code never prints; tools choose the level with --log-level."""

from __future__ import annotations

import argparse
import ast
import io
import logging
from pathlib import Path

import pytest

from fedlab.log import LEVELS, add_log_level_argument, configure_logging, get_logger

PACKAGE = Path(__file__).resolve().parent.parent / "fedlab"


@pytest.fixture(autouse=True)
def _restore_fedlab_logger():
    logger = logging.getLogger("fedlab")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_configure_logging_filters_by_level_and_replaces_its_own_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", stream=first)
    get_logger("fedlab.example").debug("hidden")
    get_logger("fedlab.example").info("shown %d", 1)
    configure_logging("error", stream=second)  # replaces the first handler
    get_logger("fedlab.example").warning("below error")
    get_logger("fedlab.example").error("above")
    assert "shown 1" in first.getvalue() and "hidden" not in first.getvalue()
    assert "above" not in first.getvalue()  # the first handler is gone
    assert "above" in second.getvalue() and "below error" not in second.getvalue()
    assert "ERROR fedlab.example: above" in second.getvalue()


def test_bad_levels_and_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'loud'"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="'tensorflow'"):
        get_logger("tensorflow")


def test_log_level_argument() -> None:
    parser = argparse.ArgumentParser()
    add_log_level_argument(parser)
    assert parser.parse_args([]).log_level == "warning"
    assert parser.parse_args(["--log-level", "DEBUG"]).log_level == "debug"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-level", "chatty"])
    assert set(LEVELS) == {"debug", "info", "warning", "error", "critical"}


def _prints_outside_main(path: Path) -> list[int]:
    """Line numbers of print() calls not inside a function named main (a tool's output)."""
    tree = ast.parse(path.read_text())
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            allowed |= {id(n) for n in ast.walk(node)}
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "print"
        and id(n) not in allowed
    ]


def test_library_code_never_prints() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): lines
        for p in sorted(PACKAGE.rglob("*.py"))
        if (lines := _prints_outside_main(p))
    }
    assert not offenders, f"print() outside a command-line main(): {offenders}"


def test_the_print_check_sees_a_print(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    print('x')\n\ndef main():\n    print('ok')\n")
    assert _prints_outside_main(module) == [2]
