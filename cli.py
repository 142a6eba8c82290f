"""The commands of `capflow` that talk to a running server or open the storage: `call`,
`events`, `halt` / `resume`, `flatten` and `profile` (capflow.run parses the command line
and calls these; capflow.cli_stats reads the data of `stats` and `report` by the same
rule).

Every command that talks to a server first asks it `system.health`, once, with a short
timeout (capflow.protocol.probe): when nothing answers it says so within about a second,
naming the endpoint and the likely cause, instead of waiting out its retries. After an
answer the real request keeps its own timeout and retries (a slow server is not a dead
one). Under CURVE the probe uses the command's keys.

One rule for the commands that can work without a server (`profile`, `stats`, `report`):
when a server answers at the endpoint, the command goes through it; when none answers,
it opens the storage itself; when the storage is owned by another process anyway (a
server on another endpoint), it fails at once and names the way that works.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

from capflow.actors.config import Config
from capflow.actors.model.errors import Unavailable
from capflow.actors.model.money import fmt
from capflow.actors.model.settings import ConfigError
from capflow.protocol.probe import NoServer, probe

#: the most profiles or positions one list request asks for (the ops' maximum)
PAGE = 1000


def curve_keys(args: argparse.Namespace):
    from capflow.protocol.client import CurveKeys

    if getattr(args, "server_key", None) or getattr(args, "client_key", None):
        if not (args.server_key and args.client_key):
            raise ConfigError("CURVE needs both --server-key and --client-key")
        return CurveKeys.load(args.server_key, args.client_key)
    return None


def _value(text: str, as_text: bool = False):
    """A KEY=VALUE value: TOML when it parses (numbers, true/false, quoted strings,
    arrays), else the text. `as_text` (the op's schema takes only text there): the text
    as typed, unless it is a quoted TOML string. What msgpack cannot carry (an integer
    beyond 64 bits, a date or a time) goes as the text typed."""
    import tomllib

    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, str) or as_text:
        return value if isinstance(value, str) else text
    return _wire(value, text)


def _wire(value, text: str):
    import datetime

    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 64) else text
    if isinstance(value, datetime.date | datetime.time):
        return text
    if isinstance(value, list):
        return [_wire(v, v.isoformat() if hasattr(v, "isoformat") else str(v)) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v, v.isoformat() if hasattr(v, "isoformat") else str(v))
                for k, v in value.items()}
    return value


def _text_fields(op: str) -> set[str]:
    """The arguments of `op` whose schema takes text and nothing else (ids, names)."""
    import types
    import typing

    import msgspec

    from capflow.protocol.ops import OPS

    if op not in OPS:
        return set()

    def text_only(kind) -> bool:
        if typing.get_origin(kind) is typing.Annotated:
            return text_only(typing.get_args(kind)[0])
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            members = [k for k in typing.get_args(kind) if k is not type(None)]
            return bool(members) and all(text_only(k) for k in members)
        if typing.get_origin(kind) is typing.Literal:
            return all(isinstance(v, str) for v in typing.get_args(kind))
        return kind is str

    return {f.name for f in msgspec.structs.fields(OPS[op][0]) if text_only(f.type)}


#: the answers that refuse what the request asks: the same request gets the same answer
#: (exit status 2); any other failure may pass (exit status 1), e.g. UNAVAILABLE, TIMEOUT
REFUSED = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "CONFLICT", "INSUFFICIENT_CAPITAL"})


def exit_status(code: str) -> int:
    """The exit status of a command that got the error `code`: one rule for every
    command (docs/commandline.md)."""
    return 2 if code in REFUSED else 1


def _say(text: str) -> None:
    print(f"capflow: {text}", file=sys.stderr, flush=True)


def connect(cfg: Config, args: argparse.Namespace, *, retries: int = 3):
    """A `Client` to the server of the command's endpoint, once it answers the probe
    (`NoServer` otherwise), with the command's own `--timeout` per attempt."""
    return _connect(cfg, args, retries)[0]


def _connect(cfg: Config, args: argparse.Namespace, retries: int):
    """`connect`, and whether the server answered the probe. One that took the
    connection but did not answer in time is waited for (a slow server is not a dead
    one), and the command says so and for how long, instead of waiting in silence."""
    from capflow.protocol.client import Client
    from capflow.protocol.probe import PROBE_TIMEOUT_S

    endpoint = args.endpoint or cfg.server.endpoint
    curve = curve_keys(args)
    answered = probe(endpoint, curve) is not None
    if not answered:
        _say(f"the server at {endpoint} took the connection but did not answer "
             f"system.health in {PROBE_TIMEOUT_S:g} s (busy or stalled): waiting for its "
             f"answer, at most {retries + 1} attempts of {args.timeout:g} s")
    client = Client(endpoint, timeout_s=args.timeout, retries=retries, curve=curve)
    return client, answered


def route(cfg: Config, args: argparse.Namespace, command: str, call: str | None = None, *,
          reading: bool = True):
    """The rule of the commands that can work without a server: a `Client` when a server
    answers at the endpoint; None (open the storage) when none answers and no other
    process owns the storage. `command` and `call` are this command's two ways through
    a server (``capflow profile list``, ``capflow call profile.list``), named when the
    storage is owned by a server that does not answer here. A server asked for by name
    (--endpoint, CURVE keys) must answer: no storage then. A `reading` command never
    creates a storage: with none there either, it says so (`NoServer`)."""
    try:
        client, answered = _connect(cfg, args, 3)
    except NoServer as exc:
        if args.endpoint or curve_keys(args) is not None or exc.present:
            raise
        endpoint = exc.endpoint
        if reading and not has_storage(cfg):
            from capflow.storage.engine import describe

            raise NoServer(endpoint, f"no capflow storage at {describe(cfg.storage.url)} "
                           f"and no capflow server at {endpoint}: start one (`make run`) "
                           "or run this where its data/ is") from None
        owner = storage_owner(cfg)
        if owner is not None:
            also = f" (or {call} --endpoint ENDPOINT)" if call else ""
            raise Unavailable(
                f"{owner}, and no capflow server answers at {endpoint}: if that process "
                f"is a server on another endpoint, go through it: {command} --endpoint "
                f"ENDPOINT{also}") from None
        from capflow.storage.engine import describe

        _say(f"no capflow server answers at {endpoint}: using the storage "
             f"{describe(cfg.storage.url)} directly")
        return None
    if answered:  # else the wait for it was said
        _say(f"through the server at {client.endpoint}")
    return client


def has_storage(cfg: Config) -> bool:
    """Whether the configured storage holds a capflow database to read: a SQLite file
    that exists and has its tables (an empty file is none); a server database is taken
    to. Creates nothing."""
    from capflow.storage.engine import open_engine, sqlite_path, stored

    url = cfg.storage.url
    if sqlite_path(url) is None:
        return True
    if not stored(url):
        return False
    from sqlalchemy import inspect

    engine = open_engine(url, create=False)
    try:
        return inspect(engine).has_table("profiles")
    finally:
        engine.dispose()


def storage_owner(cfg: Config) -> str | None:
    """Who owns the configured storage when another process does (its owner lock is
    held), as a sentence; None when it is free (or kept in memory). Asks without
    waiting, so a command never waits for a lock that a running server holds."""
    url = cfg.storage.url
    if not cfg.storage.durable or ":memory:" in url:
        return None
    from sqlalchemy import select

    from capflow.storage import schema
    from capflow.storage.engine import OwnerLock, describe, open_engine, stored

    if not stored(url):
        return None  # no file, no owner: and asking must not create one

    engine = open_engine(url, synchronous=cfg.storage.sqlite_synchronous)
    try:
        try:
            OwnerLock(engine).acquire().release()
            return None
        except Unavailable:
            pass
        who = "another capflow process"
        try:  # the owner epoch's row says which server took the storage last
            t = schema.owner_epochs
            with engine.connect() as conn:
                row = conn.execute(select(t.c.host, t.c.pid, t.c.started_at)
                                   .order_by(t.c.claimed_at.desc()).limit(1)).first()
            if row is not None:
                who += (f" (pid {row.pid} on {row.host}, started "
                        f"{row.started_at:%Y-%m-%d %H:%M:%S})")
        except Exception:  # no such table yet, or unreadable: the lock says enough
            pass
        return f"the storage {describe(url)} is owned by {who}"
    finally:
        engine.dispose()


# -- call ---------------------------------------------------------------------------------

def call_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    from capflow.protocol.client import ClientError

    payload = {}
    text = _text_fields(args.op)
    for item in args.args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"argument {item!r} is not KEY=VALUE")
        if key in payload:  # never send one of two values silently
            raise ConfigError(f"argument {key!r} is given twice")
        payload[key] = _value(value, key in text)
    with connect(cfg, args) as client:
        try:
            result = client.call(args.op, **payload)
        except ClientError as exc:
            print(json.dumps({"ok": False, "error": {"code": exc.code, "message": exc.message,
                                                      "details": exc.details}}, indent=2,
                             default=str), file=out)
            if exc.code == "UNKNOWN_OP":
                _suggest(args.op, exc.details)
            return exit_status(exc.code)
    if args.op == "risk.check" and not args.json:
        from capflow.cli_risk import risk_table

        print(risk_table(result), file=out)
    else:
        print(json.dumps(result, indent=2, default=str), file=out)
    return 0


