"""Client order ids in each venue's form: valid on every venue, injective, and decoded without a table."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.ids import ClientOrderId, InstructionId, client_order_id
from daemon.venues.client_ids import MAX_LENGTH, ClientIdError, encode, from_venue, rule_for, to_venue
from tests.unit.ccxt_static import market

VENUES = ("okx", "binance", "binanceusdm", "bybit")
# The venues' published rules, restated here independently of the module under test.
VENUE_RULES = {
    "okx": re.compile(r"[A-Za-z0-9]{1,32}"),
    "binance": re.compile(r"[\.A-Z\:/a-z0-9_-]{1,36}"),
    "binanceusdm": re.compile(r"[\.A-Z\:/a-z0-9_-]{1,36}"),
    "bybit": re.compile(r"[A-Za-z0-9_-]{1,36}"),
}

steps = st.integers(min_value=0, max_value=999)
ns = st.integers(min_value=0, max_value=2**63 - 1)  # a clock's nanoseconds, up to the year 2262
counts = st.integers(min_value=1, max_value=2**40)


def _instruction(kind: str, a: int, b: int, c: int) -> InstructionId:
    """Instruction ids as the code builds them (the f-strings of actors.strategy, daemon.app, daemon.risk_wiring)."""
    if kind == "strategy":  # id_prefix=f"r{run}i", then f"{prefix}{hour}-{sequence}"
        return InstructionId(f"r{a}i{b % 2**31}-{c}")
    if kind == "no-journal":  # id_prefix="i"
        return InstructionId(f"i{b % 2**31}-{c}")
    if kind == "flatten":  # f"flatten-{now}-{n}"
        return InstructionId(f"flatten-{b}-{c % 2**32}")
    return InstructionId(f"breaker{a % 10}-{b}-{c % 2**32}")  # f"breaker{int(level)}-{ts_ns}-{n}"


our_ids = st.builds(lambda kind, a, b, c, step: client_order_id(_instruction(kind, a, b, c), step),
                    st.sampled_from(["strategy", "no-journal", "flatten", "breaker"]), counts, ns, counts, steps)


@settings(max_examples=2000, deadline=None)
@given(our_ids)
def test_every_id_is_valid_on_every_venue_and_round_trips(ours: ClientOrderId) -> None:
    for venue in VENUES:
        venue_id = to_venue(ours, venue)
        assert VENUE_RULES[venue].fullmatch(venue_id), (ours, venue, venue_id)
        assert from_venue(venue_id) == ours


@settings(max_examples=500, deadline=None)
@given(st.lists(our_ids, min_size=2, max_size=50, unique=True))
def test_distinct_ids_never_share_a_venue_id(ids: list[ClientOrderId]) -> None:
    assert len({encode(i) for i in ids}) == len(ids)


@settings(max_examples=1000, deadline=None)
@given(our_ids, our_ids)
def test_injective_pairwise(a: ClientOrderId, b: ClientOrderId) -> None:
    assert (encode(a) == encode(b)) == (a == b)


def test_readable_examples() -> None:
    assert to_venue(ClientOrderId("r12i494000-3-1"), "okx") == "bd1r12i494000n3s1"
    assert to_venue(ClientOrderId("i494000-3-2"), "bybit") == "bd1i494000n3s2"
    assert to_venue(ClientOrderId("flatten-1780000000000000000-2-1"), "binance") == "bd1f1780000000000000000n2s1"
    assert to_venue(ClientOrderId("breaker2-1780000000000000000-1-3"), "okx") == "bd1b2t1780000000000000000n1s3"


def test_long_ids_are_compacted_and_still_decode() -> None:
    ours = ClientOrderId("r4398046511104i2147483647-1099511627776-999")  # 43 characters
    venue_id = to_venue(ours, "okx")
    assert venue_id.startswith("bd1R") and len(venue_id) <= MAX_LENGTH
    assert from_venue(venue_id) == ours


def test_ids_of_no_known_shape_use_the_generic_form() -> None:
    ours = ClientOrderId("drill-binance-0")  # the simulated venues' emergency-stop drill
    venue_id = to_venue(ours, "okx")
    assert venue_id.startswith("bd1G") and from_venue(venue_id) == ours


def test_an_id_too_long_is_refused_not_truncated() -> None:
    with pytest.raises(ClientIdError, match="does not fit"):
        encode(f"breaker1-{2**200}-{2**60}-{2**60}")
    with pytest.raises(ClientIdError, match="no venue form"):
        encode("some-free-form-id-that-is-far-too-long")
    with pytest.raises(ClientIdError, match="no client order id rule"):
        rule_for("kraken")


@pytest.mark.parametrize("foreign", [
    None, "", "x-xcKtGhcu5f7a3b2c", "e847386590ce4dBCa1b2c3d4e5f6a7b8", "CCXT123", "test-00001",
    "bd1", "bd1r", "bd1r01i2n3s4",  # a leading zero: not how we spell numbers
    "bd1R11121314",  # compact although the readable form fits: not canonical
    "bd1r1i2n3", "bd1r1i2n3s4x", "bd2r1i2n3s4", "bd1Z123", "bd1G", "bd1G0",
])
def test_foreign_or_non_canonical_ids_are_not_ours(foreign: str | None) -> None:
    assert from_venue(foreign) is None


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_", max_size=36))
def test_any_venue_string_decodes_to_ours_only_if_it_is_our_encoding(venue_id: str) -> None:
    ours = from_venue("bd1" + venue_id)
    assert ours is None or encode(ours) == "bd1" + venue_id


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 10**7), st.integers(0, 999_999), st.integers(1, 10**7), st.integers(0, 99),
       st.integers(0, 9_999_999_999_999_999_999), st.integers(1, 999), st.integers(0, 9))
def test_realistic_ids_stay_readable(run: int, hour: int, seq: int, step: int, now: int, n: int, level: int) -> None:
    """Ten million runs and instructions, hours to 2084, nanoseconds to 2286: an operator reads them as they are."""
    for ours in (f"r{run}i{hour}-{seq}-{step}", f"flatten-{now}-{n}-{step}", f"breaker{level}-{now}-{n}-{step}"):
        assert encode(ours)[3].islower(), ours


@pytest.mark.parametrize(("cls", "market_id", "ct_val", "field"), [
    (ccxt.binanceusdm, "ETHUSDT", "1", "newClientOrderId"),
    (ccxt.bybit, "ETHUSDT", "1", "orderLinkId"),
    (ccxt.okx, "ETH-USDT-SWAP", "0.1", "clOrdId"),
])
def test_ccxt_sends_the_venue_form_unchanged(cls: type, market_id: str, ct_val: str, field: str) -> None:
    """Through ccxt's own create_order (request building and signing; the HTTP call replaced): the id reaches the
    venue's own parameter as we made it, with no broker prefix added."""
    ours = ClientOrderId("breaker2-1780000000000000000-1-3")
    venue_id = to_venue(ours, cls.__name__)
    exchange = cls({"apiKey": "k", "secret": "s", "password": "p"})
    eth = market("ETH/USDT:USDT", market_id, ct_val)
    eth["info"]["orderTypes"] = ["LIMIT", "MARKET"]
    exchange.set_markets([eth])
    sent: dict[str, Any] = {}

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> dict[str, Any]:
        sent.update(url=url, body=body)
        return {"code": "0", "data": [{"ordId": "1", "clOrdId": venue_id, "sCode": "0"}], "retCode": 0,
                "result": {"orderId": "1", "orderLinkId": venue_id}, "orderId": 1, "clientOrderId": venue_id,
                "status": "NEW", "symbol": market_id}

    exchange.fetch = fetch
    exchange.create_order("ETH/USDT:USDT", "market", "sell", 1, None, {"clientOrderId": venue_id})
    body = sent["body"] or ""
    if body.startswith(("{", "[")):
        decoded = json.loads(body)
        params = decoded[0] if isinstance(decoded, list) else decoded
    else:
        params = dict(urllib.parse.parse_qsl(body or sent["url"].partition("?")[2]))
    assert params[field] == venue_id == "bd1b2t1780000000000000000n1s3"
    assert from_venue(params[field]) == ours
