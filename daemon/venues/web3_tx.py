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

Nonces: `NonceManager` hands out max(the chain's pending count, the highest nonce this process has in flight + 1)
and tracks each nonce's attempts until one is seen mined or the nonce is used by another transaction. It lives in
memory; `persist` (an async callback given every `SentTx` *before* its bytes leave) is the hook the journal will use
so a restart can `restore` what was in flight — the journal side is not written yet.

The key: given as a `SecretStr` (or str), held by `_Signer`, whose repr names only the address. No error message
raised here carries it (eth-account's own signing errors are replaced by their type name), nor the RPC URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from enum import Enum
from typing import Any

import aiohttp
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
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueBadPayload,
    VenueInsufficientFunds,
    VenueRejected,
)
from daemon.venues.web3_reads import _without_urls
from daemon.venues.web3_reverts import Revert, decode_revert

GWEI = 10**9
CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ProviderConnectionError)


# --- errors ----------------------------------------------------------------------------------------------------


class FeeAboveCap(RetryableVenueError):
    """The next block's fee (base fee + tip) is above the configured cap: nothing was sent; try again later."""

    def __init__(self, fee_wei: int, cap_wei: int, retry_after_s: float | None = None) -> None:
        super().__init__(f"gas fee {_gwei(fee_wei)} gwei is above the cap of {_gwei(cap_wei)} gwei: not sent, "
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

    def __post_init__(self) -> None:
        if self.replacement_bump < Decimal("1.1"):
            raise ValueError(f"replacement_bump {self.replacement_bump} is below the 10 % nodes require")
        if self.confirmations < 1 or self.gas_margin < 1 or self.max_fee_cap_wei <= 0:
            raise ValueError("confirmations ≥ 1, gas_margin ≥ 1 and a positive fee cap are required")


@dataclass(frozen=True, slots=True)
class TxCall:
    """What to send, before fees, nonce and gas: a contract call's `to`, `data`, `value`, and a label for errors."""

    to: str
    data: bytes = b""
    value: int = 0
    label: str = "transaction"
    gas: int | None = None  # given: no estimate (a replacement keeps its original's)


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
                 persist: Persist | None = None) -> None:
        self._w3 = w3
        self._signer = _Signer(key)
        self.policy = policy
        self.nonces = NonceManager(w3, self._signer.address, persist)
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        return self._signer.address

    def __repr__(self) -> str:
        return f"TxSender({self.address})"

    async def transact(self, call: TxCall) -> TxReceipt:
        """Sends `call` and waits for its receipt at the confirmation depth."""
        sent = await self.send(call)
        return await self.wait(sent)

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
        UnknownTxOutcome when the node did not answer the submission."""
        fees = await self.fees()  # nothing is signed before these three: their failures are plainly retryable
        gas = call.gas if call.gas is not None else await self.estimate_gas(call)
        chain_id = await self._chain()
        async with self.nonces.lock:
            nonce = await self._rpc(self.nonces.next_nonce(), call.label)
            sent = self._sign(call.label, call.to, call.data, call.value, gas, fees, nonce, chain_id)
            await self.nonces.track(sent)
            try:
                await self._broadcast(sent)
            except VenueRejected:
                self.nonces.done(nonce)  # the node refused it outright: the nonce is still free
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
                                 await self._chain(), replaces=sent.hashes)
        async with self.nonces.lock:
            await self.nonces.track(replacement)
            try:
                await self._broadcast(replacement)
            except VenueRejected:
                await self.nonces.track(sent)  # refused (e.g. underpriced): the original is still the one in flight
                raise
        return replacement

    async def rebroadcast(self, sent: SentTx) -> None:
        """The same signed bytes again (after `resolve` said DROPPED): same hash and nonce, it cannot land twice."""
        await self._broadcast(sent)

    def _sign(self, label: str, to: str, data: bytes, value: int, gas: int, fees: Fees, nonce: int,
              chain_id: int, replaces: tuple[str, ...] = ()) -> SentTx:
        tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": AsyncWeb3.to_checksum_address(to),
              "data": data, "value": value, "gas": gas, "maxFeePerGas": fees.max_fee_per_gas,
              "maxPriorityFeePerGas": fees.max_priority_fee_per_gas}
        raw, tx_hash = self._signer.sign(tx)
        return SentTx(label, nonce, tx_hash, raw, to, data, value, gas, fees, time.time(), replaces)

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
                self.nonces.done(sent.nonce)
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
            self.nonces.done(sent.nonce)
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
                    self.nonces.done(sent.nonce)
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


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_CEILING))


def _gwei(wei: int) -> str:
    return f"{Decimal(wei) / GWEI:f}"


def _hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()


