"""The live run's exchange accounts: one `CcxtExchange` per venue of the config, started together, and the books'
opening read from what they hold.

`prepare()` runs every venue's start-up checks concurrently (markets, clock, account modes, leverage) within
`exchange.startup_timeout_s`; any venue that cannot be traded stops the run before anything is sent (exit 78 for
what a human must fix: keys, clock, account modes). Then `daemon.recovery` resolves what the journal's earlier runs
left open (orders by client id on their venue, the instruction in progress abandoned), and the transfer desk comes
back with the transfers its store carries. `read()` reads every account and `open()` makes the books' opening of
exactly that — each wallet's balances and each open perp at the venue's own entry price, plus what is in transit
between our accounts (`daemon.live_opening` reads the venues, the wallet and the transfers at one consistent
moment) — so a restart comes back to what the venues hold, not to `strategy.initial_capital`; the perps they hold
are checked against what the journal accounts for (`recovery.positions`: adopt, or come up HALTED). `recovery`
holds the summary (`RecoveryReport`). `begin()` starts what follows from the read (funding, the streams); `start()`
does it all for the worlds without a chain.

Fills then come from each venue's private streams (`daemon.venues.ccxt_streams.FillStream`: ccxt.pro, reconnected
with backoff, a REST backstop after every connect and every `exchange.fills_poll_interval_s`); with
`exchange.fills_stream: false`, from `backstop()` alone, the same REST read on the same timer. Either way the
adapter publishes each trade once (by its venue and trade id), and so does the fills actor. `funding()` reads the
funding payments the venues made every `exchange.funding_poll_interval_s`, from the moment the accounts were read
(what was paid before is in the balances the books opened on), each booked once by the venue's own id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import structlog

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.config import ResolvedConfig
from daemon.domain.ledger import ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.messages import VenueReport
from daemon.domain.reconcile import ReportCount
from daemon.domain.transit import Allowance
from daemon.errors import FatalVenueError, VenueError
from daemon.journal import PastRuns
from daemon.recovery import (
    RecoveryReport,
    check_positions,
    funding_paid_while_down,
    log_report,
    opening_less,
    recover_orders,
)
from daemon.state_store import StateStore
from daemon.venues.ccxt_exchange import AccountDetail, CcxtExchange, CcxtVenueConfig, Credentials, VenueStartupError
from daemon.venues.ccxt_funding import FundingBooked, FundingPoller
from daemon.venues.ccxt_streams import FillStream, StreamSettings
from daemon.venues.ccxt_transfers import TransferDesk, VenueFunds

log = structlog.get_logger()

# Our venue → kind of market → the ccxt exchange that trades it (daemon.venues.ccxt_exchange).
EXCHANGE_IDS: dict[str, dict[str, str]] = {
    "binance": {"Perp": "binanceusdm", "Spot": "binance"},
    "bybit": {"Perp": "bybit", "Spot": "bybit"},
    "okx": {"Perp": "okx", "Spot": "okx"},
}


class LiveAccounts:
    def __init__(self, config: ResolvedConfig, clock: Clock,
                 reports: LosslessChannel[VenueReport], session: Any = None) -> None:
        s = config.settings
        self._settings = s.exchange
        self._clock = self.clock = clock
        cache = s.exchange.market_cache_dir or (str(Path(s.runtime.state_dir) / "markets") if s.runtime.state_dir
                                                else None)
        asset = self._asset = config.params.asset
        self._funded_assets = ("USDT",) if asset == "USDT" else ("USDT", asset)
        self._venues = config.venues
        self.exchanges: dict[str, CcxtExchange] = {}
        # What this run's adapters published, per account they touch: every exchange, funding poller and the
        # transfer desk count into it, the live chain's adapter and liquidation watch too (daemon.live_chain); each
        # account report carries its account's count, for the reconciler's "have the books caught up".
        self.count = ReportCount()
        self._instruments: dict[str, tuple[str, ...]] = {}
        for name, v in config.venues.items():
            if v.kind != "cex":
                continue
            # Every venue trades spot as well as its perp: the long is bought on the spot venue, and a margin top-up
            # sends ETH to the venue short of margin and sells it there (daemon.domain.strategy.add_margin_to_cex).
            kinds = ("Perp", "Spot")
            keys = getattr(s.credentials, name)
            credentials = Credentials(
                keys.api_key.get_secret_value(), keys.api_secret.get_secret_value(),
                keys.passphrase.get_secret_value() if keys.passphrase is not None else None)
            venue_config = CcxtVenueConfig(
                venue=name, exchanges={k: EXCHANGE_IDS[name][k] for k in kinds},
                instruments=tuple(f"{name}:{k}:{asset}USDT" for k in kinds), credentials=credentials,
                key_setting=f"credentials.{name}", leverage=s.exchange.leverage,
                max_clock_skew_ms=s.exchange.max_clock_skew_ms, timeout_ms=int(s.exchange.request_timeout_s * 1000),
                market_cache_dir=Path(cache) if cache else None)
            self.exchanges[name] = CcxtExchange(venue_config, clock, reports, session=session, count=self.count)
            self._instruments[name] = venue_config.instruments
        self.opening = ChangeSet(Reason.INITIAL_CAPITAL, clock.now_ns())
        self.started = False
        self._reports = reports
        self.streams: dict[str, FillStream] = {}
        self.funding_pollers: dict[str, FundingPoller] = {}
        self.desk: TransferDesk | None = None
        self._state_dir = s.runtime.state_dir
        self.on_stream_reconnected: Callable[[], None] | None = None  # the daemon's reconciler asks here (daemon.app)
        self._transfer_wait_s = s.chain.transfer_wait_s  # the wallet's transfers to and from the venues
        self._transfer_poll_s = s.chain.transfer_poll_interval_s
        self._positions_policy = s.recovery.positions
        self.recovery: RecoveryReport | None = None  # once `start` has recovered (None: no journal to read)
        self._past: PastRuns | None = None  # the journal's earlier runs, open from `prepare` to `open`
        self._while_down: list[FundingBooked] = []  # funding the venues paid while the daemon was down

    async def start(self) -> None:
        """Every venue's start-up checks, concurrently, the recovery of what the last run left open, then the
        opening books from their accounts (`daemon.live_opening`: the CEX-only worlds; with a chain, the live world
        runs the same steps with the wallet's read beside the venues')."""
        from daemon.live_opening import read_opening

        await self.prepare()
        await read_opening(self, None)

    @property
    def deposit_assets(self) -> tuple[str, ...]:
        """The assets an operator may fund the accounts with (deposits from outside are looked for in them)."""
        return self._funded_assets

    async def prepare(self) -> None:
        """Every venue's start-up checks, concurrently, then what the journal's earlier runs left open, resolved on
        the venues (`daemon.recovery`), and the transfer desk with the transfers its store carries: all before the
        accounts are read, so that the read is the venues' truth after them."""
        names = list(self.exchanges)
        try:
            with anyio.fail_after(self._settings.startup_timeout_s):
                await asyncio.gather(*(self.exchanges[n].start() for n in names))
                self._past = self._past_runs()
                if self._past is not None:
                    self.recovery = await recover_orders(self._past, self.exchanges)
        except TimeoutError:
            self._close_past()
            raise FatalVenueError(f"the venues did not pass their start-up checks within "
                                  f"{self._settings.startup_timeout_s:g} s (exchange.startup_timeout_s)") from None
        except BaseException:
            self._close_past()
            raise
        # The transfers in flight survive a restart in the state directory; deposits from outside (an operator
        # funding an account) are capital flows from the first run's opening read on (a restart's opening read
        # marks those it holds as booked: `TransferDesk.open_at`).
        self.desk = TransferDesk({name: VenueFunds(name, exchange.ccxt_clients) for name, exchange in
                                  self.exchanges.items()}, self._reports, self._clock,
                                 deposits_since_ms=int(time.time() * 1000),
                                 store=StateStore(self._state_dir) if self._state_dir else None,
                                 landing_wait_s=self._transfer_wait_s, landing_poll_s=self._transfer_poll_s,
                                 count=self.count)

    async def read(self) -> tuple[int, list[AccountDetail]]:
        """Every account, read concurrently (within `exchange.startup_timeout_s`): the wall time of the read (funding
        paid from then on is not in it) and each venue's balances and perps."""
        names = list(self.exchanges)
        read_ms = int(time.time() * 1000)
        try:
            with anyio.fail_after(self._settings.startup_timeout_s):
                details = list(await asyncio.gather(*(self.exchanges[n].fetch_account_detail() for n in names)))
        except TimeoutError:
            raise FatalVenueError(f"the venues' accounts could not be read within "
                                  f"{self._settings.startup_timeout_s:g} s (exchange.startup_timeout_s)") from None
        return read_ms, details

    async def funding_while_down(self, read_ms: int) -> None:
        """Each venue's funding poller, from the moment of the read; and the payments the venues made while the
        daemon was down (after what the journal booked, before the read: `daemon.recovery.funding_paid_while_down`),
        booked as funding once the books have opened (`begin`)."""
        self.funding_pollers = {name: FundingPoller(name, exchange.ccxt_clients[EXCHANGE_IDS[name]["Perp"]],
                                                    self._instruments[name], self._reports, self._clock,
                                                    since_ms=read_ms, count=self.count)
                                for name, exchange in self.exchanges.items()}
        if self._past is not None:
            with anyio.fail_after(self._settings.startup_timeout_s):
                self._while_down = await funding_paid_while_down(self._past, self.funding_pollers, read_ms,
                                                                 self.recovery)

    def _close_recovery(self, details: list[AccountDetail]) -> None:
        """The perps the venues hold checked against what the journal accounts for (`recovery.positions`); the
        recovery's summary logged; the journal's earlier runs closed."""
        names = list(self.exchanges)
        try:
            if self._past is not None and self.recovery is not None:
                check_positions(self._past, [(name, p) for name, d in zip(names, details, strict=True)
                                             for p in d.positions], self._positions_policy, self.recovery)
        finally:
            self._close_past()
        if self.recovery is not None:
            log_report(self.recovery)

    def open_continued(self, details: list[AccountDetail], books: Ledger) -> ChangeSet:
        """A restart's opening on the journal's books (`books`: the earlier runs' ledger, replayed): each perp a venue
        holds beyond them adopted at the venue's entry price (`Reason.RECONCILIATION`; `recovery.positions: halt`
        also comes up HALTED naming it) — their tokens are the start-up reconciliation's to compare."""
        self._close_recovery(details)
        perps: list[PerpChange] = []
        for name, detail in zip(self.exchanges, details, strict=True):
            held = {p.instrument: p for p in detail.positions if p.quantity}
            ours = {instrument: pos.quantity for instrument, pos in books.open_perps(name)}
            for instrument in sorted(set(held) | set(ours)):
                venue_qty = held[instrument].quantity if instrument in held else Decimal(0)
                diff = venue_qty - ours.get(instrument, Decimal(0))
                if not diff:
                    continue
                venue = held.get(instrument)
                # At the venue's entry (what it holds is priced so); a position gone from the venue at the books'
                # average (no P&L invented for it: the start-up reconciliation finds its USDT).
                price = (venue.entry_price or venue.mark_price) if venue is not None else None
                price = price or books.perp(name, instrument).average_price
                perps.append(PerpChange(name, instrument, diff, price))
                log.warning("live_position_adopted_at_restart", venue=name, instrument=instrument,
                            journal=str(ours.get(instrument, 0)), venue_holds=str(venue_qty), entry=str(price),
                            detail="the venue holds another size than the journal's books: the books follow it")
        self.opening = ChangeSet(Reason.RECONCILIATION, self._clock.now_ns(), (), tuple(perps),
                                 ref="restart-adopted")
        return self.opening

    def open(self, details: list[AccountDetail], extra: tuple[TokenChange, ...] = ()) -> ChangeSet:
        """The books' opening: each venue's balances and each open perp at the venue's own entry price, plus `extra`
        (the wallet's tokens, what is in transit); the perps checked against what the journal accounts for."""
        self._close_recovery(details)
        names = list(self.exchanges)
        tokens: list[TokenChange] = []
        perps: list[PerpChange] = []
        for name, detail in zip(names, details, strict=True):
            tokens += [TokenChange(name, token, amount) for token, amount in detail.report.balances]
            for p in detail.positions:
                if p.quantity and p.entry_price:
                    perps.append(PerpChange(name, p.instrument, p.quantity, p.entry_price))
            log.info("live_account_opened", venue=name,
                     balances={token: str(amount) for token, amount in detail.report.balances},
                     perps={p.instrument: str(p.quantity) for p in detail.positions if p.quantity})
            if any(p.quantity for p in detail.positions) and self.recovery is None:
                log.warning("live_positions_adopted", venue=name,
                            positions={p.instrument: {"quantity": str(p.quantity), "entry": str(p.entry_price)}
                                       for p in detail.positions if p.quantity},
                            detail="the venue holds open perps: the books open on them at the venue's entry price")
        for name in names:
            self._check_lot_steps(name)
        tokens = opening_less(tokens, self._while_down)  # booked as funding after the opening (`begin`)
        self.opening = ChangeSet(Reason.INITIAL_CAPITAL, self._clock.now_ns(), (*tokens, *extra), tuple(perps),
                                 ref="live-opening")
        return self.opening

    async def begin(self, read_ms: int) -> None:
        """Once the books have opened: the funding paid while down, booked (through the venue reports, journaled
        as any payment), and the private streams."""
        if not self.funding_pollers:
            await self.funding_while_down(read_ms)
        for payment in self._while_down:
            self.count.count(payment)
            await self._reports.send(payment)
        if self._settings.fills_stream:
            settings = StreamSettings(backstop_interval_s=self._settings.fills_poll_interval_s,
                                      dead_after_s=self._settings.stream_dead_after_s,
                                      ping_interval_s=min(10.0, self._settings.stream_dead_after_s / 3))
            self.streams = {name: FillStream(exchange, settings, on_reconnected=self._stream_reconnected)
                            for name, exchange in self.exchanges.items()}
            await asyncio.gather(*(stream.start() for stream in self.streams.values()))
        self.started = True

    def _close_past(self) -> None:
        if self._past is not None:
            self._past.close()
            self._past = None

    def _past_runs(self) -> PastRuns | None:
        """The journal the daemon keeps under `runtime.state_dir` (daemon.app opened this run in it already)."""
        if not self._state_dir:
            return None
        path = Path(self._state_dir) / "journal.sqlite"
        return PastRuns(path) if path.exists() else None

    def _stream_reconnected(self) -> None:
        """A private stream came back: what it missed was read by its backstop; reconcile now, not at the hour."""
        if self.on_stream_reconnected is not None:
            self.on_stream_reconnected()

    def _check_lot_steps(self, name: str) -> None:
        """The strategy plans every quantity in the catalog's lot step (`lot_step`, `spot_lot_step`): each must be a
        multiple of the venue's own, or its orders would be refused one by one after the first leg had filled."""
        venue = self._venues[name]
        for instrument in self._instruments[name]:
            kind = instrument.split(":")[1]
            planned = Decimal(str((venue.lot_step if kind == "Perp" else venue.spot_lot_step).get(self._asset, 0.001)))
            step = self.exchanges[name].rules(instrument).amount_step
            if planned % step:
                key = "lot_step" if kind == "Perp" else "spot_lot_step"
                raise VenueStartupError(name, f"{instrument} trades in lots of {step} {self._asset}; the catalog "
                                              f"plans in {planned}: set {key}.{self._asset} to {step} (or a multiple "
                                              f"of it) in the venue's catalog entry (configs/venues/{name}.yaml)")

    async def backstop(self) -> None:
        """The trades since the last one seen on every venue, on a timer, for the whole session (when the streams
        are off; each stream runs its own backstop)."""
        if self.streams:
            return
        while True:
            await anyio.sleep(self._settings.fills_poll_interval_s)
            for name, exchange in self.exchanges.items():
                try:
                    new = await exchange.poll_fills()
                except VenueError as exc:
                    log.warning("fills_backstop_failed", venue=name, error=str(exc), kind=type(exc).__name__)
                    continue
                if new:
                    log.info("fills_backstop_found", venue=name, fills=new)

    async def watch_access(self, halt: Callable[[str], None], interval_s: float = 1.0) -> None:
        """Halt trading once any venue has refused our keys after start-up (a key revoked, a permission or an IP
        allow-list entry removed): whichever request saw it — an order, a stream's backstop, the reconciler's read —
        every later request of that account is refused, and a human must look."""
        reported: set[str] = set()
        while True:
            for name, exchange in self.exchanges.items():
                lost = next((g.access_lost for g in exchange.gates.values() if g.access_lost is not None), None)
                if lost is not None and name not in reported:
                    reported.add(name)
                    log.critical("venue_access_lost", venue=name, error=str(lost))
                    halt(f"{name}: {lost}")
            await anyio.sleep(interval_s)

    def allowances(self, now_ns: int) -> tuple[Allowance, ...]:
        """What transfers still moving explain of a difference between the books and the venues (the reconciler's)."""
        return self.desk.allowances(now_ns) if self.desk is not None else ()

    async def transfers(self) -> None:
        """The venues' deposits and withdrawals, on a timer, for the whole session."""
        while True:
            await anyio.sleep(self._settings.transfers_poll_interval_s)
            await self.poll_transfers()

    async def poll_transfers(self) -> int:
        if self.desk is None:
            return 0
        try:
            moved = await self.desk.poll()
            deposits = await self.desk.poll_deposits(self._funded_assets)
        except VenueError as exc:
            log.warning("transfers_poll_failed", error=str(exc), kind=type(exc).__name__)
            return 0
        if deposits:
            log.info("deposits_booked", deposits=deposits, detail="capital flows: funds an operator sent the accounts")
        return moved + deposits

    async def funding(self) -> None:
        """The funding payments every venue made since the last one seen, on a timer, for the whole session."""
        while True:
            await anyio.sleep(self._settings.funding_poll_interval_s)
            await self.poll_funding()

    async def poll_funding(self) -> int:
        new = 0
        for name, poller in self.funding_pollers.items():
            try:
                found = await poller.poll()
            except VenueError as exc:
                log.warning("funding_poll_failed", venue=name, error=str(exc), kind=type(exc).__name__)
                continue
            if found:
                log.info("funding_payments_found", venue=name, payments=found)
            new += found
        return new

    async def close(self) -> None:
        for stream in self.streams.values():  # before the exchanges whose markets and session they share
            await stream.close()
        for exchange in self.exchanges.values():
            await exchange.close()
