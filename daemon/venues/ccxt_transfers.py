"""Moving funds on the live venues through ccxt: between a venue's wallets, and from one venue to another.

**Between wallets.** Only Binance keeps spot and USDⓈ-M futures in separate wallets; `VenueFunds.move` is its
universal transfer (`transfer(asset, amount, "spot", "linear")`: USDⓈ-M), done at once by the venue. The books keep one
account per venue (the account report sums the wallets), so such a move changes nothing in them. Bybit's unified
account and OKX's trading account hold spot and perps in one wallet: there is nothing to move, and `move` says so
(`WalletMoveNotNeeded`) rather than calling the venue.

**Deposits and withdrawals.** `VenueFunds.deposit_address` is the venue's address for the chain the config names
(ccxt's unified network code: `ERC20`, `TRC20`, …). `VenueFunds.withdrawal_rule` is the venue's own fee and minimum
for that asset and chain, read from the venue (Binance `capital/config/getall`, Bybit `asset/coin/query-info`, OKX
`asset/currencies`) exactly from the raw payload, else from the config's figures. A withdrawal below the minimum is
refused before anything is sent (`WithdrawalRefused`, naming the minimum).

**In transit.** `TransferDesk` moves funds from one venue to another of ours (or out, to an address outside the
books), and carries each transfer through the books with a `TransitBook` (`daemon.domain.transit`): registered
before the venue is asked, debited into the `transit` account when the venue accepts the withdrawal (published as
a `BalancesChanged`, `Reason.VENUE_TRANSFER`, on the venue report channel), and landed at the destination when
the destination's deposit history shows it (matched by the chain's transaction id) — or back at the source if the
venue gave up. `TransferDesk.poll` follows every transfer in flight (`fetch_withdrawals` at the source,
`fetch_deposits` at the destination); `TransferDesk.allowances` is what the reconciler needs so that a transfer
still moving is not called a drift.

Fee conventions differ and matter for what the source debits: Binance takes the fee out of the amount (the
recipient gets amount − fee), Bybit and OKX add it on top (the recipient gets the amount). The fake follows the
same conventions.

**Funding accounts.** Bybit and OKX credit deposits to a funding account the trading (unified) account — the one the
account report and the reconciler see — does not include; OKX also withdraws only from it (Bybit withdraws from the
unified account: ccxt sends `accountType=UTA`). The desk sweeps: on OKX the debit into funding just before the
withdrawal (and back if the venue refuses it or gives it back), and on both a landed deposit into the trading account
before the landing is booked. Each sweep carries an idempotency key derived from the transfer (Bybit `transferId`,
OKX `clientId`), so a repeat after a lost answer moves nothing twice.

**Deposits from outside.** `TransferDesk.poll_deposits` books a deposit that is not the landing of one of our
transfers (an operator funding an account) as a `Reason.DEPOSIT` capital flow, once, so it is not mistaken for a
drift or for P&L.

**The wallet's transfers** (`daemon.ports.WalletRails`, for the live chain adapter). To a venue: the chain adapter sends
the transaction to `deposit_address` and, once it is mined, books its debit itself (wallet −amount, transit +amount);
`deposit_sent` registers it in the book as already debited (`TransitBook.carry`, source `wallet`), follows it in the
venue's deposit history by the chain transaction's hash, sweeps it into the trading account where the venue credits
funding, and books the landing (transit → venue). From a venue: `withdraw_to_wallet` is a withdrawal whose destination
is the `wallet` account at the wallet's address; its landing (transit → wallet, what the venue says it paid) is booked
when the venue reports it done with the chain's transaction id. Both wait for the landing (`landing_wait_s`, reading
every `landing_poll_s`) and, past the wait, raise `TransferStillMoving` (retryable) with the transfer still in the book,
followed by `poll` and by a repeat of the same call: nothing is sent twice (`withdraw_to_wallet` is idempotent on its
`ref`, `deposit_sent` on the transaction hash), and the reconciler's allowances excuse it in both the venue's and the
wallet's account until it has landed.

**After a restart** (`sight`, `open_at`; `daemon.live_opening` runs them). The books of the new run open on the
venues' reads, which hold some legs of a transfer in flight and not others: `sight` says where each transfer is as
the venues show it (never listed, debited, landed, given back), read before and after the accounts; `open_at`
brings the book there without booking a leg the reads already hold, and returns what is still moving for the
opening's `transit`. `adopt_deposit` carries a wallet transfer a killed run mined and never handed over.

A withdrawal whose request got no answer stays *requested* (the reconciler keeps excusing its debit) until `poll`
finds it in the venue's withdrawal history by address and amount, or `abandon_unanswered` gives up on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Any

import ccxt.async_support as ccxt
import structlog

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.domain.ids import VenueId
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, VenueReport
from daemon.domain.reconcile import ReportCount
from daemon.domain.transit import FINISHED, Allowance, TransitBook, TransitState
from daemon.domain.transit import Transfer as TransitTransfer
from daemon.errors import (
    NonRetryableVenueError,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueBadPayload,
    VenueError,
    VenueRejected,
)
from daemon.state_store import StateStore
from daemon.venues.ccxt_errors import Call, map_error
from daemon.venues.ccxt_parse import exact, family, parse_balances

NS_PER_MS = 1_000_000
STATE_KEY = "transfers"  # the desk's state file in the state store
FEE_ON_TOP = {"binance": False, "bybit": True, "okx": True}  # the recipient gets the amount (True) or amount − fee
# Bybit and OKX credit deposits to a funding account apart from the trading (unified) one, which is all the account
# report (and so the reconciler) sees; OKX also withdraws only from it. Bybit withdraws from the unified account
# (ccxt sends accountType=UTA for a unified account).
DEPOSITS_TO_FUNDING = {"binance": False, "bybit": True, "okx": True}
WITHDRAWS_FROM_FUNDING = {"binance": False, "bybit": False, "okx": True}
_FUNDING_ACCOUNTS = {"bybit": ("funding", "unified"), "okx": ("funding", "trading")}  # ccxt's names
_WALLETS = {"spot": "spot", "futures": "linear"}  # our wallet names → ccxt's Binance account names
_FAILED = frozenset({"failed", "canceled", "rejected"})


class WithdrawalRefused(VenueRejected):
    """A withdrawal that was not sent: below the venue's minimum, a chain the venue does not serve, no rule known."""


class WalletMoveNotNeeded(NonRetryableVenueError):
    """The venue keeps spot and derivatives in one wallet: there is nothing to move between them."""


class TransferStillMoving(RetryableVenueError):
    """A transfer of the wallet's has not landed within the desk's wait: it stays in the book (in transit, excused by
    the reconciler) and is still followed by `poll`; the same call again goes on waiting, it sends nothing anew."""

    def __init__(self, message: str, transfer_id: str, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s)
        self.transfer_id = transfer_id


class Stage(StrEnum):
    """Where a transfer is, as the venues (and the chain) show it at one moment."""

    UNSEEN = "unseen"  # asked for, and the source lists no such withdrawal: nothing was debited
    DEBITED = "debited"  # the source debited it; the destination has not credited it (into what its read holds)
    LANDED = "landed"  # credited at the destination (or, out of our books, done)
    RETURNED = "returned"  # the source gave it back


@dataclass(frozen=True, slots=True)
class Sighting:
    transfer_id: str
    stage: Stage
    venue_id: str | None = None  # the source's withdrawal id (a requested transfer the source lists)
    credited: Decimal | None = None  # what the destination credited (landed)
    txid: str | None = None  # its chain transaction, once the venues name it


