"""Revert data decoded into names: AAVE v3's numeric error codes, the FlashLeverage executor's custom errors and the
DEX's (the test router's custom errors, Uniswap V3 SwapRouter02's revert strings).

AAVE v3 (`@aave/core-v3` 1.19.3) reverts with `Error(string)` whose string is a number ("35"); the names are the
constants of its `protocol/libraries/helpers/Errors.sol`, copied here (the daemon never needs node_modules; a test
checks the table against the npm file). FlashLeverage (`deploy/contracts/src/FlashLeverage.sol`) and the test DEX
(`deploy/contracts/test/FixedRateSwapRouter.sol`) revert with custom errors, known here by signature (tests check
them against the committed ABI and the contract's source) and matched by their 4-byte selector.

The real SwapRouter02 (`Uniswap/swap-router-contracts`, `V3SwapRouter.sol` and the periphery's `TransferHelper`)
reverts with strings; those a swap can hit are named here as the test DEX names the same failure, so a slippage
revert is `TooLittleReceived` whichever router refused (the string carries no amounts: `args` is empty then).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from eth_abi.abi import decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

AAVE_ERRORS: dict[str, str] = {
    "1": "CALLER_NOT_POOL_ADMIN", "2": "CALLER_NOT_EMERGENCY_ADMIN", "3": "CALLER_NOT_POOL_OR_EMERGENCY_ADMIN",
    "4": "CALLER_NOT_RISK_OR_POOL_ADMIN", "5": "CALLER_NOT_ASSET_LISTING_OR_POOL_ADMIN", "6": "CALLER_NOT_BRIDGE",
    "7": "ADDRESSES_PROVIDER_NOT_REGISTERED", "8": "INVALID_ADDRESSES_PROVIDER_ID", "9": "NOT_CONTRACT",
    "10": "CALLER_NOT_POOL_CONFIGURATOR", "11": "CALLER_NOT_ATOKEN", "12": "INVALID_ADDRESSES_PROVIDER",
    "13": "INVALID_FLASHLOAN_EXECUTOR_RETURN", "14": "RESERVE_ALREADY_ADDED", "15": "NO_MORE_RESERVES_ALLOWED",
    "16": "EMODE_CATEGORY_RESERVED", "17": "INVALID_EMODE_CATEGORY_ASSIGNMENT", "18": "RESERVE_LIQUIDITY_NOT_ZERO",
    "19": "FLASHLOAN_PREMIUM_INVALID", "20": "INVALID_RESERVE_PARAMS", "21": "INVALID_EMODE_CATEGORY_PARAMS",
    "22": "BRIDGE_PROTOCOL_FEE_INVALID", "23": "CALLER_MUST_BE_POOL", "24": "INVALID_MINT_AMOUNT",
    "25": "INVALID_BURN_AMOUNT", "26": "INVALID_AMOUNT", "27": "RESERVE_INACTIVE", "28": "RESERVE_FROZEN",
    "29": "RESERVE_PAUSED", "30": "BORROWING_NOT_ENABLED", "31": "STABLE_BORROWING_NOT_ENABLED",
    "32": "NOT_ENOUGH_AVAILABLE_USER_BALANCE", "33": "INVALID_INTEREST_RATE_MODE_SELECTED",
    "34": "COLLATERAL_BALANCE_IS_ZERO", "35": "HEALTH_FACTOR_LOWER_THAN_LIQUIDATION_THRESHOLD",
    "36": "COLLATERAL_CANNOT_COVER_NEW_BORROW", "37": "COLLATERAL_SAME_AS_BORROWING_CURRENCY",
    "38": "AMOUNT_BIGGER_THAN_MAX_LOAN_SIZE_STABLE", "39": "NO_DEBT_OF_SELECTED_TYPE",
    "40": "NO_EXPLICIT_AMOUNT_TO_REPAY_ON_BEHALF", "41": "NO_OUTSTANDING_STABLE_DEBT",
    "42": "NO_OUTSTANDING_VARIABLE_DEBT", "43": "UNDERLYING_BALANCE_ZERO",
    "44": "INTEREST_RATE_REBALANCE_CONDITIONS_NOT_MET", "45": "HEALTH_FACTOR_NOT_BELOW_THRESHOLD",
    "46": "COLLATERAL_CANNOT_BE_LIQUIDATED", "47": "SPECIFIED_CURRENCY_NOT_BORROWED_BY_USER",
    "49": "INCONSISTENT_FLASHLOAN_PARAMS", "50": "BORROW_CAP_EXCEEDED", "51": "SUPPLY_CAP_EXCEEDED",
    "52": "UNBACKED_MINT_CAP_EXCEEDED", "53": "DEBT_CEILING_EXCEEDED", "54": "UNDERLYING_CLAIMABLE_RIGHTS_NOT_ZERO",
    "55": "STABLE_DEBT_NOT_ZERO", "56": "VARIABLE_DEBT_SUPPLY_NOT_ZERO", "57": "LTV_VALIDATION_FAILED",
    "58": "INCONSISTENT_EMODE_CATEGORY", "59": "PRICE_ORACLE_SENTINEL_CHECK_FAILED",
    "60": "ASSET_NOT_BORROWABLE_IN_ISOLATION", "61": "RESERVE_ALREADY_INITIALIZED",
    "62": "USER_IN_ISOLATION_MODE_OR_LTV_ZERO", "63": "INVALID_LTV", "64": "INVALID_LIQ_THRESHOLD",
    "65": "INVALID_LIQ_BONUS", "66": "INVALID_DECIMALS", "67": "INVALID_RESERVE_FACTOR", "68": "INVALID_BORROW_CAP",
    "69": "INVALID_SUPPLY_CAP", "70": "INVALID_LIQUIDATION_PROTOCOL_FEE", "71": "INVALID_EMODE_CATEGORY",
    "72": "INVALID_UNBACKED_MINT_CAP", "73": "INVALID_DEBT_CEILING", "74": "INVALID_RESERVE_INDEX",
    "75": "ACL_ADMIN_CANNOT_BE_ZERO", "76": "INCONSISTENT_PARAMS_LENGTH", "77": "ZERO_ADDRESS_NOT_VALID",
    "78": "INVALID_EXPIRATION", "79": "INVALID_SIGNATURE", "80": "OPERATION_NOT_SUPPORTED",
    "81": "DEBT_CEILING_NOT_ZERO", "82": "ASSET_NOT_LISTED", "83": "INVALID_OPTIMAL_USAGE_RATIO",
    "84": "INVALID_OPTIMAL_STABLE_TO_TOTAL_DEBT_RATIO", "85": "UNDERLYING_CANNOT_BE_RESCUED",
    "86": "ADDRESSES_PROVIDER_ALREADY_ADDED", "87": "POOL_ADDRESSES_DO_NOT_MATCH", "88": "STABLE_BORROWING_ENABLED",
    "89": "SILOED_BORROWING_VIOLATION", "90": "RESERVE_DEBT_NOT_ZERO", "91": "FLASHLOAN_DISABLED",
}

# FlashLeverage's custom errors: name(argument types), as `error ...` declares them in the contract.
FLASH_LEVERAGE_ERRORS: tuple[str, ...] = (
    "NotOwner(address)", "NotPool(address)", "BadInitiator(address)", "NoOperationInFlight()", "ZeroAddress()",
    "Expired(uint256,uint256)", "InvalidBounds(uint256,uint256)", "HealthFactorTooLow(uint256,uint256)",
    "LtvOutOfBounds(uint256,uint256,uint256)", "DebtRemains(uint256)", "NothingToDo()",
    "CollateralNotApproved(uint256,uint256)", "SellExceedsWithdrawn(uint256,uint256)",
    "InsufficientToRepayFlash(uint256,uint256)", "TokenCallFailed(address,bytes4)", "GrantFailed(address)",
)

# The test DEX's custom errors, as FixedRateSwapRouter.sol declares them.
DEX_ERRORS: tuple[str, ...] = (
    "TooLittleReceived(uint256,uint256)", "NoRate(address,address)", "TransferFailed()", "NotAdmin()",
)

# SwapRouter02's revert strings → the same names as the test DEX's errors where the failure is the same one.
SWAP_ROUTER_ERRORS: dict[str, str] = {
    "Too little received": "TooLittleReceived",  # exactInput(Single): out < amountOutMinimum (the slippage guard)
    "Too much requested": "TooMuchRequested",  # exactOutput(Single): in > amountInMaximum
    "Transaction too old": "TransactionTooOld",  # multicall(deadline, ...) past its deadline
    "STF": "TransferFailed",  # TransferHelper.safeTransferFrom: the payer's tokens did not move (allowance, balance)
    "ST": "TransferFailed",  # TransferHelper.safeTransfer
}


@dataclass(frozen=True, slots=True)
class Revert:
    """A revert as a name: `reason` is AAVE's constant name, a custom error's name, the router's string's name,
    `Panic(0x11)`, the revert string itself when no table knows it, or "unknown" with no data; `code` is AAVE's
    numeric string when there is one."""

    reason: str
    code: str | None = None
    args: tuple[object, ...] = ()

    def __str__(self) -> str:
        text = f"{self.reason} (AAVE error {self.code})" if self.code else self.reason
        return f"{text}{self.args!r}" if self.args else text


@cache
def _custom_errors() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    table: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    for signature in (*FLASH_LEVERAGE_ERRORS, *DEX_ERRORS):
        name, _, rest = signature.partition("(")
        types = tuple(t for t in rest.rstrip(")").split(",") if t)
        table[keccak(text=signature)[:4]] = (name, types)
    return table


def decode_revert(data: bytes | str | None, message: str = "") -> Revert:
    """Names the revert in `data` (the return data of the failed call); `message` (the node's text) is used when the
    node sent no data, e.g. "execution reverted: 35"."""
    raw = _bytes(data)
    if raw is None or len(raw) < 4:
        text = message.split("execution reverted:", 1)[1].strip() if "execution reverted:" in message else ""
        return _from_string(text) if text else Revert("unknown")
    selector, body = raw[:4], raw[4:]
    try:
        if selector == ERROR_STRING_SELECTOR:
            (text,) = decode(["string"], body)
            return _from_string(str(text))
        if selector == PANIC_SELECTOR:
            (code,) = decode(["uint256"], body)
            return Revert(f"Panic(0x{int(code):02x})")
        known = _custom_errors().get(selector)
        if known is not None:
            name, types = known
            values = decode(list(types), body) if types else ()
            return Revert(name, args=tuple(to_checksum_address(v) if t == "address" else v
                                           for t, v in zip(types, values, strict=True)))
    except Exception:  # malformed revert data: named by its selector below
        pass
    return Revert(f"custom error 0x{selector.hex()}")


def _from_string(text: str) -> Revert:
    name = AAVE_ERRORS.get(text)
    if name:
        return Revert(name, code=text)
    return Revert(SWAP_ROUTER_ERRORS.get(text, text))


def _bytes(data: bytes | str | None) -> bytes | None:
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    text = data[2:] if data.startswith("0x") else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
