"""Binance's account model (USDⓈ-M futures one-way + spot): wallets, marks, positions, orders, trades, income.

Rules follow Binance's documented behaviour; where the fake simplifies, the comment says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
ZERO = Decimal(0)


class BinanceError(Exception):
    """An error answer as Binance sends it: HTTP status + {"code": ..., "msg": ...}."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.status = code, msg, status


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    min_price: Decimal
    max_price: Decimal
    price_precision: int
    qty_precision: int
    # maintenance brackets: (notional floor, maintenance ratio, max leverage), Binance's tiers (ccxt-static options)
    brackets: tuple[tuple[Decimal, Decimal, int], ...] = ()


def _brackets(rows: list[tuple[str, str, int]]) -> tuple[tuple[Decimal, Decimal, int], ...]:
    return tuple((Decimal(f), Decimal(r), lev) for f, r, lev in rows)


FUTURES_MARKETS = {
    "BTCUSDT": Market("BTCUSDT", "BTC", "USDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"),
                      Decimal("1000"), Decimal("120"), Decimal("100"), Decimal("261.10"), Decimal("809484"), 2, 3,
                      _brackets([("0", "0.004", 125), ("50000", "0.005", 100), ("250000", "0.01", 50),
                                 ("3000000", "0.025", 20), ("20000000", "0.05", 10), ("40000000", "0.1", 5),
                                 ("100000000", "0.125", 4), ("120000000", "0.15", 3), ("200000000", "0.25", 2),
                                 ("300000000", "0.5", 1)])),
    "ETHUSDT": Market("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"),
                      Decimal("10000"), Decimal("2000"), Decimal("20"), Decimal("39.86"), Decimal("306177"), 2, 3,
                      _brackets([("0", "0.005", 125), ("100000", "0.0065", 100), ("250000", "0.01", 75),
                                 ("2000000", "0.02", 50), ("15000000", "0.05", 20), ("30000000", "0.1", 10),
                                 ("60000000", "0.125", 5), ("80000000", "0.15", 4), ("100000000", "0.25", 2),
                                 ("150000000", "0.5", 1)])),
}
SPOT_MARKETS = {
    "BTCUSDT": Market("BTCUSDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"),
                      Decimal("9000"), Decimal("100"), Decimal("5"), Decimal("0.01"), Decimal("1000000"), 8, 8),
    "ETHUSDT": Market("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"),
                      Decimal("9000"), Decimal("2000"), Decimal("5"), Decimal("0.01"), Decimal("1000000"), 8, 8),
}


@dataclass
class Order:
    order_id: int
    client_id: str
    market: str  # "futures" | "spot"
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    qty: Decimal
    price: Decimal  # 0 for market orders
    time_in_force: str
    reduce_only: bool
    time_ms: int
    status: str = "NEW"  # NEW | PARTIALLY_FILLED | FILLED | CANCELED | EXPIRED
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_ms: int = 0

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed if self.executed else ZERO

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass
class Trade:
    id: int
    order_id: int
    market: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    time_ms: int


@dataclass
class Position:
    symbol: str
    amount: Decimal = ZERO  # signed: > 0 long
    entry_price: Decimal = ZERO
    update_ms: int = 0


@dataclass
class Income:
    tran_id: int
    symbol: str
    income_type: str  # FUNDING_FEE | REALIZED_PNL | COMMISSION
    amount: Decimal
    asset: str
    time_ms: int
    trade_id: str = ""
    # for funding: the signed position it was paid on, the mark, the rate and the wallet after
    position: Decimal = ZERO
    price: Decimal = ZERO
    rate: Decimal = ZERO
    balance_after: Decimal = ZERO


