"""The live run's opening read: the books open on what the venues, the wallet and the transfers between them hold
at one moment — the same path on a first start and after a kill -9.

Funds move between our accounts while the daemon is down: a transfer a killed run started may have been debited at
its source and not yet credited at its destination (it is in neither account's read: the books must open with it
in `transit`, or NAV drops by it and the drawdown breaker trips at start-up), or it may have landed meanwhile (both
reads hold it: nothing to book). Where a transfer is — `TransferDesk.sight`: asked for but never listed, debited,
landed, given back — is read before and after the accounts (every venue's, then the wallet's); each stage only ever
moves forward, so two equal sightings mean every read in between saw that stage. A transfer that moved during the
reads makes them go again (`OPENING_ATTEMPTS`); the desk's book is then brought to the sighting without a leg to
book (`TransferDesk.open_at`: the reads hold the effect) and what is still moving joins the opening as
`transit +carried`. The deposits from outside the reads hold are marked booked the same way.

Should transfers keep moving through every attempt, the books open on the last sighting and say so: the
reconciler's first run finds what the reads and the sighting disagree on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from daemon.domain.ledger import ChangeSet, Ledger, TokenChange
from daemon.journal_books import JournalBooks
from daemon.venues.ccxt_transfers import Sightings

if TYPE_CHECKING:
    from daemon.live_accounts import LiveAccounts
    from daemon.live_chain import LiveChain

log = structlog.get_logger()

OPENING_ATTEMPTS = 5


async def read_opening(accounts: LiveAccounts, chain: LiveChain | None,
                       attempts: int = OPENING_ATTEMPTS) -> ChangeSet:
    """The books' opening (venues, wallet, transit), once `accounts.prepare()` (and `chain.prepare()`) ran; starts
    the accounts' services from the moment of the read (`accounts.begin`)."""
    desk = accounts.desk
    assert desk is not None, "accounts.prepare() makes the desk"
    wallet_has = chain.mined if chain is not None else None
    sighted: Sightings | None = None
    for attempt in range(1, attempts + 1):
        before = await desk.sight(accounts.deposit_assets, wallet_has)
        read_ms, details = await accounts.read()
        wallet: tuple[TokenChange, ...] = await chain.read() if chain is not None else ()
        sighted = await desk.sight(accounts.deposit_assets, wallet_has)
        if sighted == before:
            break
        log.info("opening_read_again", attempt=attempt, before=_stages(before), after=_stages(sighted),
                 detail="a transfer moved while the accounts were read: read again")
    else:
        log.warning("opening_read_unsettled", attempts=attempts, sighting=_stages(sighted),
                    detail="transfers kept moving during every read: the books open on the last sighting, and the "
                           "first reconciliation books what the reads and it disagree on")
    assert sighted is not None
    await accounts.funding_while_down(read_ms)  # (an opening on the reads holds it: taken out, booked as funding)
    transit = desk.open_at(sighted, accounts.clock.now_ns())
    if transit:
        log.warning("opening_in_transit", transit={t.token: str(t.delta) for t in transit},
                    detail="funds between our accounts at the start: the books open with them in transit")
    opening = accounts.open(details, (*wallet, *transit))
    await accounts.begin(read_ms)
    return opening


async def open_after_restart(accounts: LiveAccounts, chain: LiveChain | None, books: JournalBooks,
                             ledger: Ledger) -> ChangeSet:
    """A restart's opening on the journal's books (`books`, replayed into `ledger` — the run's own ledger, empty
    until now): what happened while the daemon was down, or in the instant before it died, booked as what it was —
    a transfer's leg the journal lacks, a transfer that landed or came back, a deposit from outside, a transaction
    of ours mined without its report, the funding the venues paid — through the venue reports (journaled as any
    report, once each by its id); each perp a venue holds beyond the books adopted at its entry price. Whatever is
    left is the start-up reconciliation's (before READY): it books a token difference as `reconciliation`, logged and
    counted, and halts above `reconcile.halt_above_usd` or on any perp difference."""
    desk = accounts.desk
    assert desk is not None, "accounts.prepare() makes the desk"
    for _, change in books.changes:  # (a scratch ledger: the run's own books them under their keys, daemon.app)
        ledger.apply(change)
    # The wallet's transactions first: a deposit's debit (wallet -> transit) is its transaction's report, and the
    # desk's landing (transit -> venue) of the same transfer, booked before it, would take transit below zero.
    late = await chain.book_unbooked(books.keys, books.since_ns) if chain is not None else 0
    again = await desk.resume_after_restart(books.keys)
    deposits = await desk.poll_deposits(accounts.deposit_assets)
    read_ms, details = await accounts.read()
    await accounts.funding_while_down(read_ms)
    opening = accounts.open_continued(details, ledger)
    log.info("opening_on_the_journal", runs=list(books.runs), reports=len(books.changes), legs_published_again=again,
             deposits_booked=deposits, transactions_booked=late, adopted=len(opening.perps),
             detail="the books are the journal's; what happened while down is booked as what it was, and the "
                    "start-up reconciliation compares the rest with the venues")
    await accounts.begin(read_ms)
    return opening


def _stages(s: Sightings | None) -> dict[str, object]:
    if s is None:
        return {}
    return {"transfers": {t.transfer_id: t.stage.value for t in s.transfers},
            "deposits": sorted(s.outside_deposits)}
