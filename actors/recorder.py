"""Recorder (backtest): writes each attributed hour as it closes — `hourly.csv` (NAV, P&L components,
residual, delta, HF, LTV, margin ratio per venue; then the market the report's benchmarks and carry need: the
ETH reference price, the hedge's size, the USDT and WETH supply indexes, each venue's funding rate last settled)
and `events.jsonl` (every balance change, numbered within its hour) — and keeps what `summary.json` needs.
`hourly.csv` is read by column name: a new column goes at the end of the header, never between others.

A file it cannot create or write (an unwritable or vanished `--out`, a full disk) fails the run at once
(`OutputError`, exit 73): restarting would meet the same directory, and a report with holes is no report."""

from __future__ import annotations

import csv
import json
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from daemon.bus import LosslessChannel
from daemon.data.series import iso
from daemon.domain.exposure import compute_exposure, perp_asset
from daemon.domain.ledger import ChangeSet, LedgerSnapshot
from daemon.domain.market import MarketState
from daemon.domain.messages import PnlAttributed
from daemon.domain.neutrality import book_delta
from daemon.domain.pnl import COMPONENTS, token_value_usd
from daemon.domain.risk import INFINITY, RiskLimits, margin_reading
from daemon.domain.strategy import ModeSpec, delta_asset
from daemon.domain.view import strategy_view
from daemon.errors import OutputError
from daemon.lifecycle import ActorContext, serve


def _num(value: Decimal, places: int = 6) -> str:
    return "inf" if value == INFINITY else f"{value:.{places}f}"


def change_json(change: ChangeSet, n: int) -> dict[str, Any]:
    return {"n": n, "reason": change.reason.value, "ref": change.ref,
            "tokens": [[t.account, t.token, str(t.delta)] for t in change.tokens],
            "perps": [[p.venue, p.instrument, str(p.delta_qty), str(p.price)] for p in change.perps]}


# After the margin ratios: ETH's valuation reference (USD), the ETH perps' total size (what net delta is a
# fraction of), and the AAVE supply indexes of USDT and WETH (pure lending's benchmark in either currency).
MARKET_COLUMNS = ("eth_usd", "hedge_eth", "supply_index_usdt", "supply_index_weth")
# Then the delta the strategy hedges (daemon.domain.neutrality.book_delta), in the mode's asset (ETH; BTC for
# btc_basis) against the share class (an ETH class: against its NAV), and its drift, |delta| / hedge.
DELTA_COLUMNS = ("book_delta", "delta_drift")


