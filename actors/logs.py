"""Logging for a process capflow owns (the command line): loguru for everything,
human-readable lines or JSON lines, with the stdlib loggers of the libraries underneath
(alembic, sqlalchemy, pykka, zmq) routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger

from capflow.actors.config import LogConfig

_HUMAN = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
          "<cyan>{name}</cyan> {message}")

#: the libraries whose stdlib loggers `setup_logging` sets to `stdlib_level`
LIBRARIES = ("alembic", "sqlalchemy", "pykka", "zmq")


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
    """Take this process's logging over: loguru's sinks and the stdlib's root logger."""
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

