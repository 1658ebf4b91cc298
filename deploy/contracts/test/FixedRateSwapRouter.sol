// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {IERC20, ISwapRouter} from "../src/interfaces.sol";

/// @title FixedRateSwapRouter — TEST ONLY: a DEX behind Uniswap V3 SwapRouter02's `exactInputSingle` whose price the
/// test sets. It pays out of its own inventory (the test funds it) at `rate[tokenIn][tokenOut]` (wad: tokenOut per
/// tokenIn, decimals included) less `feeBps`; the `fee` tier and price limit of the call are ignored. Never deployed
/// outside a test chain.
contract FixedRateSwapRouter is ISwapRouter {
    address public immutable admin;
    mapping(address => mapping(address => uint256)) public rate;
    uint256 public feeBps;

    error NotAdmin();
    error NoRate(address tokenIn, address tokenOut);
    error TooLittleReceived(uint256 amountOut, uint256 amountOutMinimum);
    error TransferFailed();

    constructor() {
        admin = msg.sender;
    }

    function setRate(address tokenIn, address tokenOut, uint256 wad) external {
        if (msg.sender != admin) revert NotAdmin();
        rate[tokenIn][tokenOut] = wad;
    }

    function setFeeBps(uint256 bps) external {
        if (msg.sender != admin) revert NotAdmin();
        feeBps = bps;
    }

    function quote(address tokenIn, address tokenOut, uint256 amountIn) public view returns (uint256) {
        uint256 r = rate[tokenIn][tokenOut];
        if (r == 0) revert NoRate(tokenIn, tokenOut);
        return (amountIn * r / 1e18) * (10_000 - feeBps) / 10_000;
    }

    function exactInputSingle(ExactInputSingleParams calldata p) external payable override returns (uint256 out) {
        out = quote(p.tokenIn, p.tokenOut, p.amountIn);
        if (out < p.amountOutMinimum) revert TooLittleReceived(out, p.amountOutMinimum);
        if (!IERC20(p.tokenIn).transferFrom(msg.sender, address(this), p.amountIn)) revert TransferFailed();
        if (!IERC20(p.tokenOut).transfer(p.recipient, out)) revert TransferFailed();
    }
}
