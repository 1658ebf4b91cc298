"""Bybit v5 unified account (linear perpetuals + spot) on api.bybit.com, over the shared account engine.

The matching/position engine is `BinanceState` (venue-neutral mechanics) with `unified=True`: spot and linear
share one wallet, as on Bybit's UTA. Bybit's own rules are enforced here: the v5 HMAC over
timestamp + apiKey + recvWindow + (query | JSON body), the recvWindow check, `orderLinkId` at most 36 of
[A-Za-z0-9_-], duplicate `orderLinkId` → 110072, and Bybit's retCodes in an HTTP 200 envelope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from .binance_model import BinanceError, BinanceState, Income, Market, Order, Trade, Transfer, _brackets
from .binance_routes import _s
from .call import Call, Credentials

HOST = "api.bybit.com"
ORDER_LINK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
Json = Any

LINEAR = {
    "BTCUSDT": Market("BTCUSDT", "BTC", "USDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"),
                      Decimal("1190"), Decimal("500"), Decimal("5"), Decimal("0.10"), Decimal("1999999.80"), 2, 3,
                      _brackets([("0", "0.005", 100), ("2000000", "0.01", 50), ("4000000", "0.015", 33)])),
    "ETHUSDT": Market("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.01"), Decimal("0.01"),
                      Decimal("7240"), Decimal("724"), Decimal("5"), Decimal("0.01"), Decimal("199999.98"), 2, 2,
                      _brackets([("0", "0.005", 100), ("1000000", "0.01", 50), ("2000000", "0.015", 33)])),
}
SPOT = {
    "BTCUSDT": Market("BTCUSDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.000001"), Decimal("0.000048"),
                      Decimal("71.73956243"), Decimal("71.73956243"), Decimal("1"), Decimal("0.01"),
                      Decimal("2000000"), 2, 6),
    "ETHUSDT": Market("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00062"),
                      Decimal("1229.2336343"), Decimal("1229.2336343"), Decimal("1"), Decimal("0.01"),
                      Decimal("2000000"), 2, 5),
}

# The engine raises Binance codes; Bybit answers with its own.
_CODES = {-4116: (110072, "OrderLinkedID is duplicate"), -2010: (110072, "OrderLinkedID is duplicate"),
          -2019: (110007, "ab not enough for new order"), -2022: (110017, "Reduce-only rule not satisfied"),
          -4164: (110094, "Order does not meet minimum order value"),
          -2011: (110001, "order not exists or too late to cancel"), -2013: (110001, "order not exists")}


def bybit_state() -> BinanceState:
    return BinanceState(futures_markets=dict(LINEAR), spot_markets=dict(SPOT), unified=True,
                        wallets={"futures": {"USDT": Decimal(10000)}, "spot": {}},
                        leverage={"ETHUSDT": 10, "BTCUSDT": 10}, fee_rate_taker=Decimal("0.00055"),
                        fee_rate_maker=Decimal("0.0002"), spot_fee_rate=Decimal("0.001"),
                        name="bybit", withdraw_fee_on_top=True, funding_account=True)


# Bybit's chain ids are the engine's network names (ETH, TRX); its chainType is the token standard.
_CHAIN_TYPE = {"ETH": "ERC20", "TRX": "TRC20", "BTC": "BTC"}
# Withdrawal and deposit states as Bybit writes them.
_WITHDRAW_STATUS = {"4": "Pending", "6": "success", "5": "Fail"}
_DEPOSIT_STATUS = {"0": 1, "1": 3}
_ACCOUNTS = {"FUND": "funding", "UNIFIED": "futures", "UTA": "futures"}  # Bybit's account types → engine wallets


class BybitError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg = code, msg


class BybitRoutes:
    def __init__(self, state: BinanceState, credentials: Credentials) -> None:
        self.state = state
        self.credentials = credentials

    def table(self) -> dict[tuple[str, str, str], Callable[[Call], Awaitable[web.StreamResponse]]]:
        public = {("GET", "/v5/market/time"): self.time, ("GET", "/v5/market/instruments-info"): self.instruments,
                  ("GET", "/v5/market/tickers"): self.tickers}
        private = {("GET", "/v5/user/query-api"): self.query_api, ("GET", "/v5/account/info"): self.account_info,
                   ("GET", "/v5/account/wallet-balance"): self.wallet_balance,
                   ("GET", "/v5/position/list"): self.position_list,
                   ("POST", "/v5/position/set-leverage"): self.set_leverage,
                   ("POST", "/v5/order/create"): self.create_order, ("POST", "/v5/order/cancel"): self.cancel_order,
                   ("POST", "/v5/order/cancel-all"): self.cancel_all,
                   ("GET", "/v5/order/realtime"): self.orders_realtime, ("GET", "/v5/order/history"): self.history,
                   ("GET", "/v5/execution/list"): self.executions,
                   # funds (money): deposit addresses, coin rules, withdrawals, deposit and withdrawal records
                   ("GET", "/v5/asset/deposit/query-address"): self.deposit_address,
                   ("GET", "/v5/asset/coin/query-info"): self.coin_info,
                   ("POST", "/v5/asset/withdraw/create"): self.withdraw,
                   ("GET", "/v5/asset/withdraw/query-record"): self.withdrawals,
                   ("GET", "/v5/asset/deposit/query-record"): self.deposits,
                   ("POST", "/v5/asset/transfer/inter-transfer"): self.inter_transfer,
                   ("GET", "/v5/asset/transfer/query-account-coins-balance"): self.account_coins}
        out: dict[tuple[str, str, str], Callable[[Call], Awaitable[web.StreamResponse]]] = {}
        for (method, path), fn in public.items():
            out[(HOST, method, path)] = self._wrap(fn, signed=False)
        for (method, path), fn in private.items():
            out[(HOST, method, path)] = self._wrap(fn, signed=True)
        return out

    def _wrap(self, fn: Callable[[Call, dict[str, Any]], Awaitable[Json]], *, signed: bool
              ) -> Callable[[Call], Awaitable[web.StreamResponse]]:
        async def handler(call: Call) -> web.StreamResponse:
            try:
                params: dict[str, Any] = dict(call.params)
                if call.method == "POST" and call.raw_body:
                    params = json.loads(call.raw_body)
                if signed:
                    self._check_signature(call)
                result = await fn(call, params)
                code, msg = 0, "OK"
            except BybitError as e:
                result, code, msg = {}, e.code, e.msg
            except BinanceError as e:
                if "insufficient balance" in e.msg:  # spot: the engine's -2010 covers this and duplicates
                    code, msg = 170131, "Insufficient balance."
                else:
                    code, msg = _CODES.get(e.code, (10001, f"params error: {e.msg}"))
                result = {}
            body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": self.state.now_ms()}
            return web.Response(text=json.dumps(body), content_type="application/json")

        return handler

    def _check_signature(self, call: Call) -> None:
        key = call.headers.get("X-BAPI-API-KEY", "")
        if not hmac.compare_digest(key, self.credentials.api_key):
            raise BybitError(10003, "API key is invalid.")
        ts = call.headers.get("X-BAPI-TIMESTAMP", "")
        recv = call.headers.get("X-BAPI-RECV-WINDOW", "5000")
        payload = ts + key + recv + (call.raw_body if call.method == "POST" else call.raw_query)
        expected = hmac.new(self.credentials.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(call.headers.get("X-BAPI-SIGN", ""), expected):
            raise BybitError(10004, "error sign! origin_string[" + payload.replace(key, "***") + "]")
        server = self.state.now_ms()
        if not ts.isdigit() or not server - int(recv) <= int(ts) < server + 1000:
            raise BybitError(10002, f"invalid request, please check your server timestamp or recv_window param. "
                                    f"req_timestamp[{ts}],server_timestamp[{server}],recv_window[{recv}]")

    def _markets(self, category: str) -> dict[str, Market]:
        if category == "linear":
            return self.state.futures_markets
        if category == "spot":
            return self.state.spot_markets
        raise BybitError(10001, f"params error: category {category!r} not served by the fake")

    @staticmethod
    def _market_kind(category: str) -> str:
        return "futures" if category == "linear" else "spot"

    # ---- public
    async def time(self, call: Call, p: dict[str, Any]) -> Json:
        now = self.state.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    async def instruments(self, call: Call, p: dict[str, Any]) -> Json:
        category = p.get("category", "")
        markets = self._markets(category)
        if p.get("status") == "PreLaunch":
            return {"category": category, "list": [], "nextPageCursor": ""}
        rows = [_linear_instrument(m) if category == "linear" else _spot_instrument(m) for m in markets.values()
                if p.get("symbol") in (None, m.symbol)]
        return {"category": category, "list": rows, "nextPageCursor": ""}

    async def tickers(self, call: Call, p: dict[str, Any]) -> Json:
        category = p.get("category", "")
        markets = self._markets(category)
        rows = []
        for symbol in markets:
            if p.get("symbol") not in (None, symbol):
                continue
            price = self.state.marks[symbol] if category == "linear" else self.state.spot_prices[symbol]
            row = {"symbol": symbol, "lastPrice": _s(price), "bid1Price": _s(price), "ask1Price": _s(price),
                   "bid1Size": "1", "ask1Size": "1", "prevPrice24h": _s(price), "price24hPcnt": "0",
                   "highPrice24h": _s(price), "lowPrice24h": _s(price), "turnover24h": "0", "volume24h": "0"}
            if category == "linear":
                row.update({"indexPrice": _s(price), "markPrice": _s(price),
                            "fundingRate": _s(self.state.funding_rate[symbol]),
                            "nextFundingTime": str(self.state.next_funding_time_ms), "openInterest": "0"})
            rows.append(row)
        return {"category": category, "list": rows}

    # ---- account
    async def query_api(self, call: Call, p: dict[str, Any]) -> Json:
        return {"id": "1", "note": "fake", "apiKey": self.credentials.api_key, "readOnly": 0, "secret": "",
                "permissions": {"ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"],
                                "Wallet": ["AccountTransfer"]}, "ips": ["*"], "type": 1, "unified": 0, "uta": 1,
                "isMaster": True}

    async def account_info(self, call: Call, p: dict[str, Any]) -> Json:
        return {"unifiedMarginStatus": 5, "marginMode": "REGULAR_MARGIN", "isMasterTrader": False,
                "spotHedgingStatus": "OFF", "updatedTime": str(self.state.now_ms()), "dcpStatus": "OFF",
                "timeWindow": 0, "smpGroup": 0}

    async def wallet_balance(self, call: Call, p: dict[str, Any]) -> Json:
        st = self.state
        upnl = sum((st.unrealized_pnl(s) for s in st.futures_markets), Decimal(0))
        pim = sum((st.position_initial_margin(s) for s in st.futures_markets), Decimal(0))
        mm = sum((st.maint_margin(s) for s in st.futures_markets), Decimal(0))
        coins = []
        for coin, bal in st.wallets["futures"].items():
            usdt = coin == "USDT"
            locked = st.spot_locked(coin)
            coins.append({"coin": coin, "walletBalance": _s(bal, 8), "equity": _s(bal + (upnl if usdt else 0), 8),
                          "usdValue": _s(bal, 8), "unrealisedPnl": _s(upnl if usdt else 0, 8),
                          "locked": _s(locked, 8), "totalOrderIM": _s(st.open_order_margin() if usdt else 0, 8),
                          "totalPositionIM": _s(pim if usdt else 0, 8), "totalPositionMM": _s(mm if usdt else 0, 8),
                          "availableToWithdraw": "", "availableToBorrow": "", "borrowAmount": "0",
                          "accruedInterest": "0", "bonus": "0", "cumRealisedPnl": "0", "marginCollateral": True,
                          "collateralSwitch": True, "spotHedgingQty": "0"})
        wallet = st.balance("USDT")
        return {"list": [{"accountType": "UNIFIED", "totalEquity": _s(wallet + upnl, 8),
                          "totalWalletBalance": _s(wallet, 8), "totalMarginBalance": _s(wallet + upnl, 8),
                          "totalAvailableBalance": _s(st.available_balance(), 8), "totalPerpUPL": _s(upnl, 8),
                          "totalInitialMargin": _s(pim, 8), "totalMaintenanceMargin": _s(mm, 8),
                          "accountIMRate": "0", "accountMMRate": "0", "accountLTV": "0", "coin": coins}]}

    async def position_list(self, call: Call, p: dict[str, Any]) -> Json:
        st = self.state
        rows = []
        for symbol, pos in st.positions.items():
            if p.get("symbol") not in (None, symbol) or pos.amount == 0:
                continue
            mark = st.marks[symbol]
            liq = st.liquidation_price(symbol)
            # hedge mode (state.dual_side_position): Bybit's positionIdx 1 = the long side, 2 = the short side
            idx = (1 if pos.amount > 0 else 2) if st.dual_side_position else 0
            rows.append({"symbol": symbol, "positionIdx": str(idx), "side": "Buy" if pos.amount > 0 else "Sell",
                         "size": _s(abs(pos.amount)), "avgPrice": _s(pos.entry_price),
                         "positionValue": _s(abs(pos.amount) * pos.entry_price, 8), "markPrice": _s(mark),
                         "leverage": str(st.leverage[symbol]), "liqPrice": _s(liq, 2) if liq else "",
                         "positionIM": _s(st.position_initial_margin(symbol), 8),
                         "positionMM": _s(st.maint_margin(symbol), 8),
                         "unrealisedPnl": _s(st.unrealized_pnl(symbol), 8),
                         "cumRealisedPnl": "0", "tradeMode": "0", "autoAddMargin": "0", "positionStatus": "Normal",
                         "riskId": "1", "riskLimitValue": "2000000", "takeProfit": "", "stopLoss": "",
                         "trailingStop": "0", "tpslMode": "Full", "adlRankIndicator": "2", "isReduceOnly": False,
                         "createdTime": str(pos.update_ms), "updatedTime": str(pos.update_ms), "seq": 1})
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    async def set_leverage(self, call: Call, p: dict[str, Any]) -> Json:
        symbol = p.get("symbol", "")
        if symbol not in self.state.futures_markets:
            raise BybitError(10001, "params error: symbol invalid")
        lev = int(Decimal(str(p.get("buyLeverage", "0"))))
        if lev == self.state.leverage[symbol]:
            raise BybitError(110043, "Set leverage not modified")
        if not 1 <= lev <= self.state.futures_markets[symbol].brackets[0][2]:
            raise BybitError(10001, "params error: leverage invalid")
        self.state.leverage[symbol] = lev
        return {}

    # ---- orders
    async def create_order(self, call: Call, p: dict[str, Any]) -> Json:
        category = str(p.get("category", ""))
        self._markets(category)
        link_id = str(p.get("orderLinkId") or f"fake{self.state.next_id()}")
        if not ORDER_LINK_ID_RE.match(link_id):
            raise BybitError(10001, "params error: orderLinkId is invalid")
        tif = str(p.get("timeInForce", "GTC"))
        params = {"symbol": str(p.get("symbol", "")), "side": str(p.get("side", "")).upper(),
                  "type": str(p.get("orderType", "")).upper(), "quantity": str(p.get("qty", "")),
                  "newClientOrderId": link_id, "reduceOnly": "true" if p.get("reduceOnly") else "false"}
        if params["type"] == "LIMIT":
            params.update({"price": str(p.get("price", "")), "timeInForce": "GTX" if tif == "PostOnly" else tif})
        order = self.state.place_order(self._market_kind(category), params)
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    def _find(self, p: dict[str, Any]) -> Order | None:
        category = str(p.get("category", ""))
        self._markets(category)
        oid = p.get("orderId")
        return self.state.find_order(self._market_kind(category), str(p.get("symbol", "")),
                                     int(oid) if oid else None, p.get("orderLinkId"))

    async def cancel_order(self, call: Call, p: dict[str, Any]) -> Json:
        order = self._find(p)
        if order is None or not order.is_open:
            raise BybitError(110001, "order not exists or too late to cancel")
        self.state.cancel_order(order.market, order.symbol, order.order_id, None)
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    async def cancel_all(self, call: Call, p: dict[str, Any]) -> Json:
        kind = self._market_kind(str(p.get("category", "")))
        done = []
        for o in list(self.state.orders.values()):
            if o.market == kind and o.is_open and p.get("symbol") in (None, o.symbol):
                self.state.cancel_order(kind, o.symbol, o.order_id, None)
                done.append({"orderId": str(o.order_id), "orderLinkId": o.client_id})
        return {"list": done, "success": "1"}

    async def orders_realtime(self, call: Call, p: dict[str, Any]) -> Json:
        # Bybit's realtime endpoint: open orders, plus any order asked for by id (recently closed ones too).
        return self._order_list(p, open_only=p.get("orderId") is None and p.get("orderLinkId") is None)

    async def history(self, call: Call, p: dict[str, Any]) -> Json:
        return self._order_list(p, open_only=False)

    def _order_list(self, p: dict[str, Any], *, open_only: bool) -> Json:
        category = str(p.get("category", ""))
        markets = self._markets(category)
        kind = self._market_kind(category)
        rows = [o for o in self.state.orders.values() if o.market == kind
                and p.get("symbol") in (None, o.symbol) and (o.is_open or not open_only)
                and p.get("orderId") in (None, str(o.order_id)) and p.get("orderLinkId") in (None, o.client_id)]
        rows.sort(key=lambda o: -o.order_id)
        return {"category": category, "list": [_order(o, markets[o.symbol]) for o in rows], "nextPageCursor": ""}

    async def executions(self, call: Call, p: dict[str, Any]) -> Json:
        category = str(p.get("category", ""))
        self._markets(category)
        kind = self._market_kind(category)
        since = int(p["startTime"]) if p.get("startTime") is not None else None
        if p.get("execType") == "Funding":
            # Bybit books funding as executions; execFee > 0 is paid by the account, < 0 received.
            fundings = [i for i in self.state.income_of("FUNDING_FEE") if p.get("symbol") in (None, i.symbol)
                        and (since is None or i.time_ms >= since)]
            return {"category": category, "list": [_funding_execution(i) for i in reversed(fundings)],
                    "nextPageCursor": ""}
        rows = [t for t in self.state.trades if t.market == kind and p.get("symbol") in (None, t.symbol)
                and (since is None or t.time_ms >= since) and (p.get("execType") in (None, "Trade"))]
        rows.sort(key=lambda t: -t.id)
        orders = self.state.orders
        return {"category": category, "list": [_execution(t, orders[t.order_id]) for t in rows],
                "nextPageCursor": ""}


    # ---- funds (the unified wallet: the fake has no separate FUND account)
    def _networks(self, coin: str) -> list[tuple[str, Decimal, Decimal]]:
        return [(net, fee, minimum) for (c, net), (fee, minimum) in self.state.withdraw_rules.items() if c == coin]

    async def deposit_address(self, call: Call, p: dict[str, Any]) -> Json:
        coin = str(p.get("coin", ""))
        chains = [{"chainType": _CHAIN_TYPE.get(net, net), "addressDeposit": self.state.deposit_address(coin, net),
                   "tagDeposit": "", "chain": net, "batchReleaseLimit": "-1", "contractAddress": ""}
                  for net, _, _ in self._networks(coin) if p.get("chainType") in (None, net)]
        if not chains:
            raise BybitError(131002, f"Parameter error: no deposit chain for {coin}")
        return {"coin": coin, "chains": chains}

    async def coin_info(self, call: Call, p: dict[str, Any]) -> Json:
        coins = sorted({c for c, _ in self.state.withdraw_rules if p.get("coin") in (None, c)})
        return {"rows": [{"name": c, "coin": c, "remainAmount": "1000000", "chains": [
            {"chain": net, "chainType": _CHAIN_TYPE.get(net, net), "confirmation": "6", "withdrawFee": _s(fee),
             "depositMin": "0", "withdrawMin": _s(minimum), "minAccuracy": "8", "chainDeposit": "1",
             "chainWithdraw": "1", "withdrawPercentageFee": "0", "contractAddress": "", "safeConfirmNumber": "6"}
            for net, fee, minimum in self._networks(c)]} for c in coins]}

    async def withdraw(self, call: Call, p: dict[str, Any]) -> Json:
        account = str(p.get("accountType") or "FUND")
        if account not in _ACCOUNTS:
            raise BybitError(131002, f"Parameter error: accountType {account}")
        try:
            wd = self.state.withdraw(str(p.get("coin", "")), Decimal(str(p.get("amount", "0"))),
                                     str(p.get("chain", "")), str(p.get("address", "")), _ACCOUNTS[account])
        except BinanceError as e:
            code = {-4022: 131002, -4026: 131001, -4019: 131002}.get(e.code, 131003)
            raise BybitError(code, e.msg) from None
        return {"id": wd.id}

    async def inter_transfer(self, call: Call, p: dict[str, Any]) -> Json:
        """Between FUND and UNIFIED; a repeated transferId is refused (131214), as Bybit does."""
        src, dst = _ACCOUNTS.get(str(p.get("fromAccountType"))), _ACCOUNTS.get(str(p.get("toAccountType")))
        if src is None or dst is None or src == dst:
            raise BybitError(131211, "fromAccountType can't be the same as toAccountType")
        try:
            done, new = self.state.move_funds(str(p.get("coin", "")), Decimal(str(p.get("amount", "0"))), src, dst,
                                              str(p.get("transferId", "")))
        except BinanceError as e:
            raise BybitError(131212 if e.code == -5002 else 131215, e.msg) from None
        if not new:
            raise BybitError(131214, "TransferId exist")
        return {"transferId": done.id, "status": "SUCCESS"}

    async def account_coins(self, call: Call, p: dict[str, Any]) -> Json:
        account = str(p.get("accountType", ""))
        wallet = _ACCOUNTS.get(account)
        if wallet is None:
            raise BybitError(131002, f"Parameter error: accountType {account}")
        coins = [c for c in self.state.wallets.get(wallet, {}) if p.get("coin") in (None, c)]
        return {"accountType": account, "memberId": "1", "balance": [
            {"coin": c, "walletBalance": _s(self.state.balance(c, wallet), 8),
             "transferBalance": _s(self.state.free(c, wallet), 8), "bonus": ""} for c in coins]}

    async def withdrawals(self, call: Call, p: dict[str, Any]) -> Json:
        return {"rows": [_withdrawal(t) for t in self._funds("withdrawal", p)], "nextPageCursor": ""}

    async def deposits(self, call: Call, p: dict[str, Any]) -> Json:
        return {"rows": [_deposit(t) for t in self._funds("deposit", p)], "nextPageCursor": ""}

    def _funds(self, kind: str, p: dict[str, Any]) -> list[Transfer]:
        since = int(p["startTime"]) if p.get("startTime") is not None else None
        rows = [t for t in self.state.transfers if t.kind == kind and p.get("coin") in (None, t.asset)
                and (since is None or t.time_ms >= since)]
        return sorted(rows, key=lambda t: -t.time_ms)


def _withdrawal(t: Transfer) -> Json:
    return {"coin": t.asset, "chain": t.network, "amount": _s(t.amount), "txID": t.tx_id,
            "status": _WITHDRAW_STATUS.get(t.status, "Pending"), "toAddress": t.address, "tag": "",
            "withdrawFee": _s(t.fee), "createTime": str(t.time_ms), "updateTime": str(t.time_ms),
            "withdrawId": t.id, "withdrawType": 0}


def _deposit(t: Transfer) -> Json:
    return {"id": t.id, "coin": t.asset, "chain": t.network, "amount": _s(t.amount), "txID": t.tx_id,
            "status": _DEPOSIT_STATUS.get(t.status, 1), "toAddress": t.address, "tag": "", "depositFee": "",
            "successAt": str(t.time_ms), "confirmations": "12", "txIndex": "0", "blockHash": "",
            "batchReleaseLimit": "-1", "depositType": "0"}


_STATUS = {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled", "CANCELED": "Cancelled",
           "EXPIRED": "Deactivated"}


def _order(o: Order, m: Market) -> Json:
    return {"orderId": str(o.order_id), "orderLinkId": o.client_id, "symbol": o.symbol,
            "price": _s(o.price) if o.type == "LIMIT" else "0", "qty": _s(o.qty), "side": o.side.capitalize(),
            "orderType": o.type.capitalize(), "orderStatus": _STATUS[o.status], "avgPrice": _s(o.avg_price, 8)
            if o.executed else "", "cumExecQty": _s(o.executed), "cumExecValue": _s(o.cum_quote, 8),
            "cumExecFee": "0", "leavesQty": _s(o.remaining if o.is_open else Decimal(0)),
            "leavesValue": _s(o.remaining * o.price if o.is_open else Decimal(0), 8),
            "timeInForce": {"GTX": "PostOnly", "": "IOC"}.get(o.time_in_force, o.time_in_force),
            "reduceOnly": o.reduce_only, "closeOnTrigger": False, "positionIdx": "0", "triggerPrice": "0",
            "takeProfit": "0", "stopLoss": "0", "isLeverage": "0", "cancelType": "UNKNOWN", "rejectReason":
            "EC_NoError", "createdTime": str(o.time_ms), "updatedTime": str(o.update_ms), "smpType": "None"}


def _execution(t: Trade, o: Order) -> Json:
    return {"symbol": t.symbol, "orderId": str(t.order_id), "orderLinkId": o.client_id, "side": t.side.capitalize(),
            "orderPrice": _s(o.price), "orderQty": _s(o.qty), "orderType": o.type.capitalize(),
            "execFee": _s(t.commission, 8), "feeCurrency": t.commission_asset, "execId": str(t.id),
            "execPrice": _s(t.price), "execQty": _s(t.qty), "execType": "Trade", "execValue": _s(t.qty * t.price, 8),
            "execTime": str(t.time_ms), "isMaker": t.maker,
            "feeRate": _s(t.commission / (t.qty * t.price if t.commission_asset == "USDT" else t.qty)),
            "leavesQty": _s(o.remaining),
            "closedSize": "0", "markPrice": _s(t.price), "indexPrice": "", "seq": t.id}


def _funding_execution(i: Income) -> Json:
    qty = abs(i.position)
    return {"symbol": i.symbol, "orderId": "", "orderLinkId": "", "side": "Buy" if i.position > 0 else "Sell",
            "orderPrice": "0", "orderQty": "0", "orderType": "UNKNOWN", "stopOrderType": "UNKNOWN",
            "execFee": _s(-i.amount, 8), "execId": str(i.tran_id), "execPrice": _s(i.price), "execQty": _s(qty),
            "execType": "Funding", "execValue": _s(qty * i.price, 8), "execTime": str(i.time_ms), "isMaker": False,
            "feeRate": _s(i.rate), "leavesQty": "0", "closedSize": "0", "markPrice": _s(i.price), "indexPrice": "",
            "seq": i.tran_id}


def _linear_instrument(m: Market) -> Json:
    return {"symbol": m.symbol, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": m.base,
            "quoteCoin": m.quote, "settleCoin": m.quote, "launchTime": "1585526400000", "deliveryTime": "0",
            "deliveryFeeRate": "", "priceScale": str(m.price_precision),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": f"{m.brackets[0][2]}.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": _s(m.min_price), "maxPrice": _s(m.max_price), "tickSize": _s(m.tick)},
            "lotSizeFilter": {"maxOrderQty": _s(m.max_qty), "minOrderQty": _s(m.min_qty), "qtyStep": _s(m.step),
                              "postOnlyMaxOrderQty": _s(m.max_qty), "maxMktOrderQty": _s(m.market_max_qty),
                              "minNotionalValue": _s(m.min_notional)},
            "unifiedMarginTrade": True, "fundingInterval": 480, "copyTrading": "both", "upperFundingRate": "0.005",
            "lowerFundingRate": "-0.005", "isPreListing": False, "preListingInfo": None}


def _spot_instrument(m: Market) -> Json:
    return {"symbol": m.symbol, "baseCoin": m.base, "quoteCoin": m.quote, "innovation": "0", "status": "Trading",
            "marginTrading": "utaOnly", "stTag": "0",
            "lotSizeFilter": {"basePrecision": _s(m.step), "quotePrecision": "0.00000001",
                              "minOrderQty": _s(m.min_qty), "maxOrderQty": _s(m.max_qty),
                              "minOrderAmt": _s(m.min_notional), "maxOrderAmt": "2000000"},
            "priceFilter": {"tickSize": _s(m.tick)},
            "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"}}
