"""The settings of a ccxt venue account, its credentials, its client order ids, and
what differs between venues where ccxt's unified API leaves it open.

    [brokers.accounts.bybit]
    adapter = "capflow.brokers.ccxt_venue:CcxtSpotBroker"
    currency = "USDT"
    symbols = { BTCUSDT = "BTC/USDT" }
    [brokers.accounts.bybit.settings]
    exchange = "bybit"                  # a ccxt exchange id
    api_key_env = "BYBIT_API_KEY"       # the names of the variables holding the key ...
    api_secret_env = "BYBIT_API_SECRET"
    # api_passphrase_env = "BITGET_API_PASSPHRASE"  # venues that ask one (Bitget, OKX)
    # key_file = "/etc/capflow/bybit.json"   # ... or a file {"api_key": .., "secret": ..}
    #                                        # (+ "passphrase" where the venue asks one)
    # urls = { public = "http://127.0.0.1:9000", private = "http://127.0.0.1:9000" }
    # sandbox = true                    # the venue's testnet
    timeout_s = 10
    poll_interval_s = 1
    price_interval_s = 1                # the venue's bid / ask / last, fetched this often
    stale_after_s = 10                  # no prices for this long: entries are refused
    reconcile_every_s = 60              # balances, open orders, fills against capflow's
    # baseline = { BTC = "0.5" }        # held at the venue, not capflow's (a shared account)

Client order ids, one encoding for every venue: ``cf`` + the 28 hex digits of
capflow's order id (``ord_<28 hex>``) + ``e`` for the entry, or + ``x<n>`` for the n-th
exit of a position (from the position id's digits): 31 or 32 letters and digits. Ids of
another shape are hashed to 28 hex digits. It fits every venue's rule: Bybit
(``orderLinkId``, at most 36 characters), OKX (``clOrdId``, 1-32 letters and digits),
Binance (``newClientOrderId``, at most 36 of ``.A-Za-z:/0-9_-``) and Bitget (``clientOid``,
at most 50 characters); exits past the 9th would pass OKX's 32 and are refused there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat

import msgspec

from capflow.actors.model.money import parse_decimal
from capflow.actors.model.settings import ConfigError

_ID = re.compile(r"\A[a-z]+_([0-9a-f]{28})\Z")
#: the longest any of the durations may be: a day
MAX_SECONDS = 86_400


class CcxtSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exchange: str
    api_key_env: str | None = None
    api_secret_env: str | None = None
    #: the variable holding the API passphrase, for venues that ask one (Bitget, OKX)
    api_passphrase_env: str | None = None
    key_file: str | None = None
    #: entries of ccxt's ``urls["api"]`` to replace (an emulator, a proxy)
    urls: dict[str, str] = {}
    #: the venue's test network (ccxt's sandbox mode)
    sandbox: bool = False
    timeout_s: float = 10.0
    poll_interval_s: float = 1.0
    #: the account's symbols are priced by the venue's tickers, fetched this often
    price_interval_s: float = 1.0
    #: prices older than this are stale: entries are refused (STALE_PRICES), exits are
    #: not, and take-profit / stop-loss levels go unwatched (an alert says so)
    stale_after_s: float = 10.0
    #: an order whose answer was lost is looked up this many times (one per poll) before
    #: it is sent again, with the same client order id
    lookups_before_resend: int = 2
    #: taker and maker fee rates the entry flow reserves for (the venue's own are booked)
    taker_fee: str = "0.001"
    maker_fee: str = "0.001"
    #: how often the venue's balances, open orders and fills are reconciled with
    #: capflow's (besides at connect and on `account.reconcile`); 0: only then
    reconcile_every_s: float = 60.0
    #: this many venue requests in a row failing with a network error (a timeout, a
    #: dropped line, a 5xx) mean the connection dropped: it is reconnected
    drop_after_errors: int = 3
    #: coin -> amount held at the venue that capflow does not manage (an account that
    #: is shared); empty: capflow owns the venue (sub-)account and every coin in it
    baseline: dict[str, str] = {}


def parse_settings(account_id: str, raw: dict) -> CcxtSettings:
    where = f"[brokers.accounts.{account_id}.settings]"
    try:
        s = msgspec.convert(raw, CcxtSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    import ccxt  # a heavy import: only accounts that use it pay for it

    if s.exchange not in ccxt.exchanges:
        raise ConfigError(f"{where} exchange = {s.exchange!r}: ccxt knows no such exchange "
                          "(ccxt.exchanges lists them)")
    check_seconds(where, s, ("timeout_s", "poll_interval_s", "price_interval_s",
                             "stale_after_s"))
    if not 0 <= s.reconcile_every_s <= MAX_SECONDS:  # `not` refuses nan too
        raise ConfigError(f"{where} reconcile_every_s = {s.reconcile_every_s!r}: 0 (only "
                          f"at connect) or seconds up to {MAX_SECONDS}")
    for name in ("taker_fee", "maker_fee"):
        try:
            parse_decimal(getattr(s, name), name, allow_zero=True)
        except Exception:
            raise ConfigError(f"{where} {name} = {getattr(s, name)!r}: not a fee rate "
                              "(a decimal >= 0, 0.001 is 0.1 %)") from None
    if s.lookups_before_resend < 1:
        raise ConfigError(f"{where} lookups_before_resend must be at least 1")
    if s.drop_after_errors < 1:
        raise ConfigError(f"{where} drop_after_errors must be 1 or more")
    for coin, amount in s.baseline.items():
        try:
            parse_decimal(amount, f"baseline.{coin}", allow_zero=True)
        except Exception:
            raise ConfigError(f"{where} baseline.{coin} = {amount!r}: not an amount") from None
    if s.key_file is None and (s.api_key_env is None or s.api_secret_env is None):
        raise ConfigError(f"{where}: name the credentials: api_key_env and api_secret_env "
                          "(environment variables), or key_file")
    if (s.key_file is None and s.api_passphrase_env is None
            and needs_passphrase(s.exchange)):
        raise ConfigError(f"{where}: {s.exchange} keys come with a passphrase: name it "
                          "with api_passphrase_env (or put it in key_file)")
    return s


def credential_settings(s: CcxtSettings) -> str:
    """The settings that name the credentials, for a message when the venue refuses them."""
    names = ["api_key_env", "api_secret_env"]
    if s.api_passphrase_env is not None or needs_passphrase(s.exchange):
        names.append("api_passphrase_env")
    return " / ".join([*names, "key_file"])


@functools.cache
def needs_passphrase(exchange: str) -> bool:
    """Whether the venue's keys come with a passphrase (ccxt's ``password``; an
    exchange states it in its description, not on the class)."""
    import ccxt

    return bool(getattr(ccxt, exchange)().requiredCredentials.get("password"))


def check_seconds(where: str, settings, names) -> None:
    """`ConfigError` unless each of the `names` of `settings` is a number of seconds from
    a millisecond to a day (TOML also has nan and inf)."""
    for name in names:
        seconds = getattr(settings, name)
        if not 1e-3 <= seconds <= MAX_SECONDS:  # `not` refuses nan too
            raise ConfigError(f"{where} {name} = {seconds!r}: seconds from 0.001 to "
                              f"{MAX_SECONDS}")


class Credentials:
    """An API key and secret (and passphrase). Its repr and str never show them."""

    __slots__ = ("api_key", "passphrase", "secret")

    def __init__(self, api_key: str, secret: str, passphrase: str | None = None):
        self.api_key = api_key
        self.secret = secret
        self.passphrase = passphrase

    def ccxt(self) -> dict:
        """The entries of a ccxt client's configuration that hold them."""
        config = {"apiKey": self.api_key, "secret": self.secret}
        if self.passphrase is not None:
            config["password"] = self.passphrase
        return config

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"

    __str__ = __repr__


