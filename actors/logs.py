"""Logging for a process capflow owns (the command line, and its storage process): loguru
for everything, human-readable lines or JSON lines, with the stdlib loggers of the
libraries underneath (alembic, sqlalchemy, pykka, zmq) routed into it.

An embedding program keeps its own logging: capflow's messages stay off there until it
calls `capflow.enable_logging()`, and nothing here runs.
"""

from __future__ import annotations

import logging
import sys

import msgspec
from loguru import logger

import capflow

_HUMAN = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
          "<cyan>{name}</cyan> {message}")

#: the libraries whose stdlib loggers `setup_logging` sets to `stdlib_level`
LIBRARIES = ("alembic", "sqlalchemy", "pykka", "zmq")
#: what `setup_logging` was last given, for a child process to log the same way
_configured: LogConfig | None = None


def _human(record) -> str:
    """The human format: the bound extras only when there are some."""
    return _HUMAN + (" <dim>{extra}</dim>" if record["extra"] else "") + "\n{exception}"


class _Intercept(logging.Handler):
    """A stdlib record, as a loguru one under the stdlib logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # the frame that called the stdlib logger, past the logging module's own
        frame, depth = sys._getframe(1), 1
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        logger.patch(lambda r: r.update(name=record.name)).opt(
            depth=depth, exception=record.exc_info).log(level, record.getMessage())


def stdlib_level(level: str) -> int:
    """The libraries' stdlib loggers come through at WARNING and above, unless the
    configured level asks for more (DEBUG, TRACE) or for less (ERROR, ...)."""
    number = logger.level(level.upper()).no
    return number if number < logging.INFO else max(number, logging.WARNING)


def setup_logging(cfg: LogConfig) -> None:
    """Take this process's logging over: loguru's sinks, the stdlib's root logger, and
    capflow's messages on (`capflow.enable_logging`)."""
    global _configured
    level = cfg.level.upper()
    stdlib = stdlib_level(level)  # an unknown level fails here, before anything changes
    logger.remove()
    logger.add(sys.stderr, level=level, serialize=cfg.json,
               format="{message}" if cfg.json else _human, backtrace=False, diagnose=False)
    if cfg.file:
        logger.add(cfg.file, level=level, serialize=cfg.json,
                   rotation="50 MB", retention=10, enqueue=True, diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=stdlib, force=True)
    for name in LIBRARIES:  # some set a level of their own (sqlalchemy: WARNING)
        logging.getLogger(name).setLevel(stdlib)
    capflow.enable_logging()
    _configured = cfg


def for_child() -> str:
    """How a child process of capflow's own (the storage process) should log, for
    `in_child`: as this process does, to the stderr they share (never to its file)."""
    if not capflow._logging:
        return ""
    if _configured is None:  # enabled by an embedding program: loguru's default sink
        return "enabled"
    return msgspec.json.encode(LogConfig(level=_configured.level,
                                         json=_configured.json)).decode()


def in_child(spec: str) -> None:
    """In a child process: log as `for_child` said its parent does."""
    if spec == "enabled":
        capflow.enable_logging()
    elif spec:
        setup_logging(msgspec.json.decode(spec, type=LogConfig))


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: str = "INFO"
    #: JSON lines instead of human-readable lines
    json: bool = False
    #: also write to this file (rotated at 50 MB)
    file: str | None = None
