"""One typed, frozen configuration, loaded once from a TOML file and `CAPFLOW_*` variables.

Precedence: defaults < TOML file < environment. A variable names its place with double
underscores: ``CAPFLOW_STORAGE__URL=postgresql+psycopg://...`` sets ``[storage] url``;
values are read as TOML values when they parse (numbers, booleans, arrays), else as text.
The defaults run out of the box: SQLite under ``./data/``. The names bots already use
(`ENV_ALIASES`: ``OMS_ENABLED``, ``MAX_OPEN_POSITIONS``, ...) are read too, below the
``CAPFLOW_*`` variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from capflow.actors.logs import LogConfig
from capflow.actors.metrics import MetricsConfig
from capflow.actors.model.limits import RiskConfig
from capflow.actors.model.settings import (
    AllocationConfig,
    ConfigError,
    LedgerConfig,
    OmsConfig,
    SimulatorConfig,
)
from capflow.brokers.config import BROKER_MODES, BrokerConfig
from capflow.protocol.config import SecurityConfig, ServerConfig
from capflow.storage.config import StorageConfig

ENV_PREFIX = "CAPFLOW_"
#: environment names bots already use, read as these settings (a ``CAPFLOW_*`` variable
#: for the same setting wins)
ENV_ALIASES = {
    "ENVIRONMENT": ("environment",),
    "AUDIT_LOG_PATH": ("oms", "audit_log"),
    "BROKER_MODE": ("broker_mode",),
    "OMS_ENABLED": ("oms", "enabled"),
    "MAX_OPEN_POSITIONS": ("risk", "limits", "max_open_positions"),
    "MAX_OPEN_POSITIONS_PER_SYMBOL": ("risk", "limits", "max_open_positions_per_symbol"),
    "MAX_SIZE_PER_POSITION_USDT": ("risk", "limits", "max_notional"),
}
#: aliases whose settings are text: their values are never read as TOML numbers
TEXT_ALIASES = frozenset({"ENVIRONMENT", "AUDIT_LOG_PATH", "BROKER_MODE"})


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    environment: str = "paper"
    #: what the operator expects the broker accounts to be, "paper" or "live" (also
    #: ``BROKER_MODE``): start-up stops when the configured adapters say otherwise. It
    #: only checks: live trading is the adapters' configuration, never this switch.
    broker_mode: str | None = None
    #: pin the process to these CPUs (hand-offs between threads are cheaper on one)
    cpu_affinity: list[int] | None = None
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)
    brokers: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    oms: OmsConfig = msgspec.field(default_factory=OmsConfig)
    allocation: AllocationConfig = msgspec.field(default_factory=AllocationConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)

    def places(self, currency: str) -> int:
        try:
            return self.ledger.currency_places[currency]
        except KeyError:
            raise ConfigError(f"currency {currency!r} has no entry in "
                              "[ledger] currency_places") from None


def _env_value(text: str) -> Any:
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    # a decimal stays text: the typed conversion reads it exactly (a float would round
    # an amount), and still makes a float of it where the setting is one
    return text.strip() if isinstance(value, float) else value


def _merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = base.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {key} is not a section")
        base = node
    base[path[-1]] = value


def load_config(path: str | Path | None = None,
                env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Load the configuration: `path` (or ``$CAPFLOW_CONFIG``, or ``./capflow.toml`` if it
    exists), then ``CAPFLOW_*`` variables, then keyword `overrides` (section dicts)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = path or env.get("CAPFLOW_CONFIG") or (
        "capflow.toml" if Path("capflow.toml").exists() else None)
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for name, place in ENV_ALIASES.items():
        if name in env:
            text = env[name]
            _merge(data, list(place), text.strip() if name in TEXT_ALIASES else _env_value(text))
    for name, text in env.items():
        if name.startswith(ENV_PREFIX) and name != "CAPFLOW_CONFIG":
            keys = name[len(ENV_PREFIX):].lower().split("__")
            _merge(data, keys, _env_value(text))
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    storage = data.get("storage")
    if (isinstance(storage, dict) and storage.get("url_from_database_url") is True
            and env.get("DATABASE_URL") and "CAPFLOW_STORAGE__URL" not in env
            and "url" not in (overrides.get("storage") or {})):
        storage["url"] = env["DATABASE_URL"]
    try:
        cfg = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    _check_broker_mode(cfg)
    return cfg


def _check_broker_mode(cfg: Config) -> None:
    """Only its value here; whether the accounts agree is known once their adapter
    classes are loaded (`actors.accounts.Accounts.load`)."""
    if cfg.broker_mode is not None and cfg.broker_mode not in BROKER_MODES:
        raise ConfigError(f"broker_mode (BROKER_MODE) must be one of {list(BROKER_MODES)}, "
                          f"not {cfg.broker_mode!r}")
