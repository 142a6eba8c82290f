"""Module names written in a configuration (``"package.module:Class"``), and the names
of before capflow was one package.

Until capflow was installed as the one package ``capflow``, its parts were the top-level
modules ``actors``, ``protocol``, ``brokers``, ``storage`` and ``bench``, and configs
named classes by them (``adapter = "brokers.paper:PaperBroker"``). Such a name still
loads: `current_module` reads it as ``capflow.brokers.paper``, with a
`DeprecationWarning` and a log line saying what to write instead.
"""

from __future__ import annotations

import warnings

from loguru import logger

#: the top-level names of capflow's parts before it was one package
LEGACY_PACKAGES = frozenset({"actors", "protocol", "brokers", "storage", "bench"})


def current_module(name: str) -> str:
    """The module to import for `name` as a config wrote it."""
    head = name.partition(".")[0]
    if head not in LEGACY_PACKAGES:
        return name
    new = f"capflow.{name}"
    text = f"module {name!r} is capflow's {new!r} now: write that in the config"
    warnings.warn(text, DeprecationWarning, stacklevel=3)
    logger.warning(text)
    return new
