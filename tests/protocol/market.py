"""A replayed market for wire tests: the paper broker's fees, and a CSV of ticks."""

from __future__ import annotations

#: taker 0.1 %, maker 0.05 %, no slippage
SETTINGS = {"taker_fee": "0.001", "maker_fee": "0.0005", "slippage_bps": "0"}


def write_ticks(path, steps):
    """One CSV row per (symbol, bid, ask) of each step; a step's rows share a ts."""
    lines = ["ts,symbol,bid,ask,liquidity"]
    for i, step in enumerate(steps, start=1):
        for symbol, bid, ask in step:
            lines.append(f"2026-01-05T12:00:{i:02d}+00:00,{symbol},{bid},{ask},1000")
    path.write_text("\n".join(lines) + "\n")
    return str(path)
