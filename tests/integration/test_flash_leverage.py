"""The flash-leverage executor (deploy/contracts, committed artifact) on the real AAVE v3 market on anvil.

The world is the project's fixture (tests/fakes/chain, `aave_chain`: AAVE v3 from npm `@aave/core-v3`, the rated
weETH, e-mode 1), booted fresh per test. The DEX is the test-only FixedRateSwapRouter (Uniswap V3 SwapRouter02's
`exactInputSingle`) quoting weETH at exactly its oracle rate, so the LTV a test aims at is pure arithmetic: equity E
and flash F give collateral worth E + F and debt F + premium. Gas used per operation is printed (`-s`) for BENCHMARKS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_abi.abi import decode, encode
from eth_account import Account
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import AsyncContract
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.types import TxReceipt

from tests.fakes.chain.chain import AaveChain, dev_key

pytestmark = [pytest.mark.anvil, pytest.mark.asyncio]

ARTIFACTS = Path(__file__).resolve().parents[2] / "deploy" / "contracts" / "artifacts"
WAD = 10**18
MAX_UINT = 2**256 - 1
LST = "weETH"
FEE_TIER = 100  # the DEX pool's fee tier, passed through (the test router ignores it)
PREMIUM_BPS = 5  # the world's flash-loan premium
NO_GRANT = (0, 0, 0, bytes(32), bytes(32))  # the owner granted by a transaction before
GAS: dict[str, int] = {}  # operation -> gas used, printed at the end of the module


def _artifact(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ARTIFACTS / name).read_text())
    return doc


@dataclass
class Desk:
    chain: AaveChain
    owner: ChecksumAddress
    stranger: ChecksumAddress
    executor: AsyncContract
    router: AsyncContract
    weth: AsyncContract
    lst: AsyncContract
    a_lst: AsyncContract
    weth_debt: AsyncContract
    lst_rate: int  # WETH per LST, wad (the oracle's and the router's)

    async def account(self) -> tuple[int, int, int]:
        """(collateral, debt, health factor) of the owner: base currency (8 decimals) and HF in wad."""
        d = await self.chain.pool.functions.getUserAccountData(self.owner).call()
        return d[0], d[1], d[5]

    async def ltv(self) -> Decimal:
        collateral, debt, _ = await self.account()
        return Decimal(debt) / Decimal(collateral)

    async def deadline(self) -> int:
        return await self.chain.timestamp() + 600

    async def held_by_executor(self) -> dict[str, int]:
        who = self.executor.address
        return {
            "WETH": await self.weth.functions.balanceOf(who).call(),
            "LST": await self.lst.functions.balanceOf(who).call(),
            "aLST": await self.a_lst.functions.balanceOf(who).call(),
            "WETH debt": await self.weth_debt.functions.balanceOf(who).call(),
            "ETH": await self.chain.w3.eth.get_balance(who),
        }

    async def enter(self, equity: int, flash: int, bounds: tuple[int, int, int]) -> TxReceipt:
        """Grant exactly what the entry needs, then run it (one transaction)."""
        premium = _premium(flash)
        await self.chain.send(self.weth.functions.approve(self.executor.address, equity), self.owner)
        await self.chain.send(
            self.weth_debt.functions.approveDelegation(self.executor.address, flash + premium), self.owner
        )
        entry = (self.lst.address, FEE_TIER, equity, flash, 0, bounds, await self.deadline())
        return await self.chain.send(self.executor.functions.enter(entry, NO_GRANT), self.owner)

    async def approve_collateral(self, amount: int | None = None) -> None:
        if amount is None:
            amount = await self.a_lst.functions.balanceOf(self.owner).call()
        await self.chain.send(self.a_lst.functions.approve(self.executor.address, amount), self.owner)


PERMIT = "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
DELEGATION = "DelegationWithSig(address delegatee,uint256 value,uint256 nonce,uint256 deadline)"


async def _signed(token: AsyncContract, key: str, typehash: str, fields: list[tuple[str, Any]], deadline: int,
                  value: int) -> tuple[int, int, int, bytes, bytes]:
    """The owner's EIP-712 grant on an AAVE token (aToken permit, debt-token delegation) as the executor's `Grant`;
    the digest is built on the token's own DOMAIN_SEPARATOR and nonce, exactly as the token checks it."""
    owner = Account.from_key(key).address
    nonce = await token.functions.nonces(owner).call()
    types = ["bytes32", *(t for t, _ in fields), "uint256", "uint256", "uint256"]
    values = [Web3.keccak(text=typehash), *(v for _, v in fields), value, nonce, deadline]
    struct_hash = Web3.keccak(encode(types, values))
    digest = Web3.keccak(b"\x19\x01" + bytes(await token.functions.DOMAIN_SEPARATOR().call()) + struct_hash)
    sig = Account.unsafe_sign_hash(digest, key)
    return value, deadline, sig.v, sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big")


