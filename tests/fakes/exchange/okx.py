"""OKX v5 (www.okx.com) trading account: SWAP (linear, net mode, cross) + SPOT, over the shared account engine.

The engine (`BinanceState`, `unified=True`) works in base units; OKX sizes swaps in contracts, so sizes are
converted at this boundary (contracts × ctVal). OKX's rules enforced here: the signature
base64(HMAC-SHA256(timestamp + method + requestPath[?query] + body)) with the passphrase, a 30 s timestamp window
(50102), `clOrdId` 1–32 alphanumerics (51000), duplicate `clOrdId` (51016), and OKX's envelopes
(`{"code","msg","data"}`, order errors in `data[].sCode`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

from aiohttp import web

from .binance_model import BinanceError, BinanceState, Market, Order, Trade, Transfer, _brackets
from .binance_routes import _s
from .call import Call, Credentials

HOST = "www.okx.com"
CL_ORD_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
Json = Any
CT_VAL = {"ETH-USDT-SWAP": Decimal("0.1"), "BTC-USDT-SWAP": Decimal("0.01")}

SWAP = {
    # steps and minimums in base units: lotSz 0.01 contract × ctVal
    "ETH-USDT-SWAP": Market("ETH-USDT-SWAP", "ETH", "USDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"),
                            Decimal("1000"), Decimal("300"), Decimal(0), Decimal("0.01"), Decimal("1000000"), 2, 3,
                            _brackets([("0", "0.004", 100), ("1000000", "0.006", 75), ("2000000", "0.008", 50)])),
    "BTC-USDT-SWAP": Market("BTC-USDT-SWAP", "BTC", "USDT", Decimal("0.1"), Decimal("0.0001"), Decimal("0.0001"),
                            Decimal("100"), Decimal("30"), Decimal(0), Decimal("0.1"), Decimal("10000000"), 1, 4,
                            _brackets([("0", "0.004", 100), ("2000000", "0.006", 75), ("4000000", "0.008", 50)])),
}
SPOT = {
    "ETH-USDT": Market("ETH-USDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.000001"), Decimal("0.001"),
                       Decimal("10000"), Decimal("10000"), Decimal(0), Decimal("0.01"), Decimal("1000000"), 2, 6),
    "BTC-USDT": Market("BTC-USDT", "BTC", "USDT", Decimal("0.1"), Decimal("0.00000001"), Decimal("0.00001"),
                       Decimal("1000"), Decimal("1000"), Decimal(0), Decimal("0.1"), Decimal("10000000"), 1, 8),
}
_CODES = {
    -9999: ("51000", "Parameter clOrdId error"),
    -4116: ("51016", "Duplicated clOrdId"),
    -2010: ("51016", "Duplicated clOrdId"),
    -2019: ("51008", "Order failed. Insufficient USDT margin in account"),
    -2022: ("51169", "Order failed because you don't have any positions in this direction for this contract to "
                     "reduce or close."),
    -4003: ("51020", "Order amount should be greater than the min available amount."),
    -1111: ("51121", "Order count should be the integer multiples of the lot size."),
    -1121: ("51001", "Instrument ID does not exist."),
    -2011: ("51400", "Order cancellation failed as the order has been filled, canceled or does not exist."),
    -2013: ("51603", "Order does not exist"),
}
_STATE = {"NEW": "live", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled", "CANCELED": "canceled",
          "EXPIRED": "canceled"}


def okx_state() -> BinanceState:
    return BinanceState(futures_markets=dict(SWAP), spot_markets=dict(SPOT), unified=True,
                        marks={"ETH-USDT-SWAP": Decimal(3000), "BTC-USDT-SWAP": Decimal(60000)},
                        spot_prices={"ETH-USDT": Decimal(3000), "BTC-USDT": Decimal(60000)},
                        wallets={"futures": {"USDT": Decimal(10000)}, "spot": {}},
                        leverage={"ETH-USDT-SWAP": 10, "BTC-USDT-SWAP": 10},
                        margin_type={"ETH-USDT-SWAP": "CROSSED", "BTC-USDT-SWAP": "CROSSED"},
                        funding_rate={"ETH-USDT-SWAP": Decimal("0.0001"), "BTC-USDT-SWAP": Decimal("0.0001")},
                        fee_rate_taker=Decimal("0.0005"), fee_rate_maker=Decimal("0.0002"),
                        spot_fee_rate=Decimal("0.001"), name="okx", withdraw_fee_on_top=True,
                        funding_account=True)


# OKX names a chain "<ccy>-<network>" (USDT-ERC20); the engine's network names are Binance's (ETH, TRX).
_OKX_NETWORK = {"ETH": "ERC20", "TRX": "TRC20", "BTC": "Bitcoin"}
_ENGINE_NETWORK = {v: k for k, v in _OKX_NETWORK.items()}
_WITHDRAW_STATE = {"4": "1", "6": "2", "5": "-1"}  # processing → withdrawing, completed → success, failed
_DEPOSIT_STATE = {"0": "0", "1": "2"}  # waiting for confirmation, successful
_OKX_ACCOUNTS = {"6": "funding", "18": "futures"}  # OKX's account ids → engine wallets


def _chain(ccy: str, network: str) -> str:
    return f"{ccy}-{_OKX_NETWORK.get(network, network)}"


def _engine_network(chain: str) -> str:
    network = chain.partition("-")[2]
    return _ENGINE_NETWORK.get(network, network)


class OkxError(Exception):
    def __init__(self, code: str, msg: str, status: int = 200) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.status = code, msg, status


class _BatchFailed(Exception):
    def __init__(self, code: str, rows: list[dict[str, str]]) -> None:
        super().__init__(code)
        self.code, self.rows = code, rows


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class OkxRoutes:
    def __init__(self, state: BinanceState, credentials: Credentials) -> None:
        self.state = state
        self.credentials = credentials

    def table(self) -> dict[tuple[str, str, str], Callable[[Call], Awaitable[web.StreamResponse]]]:
        Route = Callable[[Call, Any], Awaitable[Json]]
        public: dict[tuple[str, str], Route] = {
            ("GET", "/api/v5/public/time"): self.time,
            ("GET", "/api/v5/public/instruments"): self.instruments,
            ("GET", "/api/v5/public/funding-rate"): self.funding_rate,
            ("GET", "/api/v5/public/mark-price"): self.mark_price,
            ("GET", "/api/v5/market/ticker"): self.ticker,
        }
        private: dict[tuple[str, str], Route] = {
            ("GET", "/api/v5/account/balance"): self.balance,
            ("GET", "/api/v5/account/positions"): self.positions,
            ("GET", "/api/v5/account/config"): self.config,
            ("POST", "/api/v5/account/set-leverage"): self.set_leverage,
            ("POST", "/api/v5/trade/order"): self.place,
            ("POST", "/api/v5/trade/batch-orders"): self.place_batch,
            ("GET", "/api/v5/trade/order"): self.get_order,
            ("POST", "/api/v5/trade/cancel-order"): self.cancel,
            ("GET", "/api/v5/trade/orders-pending"): self.pending,
            ("GET", "/api/v5/trade/fills-history"): self.fills,
            ("GET", "/api/v5/trade/fills"): self.fills,
            ("GET", "/api/v5/account/bills"): self.bills,
            ("GET", "/api/v5/account/bills-archive"): self.bills,
            # funds (money): deposits land in the funding account (6) and withdrawals leave from it, as on OKX
            ("GET", "/api/v5/asset/deposit-address"): self.deposit_address,
            ("POST", "/api/v5/asset/transfer"): self.asset_transfer,
            ("GET", "/api/v5/asset/balances"): self.asset_balances,
            ("GET", "/api/v5/asset/currencies"): self.currencies,
            ("POST", "/api/v5/asset/withdrawal"): self.withdraw,
            ("GET", "/api/v5/asset/withdrawal-history"): self.withdrawals,
            ("GET", "/api/v5/asset/deposit-history"): self.deposits,
        }
        out: dict[tuple[str, str, str], Callable[[Call], Awaitable[web.StreamResponse]]] = {}
        for (method, path), fn in public.items():
            out[(HOST, method, path)] = self._wrap(fn, signed=False)
        for (method, path), fn in private.items():
            out[(HOST, method, path)] = self._wrap(fn, signed=True)
        return out

    def _wrap(self, fn: Callable[[Call, Any], Awaitable[Json]], *, signed: bool
              ) -> Callable[[Call], Awaitable[web.StreamResponse]]:
        async def handler(call: Call) -> web.StreamResponse:
            status = 200
            try:
                params: Any = dict(call.params)
                if call.method == "POST" and call.raw_body:
                    params = json.loads(call.raw_body)
                if signed:
                    self._check_signature(call)
                body = {"code": "0", "msg": "", "data": await fn(call, params)}
            except OkxError as e:
                body, status = {"code": e.code, "msg": e.msg, "data": []}, e.status
            except _BatchFailed as e:
                body = {"code": e.code, "msg": "All operations failed" if e.code == "1" else "Bulk operation partially "
                        "succeeded.", "data": e.rows}
            except BinanceError as e:
                code, msg = ("51008", "Order failed. Insufficient USDT balance in account.") \
                    if "insufficient balance" in e.msg else _CODES.get(e.code, ("51000", f"Parameter error: {e.msg}"))
                if call.path == "/api/v5/trade/order" and call.method == "POST":  # order errors sit in data[]
                    body = {"code": "1", "msg": "All operations failed",
                            "data": [{"ordId": "", "clOrdId": "", "sCode": code, "sMsg": msg, "tag": ""}]}
                else:
                    body = {"code": code, "msg": msg, "data": []}
            return web.Response(text=json.dumps(body), content_type="application/json", status=status)

        return handler

    def _check_signature(self, call: Call) -> None:
        h = call.headers
        if not hmac.compare_digest(h.get("OK-ACCESS-KEY", ""), self.credentials.api_key):
            raise OkxError("50111", "Invalid OK-ACCESS-KEY", 401)
        if not hmac.compare_digest(h.get("OK-ACCESS-PASSPHRASE", ""), self.credentials.passphrase):
            raise OkxError("50105", "Invalid OK-ACCESS-PASSPHRASE", 401)
        ts = h.get("OK-ACCESS-TIMESTAMP", "")
        path = call.path + ("?" + call.raw_query if call.raw_query else "")
        payload = ts + call.method + path + (call.raw_body if call.method != "GET" else "")
        expected = base64.b64encode(hmac.new(self.credentials.secret.encode(), payload.encode(),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(h.get("OK-ACCESS-SIGN", ""), expected):
            raise OkxError("50113", "Invalid Sign", 401)
        try:
            sent = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise OkxError("50112", "Invalid OK-ACCESS-TIMESTAMP", 401) from None
        if abs(self.state.now_ms() - sent.timestamp() * 1000) > 30_000:
            raise OkxError("50102", "Timestamp request expired", 401)

    # ---- size conversions (OKX swaps trade in contracts)
    @staticmethod
    def _to_base(inst: str, sz: Decimal) -> Decimal:
        return sz * CT_VAL.get(inst, Decimal(1))

    @staticmethod
    def _to_sz(inst: str, qty: Decimal) -> Decimal:
        return qty / CT_VAL.get(inst, Decimal(1))

    # ---- public
    async def time(self, call: Call, p: dict[str, Any]) -> Json:
        return [{"ts": str(self.state.now_ms())}]

    async def instruments(self, call: Call, p: dict[str, Any]) -> Json:
        kind = p.get("instType")
        if kind == "SWAP":
            return [_swap_instrument(m) for m in self.state.futures_markets.values()]
        if kind == "SPOT":
            return [_spot_instrument(m) for m in self.state.spot_markets.values()]
        return []

    async def funding_rate(self, call: Call, p: dict[str, Any]) -> Json:
        inst = str(p.get("instId", ""))
        if inst not in self.state.futures_markets:
            raise OkxError("51001", "Instrument ID does not exist.")
        nxt = self.state.next_funding_time_ms
        rate = _s(self.state.funding_rate[inst])
        return [{"instType": "SWAP", "instId": inst, "fundingRate": rate, "nextFundingRate": "",
                 "fundingTime": str(nxt), "nextFundingTime": str(nxt + 8 * 3600 * 1000), "method": "current_period",
                 "maxFundingRate": "0.0075", "minFundingRate": "-0.0075", "premium": "0", "settState": "settled",
                 "settFundingRate": rate, "ts": str(self.state.now_ms())}]

    async def mark_price(self, call: Call, p: dict[str, Any]) -> Json:
        """`GET /api/v5/public/mark-price`: the swap's mark (ccxt's `fetch_mark_price` reads `markPx`)."""
        inst = str(p.get("instId", ""))
        if inst not in self.state.marks:
            raise OkxError("51001", "Instrument ID does not exist.")
        return [{"instType": "SWAP", "instId": inst, "markPx": _s(self.state.marks[inst]),
                 "ts": str(self.state.now_ms())}]

    async def ticker(self, call: Call, p: dict[str, Any]) -> Json:
        inst = str(p.get("instId", ""))
        price = self.state.marks.get(inst) or self.state.spot_prices.get(inst)
        if price is None:
            raise OkxError("51001", "Instrument ID does not exist.")
        s = _s(price)
        return [{"instType": "SWAP" if inst.endswith("-SWAP") else "SPOT", "instId": inst, "last": s, "lastSz": "1",
                 "askPx": s, "askSz": "1", "bidPx": s, "bidSz": "1", "open24h": s, "high24h": s, "low24h": s,
                 "volCcy24h": "0", "vol24h": "0", "sodUtc0": s, "sodUtc8": s, "ts": str(self.state.now_ms())}]

    # ---- account
    async def config(self, call: Call, p: dict[str, Any]) -> Json:
        mode = "long_short_mode" if self.state.dual_side_position else "net_mode"
        return [{"uid": "1", "acctLv": "2", "posMode": mode, "autoLoan": False, "greeksType": "PA",
                 "level": "Lv1", "levelTmp": "", "ctIsoMode": "automatic", "mgnIsoMode": "automatic",
                 "spotOffsetType": "", "label": "fake", "perm": "read_only,trade"}]

    async def balance(self, call: Call, p: dict[str, Any]) -> Json:
        st = self.state
        now = str(st.now_ms())
        upnl = sum((st.unrealized_pnl(s) for s in st.futures_markets), Decimal(0))
        imr = sum((st.position_initial_margin(s) for s in st.futures_markets), Decimal(0))
        mmr = sum((st.maint_margin(s) for s in st.futures_markets), Decimal(0))
        details = []
        for ccy, bal in st.wallets["futures"].items():
            usdt = ccy == "USDT"
            frozen = st.spot_locked(ccy) + (imr + st.open_order_margin() if usdt else 0)
            avail = st.available_balance() - st.spot_locked(ccy) if usdt else st.spot_free(ccy)
            details.append({"ccy": ccy, "eq": _s(bal + (upnl if usdt else 0), 8), "cashBal": _s(bal, 8),
                            "availBal": _s(avail, 8), "availEq": _s(avail, 8), "frozenBal": _s(frozen, 8),
                            "ordFrozen": _s(st.spot_locked(ccy), 8), "upl": _s(upnl if usdt else 0, 8),
                            "imr": _s(imr if usdt else 0, 8), "mmr": _s(mmr if usdt else 0, 8),
                            "eqUsd": _s(bal, 8), "uTime": now})
        wallet = st.balance("USDT")
        return [{"totalEq": _s(wallet + upnl, 8), "adjEq": _s(wallet + upnl, 8), "imr": _s(imr, 8),
                 "mmr": _s(mmr, 8), "mgnRatio": "", "notionalUsd": "0", "ordFroz": "0", "upl": _s(upnl, 8),
                 "uTime": now, "details": details}]

    async def positions(self, call: Call, p: dict[str, Any]) -> Json:
        st = self.state
        rows = []
        for inst, pos in st.positions.items():
            if pos.amount == 0 or p.get("instId") not in (None, inst):
                continue
            liq = st.liquidation_price(inst)
            rows.append({"instType": "SWAP", "instId": inst, "posId": str(abs(hash(inst)) % 10**12),
                         "posSide": ("long" if pos.amount > 0 else "short") if st.dual_side_position else "net",
                         "pos": _s(self._to_sz(inst, pos.amount).normalize()),
                         "avgPx": _s(pos.entry_price), "markPx": _s(st.marks[inst]),
                         "upl": _s(st.unrealized_pnl(inst), 8),
                         "lever": str(st.leverage[inst]), "liqPx": _s(liq, 2) if liq else "", "mgnMode": "cross",
                         "imr": _s(st.position_initial_margin(inst), 8), "mmr": _s(st.maint_margin(inst), 8),
                         "margin": "", "ccy": "USDT", "notionalUsd": _s(abs(pos.amount) * st.marks[inst], 8),
                         "cTime": str(pos.update_ms), "uTime": str(pos.update_ms), "adl": "1", "availPos": "",
                         "realizedPnl": "0", "fee": "0", "fundingFee": "0"})
        return rows

    async def set_leverage(self, call: Call, p: dict[str, Any]) -> Json:
        inst = str(p.get("instId", ""))
        if inst not in self.state.futures_markets:
            raise OkxError("51001", "Instrument ID does not exist.")
        lev = int(Decimal(str(p.get("lever", "0"))))
        if not 1 <= lev <= self.state.futures_markets[inst].brackets[0][2]:
            raise OkxError("51000", "Parameter lever error")
        self.state.leverage[inst] = lev
        return [{"instId": inst, "lever": str(lev), "mgnMode": p.get("mgnMode", "cross"), "posSide": "net"}]

    # ---- orders
    async def place(self, call: Call, p: dict[str, Any]) -> Json:
        inst = str(p.get("instId", ""))
        cl = str(p.get("clOrdId") or f"fake{self.state.next_id()}")
        if not CL_ORD_ID_RE.match(cl):
            raise BinanceError(-9999, "Parameter clOrdId error")
        swap = inst in self.state.futures_markets
        if not swap and inst not in self.state.spot_markets:
            raise BinanceError(-1121, "Invalid symbol.")
        ord_type = str(p.get("ordType", ""))
        sz = Decimal(str(p.get("sz", "0")))
        qty = self._to_base(inst, sz) if swap else sz
        if not swap and ord_type == "market" and p.get("side") == "buy" and p.get("tgtCcy") != "base_ccy":
            # OKX spot market buys are sized in the quote currency by default
            m = self.state.spot_markets[inst]
            qty = (sz / self.state.spot_prices[inst]).quantize(m.step, ROUND_DOWN)
        params = {"symbol": inst, "side": str(p.get("side", "")).upper(), "quantity": _s(qty),
                  "type": "MARKET" if ord_type == "market" else "LIMIT", "newClientOrderId": cl,
                  "reduceOnly": "true" if str(p.get("reduceOnly", "false")).lower() == "true" else "false"}
        if ord_type != "market":
            params["price"] = str(p.get("px", ""))
            params["timeInForce"] = {"post_only": "GTX", "ioc": "IOC", "fok": "FOK"}.get(ord_type, "GTC")
        order = self.state.place_order("futures" if swap else "spot", params)
        return [{"ordId": str(order.order_id), "clOrdId": order.client_id, "tag": str(p.get("tag", "")),
                 "ts": str(order.time_ms), "sCode": "0", "sMsg": "Order placed"}]

    async def place_batch(self, call: Call, rows: Any) -> Json:
        """ccxt's default for create_order. Each row succeeds or fails alone (sCode), as OKX does."""
        out = []
        for row in rows if isinstance(rows, list) else [rows]:
            try:
                out.extend(await self.place(call, row))
            except BinanceError as e:
                code, msg = ("51008", "Order failed. Insufficient USDT balance in account.") \
                    if "insufficient balance" in e.msg else _CODES.get(e.code, ("51000", f"Parameter error: {e.msg}"))
                out.append({"ordId": "", "clOrdId": str(row.get("clOrdId", "")), "tag": "", "sCode": code,
                            "sMsg": msg})
        failed = sum(1 for r in out if r["sCode"] != "0")
        if failed:
            raise _BatchFailed("1" if failed == len(out) else "2", out)
        return out

    def _find(self, p: dict[str, Any]) -> Order | None:
        inst = str(p.get("instId", ""))
        market = "futures" if inst in self.state.futures_markets else "spot"
        oid = p.get("ordId")
        return self.state.find_order(market, inst, int(oid) if oid else None, p.get("clOrdId"))

    async def get_order(self, call: Call, p: dict[str, Any]) -> Json:
        order = self._find(p)
        if order is None:
            raise OkxError("51603", "Order does not exist")
        return [self._order(order)]

    async def cancel(self, call: Call, p: dict[str, Any]) -> Json:
        order = self._find(p)
        if order is None or not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        self.state.cancel_order(order.market, order.symbol, order.order_id, None)
        return [{"ordId": str(order.order_id), "clOrdId": order.client_id, "sCode": "0", "sMsg": ""}]

    async def pending(self, call: Call, p: dict[str, Any]) -> Json:
        rows = [o for o in self.state.orders.values() if o.is_open and p.get("instId") in (None, o.symbol)]
        return [self._order(o) for o in sorted(rows, key=lambda o: -o.order_id)]

    async def fills(self, call: Call, p: dict[str, Any]) -> Json:
        """Newest first, at most `limit` (OKX: 100 by default and at most), from `begin` to `end` (ms, inclusive), and
        older than the `after` / newer than the `before` billId: one page, as OKX answers."""
        want = p.get("instType")
        rows = [t for t in self.state.trades if p.get("instId") in (None, t.symbol)
                and want in (None, "SWAP" if t.market == "futures" else "SPOT")]
        if p.get("begin"):
            rows = [t for t in rows if t.time_ms >= int(p["begin"])]
        if p.get("end"):
            rows = [t for t in rows if t.time_ms <= int(p["end"])]
        if p.get("after"):
            rows = [t for t in rows if t.id < int(p["after"])]
        if p.get("before"):
            rows = [t for t in rows if t.id > int(p["before"])]
        limit = min(int(p.get("limit") or 100), 100)
        return [self._fill(t) for t in sorted(rows, key=lambda t: -t.id)[:limit]]

    async def bills(self, call: Call, p: dict[str, Any]) -> Json:
        """Funding fees only (type 8; subType 173 expense, 174 income): what ccxt's fetch_funding_history reads."""
        if p.get("type") not in (None, "8"):
            return []
        rows = [i for i in self.state.income_of("FUNDING_FEE") if p.get("instId") in (None, i.symbol)]
        return [{"billId": str(i.tran_id), "instType": "SWAP", "instId": i.symbol, "ccy": i.asset, "type": "8",
                 "subType": "174" if i.amount > 0 else "173", "balChg": _s(i.amount, 8), "pnl": _s(i.amount, 8),
                 "bal": _s(i.balance_after, 8), "sz": _s(self._to_sz(i.symbol, abs(i.position)).normalize()),
                 "px": _s(i.price), "posBal": "0", "posBalChg": "0", "fee": "0", "mgnMode": "cross", "ordId": "",
                 "execType": "", "from": "", "to": "", "notes": "", "interest": "0", "tag": "",
                 "ts": str(i.time_ms)} for i in sorted(rows, key=lambda i: -i.time_ms)]

    # ---- funds
    def _networks(self, ccy: str) -> list[tuple[str, Decimal, Decimal]]:
        return [(net, fee, minimum) for (c, net), (fee, minimum) in self.state.withdraw_rules.items() if c == ccy]

    async def deposit_address(self, call: Call, p: dict[str, Any]) -> Json:
        ccy = str(p.get("ccy", ""))
        rows = [{"ccy": ccy, "chain": _chain(ccy, net), "addr": self.state.deposit_address(ccy, net), "tag": "",
                 "memo": "", "pmtId": "", "selected": True, "to": "6", "ctAddr": "", "verifiedName": ""}
                for net, _, _ in self._networks(ccy)]
        if not rows:
            raise OkxError("58008", f"You do not have assets in this currency: {ccy}")
        return rows

    async def currencies(self, call: Call, p: dict[str, Any]) -> Json:
        wanted = str(p["ccy"]).split(",") if p.get("ccy") else None
        return [{"ccy": c, "chain": _chain(c, net), "name": c, "canDep": True, "canWd": True, "canInternal": True,
                 "minFee": _s(fee), "maxFee": _s(fee), "fee": _s(fee), "minWd": _s(minimum), "maxWd": "10000000",
                 "wdTickSz": "8", "wdQuota": "10000000", "usedWdQuota": "0", "mainNet": False, "minDep": "0",
                 "minDepArrivalConfirm": "12", "minWdUnlockConfirm": "12", "needTag": False}
                for (c, net), (fee, minimum) in self.state.withdraw_rules.items() if wanted is None or c in wanted]

    async def withdraw(self, call: Call, p: dict[str, Any]) -> Json:
        ccy, chain = str(p.get("ccy", "")), str(p.get("chain", ""))
        try:
            wd = self.state.withdraw(ccy, Decimal(str(p.get("amt", "0"))), _engine_network(chain),
                                     str(p.get("toAddr", "")), "funding")
        except BinanceError as e:
            code = {-4022: "58206", -4026: "58350", -4019: "58200"}.get(e.code, "58000")
            raise OkxError(code, e.msg) from None
        return [{"wdId": wd.id, "ccy": ccy, "chain": chain, "amt": _s(wd.amount), "clientId": ""}]

    async def asset_transfer(self, call: Call, p: dict[str, Any]) -> Json:
        """Funding (6) ↔ trading (18), at once; a repeated clientId answers with the first transfer (the fake's
        reading of OKX's idempotency key) and moves nothing."""
        src, dst = _OKX_ACCOUNTS.get(str(p.get("from"))), _OKX_ACCOUNTS.get(str(p.get("to")))
        if src is None or dst is None or src == dst or str(p.get("type", "0")) != "0":
            raise OkxError("58115", "Sub-account does not exist or transfer between these accounts is not supported")
        try:
            done, _ = self.state.move_funds(str(p.get("ccy", "")), Decimal(str(p.get("amt", "0"))), src, dst,
                                            str(p.get("clientId", "")))
        except BinanceError as e:
            raise OkxError("58350" if e.code == -5002 else "51000", e.msg) from None
        return [{"transId": done.id, "ccy": done.asset, "clientId": str(p.get("clientId", "")), "from": p.get("from"),
                 "amt": _s(done.amount), "to": p.get("to")}]

    async def asset_balances(self, call: Call, p: dict[str, Any]) -> Json:
        wanted = str(p["ccy"]).split(",") if p.get("ccy") else None
        return [{"ccy": c, "bal": _s(self.state.balance(c, "funding"), 8), "frozenBal": "0",
                 "availBal": _s(self.state.balance(c, "funding"), 8)}
                for c in self.state.wallets.get("funding", {}) if wanted is None or c in wanted]

    async def withdrawals(self, call: Call, p: dict[str, Any]) -> Json:
        return [{"wdId": t.id, "ccy": t.asset, "chain": _chain(t.asset, t.network), "amt": _s(t.amount),
                 "fee": _s(t.fee), "feeCcy": t.asset, "ts": str(t.time_ms), "toAddr": t.address, "to": t.address,
                 "txId": t.tx_id, "state": _WITHDRAW_STATE.get(t.status, "1"), "clientId": "", "tag": "",
                 "areaCodeFrom": "", "areaCodeTo": "", "nonTradableAsset": False}
                for t in self._funds("withdrawal", p)]

    async def deposits(self, call: Call, p: dict[str, Any]) -> Json:
        return [{"depId": t.id, "ccy": t.asset, "chain": _chain(t.asset, t.network), "amt": _s(t.amount),
                 "to": t.address, "from": "", "areaCodeFrom": "", "txId": t.tx_id, "ts": str(t.time_ms),
                 "state": _DEPOSIT_STATE.get(t.status, "0"), "actualDepBlkConfirm": "12", "fromWdId": ""}
                for t in self._funds("deposit", p)]

    def _funds(self, kind: str, p: dict[str, Any]) -> list[Transfer]:
        rows = [t for t in self.state.transfers if t.kind == kind and p.get("ccy") in (None, t.asset)]
        return sorted(rows, key=lambda t: -t.time_ms)

    def _order(self, o: Order) -> Json:
        swap = o.market == "futures"

        def size(q: Decimal) -> str:
            return _s(self._to_sz(o.symbol, q).normalize()) if swap else _s(q)

        fees = sum((t.commission for t in self.state.trades if t.order_id == o.order_id), Decimal(0))
        fee_ccy = "USDT" if swap or o.side == "SELL" else self.state.spot_markets[o.symbol].base
        ord_type = "market" if o.type == "MARKET" else {"GTX": "post_only", "IOC": "ioc", "FOK": "fok"}.get(
            o.time_in_force, "limit")
        return {"instType": "SWAP" if swap else "SPOT", "instId": o.symbol, "ordId": str(o.order_id),
                "clOrdId": o.client_id, "tag": "", "px": _s(o.price) if o.type == "LIMIT" else "", "sz": size(o.qty),
                "ordType": ord_type, "side": o.side.lower(), "posSide": "net" if swap else "",
                "tdMode": "cross" if swap else "cash", "accFillSz": size(o.executed),
                "avgPx": _s(o.avg_price) if o.executed else "", "state": _STATE[o.status],
                "lever": str(self.state.leverage.get(o.symbol, "")), "fee": _s(-fees, 8), "feeCcy": fee_ccy,
                "reduceOnly": "true" if o.reduce_only else "false", "cTime": str(o.time_ms),
                "uTime": str(o.update_ms), "fillPx": "", "fillSz": "0", "tradeId": "", "category": "normal"}

    def _fill(self, t: Trade) -> Json:
        swap = t.market == "futures"
        o = self.state.orders[t.order_id]
        return {"instType": "SWAP" if swap else "SPOT", "instId": t.symbol, "tradeId": str(t.id),
                "ordId": str(t.order_id), "clOrdId": o.client_id, "billId": str(t.id), "tag": "",
                "fillPx": _s(t.price), "fillSz": _s(self._to_sz(t.symbol, t.qty).normalize() if swap else t.qty),
                "side": t.side.lower(), "posSide": "net" if swap else "", "execType": "M" if t.maker else "T",
                "feeCcy": t.commission_asset, "fee": _s(-t.commission, 8), "ts": str(t.time_ms),
                "fillTime": str(t.time_ms)}


