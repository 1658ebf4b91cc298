"""The chain adapter's transactions: signed here with the wallet key, sent over `AsyncWeb3`, followed until mined.

`TxSender.transact(call)` = fees (EIP-1559, capped) → nonce → gas estimate × margin → sign → send → receipt at the
configured confirmation depth. What can happen, as the project's errors:
- the fee the next block needs (its base fee + our tip) is above the cap: `FeeAboveCap` (retryable, names the fee
  and the cap), nothing is signed or sent;
- the call would revert (the estimate reverts, or the mined receipt has status 0): `TxReverted`, a `VenueRejected`
  whose `reason` is AAVE's error name ("HEALTH_FACTOR_LOWER_THAN_LIQUIDATION_THRESHOLD", from its code "35") or the
  executor's custom error ("LtvOutOfBounds"); a revert at estimate sends nothing;
- the node did not answer the submission (a timeout, a dropped connection): `UnknownTxOutcome`, carrying the signed
  `SentTx`. It may or may not be in the node's pool: `resolve(sent)` looks it up by hash (mined? pending?) and by
  nonce (used by another transaction?) before anything is sent again. Re-sending the *same* signed bytes is
  idempotent (same hash, same nonce) — `rebroadcast` does only that; a fresh transaction is never built for it;
- not mined within the wait: `TxNotMined` (retryable, carries the `SentTx`): `replace(sent)` re-signs it at the same
  nonce with both the tip and the max fee bumped by ≥ 10 % (what geth and anvil require of a replacement), or more
  if the market moved; `wait` then follows every attempt at that nonce, whichever mines.

`transact(call)` is the policy over those steps ("never lose, never repeat" on every path):
- `FeeAboveCap` at the send: waits (logging once that it waits and why) and tries again every `fee_retry_s` until
  `fee_wait_s`, then raises it — nothing was signed;
- `UnknownTxOutcome` at the send: `resolve` before anything is sent again; only a DROPPED one is rebroadcast (the same
  bytes), never a new transaction;
- not mined after `stuck_after_s`: `replace` with bumped fees, up to `max_replacements`, then `TxStuck` naming the
  nonce and the hashes (an UnknownTxOutcome: still tracked, `follow` it or resolve it; never build it again);
- once anything is signed, no error leaves it that invites a plain retry: a node that stops answering while a
  transaction is followed ends in `UnknownTxOutcome` too.

Nonces: `NonceManager` hands out max(the chain's pending count, the highest nonce this process has in flight + 1)
and tracks each nonce's attempts until one is seen mined or the nonce is used by another transaction. `persist` (an
async callback given every `SentTx` *before* its bytes leave) is the journal's hook: with a `TxJournal`
(daemon/venues/web3_tx_journal.py) every attempt is on disk before it is broadcast and settled once its outcome is
handed to a caller. At start, `recover()` — run by the first `send` if nobody ran it — restores what the journal
has in flight and resolves each before anything new is sent: MINED → its receipt in `recovered`, for the caller to
book (its `ref` and `label` say which operation it was); PENDING → followed (`follow(sent)`); NONCE_USED → settled;
DROPPED → the same signed bytes rebroadcast.

The key: given as a `SecretStr` (or str), held by `_Signer`, whose repr names only the address. No error message
raised here carries it (eth-account's own signing errors are replaced by their type name), nor the RPC URL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from pydantic import SecretStr
from web3 import AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.types import TxParams, TxReceipt

from daemon.errors import (
    FatalVenueError,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueBadPayload,
    VenueInsufficientFunds,
    VenueRejected,
)
from daemon.venues.web3_reads import _without_urls
from daemon.venues.web3_reverts import Revert, decode_revert

if TYPE_CHECKING:
    from daemon.venues.web3_tx_journal import TxJournal

log = structlog.get_logger()

GWEI = 10**9
CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ProviderConnectionError)


# --- errors ----------------------------------------------------------------------------------------------------


class FeeAboveCap(RetryableVenueError):
    """The next block's fee (base fee + tip) is above the configured cap: nothing was sent; try again later."""

    def __init__(self, fee_wei: int, cap_wei: int, retry_after_s: float | None = None,
                 waited_s: float | None = None) -> None:
        waited = f" (after waiting {waited_s:.0f} s for it to fall)" if waited_s is not None else ""
        super().__init__(f"gas fee {_gwei(fee_wei)} gwei is above the cap of {_gwei(cap_wei)} gwei{waited}: not sent, "
                         "retry when the base fee falls", retry_after_s)
        self.fee_wei = fee_wei
        self.cap_wei = cap_wei