def _premium(amount: int) -> int:
    """AAVE's flash premium: percentMul(amount, 5 bps), rounded half up."""
    return (amount * PREMIUM_BPS + 5_000) // 10_000


def _flash_for(equity: int, target_ltv: Decimal) -> int:
    """F with (F + premium) / (E + F) = target, when the swap and the oracle agree."""
    p = Decimal(PREMIUM_BPS) / 10_000
    return int(target_ltv * equity / (1 + p - target_ltv))


def _bounds(min_hf: Decimal, min_ltv: Decimal, max_ltv: Decimal) -> tuple[int, int, int]:
    return int(min_hf * WAD), int(min_ltv * WAD), int(max_ltv * WAD)


def _error(abi: Sequence[Any], name: str) -> tuple[bytes, list[str]]:
    entry = next(e for e in abi if e["type"] == "error" and e["name"] == name)
    types = [i["type"] for i in entry["inputs"]]
    return Web3.keccak(text=f"{name}({','.join(types)})")[:4], types


def _raised(exc: ContractCustomError, abi: Sequence[Any], name: str) -> tuple[Any, ...]:
    """The arguments of the named custom error `exc` carries (fails if it is another error)."""
    data = bytes.fromhex(str(exc.data).removeprefix("0x"))
    selector, types = _error(abi, name)
    assert data[:4] == selector, f"expected {name}, got revert data 0x{data.hex()}"
    values = decode(types, data[4:])
    return tuple(Web3.to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True))


async def _deploy(chain: AaveChain, name: str, *args: Any, sender: str) -> tuple[AsyncContract, TxReceipt]:
    art = _artifact(name)
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = await factory.constructor(*args).transact({"from": sender})
    receipt = await chain.w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.01)
    assert receipt["status"] == 1 and receipt["contractAddress"]
    return chain.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"], decode_tuples=True), receipt


@pytest_asyncio.fixture
async def desk(aave_chain: AaveChain) -> Desk:
    """The world's fresh node (tests/fakes/chain: `aave_chain`) with the DEX and the wallet's executor deployed."""
    return await _desk(aave_chain, LST)


