"""A simulated Ethereum wallet with AAVE v3, EtherFi staking and CEX deposit/withdrawal rails.

Each operation is one transaction: it either happens whole or not at all, costs gas (units per operation
from the project's data × the hour's gas price, paid in wallet ETH — for a USDT share class that is gas
debt), and is reported as one `BalancesChanged` on the venue report channel, the same ordered channel the
exchanges' fills use. AAVE positions move as scaled balances at the current indexes; staking mints at the
oracle rate; a DEX swap of the LST pays the configured fee. Flash-loan legs (flash borrow, stake, supply,
borrow, repay flash) are one atomic transaction, booked as its net effect. Without a flash loan the same moves
are sequential: a leverage loop stakes, supplies and borrows round after round (DOMAIN §3: it stops when the
next borrow would be below the minimum, so it undershoots the atomic leverage), and a deleverage withdraws
what the max LTV allows, swaps it and repays, round after round — every step its own transaction and gas.

The chain keeps its own record of the wallet (`daemon.venues.book`): a transaction the wallet cannot pay for
reverts (`NonRetryableVenueError`), and an exchange must accept its side of a transfer before the transaction
is reported. After each bar `check_liquidation` plays AAVE's liquidators: while the health factor, from the
oracle and the indexes, is below 1 they repay debt and seize collateral plus the liquidation bonus (close
factor 50 %, or 100 % at HF ≤ 0.95, as AAVE v3 does), each call reported as one LIQUIDATION transaction.

EtherFi rewards (ADR-18) are discrete events (`daemon.data.rewards`): the chain notes the wallet's
eETH-equivalent holding (free and supplied weETH × the oracle rate) at every hour, and at each payout credits
`per_eeth` × the hourly average over the event's period (KING_REWARD_DISTRIBUTION; the KING wrapper is
credited as the token it holds). The tokens are then sold at once, paying gas (SEASONAL_REWARDS_SOLD), for the
share class's currency (seeds, DOMAIN): for ETH through the token's WETH pool, for USDT on through the WETH/USDT
pool at its own price, each hop less the swap fee. So the strategy never carries EIGEN or ETHFI price risk, and
a USDT class never gains unhedged ETH from its rewards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.data.rewards import RewardEvent
from daemon.domain.aave import (
    EMODE_ETH_CORRELATED,
    ReserveParams,
    scaled_from_native,
    sequential_loop,
    simulate_liquidation,
)
from daemon.domain.ids import VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import AccountReport, BalancesChanged, VenueReport
from daemon.errors import NonRetryableVenueError
from daemon.venues.book import LiquidationEvent, Reading, record, worse

GAS_UNITS: dict[str, int] = {  # DOMAIN §3, from operation_gas_costs_summary
    "ATOMIC_ENTRY": 1_250_000, "ATOMIC_DELEVERAGE": 1_100_000, "STAKE": 150_000, "REDEEM_LST": 200_000,
    "SWAP": 180_000, "TRANSFER": 100_000, "SUPPLY": 250_000, "WITHDRAW": 220_000, "BORROW": 300_000,
    "REPAY": 280_000,
}
MAX_SEQUENTIAL_ROUNDS = 200  # a deleverage that needs more rounds than this is not converging: stop and say so
MIN_HF_BETWEEN_ROUNDS = Decimal("1.01")
GWEI = Decimal("1e-9")
WEI = Decimal("1e-18")
ZERO = Decimal(0)
HOUR_NS = 3_600 * 1_000_000_000
MAX_LIQUIDATIONS_PER_CHECK = 20  # liquidators act block after block; an hour has ~300 blocks


class ExchangeAccount(Protocol):
    """An exchange as the chain's deposit/withdrawal rail sees it."""

    def record_transfer(self, change: ChangeSet) -> None: ...

    def withdrawal_fee(self, asset: str) -> Decimal: ...


