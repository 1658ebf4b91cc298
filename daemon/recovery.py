"""Recovery at a live start-up: what the previous run left open is resolved on the venues, explicitly, before the
books open and before anything trades.

The journal (`daemon.journal`) says which orders a run sent (an `intent` row before each) and what became of them;
a run killed between an intent and its answer, or with an order left resting, leaves orders whose outcome only the
venue knows. `LiveAccounts.start` calls `recover_orders` once every venue has passed its start-up checks and before
it reads the accounts the books open on:

* each such order is asked of its venue by client id (`CcxtExchange.resolve_order`, the look-up an unknown outcome
  uses): filled (its trades journaled as the fills actor journals one, once by venue and trade id: they are in the
  balances and positions read next, so they are never published to the books again); still resting → cancelled (the
  restarted strategy plans afresh from the venues' truth and no longer intends it); unknown to the venue → recorded
  as never sent (and never sent: the new run's instruction ids carry its own run number). A venue that cannot be
  asked leaves the order open in the journal for the next start and brings the daemon up HALTED;
* the instruction in progress at the crash is abandoned explicitly — journaled and logged with the steps the journal
  saw done and what is left — never re-run from its first step: the strategy plans from the venues' truth. The
  journal has each instruction's plan and its end (`instructions`, written by the execution actor): one started and
  never finished is abandoned, step by step against its plan; one that finished before the kill — done, or stopped
  by a failed step its run handled — is nothing to do (`instruction_finished_before_restart`), even when an order of
  it is settled here; one with a step timed out (outcome unknown) is abandoned whether it finished or not;
* each resolution is a `recoveries` row of the new run (so the next restart does not resolve it again) and one log
  line (`order_recovered`, `instruction_abandoned_at_restart`).

`check_positions` then compares the perps the venues hold with what the journal accounts for (every journaled fill
and every earlier adoption): a difference is adopted at the venue's entry price, or with `recovery.positions: halt`
the daemon comes up HALTED naming each one. `funding_paid_while_down` finds the funding the venues paid after what
the journal booked and before the accounts were read (it is in the balances the books open on): the start-up takes
it out of the opening (`opening_less`) and books it as funding after it, each payment once by its venue id. The
`RecoveryReport` sums it up for the start-up log and the status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

import structlog

from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.ledger import TokenChange
from daemon.domain.messages import BalancesChanged, FillReport, OrderStatusReport, Side, SubmitOrder
from daemon.errors import VenueError
from daemon.journal import PastRuns
from daemon.venues.ccxt_funding import FundingBooked, FundingPoller
from daemon.venues.ccxt_parse import PositionState

log = structlog.get_logger()

OPERATOR_HINT = ("`basisd flatten` closes what the venues hold; `basisd resume` trades on with the books as they "
                 "opened (on the venues' figures)")


class ResolvingVenue(Protocol):
    async def resolve_order(self, order: SubmitOrder) -> tuple[OrderStatusReport, tuple[FillReport, ...]] | None:
        ...


@dataclass(frozen=True, slots=True)
class OrderRecovery:
    client_order_id: str
    instruction_id: str
    venue: str
    outcome: str  # filled | cancelled | not_filled | never_sent | unknown (the venue could not be asked)
    filled: Decimal  # how much of it the venue filled
    fills: int  # its trades journaled by this recovery (0 if the previous run had journaled them)
    detail: str


@dataclass(slots=True)
class RecoveryReport:
    """What a live start-up resolved of the previous runs' journal (logged as `recovery_done`)."""

    previous_unclean: dict[str, Any] | None = None
    orders: list[OrderRecovery] = field(default_factory=list)
    abandoned: list[dict[str, Any]] = field(default_factory=list)  # instruction_id, steps, steps_done, left
    finished: list[dict[str, Any]] = field(default_factory=list)  # instruction_id, completed, steps_done, steps
    positions: list[dict[str, Any]] = field(default_factory=list)  # the perps the journal does not account for
    funding: dict[str, dict[str, str]] = field(default_factory=dict)  # venue → token → funding paid while down
    halt_reasons: list[str] = field(default_factory=list)

    @property
    def halt_reason(self) -> str | None:
        """Why the daemon must come up HALTED, or None."""
        return "; ".join(self.halt_reasons) + f" ({OPERATOR_HINT})" if self.halt_reasons else None

    def by_outcome(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.orders:
            out[o.outcome] = out.get(o.outcome, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        """For the start-up log and `basisd status --json`."""
        return {"previous_run_unclean": self.previous_unclean is not None, "previous_run": self.previous_unclean,
                "orders": self.by_outcome(),
                "orders_resolved": [{"client_order_id": o.client_order_id, "venue": o.venue, "outcome": o.outcome,
                                     "filled": str(o.filled)} for o in self.orders],
                "instructions_abandoned": [a["instruction_id"] for a in self.abandoned],
                "instructions_finished": [f["instruction_id"] for f in self.finished],
                "positions_unexplained": self.positions, "funding_while_down": self.funding,
                "halt": self.halt_reason}


def _order(body: Mapping[str, Any]) -> SubmitOrder:
    """The order as the intent row journaled it."""
    limit = body.get("limit_price")
    return SubmitOrder(ClientOrderId(body["client_order_id"]), InstructionId(body["instruction_id"]),
                       InstrumentId(body["instrument_id"]), Side(body["side"]), Decimal(body["quantity"]),
                       bool(body["reduce_only"]), str(body.get("reason", "")), int(body.get("ts_event", 0)),
                       int(body.get("ts_recv", 0)), None if limit is None else Decimal(limit))


def _step(ref: str) -> int | None:
    tail = ref.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


async def recover_orders(journal: PastRuns, venues: Mapping[str, ResolvingVenue],
                         report: RecoveryReport | None = None) -> RecoveryReport:
    """Resolve every order the earlier runs left open, then abandon their unfinished instructions (see above)."""
    report = report or RecoveryReport()
    report.previous_unclean = journal.previous_unclean()
    open_orders = journal.unresolved_orders()
    outcomes: dict[str, OrderRecovery] = {}
    for row in open_orders:
        recovered = await _resolve(journal, venues, row)
        outcomes[recovered.client_order_id] = recovered
        report.orders.append(recovered)
        if recovered.outcome == "unknown":
            report.halt_reasons.append(f"order {recovered.client_order_id} on {recovered.venue}: {recovered.detail}")
    last = journal.last_instruction()
    candidates = list(dict.fromkeys([*(row["instruction_id"] for row in open_orders),
                                     *journal.unfinished_instructions(), *([last] if last else [])]))
    ends = journal.instruction_ends(candidates)
    timed_out = set(journal.timed_out_instructions())
    for instruction_id in candidates:
        end = ends.get(instruction_id)
        if end is not None and instruction_id not in timed_out:
            # It ran to its end (done, or stopped by a failed step or a halt, which its run handled): an order of
            # it the venue settled while the daemon was down changes nothing the strategy must resume or abandon.
            report.finished.append(_finished(instruction_id, end))
        else:
            report.abandoned.append(_abandon(journal, instruction_id, outcomes))
    log.info("recovery_orders_done", orders=report.by_outcome(),
             instructions_abandoned=[a["instruction_id"] for a in report.abandoned],
             instructions_finished=[f["instruction_id"] for f in report.finished],
             previous_run_unclean=report.previous_unclean is not None)
    return report


def _finished(instruction_id: str, end: Mapping[str, Any]) -> dict[str, Any]:
    """An instruction the journal saw finish before the restart: nothing to resume or abandon (logged, not journaled
    as a recovery: nothing was resolved)."""
    summary = {"instruction_id": instruction_id, "completed": bool(end.get("completed")),
               "steps_done": int(end.get("steps_done", 0)), "steps": int(end.get("steps", 0)),
               "reason": str(end.get("reason", ""))}
    log.info("instruction_finished_before_restart", **summary, detail="nothing to resume or abandon")
    return summary


async def _resolve(journal: PastRuns, venues: Mapping[str, ResolvingVenue], row: dict[str, Any]) -> OrderRecovery:
    order = _order(row["order"])
    cid, instruction_id = str(order.client_order_id), str(order.instruction_id)
    venue_name = order.instrument_id.split(":", 1)[0]
    venue = venues.get(venue_name)
    common = {"client_order_id": cid, "instruction_id": instruction_id, "venue": venue_name}
    if venue is None:
        recovered = OrderRecovery(**common, outcome="unknown", filled=Decimal(0), fills=0,
                                  detail=f"the venue {venue_name} is not in this configuration: ask it by hand")
        log.error("order_recovered", **common, outcome=recovered.outcome, detail=recovered.detail)
        return recovered
    try:
        found = await venue.resolve_order(order)
    except VenueError as exc:
        # Left open in the journal: the next start asks again. Until someone looks, nothing trades.
        recovered = OrderRecovery(**common, outcome="unknown", filled=Decimal(0), fills=0,
                                  detail=f"the venue could not be asked ({type(exc).__name__}: {exc})")
        log.error("order_recovered", **common, outcome=recovered.outcome, detail=recovered.detail)
        return recovered
    if found is None:
        recovered = OrderRecovery(**common, outcome="never_sent", filled=Decimal(0), fills=0,
                                  detail="the venue has no order with this client id: it never reached the venue")
    else:
        status, fills = found
        filled = sum((f.quantity for f in fills), Decimal(0))
        new = 0
        for fill in fills:
            key = f"{fill.venue}:{fill.trade_id}"
            if not journal.report_seen(key):  # a fill the previous run had journaled is not journaled again
                new += int(journal.record_report(fill.venue, key, "FillReport", fill))
        if status.status == "filled":
            outcome = "filled"
        elif status.reason.startswith("cancelled at a restart"):
            outcome = "cancelled"
        elif filled:
            outcome = "partly_filled"
        else:
            outcome = "not_filled"
        recovered = OrderRecovery(**common, outcome=outcome, filled=filled, fills=new,
                                  detail=status.reason or f"the venue's status: {status.status}")
    journal.record_recovery("order", cid, recovered.outcome, {
        "instruction_id": instruction_id, "venue": venue_name, "run": row["run"], "last_event": row["last_event"],
        "filled": recovered.filled, "fills_journaled": recovered.fills, "detail": recovered.detail})
    log.info("order_recovered", **common, outcome=recovered.outcome, filled=str(recovered.filled),
             fills_journaled=recovered.fills, last_event=row["last_event"], run=row["run"], detail=recovered.detail)
    return recovered


def _abandon(journal: PastRuns, instruction_id: str, outcomes: Mapping[str, OrderRecovery]) -> dict[str, Any]:
    """The instruction in progress at the crash, abandoned: journaled and logged, never re-run."""
    steps: dict[str, dict[str, Any]] = {}
    for ref, event, body in journal.instruction_rows(instruction_id):
        entry = steps.setdefault(ref, {"step": _step(ref), "ref": ref, "events": []})
        entry["events"].append(event)
        if event == "timeout":
            entry["action"] = body.get("action")
    for ref, entry in steps.items():
        recovered = outcomes.get(ref)
        last = entry["events"][-1]
        entry["outcome"] = recovered.outcome if recovered is not None else (
            "outcome unknown (a chain step: the chain's transaction journal settles it)" if entry["events"] ==
            ["timeout"] else last)
    plan = journal.instruction_plan(instruction_id)
    if plan is None:  # journaled by an older daemon: its orders only
        listed = sorted(steps.values(), key=lambda e: e["step"] if e["step"] is not None else -1)
        done = [e["step"] for e in listed if e["outcome"] == "filled"]
        last_step = max((e["step"] for e in listed if e["step"] is not None), default=0)
        left = [f"step {e['step']} ({e['outcome']})" for e in listed if e["outcome"] != "filled"]
        left.append(f"any step after {last_step} (the journal holds the instruction's orders, not its plan)")
    else:
        listed = _planned_steps(plan, steps)
        done = [e["step"] for e in listed if e["outcome"] in ("filled", "done")]
        left = [f"step {e['step']} {e['action']} ({e['outcome']})" for e in listed if e["step"] not in done]
    summary: dict[str, Any] = {"instruction_id": instruction_id, "steps": [
        {k: v for k, v in e.items() if k != "events"} for e in listed], "steps_done": done, "left": left}
    if plan is not None:
        summary["type"] = plan.get("type")
    journal.record_recovery("instruction", instruction_id, "abandoned", summary)
    log.warning("instruction_abandoned_at_restart", instruction_id=instruction_id, steps_done=done, left=left,
                steps=summary["steps"],
                detail="never re-run: the strategy plans afresh from what the venues hold")
    return summary


def _planned_steps(plan: Mapping[str, Any], journaled: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step of the instruction's plan with what became of it. Steps run one at a time, each only once the one
    before succeeded: a step before the last one the journal saw begin is done. An order step journals its intent
    before it is sent, so one without rows was never sent; a chain step leaves no row here (only a timeout does):
    past the last step seen, whether it ran is the chain's to say (the books open on the chain's truth)."""
    by_step = {e["step"]: e for e in journaled.values() if e["step"] is not None}
    reached = max(by_step, default=None)
    listed = []
    for planned in plan.get("steps", ()):
        number, action = int(planned["step"]), str(planned["action"])
        entry = by_step.get(number)
        if entry is not None:
            outcome = str(entry["outcome"])
        elif reached is not None and number < reached:
            outcome = "done"
        elif planned.get("order"):
            outcome = "never sent"
        else:
            outcome = "not journaled: done, in flight or never reached (the chain's truth says)"
        listed.append({"step": number, "action": action, "venue": planned.get("venue"), "outcome": outcome,
                       "ref": entry["ref"] if entry is not None else None})
    return listed


def check_positions(journal: PastRuns | None, held: Iterable[tuple[str, PositionState]], policy: str,
                    report: RecoveryReport) -> RecoveryReport:
    """The perps the venues hold (`held`: (venue, position)) against what the journal accounts for. Each difference
    is journaled as adopted (so the next start counts it) and logged; with `policy == "halt"` each also halts."""
    if journal is None:  # no journal to account for anything: what the venues hold is adopted, as always
        return report
    expected = journal.journaled_perps()
    venue_sizes: dict[tuple[str, str], PositionState] = {(v, p.instrument): p for v, p in held if p.quantity}
    for key in sorted(set(venue_sizes) | {k for k, q in expected.items() if q}):
        position = venue_sizes.get(key)
        size = position.quantity if position is not None else Decimal(0)
        ours = expected.get(key, Decimal(0))
        if size == ours:
            continue
        venue, instrument = key
        entry = position.entry_price if position is not None else None
        finding = {"venue": venue, "instrument": instrument, "venue_quantity": str(size),
                   "journal_quantity": str(ours), "entry_price": None if entry is None else str(entry),
                   "action": "halt" if policy == "halt" else "adopt"}
        report.positions.append(finding)
        journal.record_recovery("position", f"{venue}:{instrument}", str(finding["action"]),
                                {**finding, "delta": size - ours})
        if policy == "halt":
            report.halt_reasons.append(f"{venue} holds {size} {instrument} (entry {entry}) where the journal "
                                       f"accounts for {ours} (recovery.positions: halt)")
            log.critical("live_position_unexplained", **finding,
                         detail=f"the daemon comes up HALTED: {OPERATOR_HINT}")
        else:
            log.warning("live_position_unexplained", **finding,
                        detail="adopted at the venue's entry price (recovery.positions: adopt)")
    return report


async def funding_paid_while_down(journal: PastRuns, pollers: Mapping[str, FundingPoller], until_ms: int,
                                  report: RecoveryReport | None = None) -> list[FundingBooked]:
    """The funding payments each venue made after what the journal booked (`PastRuns.funding_since_ms`) and before
    `until_ms` (the moment the accounts were read: they are in those balances), each once (by its venue id; those the
    journal holds are skipped), oldest first per venue. The start-up takes them out of the opening balances and
    publishes them after the opening, so the books book them as funding and opening + payments = what the venue
    holds; each poller has them as seen. A venue that cannot be read is logged and left out: its payments stay in
    the opening as capital (the books still equal the venue; only the P&L's split is off)."""
    found: list[FundingBooked] = []
    for venue, poller in pollers.items():
        since_ms = journal.funding_since_ms(venue)
        if since_ms is None or since_ms >= until_ms:
            continue
        try:
            payments = await poller.paid_between(since_ms, until_ms, journal.funding_ids(venue))
        except VenueError as exc:
            log.warning("funding_while_down_unread", venue=venue, since_ms=since_ms, until_ms=until_ms,
                        error=str(exc), kind=type(exc).__name__,
                        detail="any funding it paid while the daemon was down opens as capital, not as funding")
            continue
        totals: dict[str, Decimal] = {}
        for payment in payments:
            for token in payment.change.tokens:
                totals[token.token] = totals.get(token.token, Decimal(0)) + token.delta
        log.info("funding_paid_while_down", venue=venue, since_ms=since_ms, until_ms=until_ms, payments=len(payments),
                 total={token: str(amount) for token, amount in totals.items()},
                 report_ids=[p.report_id for p in payments],
                 detail="booked as funding after the opening, which is reduced by them")
        if report is not None and payments:
            report.funding[venue] = {token: str(amount) for token, amount in totals.items()}
        found += payments
    return found


def opening_less(tokens: Iterable[TokenChange], payments: Iterable[BalancesChanged]) -> list[TokenChange]:
    """The opening balances with `payments` taken out (each account's token by their amount), so that the opening
    and the payments booked after it add up to what the venues hold."""
    out = list(tokens)
    for payment in payments:
        for paid in payment.change.tokens:
            at = next((i for i, t in enumerate(out) if (t.account, t.token) == (paid.account, paid.token)), None)
            if at is None:
                out.append(TokenChange(paid.account, paid.token, -paid.delta))
            else:
                out[at] = replace(out[at], delta=out[at].delta - paid.delta)
    return out


def log_report(report: RecoveryReport) -> None:
    (log.warning if report.halt_reason or report.abandoned or report.positions else log.info)(
        "recovery_done", **report.as_dict())
