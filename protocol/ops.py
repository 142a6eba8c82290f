"""The v1 op table and its dispatch: every op of the wire (docs/protocol.md, section 6),
merged from the op modules' tables in a fixed order, and `dispatch`, which runs one
request's op.

Each family of ops lives in its own module, built on protocol/opkit.py (field types,
`Caller`, `OpContext`, parsing) and protocol/answers.py (the answer maps): system_ops,
profile_ops, allocation_ops, trading_ops, risk_ops, account_ops. None of them imports this module.
"""

from __future__ import annotations

import difflib
from typing import Any

from capflow.protocol.account_ops import ACCOUNT_OPS
from capflow.protocol.allocation_ops import ALLOCATION_OPS
from capflow.protocol.codec import WireError, quote
from capflow.protocol.opkit import ID_MAX, Caller, Done, OpContext, OpTable, parse_args
from capflow.protocol.profile_ops import PROFILE_OPS
from capflow.protocol.risk_ops import RISK_OPS
from capflow.protocol.system_ops import SYSTEM_OPS
from capflow.protocol.trading_ops import TRADING_OPS


def _merged(*tables: OpTable) -> OpTable:
    """The tables in order, refusing a name that two of them define."""
    merged: OpTable = {}
    for table in tables:
        again = merged.keys() & table.keys()
        if again:
            raise RuntimeError(f"ops defined twice: {sorted(again)}")
        merged.update(table)
    return merged


#: op name -> (argument schema, handler); `capflow call --help` lists them in this order
OPS: OpTable = _merged(SYSTEM_OPS, PROFILE_OPS, ALLOCATION_OPS, TRADING_OPS, RISK_OPS,
                       ACCOUNT_OPS)


def close_ops(op: str, limit: int = 3) -> list[str]:
    """At most `limit` ops whose names are close to a name that is none: a typo
    (``ledger.gett`` -> ``["ledger.get"]``) or a noun alone (``stats`` ->
    ``["stats.get"]``); none for a name longer than any op could be."""
    if not isinstance(op, str) or not op or len(op) > 64:
        return []
    nouns = [name for name in OPS if name.startswith(f"{op}.")]
    close = difflib.get_close_matches(op, OPS, n=limit, cutoff=0.75)
    return list(dict.fromkeys(nouns + close))[:limit]


def dispatch(ctx: OpContext, op: str, args: dict[str, Any], caller: Caller,
             done: Done) -> None:
    """Run one op; every path ends in exactly one call of `done`."""
    entry = OPS.get(op)
    if entry is None:
        name = quote(op)
        raise WireError("UNKNOWN_OP", f"no such op: {name!r}",
                        {"op": name, "did_you_mean": close_ops(op)})
    schema, handler = entry
    if caller.profiles is not None and "profile_id" in schema.__struct_fields__:
        # a key may not make the server look at arguments for a profile it may not
        # touch: refused before they are read (a valid id only; any other value is
        # refused by the schema)
        pid = args.get("profile_id")
        if type(pid) is str and 0 < len(pid) <= ID_MAX:
            caller.check(pid)
    handler(ctx, parse_args(schema, args), caller, done)