def _suggest(op: str, details: dict[str, Any]) -> None:
    """A hint for an op the server does not know: its own suggestions (`did_you_mean`,
    when it sends them), else the close names of this command's op table."""
    from capflow.protocol.ops import close_ops

    names = details.get("did_you_mean")
    if not isinstance(names, list) or not names:
        names = close_ops(op)
    hint = f"did you mean {' or '.join(map(str, names))}? " if names else ""
    _say(f"no such op {op!r}; {hint}(`capflow call --help` lists every op)")


# -- halt, resume, flatten ---------------------------------------------------------------

def halt_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    """`halt` / `resume`: through the running server, so its actors see it at once."""
    out = out or sys.stdout
    from capflow.protocol.client import ClientError

    if args.command == "resume":
        state = "ACTIVE"
    else:
        state = "REDUCE_ONLY" if args.reduce_only else "HALTED"
    with connect(cfg, args) as client:
        try:
            if args.profile:
                r = client.call("profile.set_state", profile_id=args.profile, state=state,
                                reason=args.reason)
                print(f"profile {args.profile}: {r['state']} (by {r['state_by']}: "
                      f"{r['state_reason'] or '-'})", file=out)
            elif args.account:
                r = client.call("account.set_state", account_id=args.account, state=state,
                                reason=args.reason)
                print(f"account {args.account}: {r['state']} (by {r['changed_by']}: "
                      f"{r['reason'] or '-'})", file=out)
            else:
                r = client.call("system.set_state", state=state, reason=args.reason)
                print(f"every profile: {r['state']} (by {r['changed_by']}: "
                      f"{r['reason'] or '-'})", file=out)
        except ClientError as exc:
            print(f"capflow: {exc.code}: {exc.message}", file=sys.stderr)
            return exit_status(exc.code)
    return 0


