"""What every op module builds on: the argument field types, the schema base, who called
(`Caller`), what a handler may use (`OpContext`), the reply callbacks, and the parsing of
a request's arguments into its schema.

The rules of a handler, for every op module (profile_ops, allocation_ops, trading_ops,
risk_ops, system_ops): it validates its arguments (msgspec: unknown keys and wrong types
are `INVALID_ARGUMENT` naming the field), checks that the client may touch the profile,
and sends commands to the ledger actors with a callback; the answer is delivered by
calling `done` from whatever thread finishes the work. Ops that must do blocking work run
on the server's small worker pool (`OpContext.run_blocking`). Every path ends in exactly
one call of `done`.

An op module exports one table, ``{op name: (argument schema, handler)}``; protocol/ops.py
merges them. This module imports no op module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from capflow.actors.model import messages as m
from capflow.actors.model.orders import SYMBOL_PATTERN
from capflow.actors.reply import Reply
from capflow.protocol.codec import WireError, quote

ID_MAX = 128
Id = Annotated[str, Meta(min_length=1, max_length=ID_MAX)]
Text = Annotated[str, Meta(max_length=128)]
#: ASCII letters, digits and ``. _ / : -`` (`actors.model.orders.SYMBOL_PATTERN`)
Symbol = Annotated[str, Meta(min_length=1, max_length=64, pattern=SYMBOL_PATTERN)]
Side = Annotated[str, Meta(min_length=1, max_length=8)]
#: a short name the op checks itself: a trading state, an order type, a currency
Name = Annotated[str, Meta(min_length=1, max_length=16)]
Amount = str | int | float
Done = Callable[..., None]  # done(result) or done(error=WireError)


class Args(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class NoArgs(Args, frozen=True):
    pass


#: an op module's table: op name -> (argument schema, handler)
OpTable = dict[str, tuple[type[Args], Callable]]


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a name for the audit trail, and the profiles it may touch
    (None: all, in plain mode or for a key allowed ``*``)."""

    name: str
    profiles: frozenset[str] | None = None

    def check(self, profile_id: str) -> None:
        if self.profiles is not None and profile_id not in self.profiles:
            raise WireError("FORBIDDEN", f"this client may not touch profile {profile_id!r}",
                            {"profile_id": profile_id})


class OpContext:
    def __init__(self, system, server_info: Callable[[], dict[str, Any]], run_blocking,
                 metrics: Callable[[], dict[str, Any]] | None = None):
        self.system = system
        self.server_info = server_info
        self.run_blocking = run_blocking  # (fn, done) -> None: fn() on the worker pool
        #: the gateway's request metrics; called on its socket thread, like the handlers
        self.metrics = metrics


def then(done: Done, build: Callable[[Any], Any]) -> Callable[[Reply], None]:
    """A Reply callback that turns the outcome into an answer (or an error answer)."""

    def callback(reply: Reply) -> None:
        value, error = reply.result()
        if error is not None:
            done(error=WireError.of(error))
            return
        try:
            done(build(value))
        except Exception as exc:  # a failed follow-up call, or a bug: still one answer
            done(error=WireError.of(exc))

    return callback


def submit(ctx: OpContext, pid: str, cmd: m.Command, done: Done, build) -> None:
    """Send `cmd` to the profile's ledger actor; answer with `build` of its outcome."""
    ctx.system.submit(pid, cmd, then(done, build))


#: what the `build` of a first step returns when its success started a second step
PENDING = object()


def chain(done: Done) -> Done:
    """A `done` for a first step whose success starts a second step (which answers)."""

    def chained(result: Any = None, error: WireError | None = None) -> None:
        if error is not None or result is not PENDING:
            done(result, error=error)

    return chained


_FIELD = re.compile(r"`\$\.([A-Za-z_][A-Za-z0-9_]*)|field `([^`]+)`")


def parse_args(schema: type[Args], args: dict[str, Any]) -> Args:
    fields = schema.__struct_fields__
    unknown = [name for name in args if name not in fields]
    if unknown:  # named from the request itself (quoted: it may be of any length)
        name = quote(min(unknown))
        raise WireError("INVALID_ARGUMENT", f"unknown argument {name!r}", {"field": name})
    try:
        return msgspec.convert(args, schema, strict=True)
    except msgspec.ValidationError as exc:
        # msgspec's text may quote the value ("Invalid enum value '...'"): keep its
        # start, and say where from the field name, which is ours
        text, _, _ = str(exc).partition(" - at `")
        match = _FIELD.search(str(exc))
        field = (match.group(1) or match.group(2)) if match else None
        where = f" - at `$.{field}`" if field else ""
        raise WireError("INVALID_ARGUMENT", quote(text) + where, {"field": field}) from None
