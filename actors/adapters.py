"""Loading the broker adapter class a configuration names (``[brokers.accounts.<id>]
adapter = "package.module:Class"``), for the account managers to host.
"""

from __future__ import annotations

import importlib

from capflow.actors.model.settings import ConfigError
from capflow.brokers.base import BrokerAdapter
from capflow.brokers.modules import current_module


class AdapterLoadError(ConfigError):
    """The configured adapter class cannot be loaded; the message names it."""


def load_adapter(path: str) -> type[BrokerAdapter]:
    """The adapter class named ``"package.module:Class"``."""
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise AdapterLoadError(f"broker adapter {path!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(current_module(module_name))
    except ImportError as exc:
        raise AdapterLoadError(f"broker adapter {path!r}: cannot import module "
                               f"{module_name!r} ({exc})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AdapterLoadError(f"broker adapter {path!r}: module {module_name!r} has no "
                               f"class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, BrokerAdapter)):
        raise AdapterLoadError(f"broker adapter {path!r} is not a brokers.base.BrokerAdapter "
                               "(capflow's)")
    return cls
