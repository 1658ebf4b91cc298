"""The chain adapter's transactions as data: every call `Web3Chain` sends, ABI-encoded into a `TxCall` (to, data,
value, label), with no connection and no state — so each builder is a pure function of its arguments.

The ABIs are minimal fragments committed in `daemon/venues/abi/` (copied from the npm `@aave/core-v3` 1.19.3 artifacts
and from the executor's committed artifact `deploy/contracts/artifacts/FlashLeverage.json`); calls are encoded with
eth-abi from the fragment's own input types, so a fragment that no longer matches the contract fails here, not on
chain. Amounts are exact integers in the token's smallest unit (2**256 − 1 is AAVE's "all of it").

The executor is deployed through the deterministic CREATE2 factory (`CREATE2_FACTORY`, the same address on mainnet
and on anvil): the wallet sends the deployment as an ordinary call, so `TxSender` (which signs calls, not contract
creations) deploys it, and its address follows from the salt and the constructor arguments (the owner among them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from daemon.venues.web3_reads import load_abi
from daemon.venues.web3_tx import TxCall

EXECUTOR_ARTIFACT = Path(__file__).resolve().parents[2] / "deploy" / "contracts" / "artifacts" / "FlashLeverage.json"
CREATE2_FACTORY = "0x4e59b44847b379578588920ca78fbf26c0b4956c"  # Arachnid's deterministic deployment proxy
VARIABLE_RATE = 2
NO_GRANT = (0, 0, 0, bytes(32), bytes(32))  # FlashLeverage.Grant with value 0: granted by a transaction before
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@cache
def _function(abi_name: str, name: str) -> dict[str, Any]:
    matches = [e for e in load_abi(abi_name) if e.get("type") == "function" and e.get("name") == name]
    if len(matches) != 1:
        raise KeyError(f"{abi_name}.json has {len(matches)} functions named {name!r}")
    return matches[0]


def calldata(abi_name: str, name: str, *args: Any) -> bytes:
    """`name(args)` encoded as the fragment declares it (selector + arguments)."""
    fn = _function(abi_name, name)
    return bytes(function_abi_to_4byte_selector(fn)) + encode(get_abi_input_types(fn), list(args))  # type: ignore[arg-type]


def decode_output(abi_name: str, name: str, data: bytes) -> tuple[Any, ...]:
    return tuple(decode(get_abi_output_types(_function(abi_name, name)), data))  # type: ignore[arg-type]


def _call(to: str, abi_name: str, name: str, *args: Any, value: int = 0, label: str | None = None) -> TxCall:
    return TxCall(to=to_checksum_address(to), data=calldata(abi_name, name, *args), value=value,
                  label=label or name)


def _addr(address: str) -> str:
    return to_checksum_address(address)


# --- ERC-20, WETH, ETH ---------------------------------------------------------------------------------------------


def approve(token: str, spender: str, amount: int, symbol: str = "") -> TxCall:
    return _call(token, "erc20_tx", "approve", _addr(spender), amount, label=f"approve {symbol}".strip())


def transfer(token: str, to: str, amount: int, symbol: str = "") -> TxCall:
    return _call(token, "erc20_tx", "transfer", _addr(to), amount, label=f"transfer {symbol}".strip())


def allowance(token: str, owner: str, spender: str) -> TxCall:
    """A read (eth_call): `allowance(owner, spender)`."""
    return _call(token, "erc20_tx", "allowance", _addr(owner), _addr(spender))


def send_eth(to: str, amount_wei: int, label: str = "send ETH") -> TxCall:
    return TxCall(to=_addr(to), value=amount_wei, label=label)


def wrap(weth: str, amount_wei: int) -> TxCall:
    return _call(weth, "weth", "deposit", value=amount_wei, label="wrap ETH")


def unwrap(weth: str, amount_wei: int) -> TxCall:
    return _call(weth, "weth", "withdraw", amount_wei, label="unwrap WETH")


# --- AAVE v3 Pool ---------------------------------------------------------------------------------------------------


def supply(pool: str, asset: str, amount: int, on_behalf_of: str, symbol: str = "") -> TxCall:
    return _call(pool, "aave_pool_tx", "supply", _addr(asset), amount, _addr(on_behalf_of), 0,
                 label=f"supply {symbol}".strip())


def withdraw(pool: str, asset: str, amount: int, to: str, symbol: str = "") -> TxCall:
    return _call(pool, "aave_pool_tx", "withdraw", _addr(asset), amount, _addr(to), label=f"withdraw {symbol}".strip())


def borrow(pool: str, asset: str, amount: int, on_behalf_of: str, symbol: str = "") -> TxCall:
    return _call(pool, "aave_pool_tx", "borrow", _addr(asset), amount, VARIABLE_RATE, 0, _addr(on_behalf_of),
                 label=f"borrow {symbol}".strip())


def repay(pool: str, asset: str, amount: int, on_behalf_of: str, symbol: str = "") -> TxCall:
    return _call(pool, "aave_pool_tx", "repay", _addr(asset), amount, VARIABLE_RATE, _addr(on_behalf_of),
                 label=f"repay {symbol}".strip())


def set_user_emode(pool: str, category: int) -> TxCall:
    return _call(pool, "aave_pool_tx", "setUserEMode", category, label=f"setUserEMode {category}")


def flash_premium_total(pool: str) -> TxCall:
    """A read: the flash-loan premium in bps of the amount."""
    return _call(pool, "aave_pool_tx", "FLASHLOAN_PREMIUM_TOTAL")


def approve_delegation(debt_token: str, delegatee: str, amount: int) -> TxCall:
    return _call(debt_token, "credit_delegation", "approveDelegation", _addr(delegatee), amount,
                 label="approveDelegation")


def borrow_allowance(debt_token: str, owner: str, delegatee: str) -> TxCall:
    return _call(debt_token, "credit_delegation", "borrowAllowance", _addr(owner), _addr(delegatee))


def flash_premium(amount: int, premium_bps: int) -> int:
    """AAVE's flash premium: `percentMul(amount, bps)`, rounded half up."""
    return (amount * premium_bps + 5_000) // 10_000