@dataclass(frozen=True, slots=True)
class Sightings:
    """Every transfer in flight and the deposits from outside, at one moment: two equal sightings around a read
    mean that read holds exactly this (each stage only ever moves forward)."""

    transfers: tuple[Sighting, ...]
    outside_deposits: frozenset[str]  # `<venue>:deposit-<id>` keys credited, not yet booked


ZERO = Decimal(0)


def plain(amount: Decimal) -> str:
    """`amount` as a venue takes it: fixed-point, no exponent, no trailing zeros (`2.85977887`, `15000`)."""
    return format(amount.normalize(), "f")


def same_tx(a: str | None, b: str | None) -> bool:
    """Two spellings of one chain transaction hash (venues differ in case and in the `0x`)."""
    return bool(a) and bool(b) and str(a).lower().removeprefix("0x") == str(b).lower().removeprefix("0x")


@dataclass(frozen=True, slots=True)
class DepositAddress:
    venue: str
    asset: str
    network: str  # ccxt's unified code, as the config names it
    address: str
    tag: str | None


@dataclass(frozen=True, slots=True)
class WithdrawalRule:
    asset: str
    network: str
    fee: Decimal
    minimum: Decimal
    source: str  # "venue" (read from it) or "config"
    fee_on_top: bool  # the venue debits amount + fee (else the fee comes out of the amount)

    def debit(self, amount: Decimal) -> Decimal:
        return amount + self.fee if self.fee_on_top else amount

    def received(self, amount: Decimal) -> Decimal:
        return amount if self.fee_on_top else amount - self.fee


@dataclass(frozen=True, slots=True)
class VenueTransaction:
    """A withdrawal or deposit as the venue lists it, exactly."""

    transaction_id: str
    kind: str  # "withdrawal" | "deposit"
    asset: str
    amount: Decimal
    fee: Decimal | None
    status: str  # ccxt's unified: "pending" | "ok" | "failed" | "canceled" | "rejected"
    address: str | None
    txid: str | None
    ts_ms: int | None


# Raw fields of a venue's withdrawal/deposit record: (amount, fee).
_TX_FIELDS = {"binance": ("amount", "transactionFee"), "bybit": ("amount", "withdrawFee"), "okx": ("amt", "fee")}


def parse_transaction(tx: Mapping[str, Any], exchange_id: str) -> VenueTransaction:
    fam = family(exchange_id)
    info = tx.get("info") or {}
    amount_f, fee_f = _TX_FIELDS[fam]
    where = f"{exchange_id} {tx.get('type')} {tx.get('id')}"
    fee = info.get(fee_f)
    ts = tx.get("timestamp")
    return VenueTransaction(str(tx["id"]), str(tx.get("type") or ""), str(tx.get("currency") or ""),
                            exact(info.get(amount_f), f"{where} {amount_f}", tx.get("amount")),
                            exact(fee, f"{where} {fee_f}") if fee not in (None, "") else None,
                            str(tx.get("status") or "pending"), tx.get("addressTo") or tx.get("address"),
                            tx.get("txid") or None, int(ts) if isinstance(ts, int | float) else None)


log = structlog.get_logger()

# A withdrawal may debit this much less than planned, when the venue holds less (see TransferDesk._within_free).
WITHDRAWAL_SHORTFALL_FRACTION = Decimal("0.005")


