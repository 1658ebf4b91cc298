"""The revert table's DEX names (`daemon/venues/web3_reverts.py`): revert payloads built with eth_abi, as the node
returns them, decode to the name and the arguments; the test DEX's errors are the ones its source declares, and the
real SwapRouter02's slippage string is named as the test DEX's error is."""

from __future__ import annotations

import re
from pathlib import Path

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from daemon.venues.web3_reverts import (
    DEX_ERRORS,
    ERROR_STRING_SELECTOR,
    FLASH_LEVERAGE_ERRORS,
    SWAP_ROUTER_ERRORS,
    decode_revert,
)

ROOT = Path(__file__).resolve().parents[2]
WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


def _custom(signature: str, *args: object) -> bytes:
    types = signature.partition("(")[2].rstrip(")").split(",")
    return keccak(text=signature)[:4] + (encode([t for t in types if t], list(args)) if args else b"")


def _string(text: str) -> bytes:
    return ERROR_STRING_SELECTOR + encode(["string"], [text])


def test_the_dex_errors_are_the_ones_its_source_declares() -> None:
    source = (ROOT / "deploy/contracts/test/FixedRateSwapRouter.sol").read_text()
    declared = {f"{name}({','.join(p.split()[0] for p in params.split(',') if p.strip())})"
                for name, params in re.findall(r"error (\w+)\(([^)]*)\);", source)}
    assert declared == set(DEX_ERRORS)
    selectors = [keccak(text=s)[:4] for s in (*FLASH_LEVERAGE_ERRORS, *DEX_ERRORS)]
    assert len(set(selectors)) == len(selectors)  # one table by selector: no two errors may share one


def test_the_dex_custom_errors_decode_to_name_and_arguments() -> None:
    revert = decode_revert(_custom("TooLittleReceived(uint256,uint256)", 994 * 10**15, 995 * 10**15))
    assert (revert.reason, revert.args) == ("TooLittleReceived", (994 * 10**15, 995 * 10**15))
    assert str(revert) == f"TooLittleReceived{(994 * 10**15, 995 * 10**15)!r}"

    revert = decode_revert("0x" + _custom("NoRate(address,address)", WETH.lower(), USDT.lower()).hex())
    assert (revert.reason, revert.args) == ("NoRate", (WETH, USDT))  # checksummed, from hex text as the node sends

    assert decode_revert(_custom("TransferFailed()")).reason == "TransferFailed"
    assert decode_revert(_custom("NotAdmin()")).args == ()


def test_swap_router02_strings_are_named_as_the_test_dex_names_the_same_failure() -> None:
    live = decode_revert(_string("Too little received"))
    test = decode_revert(_custom("TooLittleReceived(uint256,uint256)", 1, 2))
    assert live.reason == test.reason == "TooLittleReceived"
    assert live.code is None and live.args == ()  # the string carries no amounts
    assert decode_revert(_string("STF")).reason == decode_revert(_custom("TransferFailed()")).reason
    assert decode_revert(_string("Too much requested")).reason == "TooMuchRequested"
    # a node that sends no data but the text: the same name
    assert decode_revert(None, "execution reverted: Too little received").reason == "TooLittleReceived"
    assert set(SWAP_ROUTER_ERRORS.values()) - {"TooMuchRequested", "TransactionTooOld"} <= {
        s.partition("(")[0] for s in DEX_ERRORS}


def test_aave_codes_and_unknown_strings_are_unchanged() -> None:
    assert decode_revert(_string("35")).reason == "HEALTH_FACTOR_LOWER_THAN_LIQUIDATION_THRESHOLD"
    assert decode_revert(_string("Too little")).reason == "Too little"  # not a known string: kept as it is
    truncated = _custom("TooLittleReceived(uint256,uint256)", 1, 2)[:20]
    assert decode_revert(truncated).reason == f"custom error 0x{truncated[:4].hex()}"
