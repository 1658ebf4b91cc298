"""Funds in transit: a transfer between two of our accounts is carried by the books until both sides agree.

A withdrawal from one venue to another (or out of our books) is two events the venues report at different times:
the source debits the amount (and its fee), and some minutes later the destination credits what arrived. In
between, the funds are neither at the source nor at the destination, and the books must neither lose them (NAV
would drop by the amount, then jump back) nor count them twice. They sit in the ledger's `transit` account:

    debited:   source −debited,  transit +carried            (carried = debited − fee: the fee is a cost)
    landed:    transit −carried, destination +credited        (credited ≠ carried only if the destination charged)
    returned:  transit −carried, source +refunded             (the venue gave up: a failed or cancelled withdrawal)
    left:      transit −carried                               (to an address outside our books: a WITHDRAWAL flow)

A transfer from the on-chain wallet to a venue starts in transit (`carry`): the chain adapter books its debit
(wallet −amount, transit +amount) when the transaction is mined, and the book carries it from there to its landing.

Each leg is one change set, so every unit is traceable from the source's debit to where it came to rest, and the
transit account is empty once nothing is moving. The `transit` account is valued like any exchange asset, so NAV
does not move while funds travel (only the fee leaves it).

The reconciler compares our books with the venues' own accounts, and a transfer is exactly where they may disagree
for a while without anything being wrong: the source may have debited before our books booked the debit, and the
destination may have credited before we saw the deposit. `TransitBook.allowances()` says, per account and token,
how far the venue's figure may be from ours because of transfers still moving (or just finished: the books may
lag the report by a moment), so that this is not called a drift. Nothing else is excused: a difference outside the
range is a drift as before.

Pure and single-writer (the transfers service owns one book); times are nanoseconds of the caller's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from daemon.domain.ledger import TRANSIT, ChangeSet, LedgerError, Reason, TokenChange

ZERO = Decimal(0)
LINGER_NS = 120 * 1_000_000_000  # how long a finished transfer still excuses a difference (the books' lag)


class TransitState(StrEnum):
    REQUESTED = "requested"  # the venue was asked; it may debit at any moment (or may not have the request)
    IN_TRANSIT = "in_transit"  # the source's debit is booked: the funds are in the transit account
    LANDED = "landed"  # credited at the destination (or gone out of our books): the transit account is empty of it
    RETURNED = "returned"  # the venue gave it back to the source
    ABANDONED = "abandoned"  # the request never reached the venue: nothing to book


FINISHED = frozenset({TransitState.LANDED, TransitState.RETURNED, TransitState.ABANDONED})


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer between accounts of the ledger, as far as it has come."""

    transfer_id: str  # unique: "<source>:<the venue's withdrawal id>" once the venue named it
    asset: str
    source: str  # the ledger account debited
    destination: str | None  # the ledger account credited; None: an address outside our books
    requested: Decimal  # what was asked for
    max_debit: Decimal  # the most the source may debit for it (the amount, plus the fee where the venue adds it)
    state: TransitState = TransitState.REQUESTED
    debited: Decimal = ZERO  # what left the source
    carried: Decimal = ZERO  # what is on its way (debited − fee)
    settled: Decimal = ZERO  # what came to rest: credited at the destination, or refunded to the source
    finished_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Allowance:
    """How far the venue's balance of `token` in `account` may be from ours (venue − books, in [low, high])
    because of transfers still moving."""

    account: str
    token: str
    low: Decimal
    high: Decimal

    def explains(self, delta: Decimal, epsilon: Decimal = ZERO) -> bool:
        return self.low - epsilon <= delta <= self.high + epsilon


class TransitError(LedgerError):
    """A transfer event that does not fit the transfer's state (unknown id, a second debit, more carried than
    debited); nothing changed."""