class VenueFunds:
    """One venue's funds side: its ccxt clients by exchange id (`{"binanceusdm": …, "binance": …}`, `{"bybit": …}`)."""

    def __init__(self, venue: str, clients: Mapping[str, Any], *,
                 rules: Mapping[tuple[str, str], tuple[Decimal, Decimal]] | None = None) -> None:
        """`rules`: (asset, network) → (fee, minimum) from the config, used where the venue's cannot be read."""
        self.venue = venue
        self._clients = dict(clients)
        # Withdrawals and deposits go through the spot-side client: Binance's `binance`, else the one client.
        self._funds = self._clients.get("binance") or next(iter(self._clients.values()))
        self._fam = family(self._funds.id)
        self._config_rules = dict(rules or {})

    @property
    def fee_on_top(self) -> bool:
        return FEE_ON_TOP[self._fam]

    @property
    def deposits_to_funding(self) -> bool:
        return DEPOSITS_TO_FUNDING[self._fam]

    @property
    def withdraws_from_funding(self) -> bool:
        return WITHDRAWS_FROM_FUNDING[self._fam]

    # --- the funding account (Bybit, OKX) ----------------------------------------------------------------------

    async def sweep(self, asset: str, amount: Decimal, *, to_trading: bool, key: str) -> None:
        """Move `amount` between the funding account and the trading (unified) one. `key` makes the move
        idempotent on the venue (Bybit's `transferId`, OKX's `clientId`): a repeat after a lost answer is
        recognised, never moved twice."""
        if self._fam not in _FUNDING_ACCOUNTS:
            raise WalletMoveNotNeeded(f"{self.venue}: deposits and withdrawals use the spot wallet: nothing to sweep")
        funding, trading = _FUNDING_ACCOUNTS[self._fam]
        src, dst = (funding, trading) if to_trading else (trading, funding)
        # The amount exactly as booked, over ccxt's `currency_to_precision`: without the venue's currency list ccxt
        # rounds to the nearest step of the perp's lot (0.01 ETH), up as often as down, and a sweep rounded up is
        # refused for want of funds, one rounded down strands the rest in the funding account.
        if self._fam == "bybit":
            params = {"transferId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"basisd:{self.venue}:{key}")),
                      "amount": plain(amount)}
        else:
            params = {"clientId": hashlib.sha256(key.encode()).hexdigest()[:32], "amt": plain(amount)}
        try:
            await self._funds.transfer(asset, str(amount), src, dst, params)
        except ccxt.BadRequest as exc:
            if self._fam == "bybit" and "131214" in str(exc):
                return  # "TransferId exist": the first request was done
            raise self._error(exc, Call.WRITE, f"moving {amount} {asset} from {src} to {dst}") from None
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.WRITE, f"moving {amount} {asset} from {src} to {dst}") from None

    # --- between wallets --------------------------------------------------------------------------------------

    async def move(self, asset: str, amount: Decimal, from_wallet: str, to_wallet: str) -> str:
        """Move `amount` of `asset` between the venue's spot and futures wallets; the venue's transfer id."""
        if self._fam != "binance":
            raise WalletMoveNotNeeded(f"{self.venue}: spot and derivatives share one wallet (a unified account): "
                                      "there is nothing to move between them")
        if {from_wallet, to_wallet} != set(_WALLETS):
            raise NonRetryableVenueError(f"{self.venue}: wallets are spot and futures, not {from_wallet} → {to_wallet}")
        if amount <= 0:
            raise NonRetryableVenueError(f"{self.venue}: a move of {amount} {asset}")
        try:
            done = await self._funds.transfer(asset, str(amount), _WALLETS[from_wallet], _WALLETS[to_wallet],
                                              {"amount": plain(amount)})  # exact, as `sweep` says why
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.WRITE, f"moving {amount} {asset} from {from_wallet} to {to_wallet}") from None
        return str(done.get("id") or (done.get("info") or {}).get("tranId") or "")

    # --- deposits -----------------------------------------------------------------------------------------------

    async def deposit_address(self, asset: str, network: str) -> DepositAddress:
        """The venue's deposit address of `asset` on `network` (ccxt's code: ERC20, TRC20, …)."""
        try:
            if self._fam == "okx":  # ccxt's okx needs the currency list to name networks: read the payload itself
                chain = f"{asset}-{network}"
                rows = (await self._funds.private_get_asset_deposit_address({"ccy": asset})).get("data") or []
                row = next((r for r in rows if r.get("chain") == chain), None)
                if row is None:
                    raise WithdrawalRefused(f"{self.venue}: no {asset} deposit address on {network}",
                                            f"no deposit address on {network}")
                return DepositAddress(self.venue, asset, network, str(row["addr"]), row.get("tag") or None)
            found = await self._funds.fetch_deposit_address(asset, {"network": network})
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, f"reading the {asset} deposit address on {network}") from None
        if not found or not found.get("address"):
            raise VenueBadPayload(f"{self.venue}: no {asset} deposit address on {network} in the answer")
        return DepositAddress(self.venue, asset, network, str(found["address"]), found.get("tag") or None)

    # --- withdrawals ----------------------------------------------------------------------------------------------

    async def held(self, asset: str) -> Decimal | None:
        """What the withdrawing wallet holds of `asset` now, exactly from the payload (None: none listed)."""
        try:
            balance = await self._funds.fetch_balance()
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, f"reading the {asset} balance") from None
        return parse_balances(balance, self._funds.id).get(asset)

    async def withdrawal_rule(self, asset: str, network: str) -> WithdrawalRule:
        """The fee and minimum of withdrawing `asset` on `network`: the venue's, else the config's."""
        try:
            found = await self._venue_rule(asset, network)
        except (ccxt.BaseError, KeyError, TypeError, AttributeError, VenueBadPayload):
            found = None  # the venue's list cannot be read: the config's figures, if it has them
        if found is not None:
            return WithdrawalRule(asset, network, found[0], found[1], "venue", self.fee_on_top)
        configured = self._config_rules.get((asset, network))
        if configured is None:
            raise WithdrawalRefused(f"{self.venue}: no withdrawal fee and minimum known for {asset} on {network} (the "
                                    "venue lists none and the config gives none)", f"no rule for {asset} on {network}")
        return WithdrawalRule(asset, network, configured[0], configured[1], "config", self.fee_on_top)

    async def _venue_rule(self, asset: str, network: str) -> tuple[Decimal, Decimal] | None:
        client = self._funds
        where = f"{self.venue} {asset} {network} withdrawal"
        if self._fam == "binance":
            net = client.network_code_to_id(network, asset)
            for coin in await client.sapi_get_capital_config_getall():
                if coin.get("coin") == asset:
                    for row in coin.get("networkList") or []:
                        if row.get("network") == net:
                            return exact(row["withdrawFee"], f"{where} fee"), exact(row["withdrawMin"], f"{where} min")
            return None
        if self._fam == "bybit":
            net = client.network_code_to_id(network, asset)
            answer = await client.private_get_v5_asset_coin_query_info({"coin": asset})
            for coin in (answer.get("result") or {}).get("rows") or []:
                for row in coin.get("chains") or [] if coin.get("coin") == asset else []:
                    if row.get("chain") == net:
                        return exact(row["withdrawFee"], f"{where} fee"), exact(row["withdrawMin"], f"{where} min")
            return None
        answer = await client.private_get_asset_currencies({"ccy": asset})
        for row in answer.get("data") or []:
            if row.get("chain") == f"{asset}-{network}":
                fee = row.get("fee") if row.get("fee") not in (None, "") else row.get("minFee")
                return exact(fee, f"{where} fee"), exact(row["minWd"], f"{where} min")
        return None

    def refusal(self, rule: WithdrawalRule, amount: Decimal) -> str | None:
        if amount <= 0:
            return f"amount {amount} must be positive"
        if amount < rule.minimum:
            return (f"{amount} {rule.asset} is below {self.venue}'s minimum withdrawal of {rule.minimum} {rule.asset} "
                    f"on {rule.network}")
        if rule.received(amount) <= 0:
            return f"{amount} {rule.asset} does not cover the fee of {rule.fee} {rule.asset} on {rule.network}"
        return None

    async def withdraw(self, rule: WithdrawalRule, amount: Decimal, address: str, tag: str | None = None) -> str:
        """Send the withdrawal; the venue's withdrawal id. Refused (`WithdrawalRefused`) before anything is sent if
        it does not fit the rule; a request with no answer raises `UnknownOrderOutcome`."""
        refusal = self.refusal(rule, amount)
        if refusal is not None:
            raise WithdrawalRefused(f"{self.venue}: withdrawal refused: {refusal}", refusal)
        params: dict[str, Any] = {"network": rule.network}
        if tag:
            params["tag"] = tag
        try:
            sent = await self._funds.withdraw(rule.asset, str(amount), address, params)
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.WRITE, f"withdrawing {amount} {rule.asset} on {rule.network}") from None
        if not sent or not sent.get("id"):
            raise UnknownOrderOutcome(f"{self.venue}: the withdrawal of {amount} {rule.asset} was answered without an "
                                      "id: its fate is looked up in the withdrawal history")
        return str(sent["id"])

    async def withdrawals(self, asset: str, since_ms: int | None = None) -> list[VenueTransaction]:
        try:
            rows = await self._funds.fetch_withdrawals(asset, since_ms)
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, f"reading the {asset} withdrawals") from None
        return [parse_transaction({**r, "type": "withdrawal"}, self._funds.id) for r in rows]

    async def deposits(self, asset: str, since_ms: int | None = None) -> list[VenueTransaction]:
        try:
            rows = await self._funds.fetch_deposits(asset, since_ms)
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, f"reading the {asset} deposits") from None
        return [parse_transaction({**r, "type": "deposit"}, self._funds.id) for r in rows]

    def _error(self, exc: BaseException, call: Call, what: str) -> VenueError:
        error = map_error(exc, venue=self.venue, call=call,
                          headers=getattr(self._funds, "last_response_headers", None) or None)
        error.args = (f"{error} (while {what})",)
        return error


# --- from one venue to another: the transfer in the books ----------------------------------------------------------