class SimulatedChain:
    venue = VenueId("chain")

    def __init__(self, clock: Clock, board: MarketBoard, reports: LosslessChannel[VenueReport],
                 exchanges: Mapping[str, ExchangeAccount], lst: str = "weETH", swap_fee_bps: Decimal = Decimal(20),
                 aave: ReserveParams = EMODE_ETH_CORRELATED, gas_debt_allowed: bool = True,
                 rewards: Sequence[RewardEvent] = (), currency: str = "ETH") -> None:
        self._clock = clock
        self._board = board
        self._reports = reports
        self._exchanges = exchanges
        self._lst = lst
        self._a_token = {"weETH": "aWeETH", "wstETH": "awstETH"}[lst]
        self._swap_fee = swap_fee_bps / Decimal(10_000)
        self._aave = aave
        self.book = Ledger((), gas_debt_allowed=gas_debt_allowed)  # the chain's own record of the wallet
        self.transactions = 0
        self.liquidations = 0
        self.worst_health_factor: Reading | None = None  # at each check, before acting: see check_liquidation
        self.liquidation_events: list[LiquidationEvent] = []
        self._rewards = deque(sorted((e for e in rewards if e.token in ("EIGEN", "ETHFI")), key=lambda e: e.payout_ns))
        self._eeth_by_hour: dict[int, Decimal] = {}
        self.rewards_paid: dict[str, Decimal] = {}
        if currency not in ("ETH", "USDT"):
            raise ValueError(f"rewards are sold for ETH or USDT, not {currency!r}")
        self._currency = currency  # the share class's: what reward tokens are sold for

    async def fetch_wallet(self) -> AccountReport:
        snap = self.book.snapshot()
        now = self._clock.now_ns()
        return AccountReport(WALLET, tuple((t, v) for a, t, v in snap.balances if a == WALLET), (),
                             self.transactions, now, now)

    def receive(self, change: ChangeSet) -> None:
        """Money arriving in the wallet from outside (the opening capital, a deposit)."""
        record(self.book, change, WALLET)

    # --- operations (one transaction each) ---------------------------------------------------------------

    async def transfer_usdt_to_cex(self, venue: str, amount: Decimal, ref: str) -> None:
        self._check_venue(venue)
        await self._book(Reason.VENUE_TRANSFER, "TRANSFER", ref, (
            TokenChange(WALLET, "USDT", -amount), TokenChange(venue, "USDT", amount)), exchange=venue)

    async def transfer_eth_to_cex(self, venue: str, amount_eth: Decimal, ref: str) -> None:
        self._check_venue(venue)
        await self._book(Reason.VENUE_TRANSFER, "TRANSFER", ref, (
            TokenChange(WALLET, "ETH", -amount_eth), TokenChange(venue, "ETH", amount_eth)), exchange=venue)

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal | None:
        # None: as asked less the venue's fee (the steps after it keep their sizes: the backtests' convention).
        await self._withdraw_from_cex(venue, "ETH", amount_eth, ref)
        return None

    async def withdraw_usdt_from_cex(self, venue: str, amount: Decimal, ref: str) -> Decimal | None:
        await self._withdraw_from_cex(venue, "USDT", amount, ref)
        return None

    async def _withdraw_from_cex(self, venue: str, asset: str, amount: Decimal, ref: str) -> None:
        """An exchange withdrawal costs no wallet gas: the exchange takes its own fixed fee from the amount, so
        `amount` leaves the account and `amount − fee` arrives (the fee is a transaction cost)."""
        self._check_venue(venue)
        fee = self._exchanges[venue].withdrawal_fee(asset)
        if fee >= amount:
            raise NonRetryableVenueError(f"{venue} withdrawal of {amount} {asset} does not cover its {fee} {asset} fee")
        await self._book(Reason.VENUE_TRANSFER, None, ref, (
            TokenChange(venue, asset, -amount), TokenChange(WALLET, asset, amount - fee)), exchange=venue)

    async def stake(self, amount_eth: Decimal, ref: str) -> None:
        minted = amount_eth / self._oracle()
        await self._book(Reason.STAKE_DEPOSIT, "STAKE", ref, (
            TokenChange(WALLET, "ETH", -amount_eth), TokenChange(WALLET, self._lst, minted)))

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None:
        """Flash-borrow WETH, stake everything, supply the LST, borrow the flash amount back, repay."""
        if supply_eth - borrow_eth - equity_eth > Decimal("1e-12") * supply_eth:
            raise NonRetryableVenueError(f"atomic entry does not balance: supply {supply_eth} ≠ equity "
                                         f"{equity_eth} + borrow {borrow_eth}")
        lst = supply_eth / self._oracle()
        equity = (TokenChange(WALLET, "ETH", -equity_eth),) if equity_eth else ()  # none when re-levering
        await self._book(Reason.ATOMIC_LEVERAGE_EXECUTION, "ATOMIC_ENTRY", ref, (
            *equity,
            TokenChange(WALLET, self._a_token, scaled_from_native(lst, self._index(self._lst))),
            TokenChange(WALLET, "variableDebtWETH", scaled_from_native(borrow_eth, self._debt_index())),
        ))

    async def atomic_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                free_eth: Decimal | None = None) -> Decimal:
        """Flash-repay debt, withdraw collateral, swap it to ETH on a DEX (paying the fee), repay the flash;
        whatever ETH is left lands in the wallet. Returns it.

        `free_eth` (a margin top-up) is the ETH that must land: both legs are scaled by the same factor, the LTV
        `repay_eth / withdraw_eth` kept, until exactly that is left after the swap fee — as a deleverage contract
        sized by its swap quote does — but never past the position. (Unscaled, a top-up at λ ≈ 0.91 landed
        fee × C / (C − D) ≈ 2.2 % short of its target.) Without it (an exit's slice) the legs are as given, and the
        fee comes out of what is freed: the long shrinks by its slice exactly, as the hedge does."""
        net = withdraw_eth * (1 - self._swap_fee) - repay_eth
        if free_eth is not None and free_eth > 0 and net > 0:
            collateral, debt = self._aave_position()
            scale = free_eth / net
            scale = min(scale, collateral / withdraw_eth, debt / repay_eth if repay_eth > 0 else scale)
            repay_eth, withdraw_eth = repay_eth * scale, withdraw_eth * scale
        return await self._deleverage(repay_eth, withdraw_eth, ref)

    async def _deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str) -> Decimal:
        """`atomic_deleverage` exactly as sized: repay `repay_eth`, withdraw and swap `withdraw_eth`."""
        lst = withdraw_eth / self._oracle()
        received = withdraw_eth * (1 - self._swap_fee)
        freed = received - repay_eth
        if freed < 0:
            raise NonRetryableVenueError(f"deleverage withdraws {withdraw_eth} ETH of collateral, too little to "
                                         f"repay {repay_eth} after the swap fee")
        await self._book(Reason.ATOMIC_DELEVERAGE_EXECUTION, "ATOMIC_DELEVERAGE", ref, (
            TokenChange(WALLET, self._a_token, -self._all_if_whole(self._a_token,
                                                                   scaled_from_native(lst, self._index(self._lst)))),
            TokenChange(WALLET, "variableDebtWETH",
                        -self._all_if_whole("variableDebtWETH", scaled_from_native(repay_eth, self._debt_index()))),
            TokenChange(WALLET, "ETH", freed),
        ))
        return freed

    def _all_if_whole(self, token: str, scaled: Decimal) -> Decimal:
        """`scaled`, or all that is held when it is that within a wei: an unwind of the whole position asks for all
        of it (AAVE's `type(uint256).max` for withdraw and repay), and must not leave 1e-26 of dust because the ETH
        amounts it was sized in went through the oracle rate and the index and back."""
        held = self.book.balance(WALLET, token)
        return held if held > 0 and abs(held - scaled) <= WEI else scaled

    async def sequential_leverage_entry(self, equity_eth: Decimal, target_ltv: Decimal, min_borrow_eth: Decimal,
                                        max_iterations: int | None, ref: str) -> int:
        """The loop without a flash loan: stake, supply, borrow λ × the supply, and again with the borrowed
        WETH, until the next borrow would be below `min_borrow_eth` (or `max_iterations` borrows). Every step is
        a transaction of its own. Returns the number of transactions."""
        plan = sequential_loop(equity_eth, target_ltv, min_borrow_eth, max_iterations)
        sent = 0
        for step in plan.iterations:
            oracle = self._oracle()
            lst = step.supplied / oracle
            await self._book(Reason.STAKE_DEPOSIT, "STAKE", f"{ref}/{step.index}", (
                TokenChange(WALLET, "ETH", -step.supplied), TokenChange(WALLET, self._lst, lst)))
            await self._book(Reason.COLLATERAL_SUPPLIED, "SUPPLY", f"{ref}/{step.index}", (
                TokenChange(WALLET, self._lst, -lst),
                TokenChange(WALLET, self._a_token, scaled_from_native(lst, self._index(self._lst)))))
            sent += 2
            if step.borrowed > 0:
                await self._book(Reason.LOAN_CREATED, "BORROW", f"{ref}/{step.index}", (
                    TokenChange(WALLET, "variableDebtWETH", scaled_from_native(step.borrowed, self._debt_index())),
                    TokenChange(WALLET, "ETH", step.borrowed)))
                sent += 1
        return sent

    async def sequential_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                    redeem: bool = False) -> Decimal:
        """The deleverage without a flash loan: withdraw as much collateral as the max LTV allows, turn it into
        ETH (a DEX swap, or the protocol's redemption when `redeem`), repay debt with it; again until
        `repay_eth` is repaid, then withdraw the rest of `withdraw_eth`. Returns the ETH left in the wallet."""
        threshold = self._aave.liquidation_threshold
        to_repay, to_withdraw, freed = repay_eth, withdraw_eth, ZERO
        for round_ in range(1, MAX_SEQUENTIAL_ROUNDS + 1):
            if to_withdraw <= 0:
                return freed
            collateral, debt = self._aave_position()
            # AAVE lets a withdrawal through while the health factor stays ≥ 1; keep a small floor above that.
            # (This is the exposure a sequential deleverage carries between its transactions.)
            room = collateral - debt * MIN_HF_BETWEEN_ROUNDS / threshold if debt > 0 else collateral
            w = min(to_withdraw, room)
            if w <= 0:
                raise NonRetryableVenueError(f"sequential deleverage is stuck at HF {threshold * collateral / debt:.4f}"
                                             f": no collateral can be withdrawn keeping HF ≥ {MIN_HF_BETWEEN_ROUNDS}")
            lst = w / self._oracle()
            tag = f"{ref}/{round_}"
            await self._book(Reason.COLLATERAL_WITHDRAWN, "WITHDRAW", tag, (
                TokenChange(WALLET, self._a_token, -scaled_from_native(lst, self._index(self._lst))),
                TokenChange(WALLET, self._lst, lst)))
            eth = await (self.redeem_lst(lst, tag) if redeem else self.swap_lst_to_eth(lst, tag))
            to_withdraw -= w
            repay = min(eth, to_repay, debt)
            if repay > 0:
                await self._book(Reason.LOAN_REPAID, "REPAY", tag, (
                    TokenChange(WALLET, "ETH", -repay),
                    TokenChange(WALLET, "variableDebtWETH", -scaled_from_native(repay, self._debt_index()))))
                to_repay -= repay
            freed += eth - repay
            if to_repay > 0 and to_withdraw <= 0:
                to_withdraw = to_repay  # the swap fees ate into what was planned: withdraw enough to finish
        raise NonRetryableVenueError(f"sequential deleverage did not finish in {MAX_SEQUENTIAL_ROUNDS} rounds "
                                     f"({to_repay} ETH of debt still to repay)")

    async def atomic_reduce_debt(self, repay_eth: Decimal, ref: str) -> None:
        """REDUCE_LTV as one transaction: flash-borrow WETH, repay debt, withdraw enough collateral to cover the
        flash after the swap fee, swap it, repay the flash. Frees nothing; LTV falls."""
        withdraw = repay_eth / (1 - self._swap_fee)
        await self._deleverage(repay_eth, withdraw, ref)

    async def supply(self, asset: str, amount: Decimal, ref: str) -> None:
        token, a_token, reserve = {"USDT": ("USDT", "aUSDT", "USDT"), "WETH": ("ETH", "aWETH", "WETH")}[asset]
        await self._book(Reason.COLLATERAL_SUPPLIED, "SUPPLY", ref, (
            TokenChange(WALLET, token, -amount),
            TokenChange(WALLET, a_token, scaled_from_native(amount, self._index(reserve)))))

    async def withdraw(self, asset: str, amount: Decimal, ref: str) -> None:
        """Withdraw `amount` of the asset's value (for an LST: in ETH, as the strategy values collateral)."""
        if asset == self._lst:
            lst = amount / self._oracle()
            await self._book(Reason.COLLATERAL_WITHDRAWN, "WITHDRAW", ref, (
                TokenChange(WALLET, self._a_token, -scaled_from_native(lst, self._index(self._lst))),
                TokenChange(WALLET, self._lst, lst)))
            return
        token, a_token, reserve = {"USDT": ("USDT", "aUSDT", "USDT"), "WETH": ("ETH", "aWETH", "WETH")}[asset]
        await self._book(Reason.COLLATERAL_WITHDRAWN, "WITHDRAW", ref, (
            TokenChange(WALLET, a_token, -scaled_from_native(amount, self._index(reserve))),
            TokenChange(WALLET, token, amount)))

    async def swap_lst_to_eth(self, amount_lst: Decimal, ref: str) -> Decimal:
        """Fast exit: sell the LST on a DEX at the oracle rate less the fee. Returns the ETH received."""
        received = amount_lst * self._oracle() * (1 - self._swap_fee)
        await self._book(Reason.TRADE_EXECUTED, "SWAP", ref, (
            TokenChange(WALLET, self._lst, -amount_lst), TokenChange(WALLET, "ETH", received)))
        return received

    async def redeem_lst(self, amount_lst: Decimal, ref: str) -> Decimal:
        """Slow exit: redeem at the protocol's rate, no swap fee. (The protocol's waiting period, about 7 days
        for EtherFi, is not simulated yet: the ETH arrives at once.)"""
        received = amount_lst * self._oracle()
        await self._book(Reason.STAKE_WITHDRAWAL, "REDEEM_LST", ref, (
            TokenChange(WALLET, self._lst, -amount_lst), TokenChange(WALLET, "ETH", received)))
        return received

    async def swap_eth_to_usdt(self, amount_eth: Decimal, ref: str) -> None:
        price = self._board.dex_price("ETH")  # the pool's own price: the gap to the reference is a cost
        if price is None:
            raise NonRetryableVenueError("no ETH price yet")
        usdt = amount_eth * price * (1 - self._swap_fee)
        await self._book(Reason.TRADE_EXECUTED, "SWAP", ref, (
            TokenChange(WALLET, "ETH", -amount_eth), TokenChange(WALLET, "USDT", usdt)))

    # --- helpers ---------------------------------------------------------------------------------------

    async def _book(self, reason: Reason, gas_op: str | None, ref: str, changes: tuple[TokenChange, ...],
                    exchange: str | None = None) -> None:
        now = self._clock.now_ns()
        if gas_op is not None:
            gwei = self._board.gas_gwei if self._board.gas_gwei is not None else Decimal(10)
            changes = (*changes, TokenChange(WALLET, "ETH", -(Decimal(GAS_UNITS[gas_op]) * gwei * GWEI)))
        change = ChangeSet(reason, now, changes, ref=ref)
        # Whichever side pays goes first, so that a refusal leaves both books untouched (the receiving side
        # cannot refuse a credit).
        paying_exchange = exchange is not None and any(t.account == exchange and t.delta < 0 for t in changes)
        if exchange is not None and paying_exchange:
            self._exchanges[exchange].record_transfer(change)
        record(self.book, change, WALLET)
        if exchange is not None and not paying_exchange:
            self._exchanges[exchange].record_transfer(change)
        await self._report(change)

    async def _report(self, change: ChangeSet) -> None:
        self.transactions += 1
        now = self._clock.now_ns()
        await self._reports.send(BalancesChanged(self.venue, f"tx{self.transactions}", change, now, now))

    # --- EtherFi rewards --------------------------------------------------------------------------------

    async def pay_rewards(self) -> int:
        """Note this hour's eETH-equivalent holding; pay and sell every reward due. Returns events paid."""
        now = self._clock.now_ns()
        if self._lst == "weETH" and (self._rewards or self._eeth_by_hour):
            held = self.book.balance(WALLET, "weETH")
            scaled = self.book.balance(WALLET, self._a_token)
            if held or scaled:
                native = held + (scaled * self._index(self._lst) if scaled else ZERO)
                self._eeth_by_hour[now // HOUR_NS] = native * self._oracle()
        paid = 0
        while self._rewards and self._rewards[0].payout_ns <= now:
            event = self._rewards[0]
            price = self._board.prices.get(event.token)
            eth_price = self._board.prices.get("ETH")
            dex_eth = self._board.dex_price("ETH")
            if price is None or eth_price is None or dex_eth is None:
                break  # no market for the token yet: paid when there is one, never dropped
            self._rewards.popleft()
            first, last = event.period_start_ns // HOUR_NS, event.period_end_ns // HOUR_NS
            average = sum((self._eeth_by_hour.get(h, ZERO) for h in range(first, last)), ZERO) / max(1, last - first)
            tokens = event.tokens_for(average)
            if tokens <= 0:
                continue
            ref = f"reward-{event.token}-{event.payout_ns}"
            await self._book(Reason.KING_REWARD_DISTRIBUTION, None, ref, (TokenChange(WALLET, event.token, tokens),))
            eth = tokens * price / eth_price * (1 - self._swap_fee)  # the token's WETH pool (price in ETH)
            proceeds = eth if self._currency == "ETH" else eth * dex_eth * (1 - self._swap_fee)
            await self._book(Reason.SEASONAL_REWARDS_SOLD, "SWAP", ref + "-sold", (
                TokenChange(WALLET, event.token, -tokens), TokenChange(WALLET, self._currency, proceeds)))
            self.rewards_paid[event.token] = self.rewards_paid.get(event.token, ZERO) + tokens
            paid += 1
        oldest = self._rewards[0].period_start_ns // HOUR_NS if self._rewards else now // HOUR_NS
        for hour in [h for h in self._eeth_by_hour if h < oldest]:
            del self._eeth_by_hour[hour]  # no pending event averages over it any more
        return paid

    # --- AAVE liquidation -----------------------------------------------------------------------------------

    def health_factor(self) -> Decimal:
        """The wallet's AAVE health factor now, from the chain's own records (infinite without debt)."""
        collateral, debt = self._aave_position()
        return self._aave.liquidation_threshold * collateral / debt if debt else Decimal("Infinity")

    def _aave_position(self) -> tuple[Decimal, Decimal]:
        """(collateral, debt) in ETH: the LST collateral A·L·o and the WETH debt d·B."""
        scaled_collateral = self.book.balance(WALLET, self._a_token)
        scaled_debt = self.book.balance(WALLET, "variableDebtWETH")
        if not scaled_debt:
            return scaled_collateral, ZERO
        return scaled_collateral * self._index(self._lst) * self._oracle(), scaled_debt * self._debt_index()

    async def check_liquidation(self) -> int:
        """Liquidate while HF < 1, as liquidators would; return how many liquidation calls were made.

        The health factor is read first and the lowest kept with its time (`worst_health_factor`): the oracle and
        indexes the liquidators act on, before they do and before the strategy sees the bar and deleverages."""
        collateral, debt = self._aave_position()
        if debt:
            self.worst_health_factor = worse(self.worst_health_factor,
                                             self._aave.liquidation_threshold * collateral / debt, self._clock.now_ns())
        calls = 0
        while calls < MAX_LIQUIDATIONS_PER_CHECK:
            collateral, debt = self._aave_position()
            if not debt:
                break
            result = simulate_liquidation(collateral, debt, self._aave)
            if not result.liquidated:
                break
            now = self._clock.now_ns()
            ref = f"aave-liquidation-{self.liquidations + 1}"
            seized_lst = result.collateral_seized / self._oracle()
            change = ChangeSet(Reason.LIQUIDATION, now, (
                TokenChange(WALLET, self._a_token, -scaled_from_native(seized_lst, self._index(self._lst))),
                TokenChange(WALLET, "variableDebtWETH", -scaled_from_native(result.debt_repaid, self._debt_index())),
            ), ref=ref)
            record(self.book, change, WALLET)
            self.liquidations += 1
            self.liquidation_events.append(LiquidationEvent("aave_v3", now, "health_factor", result.hf_before,
                                                            result.debt_repaid, result.loss, "ETH"))
            calls += 1
            await self._report(change)
        return calls

    def _check_venue(self, venue: str) -> None:
        if venue not in self._exchanges:
            raise NonRetryableVenueError(f"no exchange account {venue!r} to transfer to")

    def oracle_rate(self) -> Decimal:
        return self._oracle()

    def _oracle(self) -> Decimal:
        rate = self._board.lst.get(self._lst)
        if rate is None:
            raise NonRetryableVenueError(f"no {self._lst}/ETH oracle rate yet")
        return rate

    def _index(self, reserve: str) -> Decimal:
        index = self._board.supply.get(reserve)
        if index is None:
            raise NonRetryableVenueError(f"no AAVE liquidity index for {reserve} yet")
        return index

    def _debt_index(self) -> Decimal:
        index = self._board.borrow.get("WETH")
        if index is None:
            raise NonRetryableVenueError("no AAVE borrow index for WETH yet")
        return index
