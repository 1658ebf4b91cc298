"""Binance REST routes (fapi.binance.com USDⓈ-M futures, api.binance.com spot) over one BinanceState.

Signed endpoints are checked as Binance checks them: API key header, HMAC-SHA256 over the query string
concatenated with the body, then the timestamp against recvWindow on the (possibly skewed) server clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from .binance_model import BinanceError, BinanceState, Market, Order, Trade
from .call import Call, Credentials

FAPI = "fapi.binance.com"
SPOT = "api.binance.com"
Json = Any
Route = Callable[[Call], Awaitable[Json]]


def _s(value: Decimal | int, places: int | None = None) -> str:
    """A number as Binance writes it: a string, with fixed decimals where Binance pads them."""
    value = Decimal(value)
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
    return format(value, "f")


class BinanceRoutes:
    def __init__(self, state: BinanceState, credentials: Credentials) -> None:
        self.state = state
        self.credentials = credentials
        self.listen_keys: set[str] = set()

    # ---- plumbing
    def table(self) -> dict[tuple[str, str, str], Callable[[Call], Awaitable[web.StreamResponse]]]:
        public: dict[tuple[str, str, str], Route] = {
            (FAPI, "GET", "/fapi/v1/ping"): self.ping,
            (FAPI, "GET", "/fapi/v1/time"): self.time,
            (FAPI, "GET", "/fapi/v1/exchangeInfo"): self.futures_exchange_info,
            (FAPI, "GET", "/fapi/v1/premiumIndex"): self.premium_index,
            (FAPI, "GET", "/fapi/v1/ticker/24hr"): self.futures_ticker,
            (SPOT, "GET", "/api/v3/ping"): self.ping,
            (SPOT, "GET", "/api/v3/time"): self.time,
            (SPOT, "GET", "/api/v3/exchangeInfo"): self.spot_exchange_info,
            (SPOT, "GET", "/api/v3/ticker/price"): self.spot_ticker_price,
        }
        signed: dict[tuple[str, str, str], Route] = {
            (FAPI, "GET", "/fapi/v3/account"): self.futures_account,
            (FAPI, "GET", "/fapi/v2/account"): self.futures_account,
            (FAPI, "GET", "/fapi/v2/balance"): self.futures_balance,
            (FAPI, "GET", "/fapi/v3/balance"): self.futures_balance,
            (FAPI, "GET", "/fapi/v1/leverageBracket"): self.leverage_bracket,
            (FAPI, "GET", "/fapi/v3/positionRisk"): self.position_risk,
            (FAPI, "GET", "/fapi/v2/positionRisk"): self.position_risk,
            (FAPI, "GET", "/fapi/v1/positionSide/dual"): self.get_dual,
            (FAPI, "POST", "/fapi/v1/positionSide/dual"): self.set_dual,
            (FAPI, "POST", "/fapi/v1/marginType"): self.set_margin_type,
            (FAPI, "GET", "/fapi/v1/symbolConfig"): self.symbol_config,  # guest (adapter): ccxt fetch_margin_mode
            (FAPI, "POST", "/fapi/v1/leverage"): self.set_leverage,
            (FAPI, "POST", "/fapi/v1/order"): self.futures_new_order,
            (FAPI, "GET", "/fapi/v1/order"): self.futures_get_order,
            (FAPI, "DELETE", "/fapi/v1/order"): self.futures_cancel_order,
            (FAPI, "GET", "/fapi/v1/openOrders"): self.futures_open_orders,
            (FAPI, "GET", "/fapi/v1/allOrders"): self.futures_all_orders,
            (FAPI, "DELETE", "/fapi/v1/allOpenOrders"): self.futures_cancel_all,
            (FAPI, "GET", "/fapi/v1/userTrades"): self.futures_user_trades,
            (FAPI, "GET", "/fapi/v1/income"): self.income,
            (SPOT, "GET", "/api/v3/account"): self.spot_account,
            (SPOT, "POST", "/api/v3/order"): self.spot_new_order,
            (SPOT, "GET", "/api/v3/order"): self.spot_get_order,
            (SPOT, "DELETE", "/api/v3/order"): self.spot_cancel_order,
            (SPOT, "GET", "/api/v3/openOrders"): self.spot_open_orders,
            (SPOT, "GET", "/api/v3/myTrades"): self.spot_my_trades,
            (SPOT, "POST", "/sapi/v1/asset/transfer"): self.asset_transfer,
            (SPOT, "GET", "/sapi/v1/asset/transfer"): self.asset_transfers,
            (SPOT, "GET", "/sapi/v1/capital/deposit/address"): self.deposit_address,
            (SPOT, "GET", "/sapi/v1/capital/deposit/hisrec"): self.deposits,
            (SPOT, "POST", "/sapi/v1/capital/withdraw/apply"): self.withdraw,
            (SPOT, "GET", "/sapi/v1/capital/withdraw/history"): self.withdrawals,
            (SPOT, "GET", "/sapi/v1/capital/config/getall"): self.coin_config,  # the fees and minimums (money)
        }
        keyed: dict[tuple[str, str, str], Route] = {
            (FAPI, "POST", "/fapi/v1/listenKey"): self.listen_key,
            (FAPI, "PUT", "/fapi/v1/listenKey"): self.listen_key,
            (FAPI, "DELETE", "/fapi/v1/listenKey"): self.listen_key,
        }
        out: dict[tuple[str, str, str], Callable[[Call], Awaitable[web.StreamResponse]]] = {}
        for key, fn in public.items():
            out[key] = self._wrap(fn, signed=False, keyed=False)
        for key, fn in signed.items():
            out[key] = self._wrap(fn, signed=True, keyed=True)
        for key, fn in keyed.items():
            out[key] = self._wrap(fn, signed=False, keyed=True)
        return out

    def _wrap(self, fn: Route, *, signed: bool, keyed: bool) -> Callable[[Call], Awaitable[web.StreamResponse]]:
        async def handler(call: Call) -> web.StreamResponse:
            try:
                if keyed:
                    self._check_key(call)
                if signed:
                    self._check_signature(call)
                body = await fn(call)
            except BinanceError as e:
                return web.json_response({"code": e.code, "msg": e.msg}, status=e.status)
            return web.Response(text=json.dumps(body), content_type="application/json")

        return handler

    def _check_key(self, call: Call) -> None:
        key = call.headers.get("X-MBX-APIKEY")
        if not key:
            raise BinanceError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self.credentials.api_key):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)

    def _check_signature(self, call: Call) -> None:
        # Binance signs totalParams = query string + request body, exactly as sent.
        total = call.raw_query + call.raw_body
        payload, sep, signature = total.rpartition("&signature=")
        if not sep:
            if total.startswith("signature="):
                payload, signature = "", total[len("signature="):]
            else:
                raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        expected = hmac.new(self.credentials.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        try:
            timestamp = int(call.params["timestamp"])
        except (KeyError, ValueError):
            raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") \
                from None
        recv_window = int(call.params.get("recvWindow", "5000"))
        server = self.state.now_ms()
        if timestamp >= server + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - timestamp > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # ---- public
    async def ping(self, call: Call) -> Json:
        return {}

    async def time(self, call: Call) -> Json:
        return {"serverTime": self.state.now_ms()}

    async def futures_exchange_info(self, call: Call) -> Json:
        return {"timezone": "UTC", "serverTime": self.state.now_ms(), "futuresType": "U_MARGINED",
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 2400}],
                "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True,
                                                   "autoAssetExchange": "-10000"}],
                "symbols": [_futures_symbol(m) for m in self.state.futures_markets.values()]}

    async def spot_exchange_info(self, call: Call) -> Json:
        return {"timezone": "UTC", "serverTime": self.state.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "symbols": [_spot_symbol(m) for m in self.state.spot_markets.values()]}

    async def premium_index(self, call: Call) -> Json:
        rows = [self._premium(s) for s in self.state.futures_markets]
        symbol = call.params.get("symbol")
        if symbol is None:
            return rows
        found = [r for r in rows if r["symbol"] == symbol]
        if not found:
            raise BinanceError(-1121, "Invalid symbol.")
        return found[0]

    def _premium(self, symbol: str) -> Json:
        mark = self.state.marks[symbol]
        return {"symbol": symbol, "markPrice": _s(mark), "indexPrice": _s(mark),
                "estimatedSettlePrice": _s(mark), "lastFundingRate": _s(self.state.funding_rate[symbol]),
                "interestRate": "0.00010000", "nextFundingTime": self.state.next_funding_time_ms,
                "time": self.state.now_ms()}

    async def futures_ticker(self, call: Call) -> Json:
        symbol = call.params.get("symbol")
        rows = [_ticker(s, self.state.marks[s], self.state.now_ms()) for s in self.state.futures_markets]
        return rows if symbol is None else next(r for r in rows if r["symbol"] == symbol)

    async def spot_ticker_price(self, call: Call) -> Json:
        symbol = call.params.get("symbol")
        rows = [{"symbol": s, "price": _s(p)} for s, p in self.state.spot_prices.items()]
        return rows if symbol is None else next(r for r in rows if r["symbol"] == symbol)

    # ---- futures account
    async def futures_account(self, call: Call) -> Json:
        st = self.state
        wallet = st.balance("USDT")
        upnl = sum((st.unrealized_pnl(s) for s in st.futures_markets), Decimal(0))
        pim = sum((st.position_initial_margin(s) for s in st.futures_markets), Decimal(0))
        oom = st.open_order_margin()
        maint = sum((st.maint_margin(s) for s in st.futures_markets), Decimal(0))
        avail = st.available_balance()
        assets = []
        for asset, bal in st.wallets["futures"].items():
            usdt = asset == "USDT"
            assets.append({
                "asset": asset, "walletBalance": _s(bal, 8),
                "unrealizedProfit": _s(upnl if usdt else Decimal(0), 8),
                "marginBalance": _s(bal + (upnl if usdt else 0), 8), "maintMargin": _s(maint if usdt else 0, 8),
                "initialMargin": _s(pim + oom if usdt else 0, 8),
                "positionInitialMargin": _s(pim if usdt else 0, 8),
                "openOrderInitialMargin": _s(oom if usdt else 0, 8), "crossWalletBalance": _s(bal, 8),
                "crossUnPnl": _s(upnl if usdt else 0, 8), "availableBalance": _s(avail if usdt else bal, 8),
                "maxWithdrawAmount": _s(avail if usdt else bal, 8), "marginAvailable": True,
                "updateTime": st.now_ms()})
        positions = [{"symbol": s, "positionSide": "BOTH", "positionAmt": _s(p.amount),
                      "unrealizedProfit": _s(st.unrealized_pnl(s), 8),
                      "isolatedMargin": "0", "notional": _s(p.amount * st.marks[s], 8), "isolatedWallet": "0",
                      "initialMargin": _s(st.position_initial_margin(s), 8),
                      "maintMargin": _s(st.maint_margin(s), 8), "updateTime": p.update_ms}
                     for s, p in st.positions.items() if p.amount != 0]
        return {"totalInitialMargin": _s(pim + oom, 8), "totalMaintMargin": _s(maint, 8),
                "totalWalletBalance": _s(wallet, 8), "totalUnrealizedProfit": _s(upnl, 8),
                "totalMarginBalance": _s(wallet + upnl, 8), "totalPositionInitialMargin": _s(pim, 8),
                "totalOpenOrderInitialMargin": _s(oom, 8), "totalCrossWalletBalance": _s(wallet, 8),
                "totalCrossUnPnl": _s(upnl, 8), "availableBalance": _s(avail, 8),
                "maxWithdrawAmount": _s(avail, 8), "assets": assets, "positions": positions}

    async def futures_balance(self, call: Call) -> Json:
        st = self.state
        return [{"accountAlias": "fake", "asset": a, "balance": _s(b, 8), "crossWalletBalance": _s(b, 8),
                 "crossUnPnl": "0.00000000", "availableBalance": _s(st.available_balance() if a == "USDT" else b, 8),
                 "maxWithdrawAmount": _s(b, 8), "marginAvailable": True, "updateTime": st.now_ms()}
                for a, b in st.wallets["futures"].items()]

    async def leverage_bracket(self, call: Call) -> Json:
        rows = []
        for symbol, m in self.state.futures_markets.items():
            brackets = []
            cum = Decimal(0)
            prev = None
            for i, (floor, ratio, lev) in enumerate(m.brackets):
                if prev is not None:
                    cum += floor * (ratio - prev)
                prev = ratio
                cap = m.brackets[i + 1][0] if i + 1 < len(m.brackets) else Decimal("9223372036854775807")
                brackets.append({"bracket": i + 1, "initialLeverage": lev, "notionalCap": int(cap),
                                 "notionalFloor": int(floor), "maintMarginRatio": float(ratio), "cum": float(cum)})
            rows.append({"symbol": symbol, "brackets": brackets})
        wanted = call.params.get("symbol")
        if wanted is not None:
            found = [r for r in rows if r["symbol"] == wanted]
            if not found:
                raise BinanceError(-1121, "Invalid symbol.")
            return found[0]
        return rows

    async def position_risk(self, call: Call) -> Json:
        st = self.state
        symbol = call.params.get("symbol")
        v2 = call.path.startswith("/fapi/v2/")
        out = []
        for s, p in st.positions.items():
            if symbol is not None and s != symbol:
                continue
            if p.amount == 0 and not v2:
                continue  # v3 lists only symbols with a position or open orders
            mark = st.marks[s]
            row = {"symbol": s, "positionSide": "BOTH", "positionAmt": _s(p.amount), "entryPrice": _s(p.entry_price),
                   "breakEvenPrice": _s(p.entry_price), "markPrice": _s(mark),
                   "unRealizedProfit": _s(st.unrealized_pnl(s), 8),
                   "liquidationPrice": _s(st.liquidation_price(s), 8), "isolatedMargin": "0",
                   "notional": _s(p.amount * mark, 8), "marginAsset": "USDT", "isolatedWallet": "0",
                   "initialMargin": _s(st.position_initial_margin(s), 8), "maintMargin": _s(st.maint_margin(s), 8),
                   "positionInitialMargin": _s(st.position_initial_margin(s), 8), "openOrderInitialMargin": "0",
                   "adl": 0, "bidNotional": "0", "askNotional": "0", "updateTime": p.update_ms}
            if v2:
                row.update({"leverage": str(st.leverage[s]), "marginType": st.margin_type[s].lower(),
                            "isAutoAddMargin": "false", "maxNotionalValue": "100000000"})
            out.append(row)
        return out

    async def get_dual(self, call: Call) -> Json:
        return {"dualSidePosition": self.state.dual_side_position}

    async def set_dual(self, call: Call) -> Json:
        want = call.params.get("dualSidePosition", "").lower() == "true"
        if want == self.state.dual_side_position:
            raise BinanceError(-4059, "No need to change position side.")
        if any(p.amount != 0 for p in self.state.positions.values()) or any(
                o.is_open and o.market == "futures" for o in self.state.orders.values()):
            raise BinanceError(-4068, "Position side cannot be changed if there exists position.")
        self.state.dual_side_position = want
        return {"code": 200, "msg": "success"}

    async def set_margin_type(self, call: Call) -> Json:
        symbol = self._futures_symbol(call)
        want = call.params.get("marginType", "").upper()
        if want not in ("ISOLATED", "CROSSED"):
            raise BinanceError(-1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.")
        if want == self.state.margin_type[symbol]:
            raise BinanceError(-4046, "No need to change margin type.")
        if self.state.position(symbol) is not None:
            raise BinanceError(-4048, "Margin type cannot be changed if there exists position.")
        self.state.margin_type[symbol] = want
        return {"code": 200, "msg": "success"}

    async def symbol_config(self, call: Call) -> Json:
        """Binance's per-symbol margin type and leverage (what ccxt's `fetch_margin_mode` reads). Guest (adapter)."""
        symbols = [self._futures_symbol(call)] if call.params.get("symbol") else sorted(self.state.futures_markets)
        return [{"symbol": s, "marginType": self.state.margin_type[s], "isAutoAddMargin": "false",
                 "leverage": self.state.leverage[s], "maxNotionalValue": "1000000"} for s in symbols]

    async def set_leverage(self, call: Call) -> Json:
        symbol = self._futures_symbol(call)
        try:
            lev = int(call.params["leverage"])
        except (KeyError, ValueError):
            raise BinanceError(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.") \
                from None
        max_lev = self.state.futures_markets[symbol].brackets[0][2]
        if not 1 <= lev <= max_lev:
            raise BinanceError(-4028, f"Leverage {lev} is not valid")
        self.state.leverage[symbol] = lev
        return {"leverage": lev, "maxNotionalValue": "50000" if lev > 100 else "100000000", "symbol": symbol}

    def _futures_symbol(self, call: Call) -> str:
        symbol = call.params.get("symbol", "")
        if symbol not in self.state.futures_markets:
            raise BinanceError(-1121, "Invalid symbol.")
        return symbol

    # ---- futures orders
    async def futures_new_order(self, call: Call) -> Json:
        if self.state.dual_side_position and call.params.get("positionSide", "BOTH") == "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        order = self.state.place_order("futures", call.params)
        return _futures_order(order, self.state.futures_markets[order.symbol])

    async def futures_get_order(self, call: Call) -> Json:
        order = self._find(call, "futures")
        if order is None:
            raise BinanceError(-2013, "Order does not exist.")
        return _futures_order(order, self.state.futures_markets[order.symbol])

    async def futures_cancel_order(self, call: Call) -> Json:
        order = self._find(call, "futures")
        if order is None or not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        order = self.state.cancel_order("futures", order.symbol, order.order_id, None)
        return _futures_order(order, self.state.futures_markets[order.symbol])

    async def futures_open_orders(self, call: Call) -> Json:
        return [_futures_order(o, self.state.futures_markets[o.symbol]) for o in self._orders(call, "futures")
                if o.is_open]

    async def futures_all_orders(self, call: Call) -> Json:
        self._futures_symbol(call)
        return [_futures_order(o, self.state.futures_markets[o.symbol]) for o in self._orders(call, "futures")]

    async def futures_cancel_all(self, call: Call) -> Json:
        symbol = self._futures_symbol(call)
        for o in self._orders(call, "futures"):
            if o.is_open:
                self.state.cancel_order("futures", symbol, o.order_id, None)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    async def futures_user_trades(self, call: Call) -> Json:
        self._futures_symbol(call)
        return [_futures_trade(t) for t in self._trades(call, "futures")]

    async def income(self, call: Call) -> Json:
        p = call.params
        rows = [i for i in self.state.income
                if (p.get("symbol") is None or i.symbol == p["symbol"])
                and (p.get("incomeType") is None or i.income_type == p["incomeType"])
                and (p.get("startTime") is None or i.time_ms >= int(p["startTime"]))
                and (p.get("endTime") is None or i.time_ms <= int(p["endTime"]))]
        rows = rows[: int(p.get("limit", "100"))]
        return [{"symbol": i.symbol, "incomeType": i.income_type, "income": _s(i.amount, 8), "asset": i.asset,
                 "info": i.income_type, "time": i.time_ms, "tranId": i.tran_id, "tradeId": i.trade_id} for i in rows]

    async def listen_key(self, call: Call) -> Json:
        if call.method == "POST":
            key = f"fakelistenkey{self.state.next_id()}"
            self.listen_keys.add(key)
            return {"listenKey": key}
        if call.method == "PUT" and not self.listen_keys:  # keep-alive of an expired key (streams guest edit)
            raise BinanceError(-1125, "This listenKey does not exist.")
        return {}

    # ---- spot
    async def spot_account(self, call: Call) -> Json:
        st = self.state
        balances = [{"asset": a, "free": _s(st.spot_free(a), 8), "locked": _s(st.spot_locked(a), 8)}
                    for a in st.wallets["spot"]]
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                    "seller": "0.00000000"},
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": st.now_ms(),
                "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 1}

    async def spot_new_order(self, call: Call) -> Json:
        order = self.state.place_order("spot", call.params)
        fills = [_spot_fill(t) for t in self.state.trades if t.order_id == order.order_id]
        return {**_spot_order(order, self.state.spot_markets[order.symbol]), "transactTime": order.time_ms,
                "fills": fills}

    async def spot_get_order(self, call: Call) -> Json:
        order = self._find(call, "spot")
        if order is None:
            raise BinanceError(-2013, "Order does not exist.")
        return _spot_order(order, self.state.spot_markets[order.symbol])

    async def spot_cancel_order(self, call: Call) -> Json:
        order = self._find(call, "spot")
        if order is None or not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        order = self.state.cancel_order("spot", order.symbol, order.order_id, None)
        return _spot_order(order, self.state.spot_markets[order.symbol])

    async def spot_open_orders(self, call: Call) -> Json:
        return [_spot_order(o, self.state.spot_markets[o.symbol]) for o in self._orders(call, "spot") if o.is_open]

    async def spot_my_trades(self, call: Call) -> Json:
        if call.params.get("symbol") not in self.state.spot_markets:
            raise BinanceError(-1121, "Invalid symbol.")
        return [_spot_trade(t) for t in self._trades(call, "spot")]

    # ---- funds
    async def asset_transfer(self, call: Call) -> Json:
        p = call.params
        done = self.state.transfer(p.get("type", ""), p.get("asset", ""), Decimal(p.get("amount", "0")))
        return {"tranId": int(done.id)}

    async def asset_transfers(self, call: Call) -> Json:
        rows = [t for t in self.state.transfers if t.kind == "transfer" and t.transfer_type == call.params.get("type")]
        return {"total": len(rows), "rows": [
            {"asset": t.asset, "amount": _s(t.amount, 8), "type": t.transfer_type, "status": t.status,
             "tranId": int(t.id), "timestamp": t.time_ms} for t in rows]}

    async def deposit_address(self, call: Call) -> Json:
        coin, network = call.params.get("coin", ""), call.params.get("network", "ETH")
        return {"coin": coin, "address": self.state.deposit_address(coin, network), "tag": "", "url": ""}

    async def deposits(self, call: Call) -> Json:
        return [{"id": t.id, "amount": _s(t.amount), "coin": t.asset, "network": t.network,
                 "status": int(t.status), "address": t.address, "addressTag": "", "txId": t.tx_id,
                 "insertTime": t.time_ms, "transferType": 0, "confirmTimes": "12/12", "unlockConfirm": 0,
                 "walletType": 0} for t in self.state.transfers if t.kind == "deposit"
                and call.params.get("coin") in (None, t.asset)]

    async def withdraw(self, call: Call) -> Json:
        p = call.params
        wd = self.state.withdraw(p.get("coin", ""), Decimal(p.get("amount", "0")), p.get("network", ""),
                                 p.get("address", ""))
        return {"id": wd.id}

    async def withdrawals(self, call: Call) -> Json:
        return [{"id": t.id, "amount": _s(t.amount), "transactionFee": _s(t.fee), "coin": t.asset,
                 "status": int(t.status), "address": t.address, "txId": t.tx_id,
                 "applyTime": _utc(t.time_ms), "network": t.network, "transferType": 0, "info": "",
                 "confirmNo": 12, "walletType": 0, "txKey": "", "completeTime": _utc(t.time_ms)}
                for t in self.state.transfers if t.kind == "withdrawal" and call.params.get("coin") in (None, t.asset)]

    async def coin_config(self, call: Call) -> Json:
        """`GET /sapi/v1/capital/config/getall`: every coin's networks with their withdrawal fee and minimum."""
        coins: dict[str, list[Json]] = {}
        for (coin, network), (fee, minimum) in self.state.withdraw_rules.items():
            coins.setdefault(coin, []).append({
                "network": network, "coin": coin, "withdrawIntegerMultiple": "0.00000001", "isDefault": False,
                "depositEnable": True, "withdrawEnable": True, "depositDesc": "", "withdrawDesc": "",
                "name": network, "resetAddressStatus": False, "withdrawFee": _s(fee), "withdrawMin": _s(minimum),
                "withdrawMax": "9999999999", "minConfirm": 12, "unLockConfirm": 0, "sameAddress": False,
                "busy": False, "depositDust": "0"})
        return [{"coin": coin, "depositAllEnable": True, "withdrawAllEnable": True, "name": coin, "free": "0",
                 "locked": "0", "freeze": "0", "withdrawing": "0", "ipoing": "0", "ipoable": "0", "storage": "0",
                 "isLegalMoney": False, "trading": True, "networkList": networks} for coin, networks in coins.items()]

    # ---- lookups
    def _find(self, call: Call, market: str) -> Order | None:
        symbol = call.params.get("symbol", "")
        oid = call.params.get("orderId")
        cid = call.params.get("origClientOrderId")
        if oid is None and cid is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return self.state.find_order(market, symbol, int(oid) if oid else None, cid)

    def _orders(self, call: Call, market: str) -> list[Order]:
        symbol = call.params.get("symbol")
        return [o for o in self.state.orders.values() if o.market == market and (symbol is None or o.symbol == symbol)]

    def _trades(self, call: Call, market: str) -> list[Trade]:
        p = call.params
        rows = [t for t in self.state.trades if t.market == market and t.symbol == p.get("symbol")
                and (p.get("startTime") is None or t.time_ms >= int(p["startTime"]))
                and (p.get("endTime") is None or t.time_ms <= int(p["endTime"]))
                and (p.get("fromId") is None or t.id >= int(p["fromId"]))
                and (p.get("orderId") is None or t.order_id == int(p["orderId"]))]
        limit = int(p.get("limit", "500"))
        # Binance: from startTime/fromId the oldest `limit` rows (forward pagination); without them the newest.
        if p.get("startTime") is not None or p.get("fromId") is not None:
            return rows[:limit]
        return rows[-limit:]


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---- payload shapes (field names and string encodings as in ccxt-static's recorded Binance responses)

def _filters(m: Market) -> list[Json]:
    return [{"filterType": "PRICE_FILTER", "minPrice": _s(m.min_price), "maxPrice": _s(m.max_price),
             "tickSize": _s(m.tick)},
            {"filterType": "LOT_SIZE", "minQty": _s(m.min_qty), "maxQty": _s(m.max_qty), "stepSize": _s(m.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": _s(m.min_qty), "maxQty": _s(m.market_max_qty),
             "stepSize": _s(m.step)}]


def _futures_symbol(m: Market) -> Json:
    return {"symbol": m.symbol, "pair": m.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": m.base, "quoteAsset": m.quote, "marginAsset": m.quote,
            "pricePrecision": m.price_precision, "quantityPrecision": m.qty_precision, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": ["Layer-1"], "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [*_filters(m), {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": _s(m.min_notional)},
                        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                         "multiplierDecimal": "4"}],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"], "permissionSets": ["GRID", "COPY"]}


def _spot_symbol(m: Market) -> Json:
    return {"symbol": m.symbol, "status": "TRADING", "baseAsset": m.base, "baseAssetPrecision": 8,
            "quoteAsset": m.quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "filters": [*_filters(m), {"filterType": "NOTIONAL", "minNotional": _s(m.min_notional),
                                       "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                                       "applyMaxToMarket": False, "avgPriceMins": 5}],
            "permissions": [], "permissionSets": [["SPOT", "MARGIN"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]}


def _ticker(symbol: str, price: Decimal, now: int) -> Json:
    p = _s(price)
    return {"symbol": symbol, "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": p,
            "lastPrice": p, "lastQty": "0.001", "openPrice": p, "highPrice": p, "lowPrice": p, "volume": "1000",
            "quoteVolume": _s(price * 1000), "openTime": now - 86_400_000, "closeTime": now, "firstId": 1,
            "lastId": 2, "count": 2}


def _futures_order(o: Order, m: Market) -> Json:
    return {"orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
            "price": _s(o.price, m.price_precision), "avgPrice": _s(o.avg_price, 5),
            "origQty": _s(o.qty, m.qty_precision), "executedQty": _s(o.executed, m.qty_precision),
            "cumQty": _s(o.executed, m.qty_precision), "cumQuote": _s(o.cum_quote, 5),
            "timeInForce": o.time_in_force or "GTC", "type": o.type, "reduceOnly": o.reduce_only,
            "closePosition": False, "side": o.side, "positionSide": "BOTH", "stopPrice": "0.00",
            "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type, "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "time": o.time_ms,
            "updateTime": o.update_ms}


def _spot_order(o: Order, m: Market) -> Json:
    return {"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_id,
            "price": _s(o.price, 8), "origQty": _s(o.qty, 8), "executedQty": _s(o.executed, 8),
            "cummulativeQuoteQty": _s(o.cum_quote, 8), "status": o.status,
            "timeInForce": o.time_in_force or "GTC", "type": o.type, "side": o.side, "stopPrice": "0.00000000",
            "icebergQty": "0.00000000", "time": o.time_ms, "updateTime": o.update_ms, "isWorking": True,
            "workingTime": o.time_ms, "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "EXPIRE_MAKER"}


def _futures_trade(t: Trade) -> Json:
    return {"symbol": t.symbol, "id": t.id, "orderId": t.order_id, "side": t.side, "price": _s(t.price),
            "qty": _s(t.qty), "realizedPnl": _s(t.realized_pnl, 8), "marginAsset": "USDT",
            "quoteQty": _s(t.qty * t.price, 8), "commission": _s(t.commission, 8),
            "commissionAsset": t.commission_asset, "time": t.time_ms, "positionSide": "BOTH", "maker": t.maker,
            "buyer": t.side == "BUY"}


def _spot_trade(t: Trade) -> Json:
    return {"symbol": t.symbol, "id": t.id, "orderId": t.order_id, "orderListId": -1, "price": _s(t.price, 8),
            "qty": _s(t.qty, 8), "quoteQty": _s(t.qty * t.price, 8), "commission": _s(t.commission, 8),
            "commissionAsset": t.commission_asset, "time": t.time_ms, "isBuyer": t.side == "BUY",
            "isMaker": t.maker, "isBestMatch": True}


def _spot_fill(t: Trade) -> Json:
    return {"price": _s(t.price, 8), "qty": _s(t.qty, 8), "commission": _s(t.commission, 8),
            "commissionAsset": t.commission_asset, "tradeId": t.id}