@dataclass
class Transfer:
    """A movement of funds: between wallets (done at once), a deposit, or a withdrawal (in transit until done)."""

    id: str
    kind: str  # "transfer" | "deposit" | "withdrawal"
    asset: str
    amount: Decimal
    time_ms: int
    status: str  # transfer: CONFIRMED; deposit: 0 pending / 1 success; withdrawal: 4 processing / 6 completed
    network: str = ""
    address: str = ""
    tx_id: str = ""
    fee: Decimal = ZERO
    transfer_type: str = ""  # MAIN_UMFUTURE | UMFUTURE_MAIN
    debited: Decimal = ZERO  # withdrawal: what left the wallet (amount, plus the fee where the venue adds it)
    wallet: str = ""  # the wallet a withdrawal debited or a deposit credited


# (asset, network) → (withdrawal fee, minimum withdrawal)
WITHDRAW_RULES = {("USDT", "ETH"): (Decimal("3"), Decimal("10")), ("USDT", "TRX"): (Decimal("1"), Decimal("10")),
                  ("ETH", "ETH"): (Decimal("0.0008"), Decimal("0.0016")), ("BTC", "BTC"): (Decimal("0.0002"),
                                                                                        Decimal("0.001"))}


@dataclass
class BinanceState:
    futures_markets: dict[str, Market] = field(default_factory=lambda: dict(FUTURES_MARKETS))
    spot_markets: dict[str, Market] = field(default_factory=lambda: dict(SPOT_MARKETS))
    marks: dict[str, Decimal] = field(default_factory=lambda: {"ETHUSDT": Decimal(3000), "BTCUSDT": Decimal(60000)})
    spot_prices: dict[str, Decimal] = field(
        default_factory=lambda: {"ETHUSDT": Decimal(3000), "BTCUSDT": Decimal(60000)})
    wallets: dict[str, dict[str, Decimal]] = field(
        default_factory=lambda: {"futures": {"USDT": Decimal(10000)}, "spot": {"USDT": Decimal(10000)}})
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    income: list[Income] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    leverage: dict[str, int] = field(default_factory=lambda: {"ETHUSDT": 20, "BTCUSDT": 20})
    margin_type: dict[str, str] = field(default_factory=lambda: {"ETHUSDT": "CROSSED", "BTCUSDT": "CROSSED"})
    dual_side_position: bool = False
    funding_rate: dict[str, Decimal] = field(
        default_factory=lambda: {"ETHUSDT": Decimal("0.0001"), "BTCUSDT": Decimal("0.0001")})
    fee_rate_taker: Decimal = Decimal("0.0005")
    fee_rate_maker: Decimal = Decimal("0.0002")
    spot_fee_rate: Decimal = Decimal("0.001")
    # A LIMIT order fills at most this much per crossing (partial fills); None: all of it.
    liquidity: dict[str, Decimal] = field(default_factory=dict)
    clock_skew_ms: int = 0
    # Bybit's unified account: spot trades settle in the same wallet as derivatives ("futures").
    unified: bool = False
    # Binance futures documents newClientOrderId as unique among open orders; "all" (default) rejects any reuse,
    # which is what a resend after an unknown outcome must hit. "open" follows the letter of the docs.
    duplicate_scope: str = "all"
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(8_389_765_000_000), repr=False)
    # Funds (money): the venue's name salts its deposit addresses (each venue has its own); a withdrawal's fee is
    # taken from the amount (Binance: the recipient gets amount − fee) or on top of it (Bybit, OKX: the recipient
    # gets the amount). `peers`: the other fake venues, so a completed withdrawal to one of their deposit
    # addresses lands there as a deposit. `withdrawal_delay_s`: complete each withdrawal by itself after that long
    # (None: only `complete_withdrawal` does).
    name: str = "binance"
    withdraw_fee_on_top: bool = False
    withdraw_rules: dict[tuple[str, str], tuple[Decimal, Decimal]] = field(
        default_factory=lambda: dict(WITHDRAW_RULES))
    peers: list[BinanceState] = field(default_factory=list, repr=False)
    withdrawal_delay_s: float | None = None
    # Bybit and OKX keep a separate funding account ("funding" wallet): deposits are credited there, and OKX
    # withdraws from there only (Bybit from either, by accountType). Moving between it and the trading (unified)
    # wallet is `move_funds`, keyed by the caller's id so that a repeat is recognised.
    funding_account: bool = False
    # The local world (tests/fakes/chain_bridge.py): `chain_address` is the venue's deposit address on the EVM chain
    # (network ETH, every asset: an anvil account), and with `chain_settles` a completed withdrawal is not credited to
    # a peer directly: the bridge pays it on the chain, and the peer is credited when the bridge sees the transfer.
    chain_address: str | None = None
    chain_settles: bool = False
    # Called with (execution type NEW|TRADE|CANCELED|EXPIRED, order, trade or None) on every order event: the
    # user-data stream subscribes here.
    listeners: list[Callable[[str, Order, Trade | None], None]] = field(default_factory=list, repr=False)
    mark_listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False)  # market streams
    spot_listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False)  # guest (mstreams)

    def _emit(self, execution: str, order: Order, trade: Trade | None = None) -> None:
        for listener in self.listeners:
            listener(execution, order, trade)

    # ---- clock and ids
    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_skew_ms

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def next_funding_time_ms(self) -> int:
        eight_h = 8 * 3600 * 1000
        return (self.now_ms() // eight_h + 1) * eight_h

    # ---- seeding and reading (the tests' side)
    def set_balance(self, asset: str, amount: Decimal, wallet: str = "futures") -> None:
        self.wallets[wallet][asset] = Decimal(amount)

    def balance(self, asset: str, wallet: str = "futures") -> Decimal:
        return self.wallets.get(wallet, {}).get(asset, ZERO)

    def drift_balance(self, asset: str, delta: Decimal, wallet: str = "futures") -> None:
        """The venue's balance changes without a trade (a fault the reconciler must see)."""
        self.wallets[wallet][asset] = self.balance(asset, wallet) + Decimal(delta)

    # ---- funds movements
    WALLET_OF_ACCOUNT = {"MAIN": "spot", "UMFUTURE": "futures"}

    def transfer(self, transfer_type: str, asset: str, amount: Decimal) -> Transfer:
        """Binance universal transfer, e.g. MAIN_UMFUTURE (spot → USDⓈ-M futures): done at once on the venue."""
        src, _, dst = transfer_type.partition("_")
        if src not in self.WALLET_OF_ACCOUNT or dst not in self.WALLET_OF_ACCOUNT:
            raise BinanceError(-1102, f"Invalid transfer type {transfer_type}")
        src_wallet, dst_wallet = self.WALLET_OF_ACCOUNT[src], self.WALLET_OF_ACCOUNT[dst]
        free = self.spot_free(asset) if src_wallet == "spot" else self.available_balance()
        if amount <= 0 or amount > free:
            raise BinanceError(-5002 if amount > 0 else -1102, "You have insufficient balance." if amount > 0
                               else "Illegal amount.")
        self.wallets[src_wallet][asset] = self.balance(asset, src_wallet) - amount
        self.wallets[dst_wallet][asset] = self.balance(asset, dst_wallet) + amount
        done = Transfer(str(self.next_id()), "transfer", asset, amount, self.now_ms(), "CONFIRMED",
                        transfer_type=transfer_type)
        self.transfers.append(done)
        return done

    def deposit_address(self, asset: str, network: str) -> str:
        if network == "ETH" and self.chain_address is not None:
            return self.chain_address
        # Deterministic per (venue, asset, network), like a venue's address that does not change between calls.
        salt = "" if self.name == "binance" else f"{self.name}:"
        digest = hashlib.sha256(f"{salt}{asset}/{network}".encode()).hexdigest()
        return ("T" + digest[:33]) if network == "TRX" else ("0x" + digest[:40])

    def credit_deposit(self, asset: str, amount: Decimal, network: str, tx_id: str, *, confirmed: bool = True
                       ) -> Transfer:
        """A deposit arrives (test hook); credited to the spot wallet (the unified one on Bybit/OKX) once
        confirmed (status 1)."""
        wallet = self.deposit_wallet
        dep = Transfer(str(self.next_id()), "deposit", asset, Decimal(amount), self.now_ms(), "1" if confirmed else "0",
                       network, self.deposit_address(asset, network), tx_id, wallet=wallet)
        if confirmed:
            self.wallets.setdefault(wallet, {})[asset] = self.balance(asset, wallet) + dep.amount
        self.transfers.append(dep)
        return dep

    @property
    def deposit_wallet(self) -> str:
        return "funding" if self.funding_account else self.spot_wallet

    def free(self, asset: str, wallet: str) -> Decimal:
        """What may leave `wallet`: the funding wallet's whole balance; the trading one's free spot balance (for the
        margin asset also within the available margin)."""
        if wallet == "funding":
            return self.balance(asset, "funding")
        free = self.spot_free(asset)
        return min(free, self.available_balance()) if asset == "USDT" and self.unified else free

    def move_funds(self, asset: str, amount: Decimal, src: str, dst: str, client_id: str) -> tuple[Transfer, bool]:
        """Between the funding wallet and the trading (unified) one, at once; (the transfer, whether it is new): a
        repeated `client_id` returns the first transfer and moves nothing."""
        for t in self.transfers:
            if t.kind == "transfer" and client_id and t.id == client_id:
                return t, False
        wallets = {"funding", self.spot_wallet}
        if {src, dst} != wallets:
            raise BinanceError(-1102, f"Invalid transfer {src} -> {dst}")
        if amount <= 0:
            raise BinanceError(-1102, "Illegal amount.")
        if amount > self.free(asset, src):
            raise BinanceError(-5002, "You have insufficient balance.")
        self.wallets.setdefault(src, {})[asset] = self.balance(asset, src) - amount
        self.wallets.setdefault(dst, {})[asset] = self.balance(asset, dst) + amount
        done = Transfer(client_id or str(self.next_id()), "transfer", asset, amount, self.now_ms(), "CONFIRMED",
                        transfer_type=f"{src}->{dst}")
        self.transfers.append(done)
        return done, True

    def withdraw(self, asset: str, amount: Decimal, network: str, address: str, wallet: str | None = None
                 ) -> Transfer:
        """Debits the spot (unified) wallet now; stays `4` (processing) until `complete_withdrawal` (the chain side
        is the test's), or `withdrawal_delay_s` has passed."""
        rule = self.withdraw_rules.get((asset, network))
        if rule is None:
            raise BinanceError(-4019, "Current network is not supported.")
        fee, minimum = rule
        if amount < minimum:
            raise BinanceError(-4022, f"The withdrawal amount must be greater than or equal to {minimum}.")
        debit = amount + fee if self.withdraw_fee_on_top else amount
        wallet = wallet or self.spot_wallet
        if debit > self.free(asset, wallet):
            raise BinanceError(-4026, "System abnormality. Insufficient balance.")
        self.wallets.setdefault(wallet, {})[asset] = self.balance(asset, wallet) - debit
        wd = Transfer(secrets.token_hex(16), "withdrawal", asset, amount, self.now_ms(), "4", network, address,
                      fee=fee, debited=debit, wallet=wallet)
        self.transfers.append(wd)
        if self.withdrawal_delay_s is not None:
            asyncio.get_running_loop().call_later(self.withdrawal_delay_s, self._complete_if_pending, wd.id)
        return wd

    def _complete_if_pending(self, withdrawal_id: str) -> None:
        if any(t.id == withdrawal_id and t.status == "4" and not (self.chain_settles and t.network == "ETH")
               for t in self.transfers):  # (paid on the chain: the bridge completes it)
            self.complete_withdrawal(withdrawal_id)

    def withdrawal(self, withdrawal_id: str) -> Transfer:
        for t in self.transfers:
            if t.kind == "withdrawal" and t.id == withdrawal_id:
                return t
        raise KeyError(withdrawal_id)

    def complete_withdrawal(self, withdrawal_id: str, tx_id: str = "") -> Transfer:
        """The chain confirmed it (→ 6, ok). Sent to a peer venue's deposit address, it lands there as a deposit
        of what the recipient gets (amount − fee on Binance, the amount where the fee is on top)."""
        t = self.withdrawal(withdrawal_id)
        t.status, t.tx_id = "6", tx_id or "0x" + hashlib.sha256(t.id.encode()).hexdigest()
        received = self.withdrawal_received(t)
        if self.chain_settles and t.network == "ETH":
            return t  # paid on the chain: the bridge credits the recipient venue when it sees the transfer
        for peer in self.peers:
            if peer is not self and peer.deposit_address(t.asset, t.network) == t.address:
                peer.credit_deposit(t.asset, received, t.network, t.tx_id)
        return t

    def withdrawal_received(self, t: Transfer) -> Decimal:
        """What the recipient of withdrawal `t` gets: the amount where the fee is on top, else amount − fee."""
        return t.amount if self.withdraw_fee_on_top else t.amount - t.fee

    def fail_withdrawal(self, withdrawal_id: str) -> Transfer:
        """The venue gave up on it (→ 5, failed): what it debited goes back to the wallet."""
        t = self.withdrawal(withdrawal_id)
        t.status = "5"
        self.wallets.setdefault(t.wallet, {})[t.asset] = self.balance(t.asset, t.wallet) + t.debited
        return t

    def position(self, symbol: str) -> Position | None:
        pos = self.positions.get(symbol)
        return pos if pos is not None and pos.amount != 0 else None

    def order_by_client_id(self, client_id: str, market: str | None = None) -> Order | None:
        for order in self.orders.values():
            if order.client_id == client_id and (market is None or order.market == market):
                return order
        return None

    def set_mark(self, symbol: str, mark: Decimal) -> None:
        self.marks[symbol] = Decimal(mark)
        for listener in self.mark_listeners:
            listener(symbol)
        self._match_resting("futures", symbol)

    def set_spot_price(self, symbol: str, price: Decimal) -> None:
        self.spot_prices[symbol] = Decimal(price)
        for listener in self.spot_listeners:  # guest (mstreams): the public spot streams
            listener(symbol)
        self._match_resting("spot", symbol)

    def income_of(self, income_type: str) -> list[Income]:
        return [i for i in self.income if i.income_type == income_type]

    def settle_funding(self, symbol: str, rate: Decimal | None = None) -> Income | None:
        """Pays funding on the open position at the mark: longs pay a positive rate (Binance's rule)."""
        rate = self.funding_rate[symbol] if rate is None else Decimal(rate)
        pos = self.position(symbol)
        if pos is None:
            return None
        amount = -(pos.amount * self.marks[symbol] * rate).quantize(Decimal("0.00000001"))
        self.wallets["futures"]["USDT"] = self.balance("USDT") + amount
        entry = Income(self.next_id(), symbol, "FUNDING_FEE", amount, "USDT", self.now_ms(), position=pos.amount,
                       price=self.marks[symbol], rate=rate, balance_after=self.balance("USDT"))
        self.income.append(entry)
        return entry

    # ---- futures account figures
    def unrealized_pnl(self, symbol: str) -> Decimal:
        pos = self.position(symbol)
        return ZERO if pos is None else pos.amount * (self.marks[symbol] - pos.entry_price)

    def position_initial_margin(self, symbol: str) -> Decimal:
        pos = self.position(symbol)
        return ZERO if pos is None else abs(pos.amount) * self.marks[symbol] / self.leverage[symbol]

    def maint_bracket(self, symbol: str, notional: Decimal) -> tuple[Decimal, Decimal]:
        """(maintenance ratio, maintenance amount 'cum') of the tier this notional falls in."""
        cum = ZERO
        chosen = (ZERO, ZERO)
        prev_ratio = None
        for floor, ratio, _lev in self.futures_markets[symbol].brackets:
            if prev_ratio is not None:
                cum += floor * (ratio - prev_ratio)
            prev_ratio = ratio
            if notional >= floor:
                chosen = (ratio, cum)
        return chosen

    def maint_margin(self, symbol: str) -> Decimal:
        pos = self.position(symbol)
        if pos is None:
            return ZERO
        notional = abs(pos.amount) * self.marks[symbol]
        ratio, cum = self.maint_bracket(symbol, notional)
        return notional * ratio - cum

    def liquidation_price(self, symbol: str) -> Decimal:
        """Binance's one-way cross formula for a single position (other positions' PnL ignored: a simplification)."""
        pos = self.position(symbol)
        if pos is None:
            return ZERO
        amt, side = abs(pos.amount), (1 if pos.amount > 0 else -1)
        ratio, cum = self.maint_bracket(symbol, amt * self.marks[symbol])
        wallet = self.balance("USDT")
        denom = amt * ratio - side * amt
        price = (wallet + cum - side * amt * pos.entry_price) / denom if denom else ZERO
        return max(price, ZERO)

    def open_order_margin(self, exclude: int | None = None) -> Decimal:
        total = ZERO
        for o in self.orders.values():
            if o.market == "futures" and o.is_open and o.order_id != exclude and not o.reduce_only:
                total += o.remaining * o.price / self.leverage[o.symbol]
        return total

    def available_balance(self) -> Decimal:
        wallet = self.balance("USDT")
        upnl = sum((self.unrealized_pnl(s) for s in self.futures_markets), ZERO)
        used = sum((self.position_initial_margin(s) for s in self.futures_markets), ZERO)
        return wallet + min(upnl, ZERO) - used - self.open_order_margin()

    # ---- spot account figures
    def spot_locked(self, asset: str) -> Decimal:
        locked = ZERO
        for o in self.orders.values():
            if o.market != "spot" or not o.is_open:
                continue
            m = self.spot_markets[o.symbol]
            if o.side == "BUY" and m.quote == asset:
                locked += o.remaining * o.price
            elif o.side == "SELL" and m.base == asset:
                locked += o.remaining
        return locked

    @property
    def spot_wallet(self) -> str:
        return "futures" if self.unified else "spot"

    def spot_free(self, asset: str) -> Decimal:
        return self.balance(asset, self.spot_wallet) - self.spot_locked(asset)

    # ---- orders
    def place_order(self, market: str, params: dict[str, str]) -> Order:
        markets = self.futures_markets if market == "futures" else self.spot_markets
        symbol = params.get("symbol", "")
        if symbol not in markets:
            raise BinanceError(-1121, "Invalid symbol.")
        m = markets[symbol]
        side, otype = params.get("side", "").upper(), params.get("type", "").upper()
        if side not in ("BUY", "SELL"):
            raise BinanceError(-1117, "Invalid side.")
        if otype not in ("MARKET", "LIMIT"):
            raise BinanceError(-1116, "Invalid orderType.")
        client_id = self._check_client_id(market, params.get("newClientOrderId") or f"fake{self.next_id()}")
        qty = _decimal_param(params, "quantity")
        price = _decimal_param(params, "price") if otype == "LIMIT" else ZERO
        self._check_filters(market, m, otype, qty, price)
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        tif = params.get("timeInForce", "GTC" if otype == "LIMIT" else "")
        if otype == "LIMIT" and "timeInForce" not in params:
            raise BinanceError(-1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
        now = self.now_ms()
        order = Order(self.next_id(), client_id, market, symbol, side, otype, qty, price, tif, reduce_only, now,
                      update_ms=now)
        ref = self.marks[symbol] if market == "futures" else self.spot_prices[symbol]
        crosses = otype == "MARKET" or (side == "BUY" and price >= ref) or (side == "SELL" and price <= ref)
        if market == "futures":
            self._check_futures_margin(order, m, ref)
        else:
            self._check_spot_funds(order, m, ref)
        if otype == "LIMIT" and tif == "GTX" and crosses:
            raise BinanceError(-5022, "Due to the order could not be executed as maker, the Post Only order will be "
                                      "rejected.")
        self.orders[order.order_id] = order
        self._emit("NEW", order)
        if crosses:
            # A taker order fills at the mark (the fake has no book depth); a crossing LIMIT at the better price.
            fill_price = ref if otype == "MARKET" else (min(price, ref) if side == "BUY" else max(price, ref))
            self._fill(order, order.remaining, fill_price, maker=False)
        # IOC/FOK never rest (a FOK that does not cross fills nothing); a market remainder (reduce-only larger
        # than the position) expires too.
        if order.is_open and (otype == "MARKET" or tif in ("IOC", "FOK")):
            order.status, order.update_ms = "EXPIRED", self.now_ms()
            self._emit("EXPIRED", order)
        return order

    def _check_client_id(self, market: str, client_id: str) -> str:
        if not CLIENT_ID_RE.match(client_id):
            raise BinanceError(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                      "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        for other in self.orders.values():
            if other.market == market and other.client_id == client_id and (
                    self.duplicate_scope == "all" or other.is_open):
                if market == "futures":
                    raise BinanceError(-4116, "ClientOrderId is duplicated.")
                raise BinanceError(-2010, "Duplicate order sent.")
        return client_id

    def cancel_order(self, market: str, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        order = self.find_order(market, symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        order.status = "CANCELED"
        order.update_ms = self.now_ms()
        self._emit("CANCELED", order)
        return order

    def find_order(self, market: str, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        for order in self.orders.values():
            if order.market != market or order.symbol != symbol:
                continue
            if (order_id is not None and order.order_id == order_id) or (
                    order_id is None and client_id is not None and order.client_id == client_id):
                return order
        return None

    def _check_filters(self, market: str, m: Market, otype: str, qty: Decimal, price: Decimal) -> None:
        if qty <= 0:
            raise BinanceError(-4003 if market == "futures" else -1013, "Quantity less than or equal to zero.")
        if qty % m.step != 0:
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        max_qty = m.market_max_qty if otype == "MARKET" else m.max_qty
        if qty < m.min_qty or qty > max_qty:
            if market == "spot":
                raise BinanceError(-1013, "Filter failure: LOT_SIZE")
            raise BinanceError(-4005 if qty > max_qty else -4003, "Quantity greater than max quantity."
                               if qty > max_qty else "Quantity less than min quantity.")
        if otype == "LIMIT":
            if price % m.tick != 0:
                raise BinanceError(-1111 if market == "futures" else -1013,
                                   "Precision is over the maximum defined for this asset." if market == "futures"
                                   else "Filter failure: PRICE_FILTER")
            if price < m.min_price or price > m.max_price:
                raise BinanceError(-4014 if market == "futures" else -1013, "Price not increased by tick size."
                                   if market == "futures" else "Filter failure: PRICE_FILTER")

    def _check_futures_margin(self, order: Order, m: Market, mark: Decimal) -> None:
        pos = self.position(order.symbol)
        signed = order.qty if order.side == "BUY" else -order.qty
        reduces = pos is not None and (pos.amount > 0) != (signed > 0)
        if order.reduce_only and not reduces:
            raise BinanceError(-2022, "ReduceOnly Order is rejected.")
        price = order.price if order.type == "LIMIT" else mark
        if not order.reduce_only and order.qty * price < m.min_notional:
            raise BinanceError(-4164, f"Order's notional must be no smaller than {m.min_notional} (unless you choose "
                                      "reduce only).")
        if reduces and pos is not None and order.qty <= abs(pos.amount):
            return  # closing needs no margin
        opening = order.qty - (abs(pos.amount) if reduces and pos is not None else ZERO)
        needed = opening * price / self.leverage[order.symbol] + opening * price * self.fee_rate_taker
        if needed > self.available_balance():
            raise BinanceError(-2019, "Margin is insufficient.")

    def _check_spot_funds(self, order: Order, m: Market, last: Decimal) -> None:
        price = order.price if order.type == "LIMIT" else last
        if order.qty * price < m.min_notional:
            raise BinanceError(-1013, "Filter failure: NOTIONAL")
        if order.side == "BUY" and order.qty * price > self.spot_free(m.quote):
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        if order.side == "SELL" and order.qty > self.spot_free(m.base):
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")

    def _match_resting(self, market: str, symbol: str) -> None:
        ref = self.marks[symbol] if market == "futures" else self.spot_prices[symbol]
        for order in sorted(self.orders.values(), key=lambda o: o.order_id):
            if order.market != market or order.symbol != symbol or not order.is_open or order.type != "LIMIT":
                continue
            if (order.side == "BUY" and ref <= order.price) or (order.side == "SELL" and ref >= order.price):
                cap = self.liquidity.get(symbol)
                qty = order.remaining if cap is None else min(order.remaining, cap)
                self._fill(order, qty, order.price, maker=True)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, *, maker: bool) -> None:
        now = self.now_ms()
        if order.market == "futures":
            pos = self.positions.setdefault(order.symbol, Position(order.symbol))
            if order.reduce_only:
                if pos.amount == 0 or (pos.amount > 0) == (order.side == "BUY"):
                    order.status, order.update_ms = "EXPIRED", now  # position gone: a reduce-only order dies
                    self._emit("EXPIRED", order)
                    return
                qty = min(qty, abs(pos.amount))
            rate = self.fee_rate_maker if maker else self.fee_rate_taker
            fee = (qty * price * rate).quantize(Decimal("0.00000001"))
            realized = _apply_fill(pos, qty if order.side == "BUY" else -qty, price)
            pos.update_ms = now
            self.wallets["futures"]["USDT"] = self.balance("USDT") + realized - fee
            fee_asset = "USDT"
            trade_id = self.next_id()
            if realized:
                self.income.append(Income(self.next_id(), order.symbol, "REALIZED_PNL", realized, "USDT", now,
                                          str(trade_id)))
            self.income.append(Income(self.next_id(), order.symbol, "COMMISSION", -fee, "USDT", now, str(trade_id)))
        else:
            m = self.spot_markets[order.symbol]
            quote = qty * price
            rate = self.spot_fee_rate
            spot = self.wallets[self.spot_wallet]
            if order.side == "BUY":  # the fee is taken from what is received (no BNB discount in the fake)
                fee, fee_asset = (qty * rate).quantize(Decimal("0.00000001"), ROUND_DOWN), m.base
                spot[m.quote] = spot.get(m.quote, ZERO) - quote
                spot[m.base] = spot.get(m.base, ZERO) + qty - fee
            else:
                fee, fee_asset = (quote * rate).quantize(Decimal("0.00000001"), ROUND_DOWN), m.quote
                spot[m.base] = spot.get(m.base, ZERO) - qty
                spot[m.quote] = spot.get(m.quote, ZERO) + quote - fee
            realized = ZERO
            trade_id = self.next_id()
        order.executed += qty
        order.cum_quote += qty * price
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        order.update_ms = now
        trade = Trade(trade_id, order.order_id, order.market, order.symbol, order.side, qty, price, fee, fee_asset,
                      realized, maker, now)
        self.trades.append(trade)
        self._emit("TRADE", order, trade)


def link_venues(*states: BinanceState) -> None:
    """Make the fake venues each other's peers: a withdrawal to a peer's deposit address lands there."""
    for state in states:
        state.peers = [other for other in states if other is not state]


def _apply_fill(pos: Position, delta: Decimal, price: Decimal) -> Decimal:
    """Moves a one-way position by `delta` at `price`; returns the realized PnL."""
    if pos.amount == 0 or (pos.amount > 0) == (delta > 0):
        total = abs(pos.amount) + abs(delta)
        pos.entry_price = (abs(pos.amount) * pos.entry_price + abs(delta) * price) / total
        pos.amount += delta
        return ZERO
    closed = min(abs(pos.amount), abs(delta))
    realized = closed * (price - pos.entry_price) * (1 if pos.amount > 0 else -1)
    pos.amount += delta
    if pos.amount == 0:
        pos.entry_price = ZERO
    elif (pos.amount > 0) == (delta > 0):  # flipped: the rest opens at the fill price
        pos.entry_price = price
    return realized


def _decimal_param(params: dict[str, str], name: str) -> Decimal:
    raw = params.get(name)
    if raw is None or raw == "":
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    try:
        return Decimal(raw)
    except ArithmeticError:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from None