async def _desk(chain: AaveChain, symbol: str) -> Desk:
    owner, stranger = Web3.to_checksum_address(chain.accounts[1]), Web3.to_checksum_address(chain.accounts[2])
    admin = chain.book["admin"]
    weth, lst = chain.token("WETH"), chain.token(symbol)
    rate = int(await lst.functions.ethPerToken().call())  # weETH getRate(), wstETH stEthPerToken()
    router, _ = await _deploy(chain, "test/FixedRateSwapRouter.json", sender=admin)
    await chain.send(router.functions.setRate(weth.address, lst.address, WAD * WAD // rate), admin)
    await chain.send(router.functions.setRate(lst.address, weth.address, rate), admin)
    for token in (weth, lst):  # the DEX's inventory (minted from an unlocked account, to the router)
        mint = token.get_function_by_signature("mint(address,uint256)")
        await chain.send(mint(router.address, 10_000 * WAD), admin)
    executor, receipt = await _deploy(
        chain, "FlashLeverage.json", owner, chain.book["Pool"], weth.address, router.address, sender=owner
    )
    GAS["deploy FlashLeverage"] = receipt["gasUsed"]
    await chain.mint("WETH", owner, 100 * WAD)
    await chain.set_user_emode(owner, 1)
    r = chain.reserve
    return Desk(
        chain, owner, stranger, executor, router, weth, lst,
        chain.contract("AToken", r(symbol)["aToken"]),
        chain.contract("VariableDebtToken", r("WETH")["variableDebtToken"]),
        rate,
    )


@pytest.fixture(scope="module", autouse=True)
def _print_gas() -> Iterator[None]:
    yield
    if GAS:
        print("\nFlashLeverage gas used (anvil, real AAVE v3 1.19.3):")
        for op, gas in GAS.items():
            print(f"  {op:40s} {gas:>9,}")


async def test_entry_lands_at_the_target_ltv_in_one_transaction(desk: Desk) -> None:
    equity, target = 10 * WAD, Decimal("0.85")
    flash = _flash_for(equity, target)
    assert await desk.account() == (0, 0, MAX_UINT)

    receipt = await desk.enter(equity, flash, _bounds(Decimal("1.05"), Decimal("0.845"), Decimal("0.855")))
    GAS["enter (10 WETH equity, 5.65x, LTV 0.85)"] = receipt["gasUsed"]

    assert abs(await desk.ltv() - target) <= Decimal("0.001")
    # the position is the owner's: its debt is the flash loan plus the premium, its collateral the LST bought
    assert await desk.weth_debt.functions.balanceOf(desk.owner).call() == flash + _premium(flash)
    lst_bought = await desk.router.functions.quote(desk.weth.address, desk.lst.address, equity + flash).call()
    assert abs(await desk.a_lst.functions.balanceOf(desk.owner).call() - lst_bought) <= 1
    assert set((await desk.held_by_executor()).values()) == {0}
    # the grants were exact: nothing is left for the executor to use later
    assert await desk.weth.functions.allowance(desk.owner, desk.executor.address).call() == 0
    assert await desk.weth_debt.functions.borrowAllowance(desk.owner, desk.executor.address).call() == 0


async def test_unwind_returns_to_zero_debt_and_the_executor_holds_nothing(desk: Desk) -> None:
    equity = 10 * WAD
    flash = _flash_for(equity, Decimal("0.85"))
    await desk.enter(equity, flash, _bounds(Decimal("1.05"), Decimal("0.845"), Decimal("0.855")))
    await desk.chain.warp(30 * 86_400)  # a month of interest on the debt: the unwind repays what is owed now
    debt = await desk.weth_debt.functions.balanceOf(desk.owner).call()
    assert debt > flash + _premium(flash)
    weth_before = await desk.weth.functions.balanceOf(desk.owner).call()

    await desk.approve_collateral()
    receipt = await desk.chain.send(
        desk.executor.functions.unwind(desk.lst.address, FEE_TIER, 0, await desk.deadline(), NO_GRANT), desk.owner
    )
    GAS["unwind (full)"] = receipt["gasUsed"]

    assert await desk.weth_debt.functions.balanceOf(desk.owner).call() == 0
    assert await desk.a_lst.functions.balanceOf(desk.owner).call() == 0
    assert (await desk.account())[:2] == (0, 0)
    assert set((await desk.held_by_executor()).values()) == {0}
    returned = await desk.weth.functions.balanceOf(desk.owner).call() - weth_before
    # equity back, less two flash premiums and the month's interest (the swaps are at the oracle's rate)
    assert equity - returned > 0 and Decimal(equity - returned) / equity < Decimal("0.01")


async def test_debt_reduction_lands_at_the_lower_target(desk: Desk) -> None:
    equity = 10 * WAD
    await desk.enter(equity, _flash_for(equity, Decimal("0.85")), _bounds(Decimal("1"), Decimal("0"), Decimal("1")))
    collateral_base, debt_base, _ = await desk.account()
    # in WETH: the oracle prices WETH at the ETH/USD feed, and the LST at that times its rate
    eth_usd = Decimal(await desk.chain.contract("AaveOracle", desk.chain.book["AaveOracle"]).functions
                      .getAssetPrice(desk.weth.address).call())
    value, debt = Decimal(collateral_base) / eth_usd, Decimal(debt_base) / eth_usd
    target, p = Decimal("0.5"), Decimal(PREMIUM_BPS) / 10_000
    repay = (debt - target * value) / (1 - target * (1 + p))  # (D − R) / (V − R(1+p)) = target
    repay_wei = int(repay * WAD)
    sell = (repay_wei + _premium(repay_wei)) * WAD // desk.lst_rate + 2  # the LST that pays the loan back

    await desk.approve_collateral(sell)
    exit_ = (desk.lst.address, FEE_TIER, repay_wei, sell, sell, 0,
             _bounds(Decimal("1.5"), Decimal("0.499"), Decimal("0.501")), await desk.deadline())
    receipt = await desk.chain.send(desk.executor.functions.reduceDebt(exit_, NO_GRANT), desk.owner)
    GAS["reduceDebt (LTV 0.85 -> 0.50)"] = receipt["gasUsed"]

    assert abs(await desk.ltv() - target) <= Decimal("0.001")
    assert set((await desk.held_by_executor()).values()) == {0}


async def test_only_the_owner_may_call_and_only_the_pool_call_back(desk: Desk) -> None:
    abi = desk.executor.abi
    deadline = await desk.deadline()
    entry = (desk.lst.address, FEE_TIER, 0, WAD, 0, _bounds(Decimal(0), Decimal(0), Decimal(1)), deadline)
    with pytest.raises(ContractCustomError) as caught:
        await desk.executor.functions.enter(entry, NO_GRANT).transact({"from": desk.stranger})
    assert _raised(caught.value, abi, "NotOwner") == (desk.stranger,)
    with pytest.raises(ContractCustomError) as caught:
        unwind = desk.executor.functions.unwind(desk.lst.address, FEE_TIER, 0, deadline, NO_GRANT)
        await unwind.transact({"from": desk.stranger})
    assert _raised(caught.value, abi, "NotOwner") == (desk.stranger,)
    with pytest.raises(ContractCustomError) as caught:
        await desk.executor.functions.sweep(desk.weth.address).transact({"from": desk.stranger})
    assert _raised(caught.value, abi, "NotOwner") == (desk.stranger,)

    # the callback straight from an account is not the Pool's
    with pytest.raises(ContractCustomError) as caught:
        await desk.executor.functions.executeOperation(desk.weth.address, WAD, 0, desk.executor.address, b"").transact(
            {"from": desk.stranger}
        )
    assert _raised(caught.value, abi, "NotPool") == (desk.stranger,)
    # a flash loan someone else starts with the executor as receiver: the Pool calls back, the initiator is not it
    flash = desk.chain.pool.functions.flashLoanSimple(desk.executor.address, desk.weth.address, WAD, b"", 0)
    with pytest.raises(ContractCustomError) as caught:
        await flash.transact({"from": desk.stranger})
    assert _raised(caught.value, abi, "BadInitiator") == (desk.stranger,)


async def test_bounds_violated_revert_with_the_named_error_and_change_nothing(desk: Desk) -> None:
    abi = desk.executor.abi
    equity = 10 * WAD
    flash = _flash_for(equity, Decimal("0.85"))
    # the entry would land at 0.85: a cap of 0.80 refuses it
    with pytest.raises(ContractCustomError) as caught:
        await desk.enter(equity, flash, _bounds(Decimal("1.05"), Decimal("0.7"), Decimal("0.8")))
    ltv, min_ltv, max_ltv = _raised(caught.value, abi, "LtvOutOfBounds")
    assert (min_ltv, max_ltv) == (int(Decimal("0.7") * WAD), int(Decimal("0.8") * WAD))
    assert abs(Decimal(ltv) / WAD - Decimal("0.85")) <= Decimal("0.001")
    # and a health-factor floor above what 0.85 gives (HF = LT 0.95 / 0.85 ≈ 1.118)
    with pytest.raises(ContractCustomError) as caught:
        await desk.chain.send(
            desk.executor.functions.enter(
                (desk.lst.address, FEE_TIER, equity, flash, 0, _bounds(Decimal("1.2"), Decimal(0), Decimal(1)),
                 await desk.deadline()),
                NO_GRANT,
            ),
            desk.owner,
        )
    hf, min_hf = _raised(caught.value, abi, "HealthFactorTooLow")
    assert min_hf == int(Decimal("1.2") * WAD) and abs(Decimal(hf) / WAD - Decimal("0.95") / Decimal("0.85")) < Decimal(
        "0.002"
    )
    # nothing happened: no position, the owner's WETH untouched
    assert await desk.account() == (0, 0, MAX_UINT)
    assert await desk.weth.functions.balanceOf(desk.owner).call() == 100 * WAD
    assert set((await desk.held_by_executor()).values()) == {0}


async def test_a_swap_below_the_minimum_or_a_past_deadline_reverts(desk: Desk) -> None:
    abi = desk.executor.abi
    equity = 10 * WAD
    flash = _flash_for(equity, Decimal("0.85"))
    await desk.chain.send(desk.weth.functions.approve(desk.executor.address, equity), desk.owner)
    bounds = _bounds(Decimal(1), Decimal(0), Decimal(1))
    now = await desk.chain.timestamp()
    with pytest.raises(ContractCustomError) as caught:
        expired = (desk.lst.address, FEE_TIER, equity, flash, 0, bounds, now - 1)
        await desk.executor.functions.enter(expired, NO_GRANT).transact({"from": desk.owner})
    assert _raised(caught.value, abi, "Expired")[0] == now - 1
    # the DEX's own error surfaces through the flash loan: slippage protection holds
    too_much = (equity + flash) * WAD // desk.lst_rate + 1
    with pytest.raises(ContractCustomError) as caught:
        await desk.executor.functions.enter(
            (desk.lst.address, FEE_TIER, equity, flash, too_much, bounds, now + 600), NO_GRANT
        ).transact({"from": desk.owner})
    _raised(caught.value, desk.router.abi, "TooLittleReceived")



async def test_aave_refusing_a_step_undoes_the_whole_operation(desk: Desk) -> None:
    # outside e-mode weETH's own LTV is 72.5 %: the borrow inside the flash loan is refused by AAVE itself
    # (36 COLLATERAL_CANNOT_COVER_NEW_BORROW), and the flash loan, the swap and the supply are undone with it
    await desk.chain.set_user_emode(desk.owner, 0)
    equity = 10 * WAD
    with pytest.raises(ContractLogicError, match="execution reverted: 36"):
        await desk.enter(equity, _flash_for(equity, Decimal("0.85")), _bounds(Decimal(1), Decimal(0), Decimal(1)))
    assert await desk.account() == (0, 0, MAX_UINT)
    assert set((await desk.held_by_executor()).values()) == {0}


async def test_a_debt_reduction_whose_sale_cannot_repay_the_loan_reverts(desk: Desk) -> None:
    equity = 10 * WAD
    await desk.enter(equity, _flash_for(equity, Decimal("0.85")), _bounds(Decimal(1), Decimal(0), Decimal(1)))
    scaled_debt = await desk.weth_debt.functions.scaledBalanceOf(desk.owner).call()  # unmoved by interest
    repay = 10 * WAD
    sell = repay * WAD // desk.lst_rate  # worth the repayment, not the repayment plus the premium
    await desk.approve_collateral(sell)
    exit_ = (desk.lst.address, FEE_TIER, repay, sell, sell, 0, _bounds(Decimal(1), Decimal(0), Decimal(1)),
             await desk.deadline())
    with pytest.raises(ContractCustomError) as caught:
        await desk.executor.functions.reduceDebt(exit_, NO_GRANT).transact({"from": desk.owner})
    available, owed = _raised(caught.value, desk.executor.abi, "InsufficientToRepayFlash")
    assert owed == repay + _premium(repay) and available < owed
    assert await desk.weth_debt.functions.scaledBalanceOf(desk.owner).call() == scaled_debt


async def test_an_unwind_without_the_collateral_allowance_names_it(desk: Desk) -> None:
    equity = 10 * WAD
    await desk.enter(equity, _flash_for(equity, Decimal("0.85")), _bounds(Decimal(1), Decimal(0), Decimal(1)))
    balance = await desk.a_lst.functions.balanceOf(desk.owner).call()
    await desk.approve_collateral(balance - 1)
    with pytest.raises(ContractCustomError) as caught:
        unwind = desk.executor.functions.unwind(desk.lst.address, FEE_TIER, 0, await desk.deadline(), NO_GRANT)
        await unwind.transact({"from": desk.owner})
    assert _raised(caught.value, desk.executor.abi, "CollateralNotApproved") == (balance, balance - 1)


async def test_with_signed_grants_entry_and_unwind_are_one_transaction_each(desk: Desk) -> None:
    """ETH equity sent with the call, the credit delegation and the collateral permit signed off chain: the wallet
    sends exactly one transaction per operation, and grants nothing beforehand."""
    key = dev_key(1)
    assert Account.from_key(key).address == desk.owner
    equity, target = 10 * WAD, Decimal("0.85")
    flash = _flash_for(equity, target)
    deadline = await desk.deadline()
    ex = desk.executor.address
    delegation = await _signed(desk.weth_debt, key, DELEGATION, [("address", ex)], deadline, flash + _premium(flash))
    nonce = await desk.chain.w3.eth.get_transaction_count(desk.owner)
    entry = (desk.lst.address, FEE_TIER, 0, flash, 0, _bounds(Decimal("1.05"), Decimal("0.845"), Decimal("0.855")),
             deadline)
    receipt = await desk.chain.send(desk.executor.functions.enter(entry, delegation), desk.owner, value=equity)
    GAS["enter, ETH equity + signed delegation"] = receipt["gasUsed"]
    assert await desk.chain.w3.eth.get_transaction_count(desk.owner) == nonce + 1
    assert abs(await desk.ltv() - target) <= Decimal("0.001")
    assert set((await desk.held_by_executor()).values()) == {0}

    collateral = await desk.a_lst.functions.balanceOf(desk.owner).call()
    permit = await _signed(desk.a_lst, key, PERMIT, [("address", desk.owner), ("address", ex)], deadline, collateral)
    receipt = await desk.chain.send(
        desk.executor.functions.unwind(desk.lst.address, FEE_TIER, 0, deadline, permit), desk.owner
    )
    GAS["unwind, signed collateral permit"] = receipt["gasUsed"]
    assert await desk.chain.w3.eth.get_transaction_count(desk.owner) == nonce + 2
    assert await desk.weth_debt.functions.balanceOf(desk.owner).call() == 0
    assert await desk.a_lst.functions.balanceOf(desk.owner).call() == 0
    assert set((await desk.held_by_executor()).values()) == {0}


async def test_a_grant_someone_submitted_first_still_works_and_a_bad_one_is_named(desk: Desk) -> None:
    key = dev_key(1)
    equity = 10 * WAD
    flash = _flash_for(equity, Decimal("0.85"))
    deadline = await desk.deadline()
    ex = desk.executor.address
    value = flash + _premium(flash)
    delegation = await _signed(desk.weth_debt, key, DELEGATION, [("address", ex)], deadline, value)
    # a copy from the mempool lands first (anyone may submit it): the grant exists, the entry goes through
    await desk.chain.send(desk.weth_debt.functions.delegationWithSig(desk.owner, ex, *delegation), desk.stranger)
    entry = (desk.lst.address, FEE_TIER, 0, flash, 0, _bounds(Decimal(1), Decimal(0), Decimal(1)), deadline)
    await desk.chain.send(desk.executor.functions.enter(entry, delegation), desk.owner, value=equity)
    assert (await desk.account())[1] > 0
    # a signature by someone else grants nothing
    forged = await _signed(desk.a_lst, dev_key(2), PERMIT, [("address", desk.owner), ("address", ex)], deadline, 1)
    with pytest.raises(ContractCustomError) as caught:
        await desk.executor.functions.unwind(desk.lst.address, FEE_TIER, 0, deadline, forged).transact(
            {"from": desk.owner}
        )
    assert _raised(caught.value, desk.executor.abi, "GrantFailed") == (desk.a_lst.address,)


async def test_the_same_executor_levers_wsteth(aave_chain: AaveChain) -> None:
    desk = await _desk(aave_chain, "wstETH")
    equity, target = 10 * WAD, Decimal("0.9")
    await desk.enter(equity, _flash_for(equity, target), _bounds(Decimal("1.02"), Decimal("0.895"), Decimal("0.905")))
    assert abs(await desk.ltv() - target) <= Decimal("0.001")
    await desk.approve_collateral()
    await desk.chain.send(
        desk.executor.functions.unwind(desk.lst.address, FEE_TIER, 0, await desk.deadline(), NO_GRANT), desk.owner
    )
    assert (await desk.account())[:2] == (0, 0)
    assert set((await desk.held_by_executor()).values()) == {0}