class TxReverted(VenueRejected):
    """The transaction reverts (at estimate: nothing sent; or mined with status 0: only gas spent). `reason` is the
    decoded name, `revert` the whole decoding, `tx_hash` the mined transaction's hash when it was mined."""

    def __init__(self, label: str, revert: Revert, tx_hash: str | None = None) -> None:
        where = f"mined reverted in {tx_hash}" if tx_hash else "reverts (not sent)"
        super().__init__(f"{label} {where}: {revert}", revert.reason)
        self.revert = revert
        self.tx_hash = tx_hash


class UnknownTxOutcome(UnknownOrderOutcome):
    """The submission got no answer: the transaction may be in the node's pool. `resolve(sent)` before re-sending."""

    def __init__(self, message: str, sent: SentTx) -> None:
        super().__init__(message, client_order_id=sent.tx_hash)
        self.sent = sent


class TxNotMined(RetryableVenueError):
    """Not mined (or not confirmed deep enough) within the wait: still pending; `replace` it or wait again."""

    def __init__(self, message: str, sent: SentTx) -> None:
        super().__init__(message)
        self.sent = sent


class TxStuck(UnknownTxOutcome):
    """`transact` gave up following a transaction that is still not mined (its replacements spent, or their fee
    above the cap): it is still tracked and may yet mine. `follow(sent)` or `resolve(sent)` it; never build it anew."""


class TxNonceTaken(VenueRejected):
    """A transaction none of ours used the nonce (another signer with this key?): ours can never land — the call
    did not happen."""

    def __init__(self, sent: SentTx) -> None:
        super().__init__(f"{sent.label} (nonce {sent.nonce}, {sent.tx_hash}): the nonce was used by a transaction "
                         "that is none of ours; this one can never be mined. Is another signer using this wallet?",
                         reason="nonce used by another transaction")
        self.sent = sent


class TxJournalUnwritable(FatalVenueError):
    """The transaction journal cannot be written: nothing is broadcast, since a crash could then repeat it."""


# --- configuration and records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxPolicy:
    max_fee_cap_wei: int  # the most per gas we ever offer; a fee the next block needs above it is refused
    priority_fee_percentile: int = 50  # of the tips paid in recent blocks (eth_feeHistory)
    min_priority_fee_wei: int = 10**6  # a floor (0.001 gwei): an empty history must not yield a zero tip
    fee_history_blocks: int = 10
    base_fee_headroom: int = 2  # max fee = headroom × next base fee + tip (survives ~6 full blocks of +12.5 %)
    gas_margin: Decimal = Decimal("1.2")  # on the estimate: state can move between estimate and inclusion
    confirmations: int = 1  # blocks including the one that mined it
    receipt_timeout_s: float = 120.0
    poll_interval_s: float = 0.5
    replacement_bump: Decimal = Decimal("1.125")  # > 10 %: nodes refuse a replacement below +10 % on both fees
    # transact()'s policy
    stuck_after_s: float = 60.0  # not mined this long after sending (or after its last replacement): replace it
    max_replacements: int = 3  # then TxStuck (still tracked)
    fee_wait_s: float = 120.0  # the next block's fee above the cap: wait this long for it to fall, then FeeAboveCap
    fee_retry_s: float = 6.0  # how often to look again meanwhile (about every block on L1 is 12 s)

    def __post_init__(self) -> None:
        if self.replacement_bump < Decimal("1.1"):
            raise ValueError(f"replacement_bump {self.replacement_bump} is below the 10 % nodes require")
        if self.confirmations < 1 or self.gas_margin < 1 or self.max_fee_cap_wei <= 0:
            raise ValueError("confirmations ≥ 1, gas_margin ≥ 1 and a positive fee cap are required")
        if self.stuck_after_s <= 0 or self.max_replacements < 0 or self.fee_wait_s < 0 or self.fee_retry_s <= 0:
            raise ValueError("stuck_after_s > 0, max_replacements ≥ 0, fee_wait_s ≥ 0 and fee_retry_s > 0 are required")


@dataclass(frozen=True, slots=True)
class TxCall:
    """What to send, before fees, nonce and gas: a contract call's `to`, `data`, `value`, and a label for errors."""

    to: str
    data: bytes = b""
    value: int = 0
    label: str = "transaction"
    gas: int | None = None  # given: no estimate (a replacement keeps its original's)
    ref: str = ""  # the caller's reference (its instruction / operation id): journaled, so a recovered one is known


