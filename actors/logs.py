"""Logging: loguru for everything, stdlib loggers (pykka, sqlalchemy, alembic, zmq)
routed into it, human-readable lines or JSON lines."""

from __future__ import annotations

import logging
import sys

from loguru import logger

from capflow.actors.config import LogConfig


class _Intercept(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def setup_logging(cfg: LogConfig) -> None:
    logger.remove()
    fmt = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
           "<cyan>{name}</cyan> {message} <dim>{extra}</dim>")
    logger.add(sys.stderr, level=cfg.level.upper(), serialize=cfg.json,
               format="{message}" if cfg.json else fmt, backtrace=False, diagnose=False)
    if cfg.file:
        logger.add(cfg.file, level=cfg.level.upper(), serialize=cfg.json,
                   rotation="50 MB", retention=10, enqueue=True, diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=logging.WARNING, force=True)
    for name in ("pykka", "alembic"):
        logging.getLogger(name).setLevel(logging.INFO)
