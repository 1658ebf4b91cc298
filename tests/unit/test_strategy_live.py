"""The strategy on live venues with no wallet (ModeSpec.wallet_transfers False) and the venues' own lot steps."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.risk import RiskLimits
from daemon.domain.strategy import Change, StrategyView, VenueView, _margin_deficit, decide
from tests.unit.test_strategy import spec

D = Decimal
LOTS = {"binance": D("0.001"), "bybit": D("0.01"), "okx": D("0.001")}


def basis(**overrides: object):  # type: ignore[no-untyped-def]
    return spec("eth_basis", borrowing=False, staking=False, lending=False, lot_steps=LOTS, **overrides)


def flat(held: dict[str, str], price: str = "3000") -> StrategyView:
    venues = {v: VenueView(D(usdt), D(0), D(0), D(0), D(price)) for v, usdt in held.items()}
    equity = sum((D(u) for u in held.values()), D(0))
    return StrategyView(equity, D(price), D(1), D(0), D(0), D(0), D(0), D(0), venues)


def entry_steps(view: StrategyView, **overrides: object) -> list:  # type: ignore[type-arg]
    decision = decide(Change.INITIAL_SETUP, basis(**overrides), view)
    (instruction,) = decision.instructions
    return list(instruction.steps)


def test_without_wallet_transfers_the_entry_moves_nothing_and_each_venue_funds_its_own_legs() -> None:
    held = {"binance": "20000", "bybit": "10000", "okx": "10000"}
    steps = entry_steps(flat(held), wallet_transfers=False)
    assert [s.action for s in steps] == ["BUY_SPOT", "OPEN_PERP_SHORT", "OPEN_PERP_SHORT", "OPEN_PERP_SHORT"]
    price = D(3000)
    spot = D(str(steps[0].params["amount"]))
    shorts = {s.venue: D(str(s.params["amount"])) for s in steps[1:]}
    # Binance carries the spot leg and its margin; the others their margin; none more than it holds.
    margin = {v: D(held[v]) - (spot * price if v == "binance" else 0) for v in held}
    assert all(m >= 0 for m in margin.values()), margin
    assert abs(spot - sum(shorts.values(), D(0))) <= sum(LOTS.values(), D(0))  # hedged to the lots
    # With transfers the same book moves USDT between venues first.
    moving = entry_steps(flat(held))
    assert any(s.action in ("TRANSFER_USDT_TO_CEX", "WITHDRAW_USDT_TO_WALLET") for s in moving)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2_000, max_value=200_000), st.integers(min_value=2_000, max_value=200_000),
       st.integers(min_value=2_000, max_value=200_000), st.integers(min_value=500, max_value=10_000))
def test_every_planned_quantity_is_a_multiple_of_its_venue_s_lot_and_no_venue_is_asked_for_more_than_it_holds(
        binance: int, bybit: int, okx: int, price: int) -> None:
    held = {"binance": str(binance), "bybit": str(bybit), "okx": str(okx)}
    view = flat(held, str(price))
    steps = entry_steps(view, wallet_transfers=False)
    for s in steps:
        amount = D(str(s.params["amount"]))
        step = LOTS[s.venue] if s.action == "OPEN_PERP_SHORT" else D("0.001")
        assert amount % step == 0, (s, step)
    spot_cost = D(str(steps[0].params["amount"])) * price
    assert spot_cost <= D(binance)


def test_a_top_up_that_cannot_move_usdt_shrinks_the_short_to_the_target_ratio() -> None:
    # Bybit's short lost: equity 10,000 − 5 × (3,600 − 3,000) = 7,000 on 5 ETH × 3,600 = 18,000 (ratio 0.39).
    venue = VenueView(D(10_000), D(0), D(-5), D(3000), D(3600))
    target = D(1)
    usd = _margin_deficit(venue, target, moves_usdt=False)
    shrunk = abs(venue.perp_size) - usd / venue.mark
    equity = venue.usdt + venue.perp_size * (venue.mark - venue.perp_entry)
    assert abs(equity / (shrunk * venue.mark) - target) < D("1e-20")  # the smaller short alone reaches it
    moved = _margin_deficit(venue, target)  # the proceeds reach the venue: less to sell
    assert 0 < moved < usd


def test_live_margin_top_up_plans_no_transfer_when_the_long_is_on_another_venue() -> None:
    venues = {"binance": VenueView(D(5_000), D(10), D(-4), D(3000), D(3600)),
              "bybit": VenueView(D(3_000), D(0), D(-3), D(3000), D(3600)),
              "okx": VenueView(D(3_000), D(0), D(-3), D(3000), D(3600))}
    view = StrategyView(D(30_000), D(3600), D(1), D(0), D(0), D(0), D(0), D(0), venues)
    decision = decide(Change.REBALANCE, basis(wallet_transfers=False), view, limits=RiskLimits())
    top_ups = [i for i in decision.instructions if i.type == "ADD_MARGIN_TO_CEX"]
    assert top_ups, decision
    for instruction in top_ups:
        actions = [s.action for s in instruction.steps]
        assert "TRANSFER_USDT_TO_CEX" not in actions and "WITHDRAW_USDT_TO_WALLET" not in actions, actions


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=20_000, max_value=500_000), st.decimals(min_value=D("0.01"), max_value=D("5"), places=3),
       st.integers(min_value=500, max_value=10_000))
def test_a_usdt_class_entry_moves_only_usdt_the_wallet_holds_its_gas_eth_is_not_capital_to_deploy(
        wallet_usdt: int, gas_eth: Decimal, price: int) -> None:
    """A real wallet holds ETH for gas beside its USDT (a simulated one runs a gas debt): the entry must not plan
    to send that ETH's worth of USDT too (the local world's first live entry failed so: transfers beyond the
    wallet's USDT), nor buy the spot leg with it."""
    held = {"binance": "20000", "bybit": "10000", "okx": "10000"}
    venues = {v: VenueView(D(usdt), D(0), D(0), D(0), D(price)) for v, usdt in held.items()}
    equity = sum((D(u) for u in held.values()), D(0)) + wallet_usdt + gas_eth * price
    view = StrategyView(equity, D(price), D(1), D(0), D(0), gas_eth, D(0), D(wallet_usdt), venues)
    (instruction,) = decide(Change.INITIAL_SETUP, spec("usdt_market_neutral"), view).instructions
    sent = sum((D(str(s.params["amount_usd"])) for s in instruction.steps if s.action == "TRANSFER_USDT_TO_CEX"),
               D(0))
    back = sum((D(str(s.params["amount_usd"])) for s in instruction.steps if s.action == "WITHDRAW_USDT_TO_WALLET"),
               D(0))
    assert sent <= wallet_usdt + back, (sent, back, wallet_usdt)
    # and it deploys the USDT: nearly all of it goes to the venues (the withdrawal fees aside)
    assert sent >= wallet_usdt - 100, (sent, wallet_usdt)