def flatten_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    """`flatten`: through the running server."""
    import uuid

    out = out or sys.stdout
    from capflow.protocol.client import ClientError

    key = args.key or f"cli-flatten-{uuid.uuid4().hex[:12]}"
    call = {"client_request_id": key, "reason": args.reason}
    if args.profile:
        call.update(scope="profile", profile_id=args.profile)
    elif args.account:
        call.update(scope="account", account_id=args.account)
    else:
        call.update(scope="all")
    with connect(cfg, args) as client:
        try:
            r = client.call("flatten", **call)
        except ClientError as exc:
            print(f"capflow: {exc.code}: {exc.message}", file=sys.stderr)
            return exit_status(exc.code)
    what = r["target"] or "every profile"
    print(f"flatten {key} of {r['scope']} {what}: HALTED, "
          f"{len(r['orders_canceled'])} working order(s) canceled, "
          f"{len(r['positions_closed'])} position(s) asked to close"
          + (" (a repeat: the first flatten's answer)" if r["reused"] else ""), file=out)
    for p in r["positions_closed"]:
        print(f"  close {p['profile_id']} {p['position_id']}", file=out)
    return 0


# -- events -------------------------------------------------------------------------------

def events_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    """`events`: capflow.protocol.listen."""
    from capflow.protocol.listen import command

    return command(cfg, args, curve=curve_keys(args), out=out or sys.stdout)


