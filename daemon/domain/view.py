"""From the books to what the strategy manager reads: the ledger snapshot valued at the market."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from daemon.domain.exposure import perp_asset
from daemon.domain.ledger import TRANSIT, WALLET, LedgerSnapshot
from daemon.domain.market import ATOKEN_RESERVE, DEBT_RESERVE, MarketState
from daemon.domain.messages import TradingState
from daemon.domain.neutrality import book_delta
from daemon.domain.pnl import nav
from daemon.domain.strategy import ModeSpec, StrategyView, VenueView, delta_asset, listed_holdings

ZERO = Decimal(0)


def strategy_view(snapshot: LedgerSnapshot, market: MarketState, spec: ModeSpec, venues: tuple[str, ...],
                  trading: TradingState = TradingState.ACTIVE) -> StrategyView:
    """Value the AAVE position in ETH (collateral A·L·o, debt d·B), gather each venue's account and perp, and
    carry whatever else the ledger holds of the asset in `asset_elsewhere`: the view's delta is the book's."""
    collateral = debt = ZERO
    for account, token, amount in snapshot.balances:
        if account != WALLET:
            continue
        if token in ATOKEN_RESERVE:
            underlying, native = market.native(token, amount)
            collateral += native * (market.lst_rate(underlying) if underlying == spec.lst else Decimal(1))
        elif token in DEBT_RESERVE:
            debt += -market.native(token, amount)[1]
    asset = delta_asset(spec)
    by_venue: dict[str, VenueView] = {}
    for venue in venues:
        perp = next((p for p in snapshot.perps if p.venue == venue and perp_asset(p.instrument) == asset), None)
        size, entry = (perp.quantity, perp.entry_price) if perp else (ZERO, ZERO)
        mark = market.perp_marks.get((venue, asset), market.price_usd(asset))
        by_venue[venue] = VenueView(snapshot.balance(venue, "USDT"), snapshot.balance(venue, asset), size, entry,
                                    mark)
    view = StrategyView(
        equity=nav(snapshot, market, spec.share_class), price_usd=market.price_usd(asset),
        lst_rate=market.lst_rates.get(spec.lst, Decimal(1)), aave_collateral=collateral, aave_debt=debt,
        wallet_asset=snapshot.balance(WALLET, asset), wallet_lst=snapshot.balance(WALLET, spec.lst),
        wallet_usdt=snapshot.balance(WALLET, "USDT"), venues=by_venue, trading=trading,
        in_transit_usd=sum((amount * (Decimal(1) if token == "USDT" else market.price_usd(token))
                            for account, token, amount in snapshot.balances if account == TRANSIT and amount > 0),
                           ZERO),
    )
    held = book_delta(snapshot, market, spec.share_class, asset, spec.hedged).holdings
    listed = listed_holdings(spec, view) + sum((v.perp_size for v in by_venue.values()), ZERO)
    return replace(view, asset_elsewhere=held - listed) if held != listed else view