def test_an_entry_cut_short_after_its_shorts_is_finished_from_where_the_book_is() -> None:
    """A restart abandons the instruction in progress (never re-runs it): the book holds the shorts and the ETH
    bought, loose on the spot venue or already in the wallet, and nothing on AAVE. The next decision finishes the
    entry's tail — the ETH to the wallet, then levered at λ — and plans nothing else that cycle; the wallet's gas
    money alone is not a long leg to lever."""
    price, long_eth = D(3000), D("16.65")
    s = spec("usdt_market_neutral")
    shorts = {"binance": D("-6.66"), "bybit": D("-5.0"), "okx": D("-4.99")}

    def book(spot: Decimal, wallet_eth: Decimal) -> StrategyView:
        venues = {v: VenueView(D(20_000), spot if v == "binance" else D(0), size, price, price)
                  for v, size in shorts.items()}
        equity = D(60_000) + (spot + wallet_eth) * price  # the shorts at their entry price: no P&L yet
        return StrategyView(equity, price, D("1.05"), D(0), D(0), wallet_eth, D(0), D(0), venues)

    for spot, wallet in ((long_eth, D(1)), (D(0), long_eth + D(1))):
        decision = decide(Change.REBALANCE, s, book(spot, wallet))
        # First the entry's tail; beside it at most the delta adjustment the same book calls for (here the wallet's
        # gas ETH the shorts do not cover): the tail itself moves ETH without changing the delta.
        instruction, *rest = decision.instructions
        assert instruction.type == "COMPLETE_LONG_LEG", decision
        assert [i.type for i in rest] in ([], ["DELTA_ADJUST"]), decision
        actions = [step.action for step in instruction.steps]
        assert actions == (["WITHDRAW_TO_WALLET", "ATOMIC_LEVERAGE_ENTRY"] if spot else ["ATOMIC_LEVERAGE_ENTRY"])
        lever = instruction.steps[-1].params
        loose = long_eth + (D(1) - s.gas_reserve)  # the wallet's ETH beyond its gas reserve goes too
        assert D(str(lever["equity_eth"])) == loose
        assert D(str(lever["supply_eth"])) - D(str(lever["borrow_eth"])) == loose
        assert abs(D(str(lever["borrow_eth"])) / D(str(lever["supply_eth"])) - s.target_ltv) < D("1e-12")
    # Gas money alone (1 ETH of a 60,000 USDT book): nothing to complete.
    assert all(i.type != "COMPLETE_LONG_LEG" for i in decide(Change.REBALANCE, s, book(D(0), D(1))).instructions)


def test_loose_eth_on_a_venue_worth_less_than_ten_withdrawal_fees_is_left_there() -> None:
    """A margin top-up sells whole lots of the ETH it sent and leaves the rest spot on the venue (0.00882 ETH on
    Bybit, whose 0.0015 ETH fee comes on top): the entry's tail withdraws the ETH worth moving, not that dust — a
    withdrawal of the whole dust is refused by the venue (its fee is not covered), and one of it minus the fee
    pays a sixth of itself to move."""
    price = D(3000)
    s = replace(spec("usdt_market_neutral"), withdrawal_fees_asset={"binance": D("0.0008"), "bybit": D("0.0015"),
                                                                   "okx": D("0.0015")})
    spot = {"binance": D("2.85"), "bybit": D("0.00882186"), "okx": D("0.015")}
    venues = {v: VenueView(D(20_000), spot[v], D(-5), price, price) for v in spot}
    equity = D(60_000) + sum(spot.values(), D(0)) * price
    view = StrategyView(equity, price, D("1.05"), D(0), D(0), s.gas_reserve, D(0), D(0), venues)
    tail = next(i for i in decide(Change.REBALANCE, s, view).instructions if i.type == "COMPLETE_LONG_LEG")
    withdrawals = {step.venue: step.params["amount_eth"] for step in tail.steps if step.action == "WITHDRAW_TO_WALLET"}
    assert withdrawals == {"binance": D("2.85"), "okx": D("0.015")}  # bybit's is less than ten fees: it stays
    assert D(str(tail.steps[-1].params["equity_eth"])) == D("2.865")  # only what comes to the wallet is levered