# -- profile ------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return fmt(value) if isinstance(value, Decimal) else "-" if value is None else str(value)


def _show(p: dict[str, Any], out) -> None:
    """A profile map (as `profile.get` answers it)."""
    from capflow.protocol.answers import BUCKETS

    led = p.get("ledger") or {}
    print(f"profile       {p['profile_id']}", file=out)
    print(f"currency      {p['currency']}", file=out)
    print(f"state         {p['state']}" + (f" ({p['state_reason']})" if p.get("state_reason")
                                           else ""), file=out)
    print(f"account       {p.get('account_id') or '-'}", file=out)
    print(f"risk profile  {p.get('risk_profile') or '-'}", file=out)
    for name in BUCKETS:
        print(f"{name:<24}{_text(led.get(name)):>20}", file=out)


def _list(profiles: list[dict[str, Any]], out) -> None:
    print(f"{'PROFILE':<32} {'STATE':<12} {'CURRENCY':<8} {'AVAILABLE':>18}", file=out)
    for p in profiles:
        available = (p.get("ledger") or {}).get("available")
        print(f"{p['profile_id']:<32} {p['state']:<12} {p['currency']:<8} "
              f"{_text(available):>18}", file=out)
    print(f"{len(profiles)} profile(s)", file=out)


def all_profiles(client) -> list[dict[str, Any]]:
    profiles, cursor = [], None
    while True:
        page = client.profile_list(limit=PAGE, cursor=cursor)
        profiles += page["profiles"]
        cursor = page.get("next_cursor")
        if not cursor or not page["profiles"]:
            return profiles


def _created(profile: dict[str, Any], existed: bool, out) -> None:
    if existed:
        print(f"profile {profile['profile_id']} already exists with these settings: nothing "
              "changed", file=out)
    else:
        print(f"created profile {profile['profile_id']}", file=out)
    _show(profile, out)


def profile_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    how = {"create": ("capflow profile create ID AMOUNT",
                      "capflow call profile.create profile_id=ID allocated=AMOUNT"),
           "list": ("capflow profile list", "capflow call profile.list"),
           "show": ("capflow profile show ID", "capflow call profile.get profile_id=ID")}
    client = route(cfg, args, *how[args.action], reading=args.action != "create")
    if client is not None:
        with client:
            return _profile_through(client, args, out)
    return _profile_in_storage(cfg, args, out)


def _profile_through(client, args: argparse.Namespace, out) -> int:
    if args.action == "create":
        r = client.profile_create(args.profile_id, args.allocated, currency=args.currency,
                                  risk_profile=args.risk_profile, account_id=args.account_id)
        _created(r, bool(r.get("reused")), out)
    elif args.action == "show":
        _show(client.profile_get(args.profile_id), out)
    else:
        _list(all_profiles(client), out)
    return 0


def _profile_in_storage(cfg: Config, args: argparse.Namespace, out) -> int:
    from capflow.actors.system import System
    from capflow.protocol.answers import profile_list_item, profile_map

    # no wait for the owner lock: a process that took it since `route` looked keeps it
    with System(cfg, lock_wait_s=0) as system:
        if args.action == "create":
            view, existed = system.ensure_profile(
                args.profile_id, args.allocated, currency=args.currency,
                risk_profile=args.risk_profile, account_id=args.account_id)
            _created(profile_map(view), existed, out)
        elif args.action == "show":
            _show(profile_map(system.get_profile(args.profile_id)), out)
        else:
            profiles, after = [], ""
            while page := system.list_profiles(after, PAGE):
                profiles += page
                after = page[-1].profile_id
            snaps = system.store.snapshots([p.profile_id for p in profiles])
            _list([profile_list_item(p, snaps.get(p.profile_id)) for p in profiles], out)
    return 0