def _swap_instrument(m: Market) -> Json:
    ct = CT_VAL[m.symbol]
    return {"instType": "SWAP", "instId": m.symbol, "uly": f"{m.base}-{m.quote}", "instFamily": f"{m.base}-{m.quote}",
            "baseCcy": "", "quoteCcy": "", "settleCcy": m.quote, "ctVal": _s(ct), "ctMult": "1", "ctValCcy": m.base,
            "ctType": "linear", "optType": "", "stk": "", "listTime": "1611916828000", "expTime": "",
            "lever": str(m.brackets[0][2]), "tickSz": _s(m.tick), "lotSz": _s((m.step / ct).normalize()),
            "minSz": _s((m.min_qty / ct).normalize()), "maxLmtSz": _s(m.max_qty / ct),
            "maxMktSz": _s(m.market_max_qty / ct), "state": "live", "ruleType": "normal", "alias": ""}


def _spot_instrument(m: Market) -> Json:
    return {"instType": "SPOT", "instId": m.symbol, "uly": "", "instFamily": "", "baseCcy": m.base,
            "quoteCcy": m.quote, "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "", "ctType": "",
            "listTime": "1548133413000", "expTime": "", "lever": "10", "tickSz": _s(m.tick), "lotSz": _s(m.step),
            "minSz": _s(m.min_qty), "maxLmtSz": _s(m.max_qty), "maxMktSz": _s(m.market_max_qty), "state": "live",
            "ruleType": "normal", "alias": ""}
