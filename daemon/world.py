"""The world a run trades in, built per runtime mode in one place: its clock, its exchanges, its chain and the
market feed that drives them, with the capital the run starts with.

The actors and their wiring (`daemon.app`) are the same in every world; only this changes with the mode:

* `replay` and `backtest` — the simulated world: a virtual clock, simulated exchanges and chain that keep their own
  books, and a bar feed from the synthetic market or the recorded history.
* `paper` — the wall clock, the venues' real public market data (`daemon.replay.live_feed`, REST polling through
  ccxt, no keys), and the same simulated exchanges filling at the live marks. The wallet is the simulated chain
  (transfers to and from the exchanges, gas at `market.paper_gas_gwei`): paper runs the CEX-only modes
  (`eth_basis`, `btc_basis`); the AAVE and staking modes are refused at load (live runs them on chain).
* `live` — the wall clock, the venues' real accounts through ccxt (`daemon.live_accounts`: started together, the
  books opening on what they hold, a REST backstop for fills), the same public market data as paper, and the wallet
  on chain through web3 when `chain.address_book` is set (`daemon.live_chain`: every mode, the chain's oracle,
  indexes and gas in the feed, liquidations watched); without it no wallet (`daemon.venues.no_chain`): the
  CEX-only modes, each venue trading with the capital it holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from daemon.bus import LosslessChannel
from daemon.clock import Clock, VirtualClock, WallClock
from daemon.config import ResolvedConfig
from daemon.data.bars import DuplicatesResolved, History
from daemon.data.cache import BarCache, SeriesCache
from daemon.data.rewards import RewardEvent, events_for_mode, read_reward_events
from daemon.domain.aave import EMODE_ETH_CORRELATED, ReserveParams
from daemon.domain.bars import MarketBar
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import VenueReport
from daemon.domain.strategy import ModeSpec
from daemon.domain.synthetic import Shock, SyntheticMarketSpec, generate
from daemon.errors import ConfigError, ConfigProblem
from daemon.journal_books import JournalBooksError, read_journal_books
from daemon.ports import ChainVenue, ExchangeVenue
from daemon.replay.feed import BarFeed
from daemon.replay.live_feed import LiveFeed, MarketSource
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain

log = structlog.get_logger()

SIMULATED_MODES = ("replay", "backtest")


@dataclass(slots=True)
class World:
    clock: Clock
    exchanges: Mapping[str, ExchangeVenue]  # venue name → its exchange account
    chain: ChainVenue  # the wallet, AAVE, staking and the transfers to and from the exchanges
    board: MarketBoard  # the market the chain prices its transactions at (the feed keeps it current)
    feed: BarFeed | LiveFeed  # what the market-data actor reads
    opening: ChangeSet  # the run's capital, where it is: the books start from it (live: once `start` has read it)
    reward_events: tuple[RewardEvent, ...]  # EtherFi distributions the run receives (recorded history only)
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()  # connections to close when the run ends
    simulated: dict[str, SimulatedExchange] = field(default_factory=dict)  # the exchanges that are simulated
    simulated_chain: SimulatedChain | None = None  # the chain, where it is simulated
    start: Callable[[], Awaitable[None]] | None = None  # before any actor runs: the venues' start-up checks
    services: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = ()  # run beside the actors for the whole session
    live: Any = None  # the live accounts (daemon.live_accounts.LiveAccounts): their streams, for the metrics
    # Live, after a restart: the books the journal says the earlier runs left (daemon.journal_books), booked before
    # `opening` (then the adoptions of what the venues hold beyond them, or nothing).
    history: tuple[tuple[str, ChangeSet], ...] = ()

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


@dataclass(frozen=True, slots=True)
class SimulatedVenues:
    """The simulated exchanges and chain of a simulated or paper world, for what only they can tell: their own
    books, liquidations and intrabar margin (a backtest's summary, the tests)."""

    exchanges: dict[str, SimulatedExchange]
    chain: SimulatedChain


def build_world(config: ResolvedConfig, spec: ModeSpec, venue_reports: LosslessChannel[VenueReport]) -> World:
    """The world `config`'s runtime mode trades in; its venues report to `venue_reports`."""
    mode = config.settings.runtime.mode
    if mode in SIMULATED_MODES:
        return simulated_world(config, spec, venue_reports)
    if mode == "paper":
        return paper_world(config, spec, venue_reports)
    if mode == "live":
        return live_world(config, spec, venue_reports)
    # load_config refuses these first (exit 78); this is the last line should a caller bypass it.
    raise ConfigError([ConfigProblem(str(config.path), "runtime.mode", f"{mode!r} has no world in this build yet")])


def simulated_exchanges(config: ResolvedConfig, clock: Clock,
                        venue_reports: LosslessChannel[VenueReport]) -> dict[str, SimulatedExchange]:
    """One simulated exchange per CEX venue of the config, with the venue's fees and margin rules."""
    return {
        name: SimulatedExchange(
            name, clock, venue_reports,
            taker_fee_bps=Decimal(str(v.fees.taker_bps if v.fees else 0)),
            min_order_usd=Decimal(str(v.min_order_usd)),
            maintenance_margin_ratio=Decimal(str(v.maintenance_margin_ratio or "0.10")),
            liquidation_fee_bps=Decimal(str(v.liquidation_fee_bps)),
            spot_taker_fee_bps=Decimal(str(v.spot_fees.taker_bps)) if v.spot_fees else None,
            withdrawal_fees={asset: Decimal(str(fee)) for asset, fee in v.withdrawal_fee.items()},
        )
        for name, v in config.venues.items() if v.kind == "cex"
    }


def opening_capital(config: ResolvedConfig, clock: Clock, chain: SimulatedChain) -> ChangeSet:
    """The run's capital, in the wallet: on chain, and in our books."""
    capital = Decimal(str(config.settings.strategy.initial_capital))
    opening = ChangeSet(Reason.INITIAL_CAPITAL, clock.now_ns(),
                        (TokenChange(WALLET, config.share_class.currency, capital),))
    chain.receive(opening)
    return opening


def simulated_world(config: ResolvedConfig, spec: ModeSpec, venue_reports: LosslessChannel[VenueReport]) -> World:
    s = config.settings
    replay = s.replay
    clock = VirtualClock(int(replay.start.timestamp()) * 1_000_000_000, replay.speed)
    cex = {name: v for name, v in config.venues.items() if v.kind == "cex"}
    exchanges = simulated_exchanges(config, clock, venue_reports)
    perp_venues = list(cex) or ["binance"]
    market = SyntheticMarketSpec(seed=replay.seed, start=replay.start, hours=replay.hours, venues=perp_venues,
                                 shocks=tuple(Shock(x.at_hour, x.eth_move_fraction, x.lst_oracle_move_fraction)
                                              for x in replay.shocks))
    board = MarketBoard()  # what the simulated chain prices its transactions with
    rewards = reward_events(config, spec)
    chain = SimulatedChain(clock, board, venue_reports, exchanges, lst=spec.lst, aave=aave_params(config),
                           gas_debt_allowed=config.share_class.currency == "USDT", rewards=rewards,
                           currency=config.share_class.currency)
    feed = BarFeed(bars(config, spec, market, perp_venues, rewards=bool(rewards)), clock, exchanges, board,
                   venue_actions=(chain.pay_rewards, chain.check_liquidation))
    opening = opening_capital(config, clock, chain)
    return World(clock, exchanges, chain, board, feed, opening, rewards, simulated=exchanges, simulated_chain=chain)


def paper_world(config: ResolvedConfig, spec: ModeSpec, venue_reports: LosslessChannel[VenueReport]) -> World:
    """The wall clock, the venues' live public market data, simulated exchanges filling at the live marks, and the
    simulated chain as the wallet (CEX-only modes: it only moves USDT and ETH between the wallet and the exchanges,
    at the gas price `market.paper_gas_gwei`)."""
    s = config.settings
    clock = WallClock()
    exchanges = simulated_exchanges(config, clock, venue_reports)
    board = MarketBoard()
    chain = SimulatedChain(clock, board, venue_reports, exchanges, lst=spec.lst, aave=aave_params(config),
                           gas_debt_allowed=config.share_class.currency == "USDT", currency=config.share_class.currency)
    asset = config.params.asset
    spot_assets = (asset,) if asset == "ETH" else (asset, "ETH")  # ETH values the wallet's gas in every mode
    spot_venue = config.mode.spot_venue if config.mode.spot_venue in exchanges else next(iter(exchanges))
    session = venue_session(config)
    sources = market_sources(config, list(exchanges), spot_assets, spot_venue, session)
    feed = LiveFeed(sources, clock, exchanges, board, assets=(asset,), spot_assets=spot_assets, spot_venue=spot_venue,
                    poll_interval_s=s.market.poll_interval_s, request_timeout_s=s.market.request_timeout_s,
                    gas_gwei=Decimal(str(s.market.paper_gas_gwei)), venue_actions=(chain.check_liquidation,))
    closers: tuple[Callable[[], Awaitable[None]], ...] = (feed.close,)
    if session is not None:
        closers += (session.close,)
    log.info("paper_world", venues=list(sources), asset=asset, spot_venue=spot_venue,
             poll_interval_s=s.market.poll_interval_s, market_source=s.market.source)
    return World(clock, exchanges, chain, board, feed, opening_capital(config, clock, chain), (), closers,
                 simulated=exchanges, simulated_chain=chain)


def live_world(config: ResolvedConfig, spec: ModeSpec, venue_reports: LosslessChannel[VenueReport]) -> World:
    """The wall clock, the venues' real accounts through ccxt (their keys from `credentials`), their public market
    data as in paper, and the wallet: on chain through web3 when `chain.address_book` names the market
    (`daemon.live_chain`: AAVE, staking, the DEX and the transfers to and from the exchanges), else none (the
    CEX-only modes, each venue trading with what it holds)."""
    from daemon.live_accounts import LiveAccounts  # ccxt is imported by the worlds that use it only
    from daemon.live_opening import open_after_restart, read_opening

    s = config.settings
    clock = WallClock()
    cex = [name for name, v in config.venues.items() if v.kind == "cex"]
    asset = config.params.asset
    spot_venue = config.mode.spot_venue if config.mode.spot_venue in cex else cex[0]
    session = venue_session(config)
    accounts = LiveAccounts(config, clock, venue_reports, session=session)
    board = MarketBoard()
    on_chain = s.chain.address_book is not None
    # The wallet pays gas in ETH: with a chain, ETH is valued even where the mode trades another asset.
    spot_assets = tuple(dict.fromkeys((asset, "ETH"))) if on_chain else (asset,)
    live_chain = None
    chain: ChainVenue
    if on_chain:
        from daemon.live_chain import LiveChain  # web3 is imported by the world that uses it only

        live_chain = LiveChain(config, spec, clock, venue_reports, accounts)
        chain = live_chain.chain
    else:
        from daemon.venues.no_chain import NoChain

        chain = NoChain(clock)
    feed = LiveFeed(market_sources(config, cex, spot_assets, spot_venue, session), clock, {}, board,
                    assets=(asset,), spot_assets=spot_assets, spot_venue=spot_venue,
                    poll_interval_s=s.market.poll_interval_s, request_timeout_s=s.market.request_timeout_s,
                    gas_gwei=None, chain=live_chain.market if live_chain is not None else None)
    closers: tuple[Callable[[], Awaitable[None]], ...] = (feed.close, accounts.close)
    if live_chain is not None:
        closers += (live_chain.close,)
    if session is not None:
        closers += (session.close,)
    world = World(clock, accounts.exchanges, chain, board, feed, accounts.opening, (), closers)

    async def start() -> None:
        # Everything the last run left open resolved before anything is read; then the books: the journal's, with
        # what happened while down booked as what it was (a restart), or one opening read of the venues, the wallet
        # and what moves between them (a first start); then the services that follow from it (daemon.live_opening).
        await accounts.prepare()
        if live_chain is not None:
            await live_chain.prepare()
        books = None
        if s.runtime.state_dir:
            path = Path(s.runtime.state_dir) / "journal.sqlite"
            try:
                books = read_journal_books(path)
            except JournalBooksError as e:  # a damaged journal: never trade on books half rebuilt
                raise ConfigError([ConfigProblem(str(path), "runtime.state_dir", f"{e}: the books cannot be rebuilt "
                                                 "from it; move the journal aside to start afresh from what the "
                                                 "venues hold (the P&L history starts again)")]) from None
        if books is not None and books.base_run is not None:
            world.history = books.changes
            scratch = Ledger(tuple(cex), gas_debt_allowed=config.share_class.currency == "USDT")
            world.opening = await open_after_restart(accounts, live_chain, books, scratch)
        else:
            world.opening = await read_opening(accounts, live_chain)
        if live_chain is not None:
            await live_chain.begin()

    world.start = start
    world.services = (accounts.backstop, accounts.funding, accounts.transfers)  # and watch_access (daemon.app)
    if live_chain is not None:
        world.services += (live_chain.liquidations,)
    world.live = accounts
    log.info("live_world", venues=cex, asset=asset, spot_venue=spot_venue, poll_interval_s=s.market.poll_interval_s,
             market_source=s.market.source, fills_poll_interval_s=s.exchange.fills_poll_interval_s,
             chain=live_chain.wallet if live_chain is not None else None)
    return world


def venue_session(config: ResolvedConfig) -> Any:
    """Tests and demos only: a session whose venue hosts go to a local fake (`venue_redirect`); None: the venues."""
    from daemon.venues.endpoints import redirected_session

    redirect = config.settings.venue_redirect
    if redirect.address is None or redirect.ca_file is None:
        return None
    ca_file = config.path.parent / redirect.ca_file
    log.warning("venue_redirect", address=redirect.address, ca_file=str(ca_file),
                detail="the venues' host names go to a local address (tests and demos only)")
    return redirected_session(redirect.address, Path(ca_file))


def market_sources(config: ResolvedConfig, venues: list[str], spot_assets: tuple[str, ...], spot_venue: str,
                   session: Any) -> dict[str, MarketSource]:
    """Each venue's public market data (its perp; spot on the valuation venue), through ccxt: its streams with REST
    as the backstop (`market.source: stream`), or REST polling only."""
    from daemon.venues.ccxt_market import CcxtMarketSource
    from daemon.venues.ccxt_market_stream import MarketStreamSettings, StreamingMarketSource

    m = config.settings.market
    asset, timeout_s = config.params.asset, m.request_timeout_s
    streams = MarketStreamSettings(stale_after_s=m.stream_stale_after_s,
                                   funding_stale_after_s=m.stream_funding_stale_after_s,
                                   first_quote_wait_s=m.stream_first_wait_s)
    sources: dict[str, MarketSource] = {}
    for name, v in config.venues.items():
        if name not in venues:
            continue
        perp: dict[str, str] = {asset: v.perp_symbols[asset]}
        spot = {a: v.spot_symbols[a] for a in spot_assets} if name == spot_venue else None
        rest = CcxtMarketSource(name, perp, spot, timeout_s=timeout_s, session=session)
        sources[name] = rest if m.source == "rest" else StreamingMarketSource(
            name, perp, spot, fallback=rest, settings=streams, session=session, timeout_s=timeout_s)
    return sources


def bars(config: ResolvedConfig, spec: ModeSpec, market: SyntheticMarketSpec, venues: list[str],
         rewards: bool) -> Iterator[MarketBar]:
    """The replay's bars: from the synthetic market or the recorded history. Both carry the oracle rate and AAVE
    index of the LST the mode stakes (weETH, wstETH), and only it."""
    replay = config.settings.replay
    if replay.source == "synthetic":
        yield from generate(replace(market, lst=spec.lst))
        return
    assert replay.data_dir is not None  # settings validation guarantees it
    history = History(config.path.parent / replay.data_dir, replay.proxies, load=SeriesCache().load,
                      rewards=rewards, lst=spec.lst)
    start_ns = int(replay.start.timestamp()) * 1_000_000_000
    for bar, proxied in BarCache().bars(history, start_ns, replay.hours, tuple(venues), spec.asset == "BTC"):
        for event in proxied:
            if isinstance(event, DuplicatesResolved):  # once per series: which of its duplicated rows counts
                log.warning("data_duplicates_resolved", series=event.series, timestamps=event.timestamps,
                            rule=event.rule, detail=str(event))
            else:
                log.warning("data_proxied", series=event.series, proxy=event.proxy, detail=str(event))
        yield bar


def reward_events(config: ResolvedConfig, spec: ModeSpec) -> tuple[RewardEvent, ...]:
    """The EtherFi reward events the mode receives: recorded ones on history, none on the synthetic market."""
    replay, mode = config.settings.replay, config.params.rewards_mode
    if replay.source != "history" or mode == "base_only" or not spec.staking or spec.lst != "weETH":
        return ()
    assert replay.data_dir is not None
    return events_for_mode(read_reward_events(config.path.parent / replay.data_dir), mode)


def aave_params(config: ResolvedConfig) -> ReserveParams:
    """E-mode parameters of the lending venue the mode uses (the catalog's values; live refreshes them)."""
    for v in config.venues.values():
        if v.kind == "lending" and v.emode_ltv is not None and v.emode_liquidation_threshold is not None:
            return ReserveParams(Decimal(str(v.emode_ltv)), Decimal(str(v.emode_liquidation_threshold)),
                                 Decimal(str(v.emode_liquidation_bonus or 0)))
    return EMODE_ETH_CORRELATED