class RecorderActor:
    name = "recorder"

    def __init__(self, inbox: LosslessChannel[PnlAttributed], out_dir: Path, spec: ModeSpec,
                 venues: tuple[str, ...]) -> None:
        self.inbox = inbox
        self._out = out_dir
        self._spec = spec
        self._venues = venues
        self.navs: list[Decimal] = []
        self.times: list[int] = []  # unix seconds of each NAV in navs (the statistics' days)
        self.first: tuple[LedgerSnapshot, MarketState] | None = None
        self.min_hf = INFINITY
        self.min_margin: dict[str, Decimal] = {}
        self.drifts: list[Decimal | None] = []  # |book delta| / hedge each hour (None: no hedge), for delta_bands
        self.rows = 0
        self._files: list[IO[str]] = []

    async def run(self, ctx: ActorContext) -> None:
        try:
            await self._run(ctx)
        except OSError as exc:
            where = exc.filename or self._out
            raise OutputError(f"cannot write the report in {self._out}: {where}: {exc.strerror or exc}") from exc

    async def _run(self, ctx: ActorContext) -> None:
        self._out.mkdir(parents=True, exist_ok=True)
        append = self.rows > 0  # a restart continues the files it was writing
        mode = "a" if append else "w"
        # Buffered local writes in the loop are fine here: a backtest has no live venue to keep waiting.
        with ExitStack() as files:
            hourly = files.enter_context(open(self._out / "hourly.csv", mode, newline="", encoding="utf-8"))  # noqa: ASYNC230
            events = files.enter_context(open(self._out / "events.jsonl", mode, encoding="utf-8"))  # noqa: ASYNC230
            sheet = csv.writer(files.enter_context(open(self._out / "balance_sheet.csv", mode, newline="",  # noqa: ASYNC230
                                                        encoding="utf-8")))
            if not append:
                sheet.writerow(["ts", "account", "holding", "amount", "value_usd"])
            writer = csv.writer(hourly)
            if not append:
                writer.writerow(["ts", "nav", "pnl", *COMPONENTS, "residual", "net_delta_eth", "hf", "ltv",
                                 *(f"margin_ratio_{v}" for v in self._venues), *MARKET_COLUMNS,
                                 *(f"funding_rate_{v}" for v in self._venues), *DELTA_COLUMNS])

            async def handle(step: PnlAttributed) -> None:
                ts = iso(step.ts_event)  # once per hour: formatting the time was 2 % of a backtest
                self._record(step, ts, writer, events)
                self._balance_sheet(step, ts, sheet)

            await serve(ctx, self.inbox, handle)

    @staticmethod
    def _balance_sheet(step: PnlAttributed, ts: str, sheet: Any) -> None:
        """Every holding at the hour's close, in native units and valued (scaled AAVE balances as held)."""
        if step.ledger is None or step.market is None:
            return
        for account, token, amount in step.ledger.balances:
            sheet.writerow([ts, account, token, str(amount), _num(token_value_usd(account, token, amount,
                                                                                  step.market))])
        for p in step.ledger.perps:
            if p.quantity:
                upnl = p.quantity * step.market.mark(p.venue, perp_asset(p.instrument)) - p.cost
                sheet.writerow([ts, p.venue, f"perp:{p.instrument}", str(p.quantity), _num(upnl)])

    def _market_cells(self, ledger: LedgerSnapshot, market: MarketState) -> list[str]:
        """The MARKET_COLUMNS then each venue's funding rate, "" where the market has no such value yet."""
        hedge = sum((abs(p.quantity) for p in ledger.perps if perp_asset(p.instrument) == "ETH"), Decimal(0))
        asset = self._spec.asset if self._spec.asset in ("ETH", "BTC") else "ETH"
        cells = [_num(market.prices_usd["ETH"], 2) if "ETH" in market.prices_usd else "", _num(hedge)]
        cells += [f"{market.liquidity_index[r]:.12f}" if r in market.liquidity_index else "" for r in ("USDT", "WETH")]
        cells += [f"{rate:.10f}" if (rate := market.funding_rates.get((v, asset))) is not None else ""
                  for v in self._venues]
        return cells

    def _record(self, step: PnlAttributed, ts: str, writer: Any, events: IO[str]) -> None:
        for n, change in enumerate(step.changes, start=1):
            events.write(json.dumps({"ts": ts, **change_json(change, n)}, sort_keys=True) + "\n")
        delta = hf = ltv = Decimal(0)
        margins: dict[str, Decimal] = {}
        market_cells = [""] * (len(MARKET_COLUMNS) + len(self._venues))
        delta_cells = [""] * len(DELTA_COLUMNS)
        drift: Decimal | None = None
        if step.ledger is not None and step.market is not None:
            if self.first is None:
                self.first = (step.ledger, step.market)
            delta = compute_exposure(step.ledger, step.market).net_delta("ETH")
            view = strategy_view(step.ledger, step.market, self._spec, self._venues)
            ltv = view.aave_debt / view.aave_collateral if view.aave_collateral else Decimal(0)
            hf = self._spec.liquidation_threshold / ltv if ltv else INFINITY
            self.min_hf = min(self.min_hf, hf)
            for p in step.ledger.perps:
                if p.quantity:
                    reading = margin_reading(p.venue, step.ledger.balance(p.venue, "USDT"), p.quantity,
                                             p.entry_price, step.market.mark(p.venue, perp_asset(p.instrument)),
                                             RiskLimits())
                    margins[p.venue] = reading.ratio
                    self.min_margin[p.venue] = min(self.min_margin.get(p.venue, INFINITY), reading.ratio)
            market_cells = self._market_cells(step.ledger, step.market)
            book = book_delta(step.ledger, step.market, self._spec.share_class, delta_asset(self._spec),
                              self._spec.hedged)
            drift = book.drift
            delta_cells = [_num(book.delta), "" if drift is None else _num(drift, 8)]
        components = dict(step.components)
        pnl = step.nav_after - step.nav_before - step.flows
        writer.writerow([ts, _num(step.nav_after), _num(pnl), *(_num(components[c]) for c in COMPONENTS),
                         f"{step.residual:.3E}", _num(delta), _num(hf), _num(ltv),
                         *(_num(margins[v]) if v in margins else "" for v in self._venues), *market_cells,
                         *delta_cells])
        self.navs.append(step.nav_after)
        self.drifts.append(drift)
        self.times.append(step.ts_event // 1_000_000_000)
        self.rows += 1