@dataclass(frozen=True, slots=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee: int  # the next block's, when computed


@dataclass(frozen=True, slots=True)
class SentTx:
    """One signed attempt at a nonce. `raw` is the signed bytes (safe to rebroadcast; holds no key)."""

    label: str
    nonce: int
    tx_hash: str
    raw: bytes = field(repr=False)
    to: str
    data: bytes = field(repr=False)
    value: int
    gas: int
    fees: Fees
    sent_at: float
    replaces: tuple[str, ...] = ()  # the hashes of the earlier attempts at this nonce
    ref: str = ""  # the caller's reference, from its TxCall

    @property
    def hashes(self) -> tuple[str, ...]:
        return (*self.replaces, self.tx_hash)


class TxState(Enum):
    MINED = "mined"  # one of the attempts at this nonce is in a block (see `receipt`)
    PENDING = "pending"  # the node has one of them in its pool
    NONCE_USED = "nonce_used"  # the nonce is used by a transaction that is none of ours: do not resend
    DROPPED = "dropped"  # the node knows none of them and the nonce is free: rebroadcast is safe


@dataclass(frozen=True, slots=True)
class Resolution:
    state: TxState
    sent: SentTx
    receipt: TxReceipt | None = None


# --- the key ---------------------------------------------------------------------------------------------------


class _Signer:
    """The wallet key, usable only to sign. Its repr, str and every error it raises name only the address."""

    __slots__ = ("_account",)

    def __init__(self, key: SecretStr | str) -> None:
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        try:
            self._account: LocalAccount = Account.from_key(secret)
        except Exception as e:
            raise ValueError(f"the wallet key is not a valid private key ({type(e).__name__})") from None

    @property
    def address(self) -> str:
        return str(self._account.address)

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, str]:
        try:
            signed = self._account.sign_transaction(tx)
        except Exception as e:
            raise ValueError(f"signing failed ({type(e).__name__})") from None
        return bytes(signed.raw_transaction), HexBytes(signed.hash).to_0x_hex()

    def __repr__(self) -> str:
        return f"_Signer({self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the wallet key cannot be pickled")


# --- nonces ----------------------------------------------------------------------------------------------------

Persist = Callable[[SentTx], Awaitable[None]]


class NonceManager:
    """The next nonce for one address, and every attempt sent but not yet seen mined, by nonce."""

    def __init__(self, w3: AsyncWeb3[Any], address: str, persist: Persist | None = None) -> None:
        self._w3 = w3
        self._address = AsyncWeb3.to_checksum_address(address)
        self._persist = persist
        self._in_flight: dict[int, SentTx] = {}  # nonce -> the latest attempt (with the earlier ones' hashes)
        self.lock = asyncio.Lock()  # held from taking a nonce to handing the signed bytes to the node

    @property
    def in_flight(self) -> dict[int, SentTx]:
        return dict(self._in_flight)

    def restore(self, sent: Iterable[SentTx]) -> None:
        """After a restart: what the journal says was in flight (resolved by the caller before new sends)."""
        for s in sent:
            self._in_flight[s.nonce] = s

    async def next_nonce(self) -> int:
        pending = await self._w3.eth.get_transaction_count(self._address, "pending")
        await self.forget_mined()
        ours = max(self._in_flight, default=-1) + 1
        return max(int(pending), ours)

    async def track(self, sent: SentTx) -> None:
        """Records the attempt (and gives it to `persist`) before its bytes leave: a crash after sending loses
        nothing the journal did not see."""
        if self._persist is not None:
            await self._persist(sent)
        self._in_flight[sent.nonce] = sent

    async def forget_mined(self) -> None:
        """Drops every nonce below the chain's mined count: one of its attempts or another transaction used it."""
        if not self._in_flight:
            return
        mined = int(await self._w3.eth.get_transaction_count(self._address, "latest"))
        for nonce in [n for n in self._in_flight if n < mined]:
            del self._in_flight[nonce]

    def done(self, nonce: int) -> None:
        self._in_flight.pop(nonce, None)


# --- the sender ------------------------------------------------------------------------------------------------