def read_credentials(account_id: str, s: CcxtSettings) -> Credentials:
    """The key and secret (and passphrase) the settings name; `ValueError` naming the
    setting when they are missing (the caller stops the account with it). The message
    never holds them."""
    where = f"[brokers.accounts.{account_id}.settings]"
    wants_passphrase = needs_passphrase(s.exchange)
    if s.key_file is not None:
        try:
            st = os.stat(s.key_file)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ValueError(f"{where} key_file {s.key_file!r} is readable by others: "
                                 "chmod 600 it")
            with open(s.key_file, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise ValueError(f"{where} key_file {s.key_file!r} cannot be read: "
                             f"{exc.strerror}") from None
        except json.JSONDecodeError:
            raise ValueError(f"{where} key_file {s.key_file!r} is not JSON "
                             '({"api_key": ..., "secret": ...})') from None
        if not isinstance(data, dict):  # valid JSON, but not the object
            data = {}
        key, secret = data.get("api_key"), data.get("secret")
        if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
            raise ValueError(f"{where} key_file {s.key_file!r} has no api_key and secret")
        passphrase = data.get("passphrase")
        if wants_passphrase and (not isinstance(passphrase, str) or not passphrase):
            raise ValueError(f"{where} key_file {s.key_file!r} has no passphrase "
                             f"({s.exchange} keys come with one)")
        return Credentials(key, secret, passphrase if isinstance(passphrase, str) else None)
    key = os.environ.get(s.api_key_env or "")
    secret = os.environ.get(s.api_secret_env or "")
    if not key:
        raise ValueError(f"{where} api_key_env: the environment variable "
                         f"{s.api_key_env!r} is not set")
    if not secret:
        raise ValueError(f"{where} api_secret_env: the environment variable "
                         f"{s.api_secret_env!r} is not set")
    passphrase = os.environ.get(s.api_passphrase_env) if s.api_passphrase_env else None
    if wants_passphrase and not passphrase:
        raise ValueError(f"{where} api_passphrase_env: the environment variable "
                         f"{s.api_passphrase_env!r} is not set")
    return Credentials(key, secret, passphrase or None)


# -- client order ids ----------------------------------------------------------------


def _digits(capflow_id: str) -> str:
    m = _ID.match(capflow_id)
    if m is not None:
        return m.group(1)
    return hashlib.sha256(capflow_id.encode()).hexdigest()[:28]


def entry_client_id(order_id: str) -> str:
    """The client order id of an entry order."""
    return f"cf{_digits(order_id)}e"


def exit_client_id(position_id: str, n: int) -> str:
    """The client order id of the n-th exit order of a position (n >= 1)."""
    return f"cf{_digits(position_id)}x{n}"


# -- what differs between venues -----------------------------------------------------


class Dialect(msgspec.Struct, frozen=True):
    #: the longest client order id the venue takes
    max_client_id: int
    #: the parameter that finds an order by its client order id (lookups)
    client_id_param: str
    #: ccxt options that keep the client on spot and quiet
    options: dict = {}
    #: extra parameters of fetch_order (Bybit's unified account asks for an
    #: acknowledgement that only recent orders are found)
    fetch_order_params: dict = {}
    #: whether the venue supports reduce-only orders on spot (none of these does)
    spot_reduce_only: bool = False
    #: the parameter that pages back through the account's trades where ccxt does not
    #: follow the venue's cursor itself (None: ccxt's ``paginate`` reads every page)
    trades_cursor: str | None = None
    #: trades a page, where the cursor is followed here
    page_size: int = 100
    #: whether the venue lists trades per symbol only
    trades_need_symbol: bool = False


_SPOT = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}}

DIALECTS = {
    "bybit": Dialect(36, "orderLinkId", options=_SPOT,
                     fetch_order_params={"acknowledged": True}),
    "okx": Dialect(32, "clOrdId", options={"defaultType": "spot"}),
    "binance": Dialect(36, "origClientOrderId", options={"defaultType": "spot"}),
    # a classic spot account (Bitget's unified account speaks another API, v3)
    "bitget": Dialect(50, "clientOid", options={**_SPOT, "uta": False},
                      trades_cursor="idLessThan", trades_need_symbol=True),
}
#: a venue not listed: the strictest length, ccxt's own parameter name
DEFAULT_DIALECT = Dialect(32, "clientOrderId", options={"defaultType": "spot"})


def dialect(exchange: str) -> Dialect:
    return DIALECTS.get(exchange, DEFAULT_DIALECT)
