"""ccxt's exceptions → the project's errors, through ccxt itself: each venue's recorded error body is fed to that
exchange's own `handle_errors` (its code tables, its URL-by-market lookup), and the exception it raises is mapped."""

from __future__ import annotations

import json
import random
from typing import Any

import ccxt
import pytest

from daemon.errors import (
    DuplicateClientOrderId,
    ExitCode,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueAccessLost,
    VenueClockSkew,
    VenueCredentialsRejected,
    VenueDegraded,
    VenueError,
    VenueInsufficientFunds,
    VenueOrderNotFound,
    VenueRateLimited,
    VenueRejected,
)
from daemon.venues.ccxt_errors import Call, backoff_s, map_error, retry_after_s, scrub

SECRET = "s3cr3tS3CR3Ts3cr3tS3CR3T"
NOW_MS = 1_780_000_000_000
BINANCE_ORDER = ("https://fapi.binance.com/fapi/v1/order?symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.01"
                 "&newClientOrderId=bd1r1i2n3s1&timestamp=1780000000000&signature=" + "ab" * 32)
OKX_ORDER = "https://www.okx.com/api/v5/trade/order"
BYBIT_ORDER = "https://api.bybit.com/v5/order/create"


def raised(exchange: Any, status: int, url: str, body: dict[str, Any] | str, headers: dict[str, str] | None = None,
           method: str = "POST") -> ccxt.BaseError:
    """The exception ccxt raises for this HTTP answer: its handle_errors, then its status-code table (the order
    `fetch` applies them in)."""
    text = body if isinstance(body, str) else json.dumps(body)
    parsed = None if isinstance(body, str) else body
    with pytest.raises(ccxt.BaseError) as info:
        exchange.handle_errors(status, "reason", url, method, headers or {}, text, parsed, {}, "")
        exchange.handle_http_status_code(status, "reason", url, method, text)
    return info.value


def mapped(exchange: Any, status: int, url: str, body: dict[str, Any] | str, call: Call = Call.WRITE,
           headers: dict[str, str] | None = None, **kw: Any) -> VenueError:
    return map_error(raised(exchange, status, url, body, headers), venue=exchange.id, call=call, headers=headers,
                     now_ms=NOW_MS, secrets=(SECRET,), **kw)


# --- Binance USDⓈ-M -------------------------------------------------------------------------------------------


def test_binance_insufficient_margin_is_rejected_with_the_venue_reason() -> None:
    err = mapped(ccxt.binanceusdm(), 400, BINANCE_ORDER, {"code": -2019, "msg": "Margin is insufficient."})
    assert type(err) is VenueInsufficientFunds and err.reason == "-2019 Margin is insufficient."
    assert "ab" * 32 not in str(err)


def test_binance_418_ban_waits_until_the_ban_ends() -> None:
    body = {"code": -1003, "msg": f"Way too much request weight used; IP banned until {NOW_MS + 90_000}. Please "
                                  "use the websocket for live updates to avoid bans."}
    err = mapped(ccxt.binanceusdm(), 418, BINANCE_ORDER, body)
    assert isinstance(err, VenueRateLimited) and isinstance(err, RetryableVenueError)
    assert err.banned_until_ms == NOW_MS + 90_000 and err.retry_after_s == 90.0


def test_binance_429_honours_retry_after() -> None:
    err = mapped(ccxt.binanceusdm(), 429, BINANCE_ORDER, {"code": -1003, "msg": "Too many requests."},
                 headers={"Retry-After": "7"})
    assert isinstance(err, VenueRateLimited) and err.retry_after_s == 7.0 and err.banned_until_ms is None


def test_binance_duplicate_client_id_on_a_resend_is_looked_up_not_rejected() -> None:
    err = mapped(ccxt.binanceusdm(), 400, BINANCE_ORDER, {"code": -4116, "msg": "ClientOrderId is duplicated."},
                 client_order_id="r1i2-3-1")
    assert type(err) is DuplicateClientOrderId and err.client_order_id == "r1i2-3-1"
    assert isinstance(err, UnknownOrderOutcome) and not isinstance(err, RetryableVenueError)