def flash_for_borrow(borrow_wei: int, premium_bps: int) -> int:
    """The largest flash amount F with F + premium(F) ≤ `borrow_wei` (equal, or one wei short where rounding skips)."""
    flash = borrow_wei * 10_000 // (10_000 + premium_bps)
    while flash + 1 + flash_premium(flash + 1, premium_bps) <= borrow_wei:
        flash += 1
    while flash > 0 and flash + flash_premium(flash, premium_bps) > borrow_wei:
        flash -= 1
    return flash


# --- the DEX and staking -----------------------------------------------------------------------------------------


def exact_input_single(router: str, token_in: str, token_out: str, fee: int, recipient: str, amount_in: int,
                       min_out: int, label: str = "swap") -> TxCall:
    """Uniswap V3 SwapRouter02's `exactInputSingle` (no deadline field in 02; no price limit: min_out protects)."""
    params = (_addr(token_in), _addr(token_out), fee, _addr(recipient), amount_in, min_out, 0)
    return _call(router, "swap_router", "exactInputSingle", params, label=label)


def stake_call(lst: str, entry: str, amount_wei: int) -> TxCall:
    """ETH into the LST in one call, as each protocol takes it: EtherFi through its DepositAdapter's
    `depositETHForWeETH(referral)`, Lido by sending ETH to wstETH (its `receive` stakes and wraps)."""
    if lst == "weETH":
        return _call(entry, "lst_staking", "depositETHForWeETH", ZERO_ADDRESS, value=amount_wei, label="stake weETH")
    if lst == "wstETH":
        return send_eth(entry, amount_wei, label="stake wstETH")
    raise ValueError(f"no staking entry known for {lst!r}")


# --- the FlashLeverage executor ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bounds:
    """The owner's account after the operation, in wad: min HF, LTV range (debt / collateral)."""

    min_health_factor_wad: int
    min_ltv_wad: int
    max_ltv_wad: int

    def encoded(self) -> tuple[int, int, int]:
        return self.min_health_factor_wad, self.min_ltv_wad, self.max_ltv_wad


def flash_enter(executor: str, lst: str, fee: int, equity_weth: int, flash: int, min_lst_out: int, bounds: Bounds,
                deadline: int, value_wei: int) -> TxCall:
    entry = (_addr(lst), fee, equity_weth, flash, min_lst_out, bounds.encoded(), deadline)
    return _call(executor, "flash_leverage", "enter", entry, NO_GRANT, value=value_wei, label="atomic entry")


def flash_reduce_debt(executor: str, lst: str, fee: int, repay_wei: int, collateral: int, sell: int,
                      min_weth_out: int, bounds: Bounds, deadline: int) -> TxCall:
    exit_ = (_addr(lst), fee, repay_wei, collateral, sell, min_weth_out, bounds.encoded(), deadline)
    return _call(executor, "flash_leverage", "reduceDebt", exit_, NO_GRANT, label="atomic debt reduction")


def flash_unwind(executor: str, lst: str, fee: int, min_weth_out: int, deadline: int) -> TxCall:
    return _call(executor, "flash_leverage", "unwind", _addr(lst), fee, min_weth_out, deadline, NO_GRANT,
                 label="atomic unwind")


@cache
def _executor_artifact() -> dict[str, Any]:
    art: dict[str, Any] = json.loads(EXECUTOR_ARTIFACT.read_text())
    return art


def executor_init_code(owner: str, pool: str, weth: str, router: str) -> bytes:
    """FlashLeverage's creation code with its constructor arguments (owner, pool, weth, router)."""
    code = bytes.fromhex(str(_executor_artifact()["bytecode"]).removeprefix("0x"))
    return code + encode(["address", "address", "address", "address"],
                         [_addr(owner), _addr(pool), _addr(weth), _addr(router)])


def create2_address(init_code: bytes, salt: bytes, factory: str = CREATE2_FACTORY) -> str:
    digest = keccak(b"\xff" + bytes.fromhex(factory.removeprefix("0x")) + salt + keccak(init_code))
    return to_checksum_address(digest[12:])


def create2_deploy(init_code: bytes, salt: bytes, factory: str = CREATE2_FACTORY,
                   label: str = "deploy FlashLeverage") -> TxCall:
    """The factory's calldata is the salt followed by the creation code; it deploys with CREATE2."""
    if len(salt) != 32:
        raise ValueError("a CREATE2 salt is 32 bytes")
    return TxCall(to=_addr(factory), data=salt + init_code, label=label)