class TransitBook:
    def __init__(self, linger_ns: int = LINGER_NS) -> None:
        self._transfers: dict[str, Transfer] = {}
        self._linger_ns = linger_ns

    # --- reading ----------------------------------------------------------------------------------------------

    @property
    def linger_ns(self) -> int:
        return self._linger_ns

    def get(self, transfer_id: str) -> Transfer | None:
        return self._transfers.get(transfer_id)

    @property
    def transfers(self) -> tuple[Transfer, ...]:
        return tuple(self._transfers.values())

    def pending(self) -> tuple[Transfer, ...]:
        """Transfers not finished: requested or in transit."""
        return tuple(t for t in self._transfers.values() if t.state not in FINISHED)

    def in_transit(self, asset: str) -> Decimal:
        """What the transit account should hold of `asset`: Σ carried of the transfers in transit."""
        return sum((t.carried for t in self._transfers.values()
                    if t.asset == asset and t.state is TransitState.IN_TRANSIT), ZERO)

    def allowances(self, now_ns: int) -> tuple[Allowance, ...]:
        """Per (account, token), the range of venue − books that moving transfers explain. A requested or in-transit
        transfer: the source may already be debited by up to its debit, and the destination already credited by up
        to what is carried; a transfer finished less than `linger_ns` ago: the last leg may not be booked yet."""
        ranges: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}

        def widen(account: str | None, token: str, low: Decimal, high: Decimal) -> None:
            if account is None:
                return
            lo, hi = ranges.get((account, token), (ZERO, ZERO))
            ranges[(account, token)] = (lo + low, hi + high)

        for t in self._transfers.values():
            if t.state is TransitState.REQUESTED:
                widen(t.source, t.asset, -t.max_debit, ZERO)
                widen(t.destination, t.asset, ZERO, t.requested)
            elif t.state is TransitState.IN_TRANSIT:
                widen(t.source, t.asset, -t.debited, ZERO)
                widen(t.destination, t.asset, ZERO, t.carried)
            elif t.finished_ns is not None and now_ns - t.finished_ns < self._linger_ns:
                # The legs are published in order, and the books may not have applied any of them yet.
                if t.state is TransitState.LANDED:
                    widen(t.source, t.asset, -t.debited, ZERO)
                    widen(t.destination, t.asset, ZERO, t.settled)
                elif t.state is TransitState.RETURNED:  # debit and refund: the source is off by one of them
                    widen(t.source, t.asset, min(ZERO, t.settled - t.debited), max(ZERO, t.settled))
        return tuple(Allowance(a, tok, lo, hi) for (a, tok), (lo, hi) in sorted(ranges.items()))

    # --- writing: each event returns the change set to book (None: nothing to book) ---------------------------

    def request(self, transfer_id: str, asset: str, source: str, destination: str | None, amount: Decimal,
                max_debit: Decimal) -> Transfer:
        """Registered *before* the venue is asked, so the reconciler already excuses a debit it may see."""
        if transfer_id in self._transfers:
            raise TransitError(f"transfer {transfer_id} is known already")
        if amount <= 0 or max_debit < amount:
            raise TransitError(f"transfer {transfer_id}: amount {amount} must be positive and at most the debit "
                               f"{max_debit}")
        if destination == source:
            raise TransitError(f"transfer {transfer_id}: source and destination are both {source}")
        transfer = Transfer(transfer_id, asset, source, destination, amount, max_debit)
        self._transfers[transfer_id] = transfer
        return transfer

    def rename(self, transfer_id: str, new_id: str) -> Transfer:
        """The venue named the transfer (its withdrawal id): keyed by that from now on."""
        transfer = self._require(transfer_id, TransitState.REQUESTED)
        if new_id in self._transfers:
            raise TransitError(f"transfer {new_id} is known already")
        del self._transfers[transfer_id]
        self._transfers[new_id] = renamed = replace(transfer, transfer_id=new_id)
        return renamed

    def abandon(self, transfer_id: str, now_ns: int) -> None:
        """The venue never had the request (it refused it, or a look-up found nothing): nothing was debited."""
        transfer = self._require(transfer_id, TransitState.REQUESTED)
        self._transfers[transfer_id] = replace(transfer, state=TransitState.ABANDONED, finished_ns=now_ns)

    def debit(self, transfer_id: str, debited: Decimal, fee: Decimal, ts_ns: int) -> ChangeSet:
        """The source debited `debited`, of which `fee` stays with the venue: the rest is carried."""
        transfer = self._require(transfer_id, TransitState.REQUESTED)
        carried = debited - fee
        if debited <= 0 or fee < 0 or carried <= 0:
            raise TransitError(f"transfer {transfer_id}: a debit of {debited} with a fee of {fee} carries nothing")
        self._transfers[transfer_id] = replace(transfer, state=TransitState.IN_TRANSIT, debited=debited,
                                               carried=carried)
        return ChangeSet(Reason.VENUE_TRANSFER, ts_ns, (TokenChange(transfer.source, transfer.asset, -debited),
                                                        TokenChange(TRANSIT, transfer.asset, carried)),
                         ref=f"transfer-{transfer_id}-debit")

    def carry(self, transfer_id: str, asset: str, source: str, destination: str, amount: Decimal) -> Transfer:
        """A transfer whose debit someone else booked already (the chain adapter books the wallet's transaction to a
        venue as wallet −amount, transit +amount when it is mined): registered in transit at once, carrying all of
        `amount` (the gas is the wallet's, not the transfer's), with nothing to book for its debit."""
        if transfer_id in self._transfers:
            raise TransitError(f"transfer {transfer_id} is known already")
        if amount <= 0:
            raise TransitError(f"transfer {transfer_id}: amount {amount} must be positive")
        if destination == source:
            raise TransitError(f"transfer {transfer_id}: source and destination are both {source}")
        transfer = Transfer(transfer_id, asset, source, destination, amount, amount, TransitState.IN_TRANSIT,
                            debited=amount, carried=amount)
        self._transfers[transfer_id] = transfer
        return transfer

    def land(self, transfer_id: str, credited: Decimal, ts_ns: int) -> ChangeSet:
        """The destination credited `credited` (or, with no destination in our books, the venue says it is done):
        the transit account gives up what it carried."""
        transfer = self._require(transfer_id, TransitState.IN_TRANSIT)
        if transfer.destination is None:
            change = ChangeSet(Reason.WITHDRAWAL, ts_ns, (TokenChange(TRANSIT, transfer.asset, -transfer.carried),),
                               ref=f"transfer-{transfer_id}-out")
            settled = transfer.carried
        else:
            if credited <= 0:
                raise TransitError(f"transfer {transfer_id}: a credit of {credited} is not a landing")
            change = ChangeSet(Reason.VENUE_TRANSFER, ts_ns,
                               (TokenChange(TRANSIT, transfer.asset, -transfer.carried),
                                TokenChange(transfer.destination, transfer.asset, credited)),
                               ref=f"transfer-{transfer_id}-land")
            settled = credited
        self._transfers[transfer_id] = replace(transfer, state=TransitState.LANDED, settled=settled,
                                               finished_ns=ts_ns)
        return change

    def give_back(self, transfer_id: str, refunded: Decimal, ts_ns: int) -> ChangeSet:
        """The venue gave up on the transfer and put `refunded` back (the fee too, usually) at the source."""
        transfer = self._require(transfer_id, TransitState.IN_TRANSIT)
        if refunded < 0:
            raise TransitError(f"transfer {transfer_id}: a refund of {refunded}")
        self._transfers[transfer_id] = replace(transfer, state=TransitState.RETURNED, settled=refunded,
                                               finished_ns=ts_ns)
        return ChangeSet(Reason.VENUE_TRANSFER, ts_ns, (TokenChange(TRANSIT, transfer.asset, -transfer.carried),
                                                        TokenChange(transfer.source, transfer.asset, refunded)),
                         ref=f"transfer-{transfer_id}-return")

    def prune(self, now_ns: int) -> int:
        """Forget transfers finished longer than `linger_ns` ago; how many."""
        old = [i for i, t in self._transfers.items()
               if t.finished_ns is not None and now_ns - t.finished_ns >= self._linger_ns]
        for i in old:
            del self._transfers[i]
        return len(old)

    # --- surviving a restart -----------------------------------------------------------------------------------

    def dump(self) -> list[dict[str, str | None]]:
        """Every transfer as plain strings (decimals exact), for a state file."""
        return [{"transfer_id": t.transfer_id, "asset": t.asset, "source": t.source, "destination": t.destination,
                 "requested": str(t.requested), "max_debit": str(t.max_debit), "state": t.state.value,
                 "debited": str(t.debited), "carried": str(t.carried), "settled": str(t.settled),
                 "finished_ns": None if t.finished_ns is None else str(t.finished_ns)}
                for t in self._transfers.values()]

    @classmethod
    def load(cls, rows: list[dict[str, str | None]], linger_ns: int = LINGER_NS) -> TransitBook:
        book = cls(linger_ns)
        for r in rows:
            finished = r.get("finished_ns")
            transfer = Transfer(str(r["transfer_id"]), str(r["asset"]), str(r["source"]), r.get("destination"),
                                Decimal(str(r["requested"])), Decimal(str(r["max_debit"])),
                                TransitState(str(r["state"])), Decimal(str(r["debited"])), Decimal(str(r["carried"])),
                                Decimal(str(r["settled"])), None if finished is None else int(finished))
            book._transfers[transfer.transfer_id] = transfer
        return book

    def _require(self, transfer_id: str, state: TransitState) -> Transfer:
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise TransitError(f"no transfer {transfer_id}")
        if transfer.state is not state:
            raise TransitError(f"transfer {transfer_id} is {transfer.state}, not {state}")
        return transfer
