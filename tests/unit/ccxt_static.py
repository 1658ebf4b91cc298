"""Helpers for tests that run ccxt's own methods offline: minimal markets, and ccxt's recorded answers
(tests/fixtures/ccxt_static) replayed through the real method with the HTTP call replaced, as ccxt's static tests do."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ccxt_static"


def market(symbol: str, market_id: str, ct_val: str = "1") -> dict[str, Any]:
    """A minimal ccxt market (the recordings have no markets file): what the parsers look up."""
    base, rest = symbol.split("/")
    quote, _, settle = rest.partition(":")
    swap = bool(settle)
    return {"id": market_id, "symbol": symbol, "base": base, "quote": quote, "settle": settle or None, "baseId": base,
            "quoteId": quote, "settleId": settle or None, "type": "swap" if swap else "spot", "spot": not swap,
            "margin": False, "swap": swap, "future": False, "option": False, "contract": swap,
            "linear": True if swap else None, "inverse": False if swap else None,
            "contractSize": float(ct_val) if swap else None, "active": True,
            "precision": {"amount": 0.001, "price": 0.01}, "limits": {"amount": {}, "price": {}, "cost": {}},
            "info": {"instType": "SWAP", "ctVal": ct_val} if swap else {"instType": "SPOT"}}


def replay(cls: type, method: str, case: int, markets: Sequence[tuple[str, ...]]) -> tuple[Any, Any, dict[str, Any]]:
    """(ccxt's unified result, the exchange, the recorded case) for one recorded case."""
    recorded = json.loads((FIXTURES / f"{cls.__name__.removesuffix('usdm')}.json").read_text())
    entry = recorded["methods"][method][case]
    exchange = cls({"options": copy.deepcopy(recorded.get("options", {})), "apiKey": "k", "secret": "s",
                    "password": "p"})
    exchange.set_markets([market(*m) for m in markets])
    exchange.fetch = lambda *args, **kwargs: copy.deepcopy(entry["httpResponse"])
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", method).lower()
    return getattr(exchange, snake)(*entry["input"]), exchange, entry