class TransferDesk:
    """Every venue's funds and the one `TransitBook` that carries transfers between them (its single writer); the
    exchanges' side of the wallet's transfers too (`daemon.ports.WalletRails`)."""

    def __init__(self, venues: Mapping[str, VenueFunds], reports: LosslessChannel[VenueReport], clock: Clock,
                 book: TransitBook | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000), *,
                 deposits_since_ms: int | None = None, deposits_seen: Iterable[str] = (),
                 store: StateStore | None = None, network: str = "ERC20", landing_wait_s: float = 1800.0,
                 landing_poll_s: float = 5.0, count: ReportCount | None = None) -> None:
        """`deposits_since_ms`: deposits from outside are booked from there on (None: from now); `deposits_seen`:
        deposit report ids already booked (`<venue>:deposit-<id>`, from the journal). `store`: the transfers in
        flight survive a restart there (key `transfers`), written before a venue is asked and after each leg is
        published (a leg published again after a crash carries the same report id: the books book it once); a
        desk made with a store that holds state resumes it. `network`: the wallet's chain as ccxt names it (its
        transfers' deposit addresses and withdrawals); `landing_wait_s`, `landing_poll_s`: how long the wallet's
        transfers are waited for, and how often the venue is read meanwhile. `count`: the run's count of published
        reports per account (shared with the venues' adapters and the chain's): each leg is counted before it is
        sent, under every account it moves."""
        self._venues = dict(venues)
        self._reports = reports
        self._clock = clock
        self.book = book or TransitBook()
        self._wall_ms = wall_ms
        self._sequence = itertools.count(1)
        self._meta: dict[str, _Flight] = {}  # transfer id → what the venues need to follow it
        self._arrivals: dict[str, _Arrival] = {}  # the wallet's transfers to a venue: transfer id → how to find it
        self._deposits_since_ms = wall_ms() if deposits_since_ms is None else deposits_since_ms
        self._deposits_seen: set[str] = set(deposits_seen)
        self._our_txids: set[str] = set()  # the chain transactions of our own transfers: not deposits from outside
        self._refs: dict[str, str] = {}  # withdraw_to_wallet's ref → its transfer (while it may still land)
        self._landed: dict[str, str] = {}  # withdraw_to_wallet's ref → what reached the wallet (a repeat's answer)
        self._addresses: dict[tuple[str, str], DepositAddress] = {}  # (venue, asset) on `network`
        self._network = network
        self.landing_wait_s = landing_wait_s
        self.landing_poll_s = landing_poll_s
        self._lock = asyncio.Lock()  # one step at a time per transfer: `poll` and a waiting caller share the book
        self._store = store
        self._count = count
        saved = store.load(STATE_KEY) if store is not None else None
        if saved is not None:
            self._restore(saved)

    def _save(self) -> None:
        if self._store is None:
            return
        self._store.save(STATE_KEY, {
            "version": 1, "book": self.book.dump(), "deposits_since_ms": self._deposits_since_ms,
            "deposits_seen": sorted(self._deposits_seen), "our_txids": sorted(self._our_txids),
            "flights": {i: {"asset": f.rule.asset, "network": f.rule.network, "fee": str(f.rule.fee),
                            "minimum": str(f.rule.minimum), "source": f.rule.source, "fee_on_top": f.rule.fee_on_top,
                            "address": f.address, "sent_ms": f.sent_ms, "venue_id": f.venue_id}
                        for i, f in self._meta.items()},
            "arrivals": {i: {"txid": a.txid, "sent_ms": a.sent_ms} for i, a in self._arrivals.items()},
            "refs": dict(self._refs), "landed": dict(self._landed)})

    def _restore(self, saved: Mapping[str, Any]) -> None:
        self.book = TransitBook.load(list(saved.get("book") or []))
        self._deposits_since_ms = int(saved.get("deposits_since_ms") or self._deposits_since_ms)
        self._deposits_seen |= set(saved.get("deposits_seen") or ())
        self._our_txids |= set(saved.get("our_txids") or ())
        for transfer_id, f in (saved.get("flights") or {}).items():
            rule = WithdrawalRule(f["asset"], f["network"], Decimal(f["fee"]), Decimal(f["minimum"]), f["source"],
                                  bool(f["fee_on_top"]))
            self._meta[transfer_id] = _Flight(rule, f["address"], int(f["sent_ms"]), f.get("venue_id"))
        for transfer_id, a in (saved.get("arrivals") or {}).items():
            self._arrivals[transfer_id] = _Arrival(str(a["txid"]), int(a["sent_ms"]))
        self._refs.update(saved.get("refs") or {})
        self._landed.update(saved.get("landed") or {})
        # A fresh sequence must not reuse a pending request's id.
        self._sequence = itertools.count(len(self._meta) + len(self.book.transfers) + 1)

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(self._venues)

    def venue(self, name: str) -> VenueFunds:
        funds = self._venues.get(name)
        if funds is None:
            raise NonRetryableVenueError(f"no venue {name!r} to move funds on (known: {', '.join(self._venues)})")
        return funds

    def allowances(self, now_ns: int) -> tuple[Allowance, ...]:
        """For the reconciler (`ReconcilerActor(in_transit=desk.allowances)`): the venues' accounts and the wallet's."""
        return self.book.allowances(now_ns)

    async def withdraw(self, source: str, asset: str, amount: Decimal, network: str, *, to: str | None = None,
                       address: str | None = None, tag: str | None = None) -> TransitTransfer:
        """Withdraw `amount` of `asset` from `source` on `network`: to the venue `to` (its deposit address is asked
        for) or to `address` outside our books. Returns the transfer, in transit once the venue accepted it."""
        if (to is None) == (address is None):
            raise NonRetryableVenueError("a withdrawal goes either to one of our venues or to an address")
        if to is not None:
            landing = await self.venue(to).deposit_address(asset, network)
            address, tag = landing.address, landing.tag
        assert address is not None
        return await self._withdraw(source, asset, amount, network, to, address, tag)

    async def _withdraw(self, source: str, asset: str, amount: Decimal, network: str, destination: str | None,
                        address: str, tag: str | None, ref: str | None = None) -> TransitTransfer:
        funds = self.venue(source)
        rule = await funds.withdrawal_rule(asset, network)
        refusal = funds.refusal(rule, amount)
        if refusal is not None:
            raise WithdrawalRefused(f"{source}: withdrawal refused: {refusal}", refusal)
        # Registered before the venue is asked: from here its debit may show at any moment, and is not a drift.
        pending_id = f"{source}:request-{next(self._sequence)}-{self._wall_ms()}"
        self.book.request(pending_id, asset, source, destination, amount, rule.debit(amount))
        sent_ms = self._wall_ms()
        self._meta[pending_id] = _Flight(rule, address, sent_ms, None)
        if ref is not None:
            self._refs[ref] = pending_id
        self._save()  # before the venue is asked: after a crash, `poll` looks for it in the venue's history
        if funds.withdraws_from_funding:  # OKX: into the funding account first (the debit, as the report sees it)
            try:
                await funds.sweep(asset, rule.debit(amount), to_trading=False, key=f"{pending_id}-out")
            except UnknownOrderOutcome:
                raise
            except VenueError:
                self._abandon(pending_id)
                raise
        try:
            venue_id = await funds.withdraw(rule, amount, address, tag)
        except UnknownOrderOutcome:
            raise  # stays requested: `poll` looks for it in the venue's history
        except VenueError:
            if funds.withdraws_from_funding:  # refused: what was moved for it goes back to trading
                await funds.sweep(asset, rule.debit(amount), to_trading=True, key=f"{pending_id}-back")
            self._abandon(pending_id)
            raise
        return await self._accepted(pending_id, f"{source}:{venue_id}", _Flight(rule, address, sent_ms, venue_id))

    async def _accepted(self, pending_id: str, transfer_id: str, flight: _Flight) -> TransitTransfer:
        transfer = self.book.rename(pending_id, transfer_id)
        self._meta.pop(pending_id, None)
        self._meta[transfer_id] = flight
        self._refs = {r: transfer_id if t == pending_id else t for r, t in self._refs.items()}
        rule = flight.rule
        change = self.book.debit(transfer_id, rule.debit(transfer.requested), rule.fee, self._clock.now_ns())
        await self._send(transfer.source, change)
        found = self.book.get(transfer_id)
        assert found is not None
        return found

    # --- the wallet's transfers (daemon.ports.WalletRails) -------------------------------------------------------

    async def deposit_address(self, venue: str, asset: str) -> str:
        """`venue`'s deposit address for `asset` on the desk's network, read once (a venue's address is stable)."""
        found = self._addresses.get((venue, asset))
        if found is None:
            found = await self.venue(venue).deposit_address(asset, self._network)
            if found.tag:  # a plain transfer from the wallet cannot carry a memo: it would be lost at the venue
                raise NonRetryableVenueError(f"{venue}: the {asset} deposit address on {self._network} needs a tag, "
                                             "which a transfer from the wallet cannot carry")
            self._addresses[(venue, asset)] = found
        return found.address

    async def deposit_sent(self, venue: str, asset: str, amount: Decimal, tx_hash: str, ref: str) -> None:
        """The wallet's transfer `tx_hash` of `amount` to `venue` is mined and its debit booked by the chain adapter:
        carried in the book from here (source `wallet`), and waited for until `venue` credits it (the landing is
        booked here). Idempotent on `tx_hash`: a repeat (after `TransferStillMoving`) goes on waiting."""
        self.venue(venue)
        transfer_id = f"{WALLET}:{tx_hash}"
        if self.book.get(transfer_id) is None:
            if any(same_tx(tx_hash, t) for t in self._our_txids):
                return  # landed long enough ago to be forgotten by the book: booked once, not again
            self.book.carry(transfer_id, asset, WALLET, venue, amount)
            self._our_txids.add(tx_hash)  # its credit at the venue is this transfer's landing, not a deposit
            # Deposit records are looked for from a minute before now (the venues' clocks and ours differ).
            self._arrivals[transfer_id] = _Arrival(tx_hash, self._wall_ms())
            self._save()
        transfer = await self._wait_landed(transfer_id, f"{amount} {asset} sent to {venue} in {tx_hash} ({ref})")
        if transfer.state is not TransitState.LANDED:  # (a carried transfer can only land)
            raise NonRetryableVenueError(f"{venue}: the deposit {tx_hash} ended {transfer.state}")

    async def withdraw_to_wallet(self, venue: str, asset: str, amount: Decimal, address: str, ref: str) -> Decimal:
        """Withdraw `amount` of `asset` from `venue` on the desk's network to the wallet's `address` (destination: the
        `wallet` account); waits until the venue reports it paid (with its chain transaction) and returns what
        reached the wallet. Idempotent on `ref`: a repeat follows the first request (or returns its result), never
        sends a second one; a withdrawal the venue refused or gave back frees the ref (nothing is outstanding)."""
        if ref in self._landed:
            return Decimal(self._landed[ref])
        transfer_id = self._refs.get(ref)
        if transfer_id is None or self.book.get(transfer_id) is None:
            amount = await self._within_free(venue, asset, amount, ref)
            transfer = await self._withdraw(venue, asset, amount, self._network, WALLET, address, None, ref)
            transfer_id = transfer.transfer_id
        what = f"{amount} {asset} withdrawn from {venue} to the wallet ({ref})"
        transfer = await self._wait_landed(transfer_id, what)
        if transfer.state is not TransitState.LANDED:
            self._refs.pop(ref, None)
            self._save()
            raise VenueRejected(f"{venue}: the withdrawal of {amount} {asset} to the wallet ended {transfer.state}: "
                                "nothing reached the wallet", f"withdrawal {transfer.state}")
        return transfer.settled

    async def _within_free(self, venue: str, asset: str, amount: Decimal, ref: str) -> Decimal:
        """`amount`, or less by the shortfall when the venue holds a little less than the withdrawal debits — by at
        most `WITHDRAWAL_SHORTFALL_FRACTION`: a spot buy's fee charged in the asset bought, as all three venues do
        by default, leaves that much less than the strategy planned to withdraw. The caller gets what arrived and
        sizes the next step on it. A larger shortfall is asked for as planned, for the venue to refuse by name."""
        funds = self.venue(venue)
        try:
            free = await funds.held(asset)
            rule = await funds.withdrawal_rule(asset, self._network)
        except VenueError:
            return amount  # the balance cannot be read now: ask as planned (the venue refuses if it is short)
        needed = rule.debit(amount)
        if free is None or free >= needed or needed - free > amount * WITHDRAWAL_SHORTFALL_FRACTION:
            return amount
        # Down to 1e-8 (the venues' finest withdrawal step): a float balance must not round above what is held.
        capped = (amount - (needed - free)).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
        log.warning("withdrawal_capped_to_free", venue=venue, asset=asset, planned=str(amount), withdrawn=str(capped),
                    free=str(free), ref=ref, detail="the venue holds a fee's worth less than planned (a spot fee "
                                                    "charged in the asset): the whole free balance is withdrawn")
        return capped

    async def _wait_landed(self, transfer_id: str, what: str) -> TransitTransfer:
        """Step `transfer_id` on until it is finished, reading every `landing_poll_s`; a read that fails for a
        passing reason is retried within the wait. Past `landing_wait_s`: `TransferStillMoving`."""
        deadline = self._clock.now_ns() + int(self.landing_wait_s * 1e9)
        failed: RetryableVenueError | None = None
        while True:
            try:
                await self._advance(transfer_id)
                failed = None
            except RetryableVenueError as exc:
                failed = exc
            transfer = self.book.get(transfer_id)
            if transfer is None:
                raise NonRetryableVenueError(f"transfer {transfer_id} is not in the book (forgotten: {what})")
            if transfer.state in FINISHED:
                return transfer
            now = self._clock.now_ns()
            if now >= deadline:
                reason = f" (last read: {failed})" if failed is not None else ""
                raise TransferStillMoving(f"{what}: not landed after {self.landing_wait_s:g} s; still in transit and "
                                          f"followed{reason}", transfer_id, self.landing_poll_s)
            await self._clock.sleep_until(min(deadline, now + int(self.landing_poll_s * 1e9)))

    async def _advance(self, transfer_id: str) -> int:
        """One step of one transfer (under the desk's lock: `poll` and a waiting caller never book a leg twice)."""
        async with self._lock:
            transfer = self.book.get(transfer_id)
            if transfer is None or transfer.state in FINISHED:
                return 0
            arrival = self._arrivals.get(transfer_id)
            if arrival is not None:
                return await self._follow_arrival(transfer, arrival)
            flight = self._meta.get(transfer_id)
            if flight is None:
                return 0
            if transfer.state is TransitState.REQUESTED:
                return await self._adopt(transfer, flight)
            return await self._follow(transfer, flight)

    async def _follow_arrival(self, transfer: TransitTransfer, arrival: _Arrival) -> int:
        assert transfer.destination is not None
        landing = self.venue(transfer.destination)
        arrived = next((d for d in await landing.deposits(transfer.asset, arrival.sent_ms - 60_000)
                        if same_tx(d.txid, arrival.txid) and d.status == "ok"), None)
        if arrived is None:
            return 0  # not seen yet, or not confirmed yet by the venue
        if landing.deposits_to_funding:
            await landing.sweep(transfer.asset, arrived.amount, to_trading=True, key=f"{transfer.transfer_id}-in")
        change = self.book.land(transfer.transfer_id, arrived.amount, self._clock.now_ns())
        await self._send(transfer.destination, change)
        return 1

    # --- the opening read after a restart ------------------------------------------------------------------------

    def knows_deposit(self, tx_hash: str) -> bool:
        """Whether the wallet's transaction `tx_hash` is one of the desk's transfers (carried now, or landed)."""
        return self.book.get(f"{WALLET}:{tx_hash}") is not None or any(same_tx(tx_hash, t) for t in self._our_txids)

    def adopt_deposit(self, venue: str, asset: str, amount: Decimal, tx_hash: str, sent_ms: int) -> None:
        """A transfer of the wallet's to `venue` that a killed run sent and never handed to the desk (it died between
        the transaction and `deposit_sent`): carried from here as if it had, found at the venue by its hash."""
        self.venue(venue)
        transfer_id = f"{WALLET}:{tx_hash}"
        if self.knows_deposit(tx_hash):
            return
        self.book.carry(transfer_id, asset, WALLET, venue, amount)
        self._our_txids.add(tx_hash)
        self._arrivals[transfer_id] = _Arrival(tx_hash, sent_ms)
        self._save()
        log.warning("transfer_adopted_at_restart", transfer=transfer_id, venue=venue, asset=asset, amount=str(amount),
                    detail="the wallet's transfer was mined in a run that died before following it: followed now")

    async def resume_after_restart(self, booked: frozenset[str]) -> int:
        """After a restart whose books are the journal's (`daemon.journal_books`): every leg the desk's state says
        was booked and the journal does not hold (the run died between publishing it and its journaling) is
        published again under its own report id; a request the dead run made is adopted if its venue lists it (its
        debit booked) or else abandoned — nothing was debited, and on OKX what was moved into funding for it goes
        back; then one `poll` books what landed or came back while the daemon was down. How many legs were
        published again."""
        again = 0
        async with self._lock:
            for transfer in self.book.transfers:
                for venue, change in self._legs(transfer):
                    if f"{venue}:{change.ref}" not in booked:
                        await self._send(venue, change)
                        again += 1
                        log.warning("transfer_leg_published_again", transfer=transfer.transfer_id, leg=change.ref,
                                    detail="booked by the run that died, missing from its journal")
            for transfer in [t for t in self.book.pending() if t.state is TransitState.REQUESTED]:
                flight = self._meta.get(transfer.transfer_id)
                if flight is None or await self._adopt(transfer, flight):
                    continue
                funds = self.venue(transfer.source)
                if funds.withdraws_from_funding:
                    await self._sweep_back(funds, transfer.asset, flight.rule.debit(transfer.requested),
                                           transfer.transfer_id)
                self._abandon(transfer.transfer_id)
                log.warning("transfer_abandoned_at_restart", transfer=transfer.transfer_id, asset=transfer.asset,
                            source=transfer.source, destination=transfer.destination,
                            amount=str(transfer.requested),
                            detail="asked for by a run that died; the source lists no such withdrawal: nothing was "
                                   "debited, nothing is outstanding")
        await self.poll()
        return again

    def _legs(self, transfer: TransitTransfer) -> list[tuple[str, ChangeSet]]:
        """The legs the desk published for `transfer` so far, as it published them (venue, change set; report id =
        the change's ref): what its state implies. A wallet transfer's debit is the chain's report, not the desk's."""
        tid, asset, now = transfer.transfer_id, transfer.asset, self._clock.now_ns()
        if transfer.state in (TransitState.REQUESTED, TransitState.ABANDONED):
            return []
        legs: list[tuple[str, ChangeSet]] = []
        if tid not in self._arrivals and not tid.startswith(f"{WALLET}:"):
            legs.append((transfer.source, ChangeSet(
                Reason.VENUE_TRANSFER, now, (TokenChange(transfer.source, asset, -transfer.debited),
                                             TokenChange(TRANSIT, asset, transfer.carried)),
                ref=f"transfer-{tid}-debit")))
        out = TokenChange(TRANSIT, asset, -transfer.carried)
        if transfer.state is TransitState.LANDED:
            if transfer.destination is None:
                legs.append((transfer.source, ChangeSet(Reason.WITHDRAWAL, now, (out,), ref=f"transfer-{tid}-out")))
            else:
                venue = transfer.source if transfer.destination == WALLET else transfer.destination
                legs.append((venue, ChangeSet(Reason.VENUE_TRANSFER, now,
                                              (out, TokenChange(transfer.destination, asset, transfer.settled)),
                                              ref=f"transfer-{tid}-land")))
        elif transfer.state is TransitState.RETURNED:
            legs.append((transfer.source, ChangeSet(Reason.VENUE_TRANSFER, now,
                                                    (out, TokenChange(transfer.source, asset, transfer.settled)),
                                                    ref=f"transfer-{tid}-return")))
        return legs

    async def sight(self, deposit_assets: Iterable[str],
                    wallet_has: Callable[[str], Awaitable[bool]] | None = None) -> Sightings:
        """Where every transfer in flight is as the venues show it now, and the deposits from outside they credited —
        read, never booked: the opening read after a restart (`daemon.live_opening`) sights before and after reading
        the accounts, and a sighting that did not change in between is what those reads hold. A credit into a
        venue's funding account is swept into its trading account first (idempotent: the key the desk always uses),
        since only that one is in the account read. `wallet_has(txid)`: whether the wallet's chain has mined a
        transaction (a withdrawal to the wallet is in the wallet's read only once mined); None: the venue's word.
        `deposit_assets`: the assets whose deposits from outside are looked for (as `poll_deposits`)."""
        async with self._lock:
            seen = [await self._sight(t, wallet_has) for t in self.book.pending()]
            outside = await self._outside_deposits(tuple(deposit_assets))
        return Sightings(tuple(sorted(seen, key=lambda s: s.transfer_id)), outside)

    async def _sight(self, transfer: TransitTransfer, wallet_has: Callable[[str], Awaitable[bool]] | None) -> Sighting:
        tid = transfer.transfer_id
        arrival = self._arrivals.get(tid)
        if arrival is not None:  # the wallet's transfer to a venue: debited on chain; credited there?
            assert transfer.destination is not None
            credited = await self._credited(transfer.destination, transfer.asset, arrival.txid, arrival.sent_ms, tid)
            if credited is None:
                return Sighting(tid, Stage.DEBITED)
            return Sighting(tid, Stage.LANDED, credited=credited, txid=arrival.txid)
        flight = self._meta.get(tid)
        if flight is None:  # nothing to look it up by (a state file from before flights were kept): as the book says
            stage = Stage.DEBITED if transfer.state is TransitState.IN_TRANSIT else Stage.UNSEEN
            return Sighting(tid, stage)
        funds = self.venue(transfer.source)
        listed = await funds.withdrawals(transfer.asset, flight.sent_ms - 60_000)
        venue_id = flight.venue_id
        if transfer.state is TransitState.REQUESTED:
            known = {m.venue_id for m in self._meta.values() if m.venue_id is not None}
            mine = next((tx for tx in listed if tx.transaction_id not in known and tx.address == flight.address
                         and tx.amount == transfer.requested), None)
            if mine is None:  # never reached the venue: what an OKX withdrawal moved into funding goes back
                if funds.withdraws_from_funding:
                    await self._sweep_back(funds, transfer.asset, flight.rule.debit(transfer.requested), tid)
                return Sighting(tid, Stage.UNSEEN)
            venue_id = mine.transaction_id
        else:
            mine = next((tx for tx in listed if tx.transaction_id == venue_id), None)
            if mine is None:  # accepted (its debit is in the source's read), not in the listing now
                return Sighting(tid, Stage.DEBITED, venue_id)
        return await self._sight_listed(transfer, flight, mine, wallet_has)

    async def _sight_listed(self, transfer: TransitTransfer, flight: _Flight, mine: VenueTransaction,
                            wallet_has: Callable[[str], Awaitable[bool]] | None) -> Sighting:
        """A withdrawal the source lists (`mine`): given back, done, paid to the wallet, or credited at a venue."""
        tid, venue_id, funds = transfer.transfer_id, mine.transaction_id, self.venue(transfer.source)
        if mine.status in _FAILED:  # refunded at the source (OKX: into funding — back to trading)
            if funds.withdraws_from_funding:
                await self._sweep_back(funds, transfer.asset, flight.rule.debit(transfer.requested), tid)
            return Sighting(tid, Stage.RETURNED, venue_id)
        if transfer.destination is None:
            return Sighting(tid, Stage.LANDED if mine.status == "ok" else Stage.DEBITED, venue_id)
        if transfer.destination == WALLET:
            paid = mine.status == "ok" and bool(mine.txid) and (wallet_has is None or await wallet_has(str(mine.txid)))
            if not paid:
                return Sighting(tid, Stage.DEBITED, venue_id)
            return Sighting(tid, Stage.LANDED, venue_id, flight.rule.received(transfer.requested), mine.txid)
        if not mine.txid:
            return Sighting(tid, Stage.DEBITED, venue_id)
        credited = await self._credited(transfer.destination, transfer.asset, mine.txid, flight.sent_ms, tid)
        if credited is None:
            return Sighting(tid, Stage.DEBITED, venue_id, txid=mine.txid)
        return Sighting(tid, Stage.LANDED, venue_id, credited, mine.txid)

    async def _credited(self, venue: str, asset: str, txid: str, sent_ms: int, transfer_id: str) -> Decimal | None:
        """What `venue` credited for the chain transaction `txid` — in its trading account — or None (not yet)."""
        landing = self.venue(venue)
        arrived = next((d for d in await landing.deposits(asset, sent_ms - 60_000)
                        if same_tx(d.txid, txid) and d.status == "ok"), None)
        if arrived is None:
            return None
        if landing.deposits_to_funding:
            await landing.sweep(asset, arrived.amount, to_trading=True, key=f"{transfer_id}-in")
        return arrived.amount

    async def _sweep_back(self, funds: VenueFunds, asset: str, amount: Decimal, transfer_id: str) -> None:
        """Funding → trading for a withdrawal that did not go out (the key its own refusal would use). A venue that
        refuses it holds nothing of it in funding (the killed run died before moving it there)."""
        try:
            await funds.sweep(asset, amount, to_trading=True, key=f"{transfer_id}-back")
        except (VenueRejected, NonRetryableVenueError) as exc:
            log.info("transfer_sweep_back_refused", transfer=transfer_id, venue=funds.venue, error=str(exc),
                     detail="nothing of it in the funding account: the run died before moving it there")

    async def _outside_deposits(self, assets: tuple[str, ...]) -> frozenset[str]:
        """The deposits from outside the venues credited (swept into trading where they credit funding), by their
        key: in the account read once sighted before it, so `open_at` marks them booked (the opening holds them)."""
        found: set[str] = set()
        for name, funds in self._venues.items():
            for asset in assets:
                incoming = [t for t in self.book.pending() if t.destination == name and t.asset == asset
                            and t.transfer_id not in self._arrivals]
                if incoming:
                    continue  # cannot be told from a transfer of ours still moving: `poll_deposits` decides later
                for key, tx in await self._unbooked_deposits(name, funds, asset):
                    if self._ours(tx) or any(same_tx(tx.txid, a.txid) for a in self._arrivals.values()):
                        continue
                    if funds.deposits_to_funding:
                        await funds.sweep(asset, tx.amount, to_trading=True, key=f"deposit-{tx.transaction_id}")
                    found.add(key)
        return frozenset(found)

    def open_at(self, sightings: Sightings, now_ns: int) -> tuple[TokenChange, ...]:
        """Bring the book to `sightings` (what the opening read holds) without a leg to book — the opening has their
        effect — and return what is still moving, for the opening books: `transit +carried` per asset. A request
        the source never listed is abandoned (nothing was debited; its run is gone); outside deposits sighted are
        marked booked (the opening holds them)."""
        moving: dict[str, Decimal] = {}
        for s in sightings.transfers:
            transfer = self.book.get(s.transfer_id)
            if transfer is None or transfer.state in FINISHED:
                continue
            what = dict(transfer=s.transfer_id, asset=transfer.asset, source=transfer.source,
                        destination=transfer.destination, stage=s.stage.value)
            if s.stage is Stage.UNSEEN:
                self._abandon(s.transfer_id)
                log.warning("transfer_abandoned_at_restart", **what, amount=str(transfer.requested),
                            detail="asked for by a run that died; the source lists no such withdrawal: nothing was "
                                   "debited, nothing is outstanding")
                continue
            tid = s.transfer_id
            if transfer.state is TransitState.REQUESTED:  # adopted: the source's listing names it
                flight = self._meta[tid]
                assert s.venue_id is not None
                tid = f"{transfer.source}:{s.venue_id}"
                self.book.rename(s.transfer_id, tid)
                self._meta.pop(s.transfer_id)
                self._meta[tid] = _Flight(flight.rule, flight.address, flight.sent_ms, s.venue_id)
                self._refs = {r: tid if t == s.transfer_id else t for r, t in self._refs.items()}
                self.book.debit(tid, flight.rule.debit(transfer.requested), flight.rule.fee, now_ns)  # in the read
            carried = self.book.get(tid)
            assert carried is not None
            if s.txid:
                self._our_txids.add(s.txid)
            if s.stage is Stage.DEBITED:
                moving[carried.asset] = moving.get(carried.asset, ZERO) + carried.carried
                log.info("transfer_in_transit_at_restart", **what, carried=str(carried.carried),
                         detail="debited at its source, not yet credited: the books open with it in transit")
            elif s.stage is Stage.LANDED:
                credited = s.credited if s.credited is not None else carried.carried
                self.book.land(tid, credited, now_ns)  # both legs are in the read
                for ref, t in list(self._refs.items()):
                    if t == tid and carried.destination == WALLET:
                        self._landed[ref] = str(credited)
                log.info("transfer_landed_while_down", **what, credited=str(credited),
                         detail="it landed while the daemon was down: the opening read holds it")
            else:
                self.book.give_back(tid, carried.debited, now_ns)
                self._refs = {r: t for r, t in self._refs.items() if t != tid}
                log.info("transfer_returned_while_down", **what,
                         detail="the source gave it back while the daemon was down: the opening read holds it")
        self._deposits_seen |= sightings.outside_deposits
        # Nothing finished before this opening has a leg the new books still lack: no allowance lingers for it.
        self.book.prune(now_ns + self.book.linger_ns)
        live = {t.transfer_id for t in self.book.transfers}
        self._meta = {i: f for i, f in self._meta.items() if i in live}
        self._arrivals = {i: a for i, a in self._arrivals.items() if i in live}
        self._refs = {r: i for r, i in self._refs.items() if i in live}
        self._save()
        return tuple(TokenChange(TRANSIT, asset, amount) for asset, amount in sorted(moving.items()) if amount)

    # --- following transfers -------------------------------------------------------------------------------------

    async def poll(self) -> int:
        """Follow every transfer in flight: adopt a withdrawal whose request got no answer, land what the
        destination credited, take back what the source gave up on. How many transfers moved on. A venue that cannot
        be read does not hold up the others: its error is raised once every transfer has been looked at."""
        moved = 0
        failed: VenueError | None = None
        for transfer in self.book.pending():
            try:
                moved += await self._advance(transfer.transfer_id)
            except VenueError as exc:
                failed = failed or exc
        if self.book.prune(self._clock.now_ns()):
            self._meta = {i: f for i, f in self._meta.items() if self.book.get(i) is not None}
            self._arrivals = {i: a for i, a in self._arrivals.items() if self.book.get(i) is not None}
            self._refs = {r: i for r, i in self._refs.items() if self.book.get(i) is not None}
            self._save()
        if failed is not None:
            raise failed
        return moved

    def abandon_unanswered(self, transfer_id: str) -> None:
        """Give up on a withdrawal whose request got no answer and which the venue does not list: nothing was
        debited (an operator's decision, after looking at the venue)."""
        self._abandon(transfer_id)

    def _abandon(self, transfer_id: str) -> None:
        self.book.abandon(transfer_id, self._clock.now_ns())
        self._meta.pop(transfer_id, None)
        self._refs = {r: i for r, i in self._refs.items() if i != transfer_id}  # nothing outstanding: free the ref
        self._save()

    async def _adopt(self, transfer: TransitTransfer, flight: _Flight) -> int:
        funds = self.venue(transfer.source)
        known = {m.venue_id for m in self._meta.values() if m.venue_id is not None}
        for tx in await funds.withdrawals(transfer.asset, flight.sent_ms - 60_000):
            if tx.transaction_id not in known and tx.address == flight.address and tx.amount == transfer.requested:
                flight = _Flight(flight.rule, flight.address, flight.sent_ms, tx.transaction_id)
                await self._accepted(transfer.transfer_id, f"{transfer.source}:{tx.transaction_id}", flight)
                return 1
        return 0

    async def _follow(self, transfer: TransitTransfer, flight: _Flight) -> int:
        funds = self.venue(transfer.source)
        mine = next((tx for tx in await funds.withdrawals(transfer.asset, flight.sent_ms - 60_000)
                     if tx.transaction_id == flight.venue_id), None)
        if mine is None:
            return 0
        now = self._clock.now_ns()
        if mine.status in _FAILED:
            if funds.withdraws_from_funding:  # refunded to the funding account: back to trading
                await funds.sweep(transfer.asset, transfer.debited, to_trading=True,
                                  key=f"{transfer.transfer_id}-back")
            await self._send(transfer.source, self.book.give_back(transfer.transfer_id, transfer.debited, now))
            return 1
        if transfer.destination is None:
            if mine.status != "ok":
                return 0
            await self._send(transfer.source, self.book.land(transfer.transfer_id, transfer.carried, now))
            return 1
        if transfer.destination == WALLET:
            return await self._paid_to_wallet(transfer, mine, now)
        if not mine.txid:
            return 0  # not on the chain yet: nothing the destination could have credited
        self._our_txids.add(mine.txid)
        arrived = next((d for d in await self.venue(transfer.destination).deposits(transfer.asset, flight.sent_ms
                                                                                    - 60_000)
                        if d.txid == mine.txid and d.status == "ok"), None)
        if arrived is None:
            return 0
        landing = self.venue(transfer.destination)
        if landing.deposits_to_funding:  # into the trading account, where the account report (and trading) sees it
            await landing.sweep(transfer.asset, arrived.amount, to_trading=True, key=f"{transfer.transfer_id}-in")
        await self._send(transfer.destination, self.book.land(transfer.transfer_id, arrived.amount, now))
        return 1

    async def _paid_to_wallet(self, transfer: TransitTransfer, mine: VenueTransaction, now: int) -> int:
        """Paid when the venue says it is done and names its chain transaction (the books take the venue's word, as
        for any withdrawal; the reconciler holds the wallet's chain balance against them)."""
        if mine.status != "ok" or not mine.txid:
            return 0
        self._our_txids.add(mine.txid)
        change = self.book.land(transfer.transfer_id, transfer.carried, now)
        for ref, transfer_id in list(self._refs.items()):
            if transfer_id == transfer.transfer_id:
                self._landed[ref] = str(transfer.carried)
        await self._send(transfer.source, change)  # (saves the state, the ref's answer with it)
        return 1

    async def poll_deposits(self, assets: Iterable[str]) -> int:
        """Book the deposits from outside our books (an operator funding an account) as `Reason.DEPOSIT` capital
        flows, once each (`<venue>:deposit-<the venue's id>`), swept into the trading account where the venue
        credits a funding account; how many. A deposit is left for a later poll while a transfer of ours to that
        venue in that asset is still moving and the deposit cannot be told apart from it (no transaction id known
        yet): it is then either our landing or someone else's deposit, and a guess could book it twice."""
        booked = 0
        wanted = tuple(assets)
        for name, funds in self._venues.items():
            for asset in wanted:
                # The wallet's transfers name their chain transaction from the start: they never hide a deposit.
                incoming = [t for t in self.book.pending() if t.destination == name and t.asset == asset
                            and t.transfer_id not in self._arrivals]
                for key, tx in await self._unbooked_deposits(name, funds, asset):
                    if self._ours(tx):
                        self._deposits_seen.add(key)  # the landing of one of our transfers: booked by it
                        continue
                    if incoming:
                        continue  # cannot be told from a transfer still moving: the next poll decides
                    if funds.deposits_to_funding:
                        await funds.sweep(asset, tx.amount, to_trading=True, key=f"deposit-{tx.transaction_id}")
                    now = self._clock.now_ns()
                    ts = tx.ts_ms * NS_PER_MS if tx.ts_ms is not None else now
                    change = ChangeSet(Reason.DEPOSIT, ts, (TokenChange(name, asset, tx.amount),),
                                       ref=f"deposit-{tx.transaction_id}")
                    await self._publish(BalancesChanged(VenueId(name), change.ref, change, ts, now))
                    self._deposits_seen.add(key)
                    self._save()
                    booked += 1
        return booked

    async def _unbooked_deposits(self, name: str, funds: VenueFunds, asset: str) -> list[tuple[str, VenueTransaction]]:
        """`name`'s credited deposits of `asset` from the desk's cursor on that are not booked yet, with their keys."""
        found = []
        for tx in await funds.deposits(asset, self._deposits_since_ms):
            key = f"{name}:deposit-{tx.transaction_id}"
            if key in self._deposits_seen or tx.status != "ok":
                continue
            if tx.ts_ms is not None and tx.ts_ms < self._deposits_since_ms:
                continue
            found.append((key, tx))
        return found

    def _ours(self, tx: VenueTransaction) -> bool:
        """The chain transaction of one of our own transfers (its landing, not a deposit from outside)."""
        return tx.txid is not None and any(same_tx(tx.txid, ours) for ours in self._our_txids)

    async def _send(self, venue: str, change: ChangeSet) -> None:
        now = self._clock.now_ns()
        await self._publish(BalancesChanged(VenueId(venue), change.ref, change, change.ts_ns, now))
        self._save()  # after: a leg published again after a crash has the same report id, and is booked once

    async def _publish(self, report: BalancesChanged) -> None:
        if self._count is not None:
            self._count.count(report)  # before the send: the reconciler waits for it to be booked
        await self._reports.send(report)


@dataclass(frozen=True, slots=True)
class _Flight:
    rule: WithdrawalRule
    address: str
    sent_ms: int
    venue_id: str | None  # the source venue's withdrawal id, once known


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A transfer of the wallet's to a venue: found in the venue's deposit history by its chain transaction."""

    txid: str
    sent_ms: int


def venue_funds(venue: str, clients: Iterable[Any], **kwargs: Any) -> VenueFunds:
    """`VenueFunds` from the ccxt clients themselves (keyed by their exchange id)."""
    return VenueFunds(venue, {c.id: c for c in clients}, **kwargs)
