"""The chain's address book: every problem named with its JSON path, addresses checksummed, nothing partial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.venues.address_book import AddressBookError, load_address_book, parse_address_book

A = "0x" + "11" * 20


def _reserve(n: int) -> dict[str, Any]:
    return {"underlying": f"0x{n:040x}", "aToken": f"0x{n + 1:040x}", "variableDebtToken": f"0x{n + 2:040x}",
            "decimals": 18}


def _book() -> dict[str, Any]:
    return {"chainId": 31337, "Pool": A, "AaveOracle": "0x" + "22" * 20, "SwapRouter": "0x" + "33" * 20,
            "emode": {"id": 1}, "reserves": {"WETH": _reserve(0x100), "weETH": {**_reserve(0x200), "staking": A},
                                             "USDT": {**_reserve(0x300), "decimals": 6}}}


def test_a_whole_book_is_read_with_checksummed_addresses(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    path.write_text(json.dumps(_book()))
    book = load_address_book(path, "weETH", ("USDT",))
    assert book.chain_id == 31337 and book.emode_category == 1 and book.executor is None
    assert book.market.pool == "0x1111111111111111111111111111111111111111"
    assert book.reserve("USDT").decimals == 6
    assert book.staking["weETH"] == book.market.pool  # named in the book
    assert book.staking["WETH"] == book.reserve("WETH").underlying  # else the token itself


def test_every_problem_is_named_at_once() -> None:
    doc = _book()
    doc["chainId"] = "mainnet"
    doc["Pool"] = "0x12"
    del doc["reserves"]["weETH"]
    doc["reserves"]["WETH"]["decimals"] = 99
    with pytest.raises(AddressBookError) as refused:
        parse_address_book(doc, "book.json", "weETH")
    paths = [p for p, _ in refused.value.problems]
    assert paths == ["chainId", "Pool", "reserves.weETH", "reserves.WETH.decimals"], refused.value.problems
    assert "book.json: Pool: '0x12' is not an address" in str(refused.value)


def test_a_reserve_the_mode_needs_must_be_there() -> None:
    with pytest.raises(AddressBookError, match=r"reserves\.wstETH: missing: the mode uses it"):
        parse_address_book(_book(), "book.json", "wstETH")


@pytest.mark.parametrize("text, why", [("{", "is not JSON"), ("[]", "must hold a JSON object")])
def test_a_file_that_is_not_a_book(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "book.json"
    path.write_text(text)
    with pytest.raises(AddressBookError, match=why):
        load_address_book(path, "weETH")