@pytest.mark.parametrize(("code", "msg"), [
    (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
    (-1006, "An unexpected response was received from the message bus. Execution status unknown."),
    (-1001, "Internal error; unable to process your request. Please try again."),
])
def test_binance_status_unknown_is_an_unknown_outcome_for_a_write(code: int, msg: str) -> None:
    err = mapped(ccxt.binanceusdm(), 503, BINANCE_ORDER, {"code": code, "msg": msg}, client_order_id="i1-1-1")
    assert type(err) is UnknownOrderOutcome and err.client_order_id == "i1-1-1"
    read = mapped(ccxt.binanceusdm(), 503, BINANCE_ORDER, {"code": code, "msg": msg}, call=Call.READ)
    assert isinstance(read, RetryableVenueError)


def test_binance_timestamp_outside_recv_window_is_clock_skew() -> None:
    err = mapped(ccxt.binanceusdm(), 400, BINANCE_ORDER, {"code": -1021, "msg": "Timestamp outside recvWindow."})
    assert type(err) is VenueClockSkew


def test_binance_unknown_order_is_order_not_found() -> None:
    url = "https://fapi.binance.com/fapi/v1/order?symbol=ETHUSDT&origClientOrderId=bd1i1n1s1&signature=ff"
    err = mapped(ccxt.binanceusdm(), 400, url, {"code": -2013, "msg": "Order does not exist."}, call=Call.READ)
    assert type(err) is VenueOrderNotFound and err.reason == "-2013 Order does not exist."


def test_binance_bad_key_at_start_up_exits_78_naming_venue_and_key_never_the_secret() -> None:
    body = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action, request ip: 1.2.3.4"}
    err = mapped(ccxt.binanceusdm(), 401, BINANCE_ORDER + "&apiKey=" + SECRET, body, starting=True,
                 key_setting="credentials.binance_api_key")
    assert type(err) is VenueCredentialsRejected and err.exit_code is ExitCode.CONFIG
    assert err.venue == "binanceusdm" and err.key == "credentials.binance_api_key"
    assert "binanceusdm" in str(err) and "credentials.binance_api_key" in str(err) and SECRET not in str(err)
    later = mapped(ccxt.binanceusdm(), 401, BINANCE_ORDER, {"code": -1022, "msg": "Signature for this request is "
                                                                                  "not valid."})
    assert type(later) is VenueAccessLost


def test_binance_502_html_while_reading_is_degraded() -> None:
    exc = raised(ccxt.binanceusdm(), 502, "https://fapi.binance.com/fapi/v3/account", "<html>Bad Gateway</html>",
                 method="GET")
    err = map_error(exc, venue="binanceusdm", call=Call.READ)
    assert type(err) is VenueDegraded


# --- OKX ------------------------------------------------------------------------------------------------------


def okx_order_error(code: str, msg: str) -> dict[str, Any]:
    return {"code": "1", "data": [{"clOrdId": "bd1i1n1s1", "ordId": "", "sCode": code, "sMsg": msg, "tag": ""}],
            "msg": "All operations failed"}


def test_okx_timed_out_check_the_status_is_an_unknown_outcome() -> None:
    # 50004: "Endpoint request timeout (does not indicate success or failure of order, please check order status)"
    err = mapped(ccxt.okx(), 200, OKX_ORDER, {"code": "50004", "data": [], "msg": "API endpoint request timeout "},
                 client_order_id="i1-1-1")
    assert type(err) is UnknownOrderOutcome and err.client_order_id == "i1-1-1"


def test_okx_insufficient_balance_in_the_failed_item() -> None:
    err = mapped(ccxt.okx(), 200, OKX_ORDER, okx_order_error("51008", "Order failed. Insufficient USDT balance."))
    assert type(err) is VenueInsufficientFunds and err.reason == "51008 Order failed. Insufficient USDT balance."


def test_okx_duplicate_client_id() -> None:
    err = mapped(ccxt.okx(), 200, OKX_ORDER, okx_order_error("51016", "Duplicated clOrdId"))
    assert type(err) is DuplicateClientOrderId


def test_okx_maintenance_and_rate_limit() -> None:
    maintenance = mapped(ccxt.okx(), 503, OKX_ORDER, {"code": "50001", "data": [], "msg": "Service temporarily "
                                                                                         "unavailable"})
    assert type(maintenance) is VenueDegraded
    frequent = mapped(ccxt.okx(), 429, OKX_ORDER, {"code": "50011", "data": [], "msg": "Too Many Requests"},
                      headers={"Retry-After": "2"})
    assert type(frequent) is VenueRateLimited and frequent.retry_after_s == 2.0


def test_okx_bare_429_is_a_rate_limit_although_ccxt_calls_it_not_available() -> None:
    exc = raised(ccxt.okx(), 429, OKX_ORDER, "Too Many Requests")
    assert type(exc) is ccxt.ExchangeNotAvailable  # okx's httpExceptions: '429' → ExchangeNotAvailable
    err = map_error(exc, venue="okx", call=Call.WRITE, now_ms=NOW_MS)
    assert type(err) is VenueRateLimited


def test_okx_bad_signature_later_halts() -> None:
    err = mapped(ccxt.okx(), 401, OKX_ORDER, {"code": "50113", "data": [], "msg": "Invalid Sign"})
    assert type(err) is VenueAccessLost and "Invalid Sign" in str(err)


# --- Bybit ----------------------------------------------------------------------------------------------------


def test_bybit_rate_limit_waits_for_the_reset_timestamp() -> None:
    err = mapped(ccxt.bybit(), 200, BYBIT_ORDER, {"retCode": 10006, "retMsg": "Too many visits!", "result": {}},
                 headers={"X-Bapi-Limit-Reset-Timestamp": str(NOW_MS + 1500)})
    assert type(err) is VenueRateLimited and err.retry_after_s == 1.5


def test_bybit_codes() -> None:
    funds = mapped(ccxt.bybit(), 200, BYBIT_ORDER, {"retCode": 110007, "retMsg": "ab not enough for new order"})
    assert type(funds) is VenueInsufficientFunds and funds.reason == "110007 ab not enough for new order"
    dup = mapped(ccxt.bybit(), 200, BYBIT_ORDER, {"retCode": 110072, "retMsg": "OrderLinkedID is duplicate"})
    assert type(dup) is DuplicateClientOrderId
    system = mapped(ccxt.bybit(), 200, BYBIT_ORDER, {"retCode": 10016, "retMsg": "System error. Please try again"})
    assert type(system) is UnknownOrderOutcome and system.venue_degraded
    bad = mapped(ccxt.bybit(), 200, BYBIT_ORDER, {"retCode": 10001, "retMsg": "params error: qty invalid"})
    assert type(bad) is VenueRejected and bad.reason == "10001 params error: qty invalid"
    key = mapped(ccxt.bybit(), 200, BYBIT_ORDER, {"retCode": 10003, "retMsg": "API key is invalid."}, starting=True,
                 key_setting="credentials.bybit_api_key")
    assert type(key) is VenueCredentialsRejected and "bybit" in str(key)


# --- network: raised by ccxt's fetch itself, not by handle_errors, so built as fetch builds them ----------------


@pytest.mark.parametrize("exc", [
    ccxt.RequestTimeout("binanceusdm POST " + BINANCE_ORDER),  # asyncio.TimeoutError in fetch
    ccxt.ExchangeNotAvailable("binanceusdm POST " + BINANCE_ORDER),  # aiohttp.ClientConnectionError in fetch
    ccxt.NetworkError("Connection closed by remote server, closing code 1006"),  # a ccxt.pro socket
    ccxt.BadResponse("binanceusdm: malformed response"),
    TimeoutError(),  # our own deadline around a call
])
def test_a_write_without_a_trustworthy_answer_is_an_unknown_outcome(exc: BaseException) -> None:
    err = map_error(exc, venue="binanceusdm", call=Call.WRITE, client_order_id="i1-1-1")
    assert type(err) is UnknownOrderOutcome and err.client_order_id == "i1-1-1"
    assert "ab" * 32 not in str(err)
    assert err.venue_degraded == isinstance(exc, ccxt.ExchangeNotAvailable)


def test_reads_without_an_answer_are_retried_or_degraded() -> None:
    assert type(map_error(ccxt.RequestTimeout("x"), venue="okx", call=Call.READ)) is RetryableVenueError
    assert type(map_error(ccxt.ExchangeNotAvailable("x"), venue="okx", call=Call.READ)) is VenueDegraded
    assert type(map_error(ccxt.OnMaintenance("x"), venue="okx", call=Call.WRITE)) is VenueDegraded


# --- scrubbing, waits -------------------------------------------------------------------------------------------


def test_scrub_removes_queries_signatures_keys_and_given_secrets() -> None:
    text = (f"binanceusdm POST {BINANCE_ORDER} 400 {{\"code\":-1}} X-MBX-APIKEY: KEYKEYKEY "
            f"\"sign\":\"c2lnbmF0dXJl\" and {SECRET}")
    out = scrub(text, (SECRET,))
    for leaked in ("ab" * 32, "KEYKEYKEY", "c2lnbmF0dXJl", SECRET, "quantity=0.01"):
        assert leaked not in out
    assert "https://fapi.binance.com/fapi/v1/order?" in out


def test_retry_after_as_an_http_date() -> None:
    assert retry_after_s({"retry-after": "Thu, 03 Dec 2026 15:00:10 GMT"}, 1_796_310_000_000) == 10.0
    assert retry_after_s({"Retry-After": "soon"}, NOW_MS) is None and retry_after_s(None, NOW_MS) is None


def test_backoff_never_undercuts_the_venue_and_is_jittered() -> None:
    rng = random.Random(7)
    banned = VenueRateLimited("x", retry_after_s=90.0)
    waits = [backoff_s(banned, attempt, rng) for attempt in range(20)]
    assert all(90.0 <= w <= 150.0 for w in waits) and len(set(waits)) == 20
    plain = [backoff_s(RetryableVenueError("x"), attempt, rng, base_s=0.5, cap_s=8.0) for attempt in range(10)]
    assert all(0 <= w <= min(8.0, 0.5 * 2**a) for a, w in enumerate(plain))


def test_a_5xx_to_a_signed_order_is_an_unknown_outcome_and_its_url_is_scrubbed() -> None:
    exc = raised(ccxt.binanceusdm(), 503, BINANCE_ORDER, "<html>Service Unavailable</html>")
    assert type(exc) is ccxt.ExchangeNotAvailable and "signature=" + "ab" * 32 in str(exc)  # ccxt echoes the URL
    err = map_error(exc, venue="binanceusdm", call=Call.WRITE, client_order_id="i1-1-1")
    assert type(err) is UnknownOrderOutcome and err.venue_degraded
    assert "ab" * 32 not in str(err) and "quantity=0.01" not in str(err)
    assert "fapi.binance.com/fapi/v1/order" in str(err)
