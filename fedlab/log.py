"""The ``fedlab`` logger: library code logs, command-line tools decide what is shown.

Library modules take a child of the ``fedlab`` logger with :func:`get_logger` and never
print. No handler is installed on import, so by default Python shows WARNING and above on
stderr (``logging.lastResort``) and nothing else; a command-line tool calls
:func:`configure_logging` with the value of its ``--log-level`` option
(:func:`add_log_level_argument`). Standard library only: the device layer uses it too.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_log_level_argument(parser)
>>> parser.parse_args(["--log-level", "info"]).log_level
'info'
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

__all__ = [
    "LEVELS",
    "LOGGER_NAME",
    "add_log_level_argument",
    "configure_logging",
    "get_logger",
]

LOGGER_NAME = "fedlab"
LEVELS = ("debug", "info", "warning", "error", "critical")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_FLAG = "_fedlab_cli_handler"


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """The ``fedlab`` logger or one of its children.

    Parameters
    ----------
    name : str
        A module's ``__name__`` (``"fedlab.runbook"``) or ``"fedlab"`` itself.

    Returns
    -------
    logging.Logger

    Raises
    ------
    ValueError
        When ``name`` is not ``"fedlab"`` or below it: a logger outside the package's tree
        would not follow ``--log-level``.
    """
    if name != LOGGER_NAME and not name.startswith(LOGGER_NAME + "."):
        raise ValueError(f"logger name must be 'fedlab' or start with 'fedlab.', got {name!r}")
    return logging.getLogger(name)


def configure_logging(level: str | int = "warning", *, stream: TextIO | None = None) -> None:
    """Show ``fedlab`` log records at ``level`` and above on ``stream`` (stderr).

    Meant for ``main()`` of command-line tools, once, after parsing arguments; calling it
    again replaces the handler it installed (never one installed by someone else).

    Parameters
    ----------
    level : str or int
        One of :data:`LEVELS` (any case) or a :mod:`logging` level number.
    stream : file-like, optional
        Where records go; ``sys.stderr`` by default, so a tool's stdout stays its output.

    Raises
    ------
    ValueError
        For an unknown level name.
    """
    if isinstance(level, str):
        if level.lower() not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        number = logging.getLevelName(level.upper())
    else:
        number = int(level)
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(number)
    logger.propagate = False  # one line per record, even when the root logger has a handler


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level {debug,info,warning,error,critical}`` (default ``warning``)."""
    parser.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=LEVELS,
        help="what the fedlab logger shows on stderr (default: warning)",
    )
