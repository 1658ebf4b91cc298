"""The chain's address book: where the AAVE v3 market, the DEX, the LSTs' staking entries and the flash-loan executor
are, read from one JSON file (`chain.address_book`).

The format is the one the local test world writes (`tests/fakes/chain/world.py`), so the daemon runs against it and
against a real network the same way; extra keys are ignored. Every address is checksummed here and every missing or
malformed entry is named, with its JSON path, before anything is sent: a wrong address on chain is not an error the
chain reports, it is money sent somewhere else.

    {"chainId": 1, "Pool": "0x…", "AaveOracle": "0x…", "SwapRouter": "0x…", "FlashLeverage": "0x…" (optional),
     "emode": {"id": 1},
     "reserves": {"WETH": {"underlying": "0x…", "aToken": "0x…", "variableDebtToken": "0x…", "decimals": 18},
                  "weETH": {…, "staking": "0x…" (optional: where ETH is staked into it)}, "USDT": {…}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from daemon.venues.web3_reads import ChainAddresses, ReserveAddresses

REQUIRED_RESERVES = ("WETH",)  # the debt every leveraged mode borrows; the LST and USDT are checked per mode


class AddressBookError(ValueError):
    """The address book cannot be used; `problems` are (JSON path, what is wrong)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("; ".join(f"{source}: {path}: {what}" for path, what in problems))


@dataclass(frozen=True, slots=True)
class AddressBook:
    chain_id: int
    market: ChainAddresses  # what the reads need: Pool, oracle, reserves, the LST, the e-mode category
    swap_router: str
    executor: str | None  # the FlashLeverage contract the wallet owns (None: deploy one, or no atomic leverage)
    staking: dict[str, str]  # LST symbol → the contract ETH is staked through
    emode_category: int

    def reserve(self, symbol: str) -> ReserveAddresses:
        return self.market.reserve(symbol)


def load_address_book(path: Path, lst: str, needs: tuple[str, ...] = ()) -> AddressBook:
    """The book at `path` for a mode staking `lst` and using the reserves `needs`; raises AddressBookError naming
    every problem (never a partial book)."""
    source = str(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise AddressBookError(source, [("(file)", f"cannot be read: {e.strerror}")]) from None
    except json.JSONDecodeError as e:
        raise AddressBookError(source, [("(file)", f"is not JSON: {e.msg} at line {e.lineno}")]) from None
    if not isinstance(doc, dict):
        raise AddressBookError(source, [("(file)", "must hold a JSON object")])
    return parse_address_book(doc, source, lst, needs)


class _Check:
    """Collects every problem of one book, so that all are named at once."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def address(self, value: Any, where: str, optional: bool = False) -> str:
        if value is None and optional:
            return ""
        if not isinstance(value, str) or not is_address(value):
            self.problems.append((where, "missing" if value is None else f"{value!r} is not an address"))
            return ""
        return str(to_checksum_address(value))

    def integer(self, value: Any, where: str, low: int, high: int, what: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.problems.append((where, "missing" if value is None else f"{value!r} is not {what}"))
            return low
        return value

    def reserve(self, symbol: str, r: Any) -> ReserveAddresses | None:
        where = f"reserves.{symbol}"
        if not isinstance(r, dict):
            self.problems.append((where, "must be an object"))
            return None
        decimals = self.integer(r.get("decimals"), f"{where}.decimals", 0, 36, "0–36")
        return ReserveAddresses(symbol, self.address(r.get("underlying"), f"{where}.underlying"),
                                self.address(r.get("aToken"), f"{where}.aToken"),
                                self.address(r.get("variableDebtToken"), f"{where}.variableDebtToken"), decimals)


def parse_address_book(doc: dict[str, Any], source: str, lst: str, needs: tuple[str, ...] = ()) -> AddressBook:
    check = _Check()
    chain_id = check.integer(doc.get("chainId"), "chainId", 1, 2**32, "a chain id")
    pool, oracle = check.address(doc.get("Pool"), "Pool"), check.address(doc.get("AaveOracle"), "AaveOracle")
    router = check.address(doc.get("SwapRouter"), "SwapRouter")
    executor = check.address(doc.get("FlashLeverage"), "FlashLeverage", optional=True) or None
    emode = doc.get("emode")
    category = check.integer(emode.get("id") if isinstance(emode, dict) else None, "emode.id", 1, 255,
                             "an e-mode category")
    raw_reserves = doc.get("reserves")
    if not isinstance(raw_reserves, dict):
        check.problems.append(("reserves", "missing (an object of reserve symbol → addresses)"))
        raw_reserves = {}
    check.problems += [(f"reserves.{symbol}", "missing: the mode uses it")
                       for symbol in sorted(set(REQUIRED_RESERVES) | {lst} | set(needs)) if symbol not in raw_reserves]
    reserves = [r for r in (check.reserve(symbol, raw) for symbol, raw in raw_reserves.items()) if r is not None]
    staking = {symbol: check.address(raw.get("staking"), f"reserves.{symbol}.staking")
               for symbol, raw in raw_reserves.items() if isinstance(raw, dict) and "staking" in raw}
    if check.problems:
        raise AddressBookError(source, check.problems)
    try:
        market = ChainAddresses(pool=pool, oracle=oracle, reserves=tuple(reserves), lst=lst,
                                emode_categories=(category,))
    except ValueError as e:
        raise AddressBookError(source, [("reserves", str(e))]) from None
    for r in reserves:
        staking.setdefault(r.symbol, r.underlying)  # wstETH-style: ETH sent to the token itself is staked
    return AddressBook(chain_id, market, router, executor, staking, category)