class TxSender:
    def __init__(self, w3: AsyncWeb3[Any], key: SecretStr | str, policy: TxPolicy,
                 persist: Persist | None = None, journal: TxJournal | None = None) -> None:
        self._w3 = w3
        self._signer = _Signer(key)
        self.policy = policy
        self.journal = journal
        self._persist = persist
        self.nonces = NonceManager(w3, self._signer.address, self._record)
        self._chain_id: int | None = None
        self._recovery_lock = asyncio.Lock()
        self.recovered: list[Resolution] | None = None  # what `recover` found the last run had left in flight

    @property
    def address(self) -> str:
        return self._signer.address

    def __repr__(self) -> str:
        return f"TxSender({self.address})"

    async def transact(self, call: TxCall) -> TxReceipt:
        """Sends `call` and follows it to its receipt at the confirmation depth, by the policy (module docstring):
        waits out a fee above the cap, resolves an unknown outcome, replaces a stuck transaction. Raises FeeAboveCap
        / TxReverted / VenueRejected with nothing sent (or only a revert mined), or an UnknownTxOutcome (TxStuck
        included) carrying the tracked attempt — never one that invites building the call again."""
        try:
            sent = await self._send_under_cap(call)
        except UnknownTxOutcome as e:
            return await self.follow(e.sent, resolve_first=True)
        return await self.follow(sent)

    async def _send_under_cap(self, call: TxCall) -> SentTx:
        p = self.policy
        started = time.monotonic()
        said = False
        while True:
            try:
                return await self.send(call)
            except FeeAboveCap as e:
                waited = time.monotonic() - started
                if waited >= p.fee_wait_s:
                    raise FeeAboveCap(e.fee_wei, e.cap_wei, p.fee_retry_s, waited_s=waited) from None
                if not said:  # once per call: a long wait is one story, not a line per block
                    said = True
                    log.warning("tx_waiting_for_fee_under_cap", label=call.label, ref=call.ref,
                                fee_gwei=_gwei(e.fee_wei), cap_gwei=_gwei(e.cap_wei), wait_up_to_s=p.fee_wait_s,
                                detail="the next block's fee is above the configured cap: nothing signed; waiting "
                                       "for the base fee to fall")
                await asyncio.sleep(min(p.fee_retry_s, max(p.fee_wait_s - waited, 0.0)))

    async def follow(self, sent: SentTx, resolve_first: bool = False) -> TxReceipt:
        """Follows `sent` (a fresh send, one whose submission got no answer — `resolve_first` —, or one `recover`
        found pending) to its receipt: a DROPPED one is rebroadcast as it is; one not mined after `stuck_after_s`
        is replaced at its nonce with bumped fees, up to `max_replacements`; then TxStuck."""
        return await _Following(self, sent).run(resolve_first)

    # --- the journal -----------------------------------------------------------------------------------------

    async def recover(self) -> list[Resolution]:
        """Once per sender, before its first send (`send` runs it): what the journal has in flight, restored and
        resolved — MINED ones with their receipts (for the caller to book: `sent.ref` / `sent.label` say which
        operation), PENDING ones tracked (`follow` them), NONCE_USED settled, DROPPED ones rebroadcast (the same
        bytes; reported DROPPED, then pending like the others). Without a journal: nothing."""
        if self.journal is None:
            return []
        async with self._recovery_lock:
            if self.recovered is None:
                chain_id = await self._chain()
                try:
                    records = self.journal.in_flight(chain_id, self.address)
                except sqlite3.Error as e:
                    raise TxJournalUnwritable(f"the transaction journal {self.journal.path} cannot be read "
                                              f"({type(e).__name__}: {e}): nothing sent") from None
                self.nonces.restore(records)
                found: list[Resolution] = []
                for sent in records:
                    resolution = await self.resolve(sent)
                    if resolution.state is TxState.DROPPED:
                        try:
                            await self.rebroadcast(sent)
                        except UnknownTxOutcome:
                            resolution = await self.resolve(sent)  # the nonce got used meanwhile, or no answer
                        except VenueRejected as e:  # (its fee below what the node takes now): `follow` bumps it
                            log.warning("tx_rebroadcast_refused", label=sent.label, ref=sent.ref, nonce=sent.nonce,
                                        tx_hash=sent.tx_hash, reason=e.reason)
                    found.append(resolution)
                    # A warning: the last run ended with this in flight (killed?), and its caller must book it.
                    log.warning("tx_recovered", label=sent.label, ref=sent.ref, nonce=sent.nonce,
                                tx_hash=sent.tx_hash, state=resolution.state.value)
                self.recovered = found
            return list(self.recovered)

    async def _record(self, sent: SentTx) -> None:
        """The persist hook: the journal's row (committed), then the caller's hook, before the bytes leave."""
        if self.journal is not None:
            try:
                self.journal.record(await self._chain(), self.address, sent)
            except sqlite3.Error as e:
                raise TxJournalUnwritable(f"{sent.label}: the transaction journal {self.journal.path} cannot be "
                                          f"written ({type(e).__name__}: {e}): not sent") from None
        if self._persist is not None:
            await self._persist(sent)

    async def _settle(self, sent: SentTx, mined_hash: str | None) -> None:
        """The nonce's outcome is being handed to a caller: no longer in flight, here or in the journal. A journal
        that cannot say so raises (halt): a restart would hand the outcome over again."""
        self.nonces.done(sent.nonce)
        if self.journal is not None:
            chain_id = await self._chain()
            try:
                self.journal.settle(chain_id, self.address, sent.nonce, mined_hash)
            except sqlite3.Error as e:
                raise TxJournalUnwritable(f"{sent.label} (nonce {sent.nonce}): the transaction journal "
                                          f"{self.journal.path} cannot record its outcome ({type(e).__name__}: {e})"
                                          ) from None

    def _refused(self, sent: SentTx) -> None:
        if self.journal is not None:
            try:
                self.journal.refused(sent.tx_hash)
            except sqlite3.Error as e:
                # Left in flight, a restart would find it DROPPED and rebroadcast what the caller was told was
                # refused (and may have retried): halt rather than pass the refusal on.
                raise TxJournalUnwritable(f"{sent.label} (nonce {sent.nonce}, {sent.tx_hash}) was refused by the "
                                          f"node, and the transaction journal {self.journal.path} cannot record it "
                                          f"({type(e).__name__}: {e})") from None

    # --- sending ---------------------------------------------------------------------------------------------

    async def fees(self) -> Fees:
        """The next block's base fee and a tip from recent blocks; refuses (FeeAboveCap) when base + tip > cap."""
        p = self.policy
        history = await self._rpc(self._w3.eth.fee_history(p.fee_history_blocks, "latest",
                                                           [p.priority_fee_percentile]))
        base = int(history["baseFeePerGas"][-1])
        paid = sorted(int(block[0]) for block in (history.get("reward") or ()) if block)
        tip = max(paid[len(paid) // 2] if paid else 0, p.min_priority_fee_wei)
        if base + tip > p.max_fee_cap_wei:
            raise FeeAboveCap(base + tip, p.max_fee_cap_wei)
        # The headroom lets it survive rising base fees; never above the cap (then it waits for the base fee).
        return Fees(min(p.base_fee_headroom * base + tip, p.max_fee_cap_wei), tip, base)

    async def estimate_gas(self, call: TxCall) -> int:
        tx: TxParams = {"from": self.address, "to": AsyncWeb3.to_checksum_address(call.to), "data": call.data,
                        "value": call.value}  # type: ignore[typeddict-item]
        try:
            estimate = await self._rpc(self._w3.eth.estimate_gas(tx), call.label)
        except ContractLogicError as e:
            raise TxReverted(call.label, decode_revert(e.data if isinstance(e.data, str | bytes) else None,
                                                       str(e.message or ""))) from None
        return int((Decimal(estimate) * self.policy.gas_margin).to_integral_value(ROUND_CEILING))

    async def send(self, call: TxCall) -> SentTx:
        """Signs and sends `call` at the next nonce. Raises FeeAboveCap / TxReverted with nothing sent, or
        UnknownTxOutcome when the node did not answer the submission. With a journal, the last run's transactions
        are recovered first (`recover`): its failures raise a RetryableVenueError with nothing of `call` sent."""
        if self.journal is not None and self.recovered is None:
            try:
                await self.recover()
            except (RetryableVenueError, UnknownOrderOutcome) as e:
                raise RetryableVenueError(f"{call.label}: not sent — the transactions the last run left in flight "
                                          f"are not resolved yet ({e})") from None
        fees = await self.fees()  # nothing is signed before these three: their failures are plainly retryable
        gas = call.gas if call.gas is not None else await self.estimate_gas(call)
        chain_id = await self._chain()
        async with self.nonces.lock:
            nonce = await self._rpc(self.nonces.next_nonce(), call.label)
            sent = self._sign(call.label, call.to, call.data, call.value, gas, fees, nonce, chain_id, ref=call.ref)
            await self.nonces.track(sent)
            try:
                await self._broadcast(sent)
            except VenueRejected:
                self.nonces.done(nonce)  # the node refused it outright: the nonce is still free
                self._refused(sent)
                raise
        return sent

    async def replace(self, sent: SentTx) -> SentTx:
        """Re-signs `sent` at its nonce with both fees bumped ≥ the policy's bump (or today's, if higher)."""
        bump = self.policy.replacement_bump
        now = await self.fees()  # refuses above the cap like any send
        tip = max(_ceil(sent.fees.max_priority_fee_per_gas * bump), now.max_priority_fee_per_gas)
        max_fee = max(_ceil(sent.fees.max_fee_per_gas * bump), now.max_fee_per_gas, tip)
        if max_fee > self.policy.max_fee_cap_wei:
            raise FeeAboveCap(max_fee, self.policy.max_fee_cap_wei)
        fees = Fees(max_fee, tip, now.base_fee)
        replacement = self._sign(sent.label, sent.to, sent.data, sent.value, sent.gas, fees, sent.nonce,
                                 await self._chain(), replaces=sent.hashes, ref=sent.ref)
        async with self.nonces.lock:
            await self.nonces.track(replacement)
            try:
                await self._broadcast(replacement)
            except VenueRejected:
                self.nonces.restore([sent])  # refused (e.g. underpriced): the earlier attempts are still in flight
                self._refused(replacement)
                raise
        return replacement

    async def rebroadcast(self, sent: SentTx) -> None:
        """The same signed bytes again (after `resolve` said DROPPED): same hash and nonce, it cannot land twice."""
        await self._broadcast(sent)

    def _sign(self, label: str, to: str, data: bytes, value: int, gas: int, fees: Fees, nonce: int,
              chain_id: int, replaces: tuple[str, ...] = (), ref: str = "") -> SentTx:
        tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": AsyncWeb3.to_checksum_address(to),
              "data": data, "value": value, "gas": gas, "maxFeePerGas": fees.max_fee_per_gas,
              "maxPriorityFeePerGas": fees.max_priority_fee_per_gas}
        raw, tx_hash = self._signer.sign(tx)
        return SentTx(label, nonce, tx_hash, raw, to, data, value, gas, fees, time.time(), replaces, ref)

    async def _broadcast(self, sent: SentTx) -> None:
        try:
            await self._w3.eth.send_raw_transaction(sent.raw)
        except CONNECTION_ERRORS as e:
            raise UnknownTxOutcome(f"{sent.label} (nonce {sent.nonce}, {sent.tx_hash}): no answer to the "
                                   f"submission ({type(e).__name__}); resolve it before sending again", sent) from None
        except Web3RPCError as e:
            text = _without_urls(str(e.message or e)).lower()
            if "already known" in text or "already imported" in text:
                return  # the node has these very bytes: as sent
            if "insufficient funds" in text:
                raise VenueInsufficientFunds(f"{sent.label}: the wallet cannot pay for it", text) from None
            if "nonce too low" in text:
                raise UnknownTxOutcome(f"{sent.label}: nonce {sent.nonce} is already used; resolve it", sent) from None
            raise VenueRejected(f"{sent.label}: the node refused the transaction: {_without_urls(str(e.message))}",
                                reason=_without_urls(str(e.message))) from None

    # --- following ---------------------------------------------------------------------------------------------

    async def resolve(self, sent: SentTx) -> Resolution:
        """Where `sent` (any attempt at its nonce) is: by hash first, then whether its nonce is used."""
        for tx_hash in reversed(sent.hashes):
            receipt = await self._receipt(tx_hash)
            if receipt is not None:
                await self._settle(sent, tx_hash)
                return Resolution(TxState.MINED, sent, receipt)
        for tx_hash in reversed(sent.hashes):
            try:
                await self._rpc(self._w3.eth.get_transaction(HexBytes(tx_hash)))
                return Resolution(TxState.PENDING, sent)
            except TransactionNotFound:
                continue
        mined = int(await self._rpc(self._w3.eth.get_transaction_count(AsyncWeb3.to_checksum_address(self.address),
                                                                        "latest")))
        if mined > sent.nonce:
            await self._settle(sent, None)
            return Resolution(TxState.NONCE_USED, sent)
        return Resolution(TxState.DROPPED, sent)

    async def wait(self, sent: SentTx, timeout_s: float | None = None) -> TxReceipt:
        """The receipt of whichever attempt at `sent`'s nonce mined, once `confirmations` deep; a revert raises."""
        p = self.policy
        deadline = time.monotonic() + (p.receipt_timeout_s if timeout_s is None else timeout_s)
        while True:
            receipt = None
            for tx_hash in reversed(sent.hashes):
                receipt = await self._receipt(tx_hash)
                if receipt is not None:
                    break
            if receipt is not None:
                head = int(await self._rpc(self._w3.eth.get_block_number()))
                if head - int(receipt["blockNumber"]) + 1 >= p.confirmations:
                    await self._settle(sent, _hex(receipt["transactionHash"]))
                    if int(receipt["status"]) != 1:
                        revert = await self._replay(sent, receipt)
                        raise TxReverted(sent.label, revert, _hex(receipt["transactionHash"]))
                    return receipt
            if time.monotonic() >= deadline:
                state = "mined, not yet confirmed" if receipt is not None else "not mined"
                raise TxNotMined(f"{sent.label} (nonce {sent.nonce}, {sent.tx_hash}) {state} within the wait", sent)
            await asyncio.sleep(p.poll_interval_s)

    async def _replay(self, sent: SentTx, receipt: TxReceipt) -> Revert:
        """A mined revert's reason: the call replayed on the state before its block (receipts carry no reason)."""
        tx: TxParams = {"from": self.address, "to": AsyncWeb3.to_checksum_address(sent.to), "data": sent.data,
                        "value": sent.value, "gas": sent.gas}  # type: ignore[typeddict-item]
        try:
            await self._w3.eth.call(tx, int(receipt["blockNumber"]) - 1)
        except ContractLogicError as e:
            return decode_revert(e.data if isinstance(e.data, str | bytes) else None, str(e.message or ""))
        except Web3Exception:
            pass
        return Revert("unknown")

    async def _receipt(self, tx_hash: str) -> TxReceipt | None:
        try:
            receipt: TxReceipt = await self._rpc(self._w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        except (TransactionNotFound, TimeExhausted):
            return None
        return receipt

    async def _chain(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(await self._rpc(self._w3.eth.chain_id))
        return self._chain_id

    async def _rpc(self, request: Awaitable[Any], label: str = "chain request") -> Any:
        """One read on the way: connection failures as retryable, a wallet short of ETH for gas as insufficient
        funds, other web3 failures as a bad payload; never a URL."""
        try:
            return await request
        except (TransactionNotFound, ContractLogicError):
            raise
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3RPCError as e:
            text = _without_urls(str(e.message or e))
            if "insufficient funds" in text.lower():
                raise VenueInsufficientFunds(f"{label}: the wallet cannot pay for it: {text}", text) from None
            raise VenueBadPayload(f"{label} failed: {type(e).__name__}: {text}") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"chain request failed: {type(e).__name__}: {_without_urls(str(e))}") from None


class _Following:
    """One `follow`: the attempt in flight at the nonce and what was tried for it."""

    def __init__(self, sender: TxSender, sent: SentTx) -> None:
        self.tx = sender
        self.p = sender.policy
        self.sent = sent
        self.replacements = 0
        self.rebroadcasts = 0
        self.fee_refused_at: float | None = None
        self.unreachable_at: float | None = None

    async def run(self, look: bool) -> TxReceipt:
        while True:
            stuck = not look
            if not look:
                try:
                    return await self.tx.wait(self.sent, timeout_s=self.p.stuck_after_s)
                except TxNotMined:
                    pass  # not mined within stuck_after_s: stuck — rebroadcast or replace it below
                except RetryableVenueError as e:
                    await self._unreachable(e)
                    look = True
                    continue
            look = False
            try:
                resolution = await self.tx.resolve(self.sent)
            except RetryableVenueError as e:
                await self._unreachable(e)
                look = True
                continue
            self.unreachable_at = None
            if resolution.state is TxState.MINED:
                try:
                    return await self.tx.wait(self.sent)  # its depth, or its revert
                except TxNotMined as e:
                    raise TxStuck(f"{e} (mined, not yet {self.p.confirmations} deep): still tracked",
                                  self.sent) from None
                except RetryableVenueError as e:
                    await self._unreachable(e)
                    look = True
                    continue
            if resolution.state is TxState.NONCE_USED:
                raise TxNonceTaken(self.sent)
            if resolution.state is TxState.DROPPED and not (stuck and self.rebroadcasts):
                look = await self._rebroadcast()
            elif stuck:
                # Pending after stuck_after_s (one a look found pending is waited for first), or dropped again after
                # its rebroadcast (a node that will not keep it at that fee): bumped at its nonce.
                look = await self._unstick()

    async def _unreachable(self, e: RetryableVenueError) -> None:
        """The node stopped answering while we follow: keep at it for `receipt_timeout_s`, then UnknownTxOutcome."""
        now = time.monotonic()
        self.unreachable_at = now if self.unreachable_at is None else self.unreachable_at
        if now - self.unreachable_at >= self.p.receipt_timeout_s:
            s = self.sent
            raise UnknownTxOutcome(f"{s.label} (nonce {s.nonce}, {s.tx_hash}): the node did not answer for "
                                   f"{now - self.unreachable_at:.0f} s while it was followed ({e}); still tracked: "
                                   "resolve it before sending again", s) from None
        await asyncio.sleep(self.p.poll_interval_s)

    async def _rebroadcast(self) -> bool:
        """The same signed bytes again; True if where it is must be looked up again."""
        s = self.sent
        self.rebroadcasts += 1
        log.warning("tx_rebroadcast", label=s.label, ref=s.ref, nonce=s.nonce, tx_hash=s.tx_hash,
                    detail="the node knows none of its attempts and the nonce is free: the same signed bytes again")
        try:
            await self.tx.rebroadcast(s)
        except UnknownTxOutcome:
            return True  # no answer, or the nonce got used meanwhile
        except VenueRejected as e:  # (its fee below what the node takes now): bumped when it is found dropped again
            log.warning("tx_rebroadcast_refused", label=s.label, ref=s.ref, nonce=s.nonce, tx_hash=s.tx_hash,
                        reason=e.reason)
        return False

    async def _unstick(self) -> bool:
        """Replace the stuck attempt with bumped fees; TxStuck when the replacements are spent or their fee stays
        above the cap for `fee_wait_s`. True if where it is must be looked up again."""
        s, p = self.sent, self.p
        if self.replacements >= p.max_replacements:
            raise TxStuck(f"{s.label} (nonce {s.nonce}, {s.tx_hash}; earlier attempts {', '.join(s.replaces) or 'none'}"
                          f") is not mined after {self.replacements} replacement(s): still tracked — follow or "
                          "resolve it, do not send it again", s)
        try:
            replacement = await self.tx.replace(s)
        except FeeAboveCap as e:
            now = time.monotonic()
            if self.fee_refused_at is None:
                self.fee_refused_at = now
                log.warning("tx_replacement_above_fee_cap", label=s.label, ref=s.ref, nonce=s.nonce,
                            tx_hash=s.tx_hash, fee_gwei=_gwei(e.fee_wei), cap_gwei=_gwei(e.cap_wei),
                            wait_up_to_s=p.fee_wait_s, detail="stuck, and a bumped replacement would pay above the "
                                                              "cap: waiting on the attempts in flight")
            elif now - self.fee_refused_at >= p.fee_wait_s:
                raise TxStuck(f"{s.label} (nonce {s.nonce}, {s.tx_hash}) is not mined and its replacement's fee "
                              f"{_gwei(e.fee_wei)} gwei would be above the cap of {_gwei(e.cap_wei)} gwei: still "
                              "tracked — follow or resolve it", s) from None
            return False
        except UnknownTxOutcome as e:  # the replacement's submission got no answer: it is tracked; look
            self.replacements += 1
            self.sent = e.sent
            return True
        except VenueRejected as e:  # refused (underpriced, ...): the earlier attempts stay the ones in flight
            self.replacements += 1
            log.warning("tx_replacement_refused", label=s.label, ref=s.ref, nonce=s.nonce, tx_hash=s.tx_hash,
                        reason=e.reason)
            return False
        self.replacements += 1
        log.info("tx_replaced", label=s.label, ref=s.ref, nonce=s.nonce, tx_hash=replacement.tx_hash,
                 replaces=list(replacement.replaces), max_fee_gwei=_gwei(replacement.fees.max_fee_per_gas),
                 tip_gwei=_gwei(replacement.fees.max_priority_fee_per_gas))
        self.sent = replacement
        return False


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_CEILING))


def _gwei(wei: int) -> str:
    return f"{Decimal(wei) / GWEI:f}"


def _hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()


