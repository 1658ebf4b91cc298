// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

import {
    ICreditDelegationToken,
    IERC20,
    IERC20Permit,
    IFlashLoanSimpleReceiver,
    IPool,
    ISwapRouter,
    IWETH
} from "./interfaces.sol";

/// @title FlashLeverage — atomic LST/WETH leverage on AAVE v3 for one wallet.
/// @notice The position is the OWNER's, never this contract's: supply, borrow and repay are all `onBehalfOf = owner`,
/// so the wallet's `getUserAccountData`, aToken and debt-token balances are the whole truth the reconciler reads, the
/// sequential loop (plain Pool calls from the wallet) works on the same position, and this contract can be replaced
/// without moving a position. The owner grants, per operation and for exact amounts, either by a transaction before
/// or by a signature (`Grant`) the operation submits itself, so that an operation is one transaction in all:
///   - entry:  the credit delegation of `flash + premium` on the WETH variable debt token (`approveDelegation`, or
///             the signed `delegationWithSig`): the borrow counts against it. The equity comes as ETH sent with the
///             call (wrapped here) and/or WETH the owner approved (`approve(executor, equity)`; WETH has no permit);
///   - unwind / debt reduction: the LST's aToken allowance for the collateral (`approve`, or the signed EIP-2612
///             `permit`): the executor must hold the aTokens to withdraw them; AAVE checks the owner's HF on that
///             transfer.
/// The owner also chooses its e-mode (`setUserEMode`) itself: the Pool applies it to the owner's account.
/// The contract keeps nothing between calls: whatever WETH, LST or aLST is left after an operation goes to the owner.
/// Every operation checks the owner's account afterwards against bounds the caller passes and reverts, undoing the
/// whole transaction, with a named error when the result is outside them.
contract FlashLeverage is IFlashLoanSimpleReceiver {
    uint256 private constant WAD = 1e18;
    uint256 private constant VARIABLE_RATE = 2;
    uint16 private constant REFERRAL = 0;

    uint8 private constant OP_NONE = 0;
    uint8 private constant OP_ENTER = 1;
    uint8 private constant OP_EXIT = 2;

    address public immutable owner;
    IPool public immutable pool;
    address public immutable weth;
    ISwapRouter public immutable router;

    /// The operation this contract itself started; the Pool's callback is accepted only while one is in flight.
    uint8 private transient _inFlight;

    /// Bounds on the owner's account after the operation. Health factor and LTV are wads (1e18 = 1.0); LTV is
    /// debt / collateral in AAVE's base currency (`totalDebtBase / totalCollateralBase`), not AAVE's max-LTV field.
    struct Bounds {
        uint256 minHealthFactor;
        uint256 minLtv;
        uint256 maxLtv;
    }

    /// A grant the owner signed off chain (`value` 0: none, the owner granted by a transaction before).
    struct Grant {
        uint256 value;
        uint256 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// Entry: `equity` WETH from the owner (plus the ETH sent with the call) and `flashAmount` flash-borrowed WETH are
    /// swapped to the LST and supplied for the owner; `flashAmount + premium` WETH is borrowed for the owner to repay
    /// the flash loan.
    struct Entry {
        address lst;
        uint24 fee; // the DEX pool's fee tier
        uint256 equity;
        uint256 flashAmount;
        uint256 minLstOut;
        Bounds bounds;
        uint256 deadline;
    }

    /// Debt reduction (and the unwind, with every amount at `type(uint256).max`): flash `repayAmount` WETH, repay the
    /// owner's debt with it, withdraw `collateralAmount` of the owner's LST, sell `lstToSell` of it for WETH and repay
    /// the flash loan; the rest (LST not sold, WETH over the loan) goes to the owner.
    struct Exit {
        address lst;
        uint24 fee;
        uint256 repayAmount; // max: the whole WETH debt, read in this transaction
        uint256 collateralAmount; // max: the owner's whole aLST balance
        uint256 lstToSell; // max: everything withdrawn
        uint256 minWethOut;
        Bounds bounds;
        uint256 deadline;
    }

    event Entered(address indexed lst, uint256 equity, uint256 flashAmount, uint256 premium, uint256 lstSupplied);
    event Exited(
        address indexed lst,
        uint256 debtRepaid,
        uint256 premium,
        uint256 collateralWithdrawn,
        uint256 lstSold,
        uint256 wethReceived
    );

    error NotOwner(address caller);
    error NotPool(address caller);
    error BadInitiator(address initiator);
    error NoOperationInFlight();
    error ZeroAddress();
    error Expired(uint256 deadline, uint256 timestamp);
    error InvalidBounds(uint256 minLtv, uint256 maxLtv);
    error HealthFactorTooLow(uint256 healthFactor, uint256 minHealthFactor);
    error LtvOutOfBounds(uint256 ltv, uint256 minLtv, uint256 maxLtv);
    error DebtRemains(uint256 debt);
    error NothingToDo();
    error CollateralNotApproved(uint256 collateral, uint256 allowance);
    error SellExceedsWithdrawn(uint256 lstToSell, uint256 withdrawn);
    error InsufficientToRepayFlash(uint256 available, uint256 owed);
    error TokenCallFailed(address token, bytes4 selector);
    error GrantFailed(address token);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor(address owner_, IPool pool_, address weth_, ISwapRouter router_) {
        bool missing = owner_ == address(0) || address(pool_) == address(0);
        if (missing || weth_ == address(0) || address(router_) == address(0)) revert ZeroAddress();
        owner = owner_;
        pool = pool_;
        weth = weth_;
        router = router_;
    }

    // ------------------------------------------------------------------------------------------ owner's operations

    /// Levered entry in one transaction (see `Entry`); the ETH sent is equity too. `delegation`: the owner's signed
    /// credit delegation of the WETH debt to this contract, or value 0 if granted before.
    function enter(Entry calldata e, Grant calldata delegation) external payable onlyOwner {
        _checkDeadline(e.deadline);
        _checkBoundsShape(e.bounds);
        if (e.flashAmount == 0) revert NothingToDo();
        if (delegation.value > 0) _delegate(delegation);
        Entry memory m = e;
        if (e.equity > 0) _transferFrom(weth, owner, address(this), e.equity);
        if (msg.value > 0) {
            IWETH(weth).deposit{value: msg.value}();
            m.equity += msg.value;
        }
        _inFlight = OP_ENTER;
        pool.flashLoanSimple(address(this), weth, e.flashAmount, abi.encode(OP_ENTER, abi.encode(m)), REFERRAL);
        _inFlight = OP_NONE;
        _sweepAll(e.lst);
        _checkBounds(e.bounds);
    }

    /// Partial deleverage: repay part of the WETH debt with flashed WETH, paid back by selling collateral.
    /// `collateralPermit`: the owner's signed aLST permit to this contract, or value 0 if approved before.
    function reduceDebt(Exit calldata x, Grant calldata collateralPermit) external onlyOwner {
        _checkDeadline(x.deadline);
        _checkBoundsShape(x.bounds);
        if (collateralPermit.value > 0) _permit(x.lst, collateralPermit);
        _exit(x);
        _checkBounds(x.bounds);
    }

    /// Full unwind: the whole WETH debt is repaid and the whole LST collateral withdrawn and sold; the owner ends with
    /// zero WETH debt (reverts `DebtRemains` otherwise) and the WETH left over.
    function unwind(address lst, uint24 fee, uint256 minWethOut, uint256 deadline, Grant calldata collateralPermit)
        external
        onlyOwner
    {
        _checkDeadline(deadline);
        if (collateralPermit.value > 0) _permit(lst, collateralPermit);
        uint256 max = type(uint256).max;
        _exit(Exit(lst, fee, max, max, max, minWethOut, Bounds(0, 0, max), deadline));
        uint256 debt = IERC20(pool.getReserveData(weth).variableDebtTokenAddress).balanceOf(owner);
        if (debt != 0) revert DebtRemains(debt);
    }

    /// Sends a token that reached this contract by mistake to the owner.
    function sweep(address token) external onlyOwner {
        _sweep(token);
    }

    // ------------------------------------------------------------------------------------------ flash-loan callback

    function executeOperation(address asset, uint256 amount, uint256 premium, address initiator, bytes calldata params)
        external
        override
        returns (bool)
    {
        if (msg.sender != address(pool)) revert NotPool(msg.sender);
        if (initiator != address(this)) revert BadInitiator(initiator);
        (uint8 op, bytes memory body) = abi.decode(params, (uint8, bytes));
        if (op == OP_NONE || op != _inFlight) revert NoOperationInFlight();
        // asset is always WETH: only this contract starts flash loans, and only of WETH
        if (op == OP_ENTER) {
            _enterCallback(abi.decode(body, (Entry)), asset, amount, premium);
        } else {
            _exitBody(abi.decode(body, (Exit)), amount, premium);
        }
        _approve(asset, address(pool), amount + premium); // the Pool pulls the loan back after this returns
        return true;
    }

    // ------------------------------------------------------------------------------------------ internals

    function _enterCallback(Entry memory e, address asset, uint256 amount, uint256 premium) private {
        uint256 lstOut = _swap(asset, e.lst, e.fee, e.equity + amount, e.minLstOut);
        _approve(e.lst, address(pool), lstOut);
        pool.supply(e.lst, lstOut, owner, REFERRAL);
        // the owner's debt grows by the loan and its premium: the flash loan becomes an ordinary variable-rate debt
        pool.borrow(asset, amount + premium, VARIABLE_RATE, REFERRAL, owner);
        emit Entered(e.lst, e.equity, amount, premium, lstOut);
    }

    function _exit(Exit memory x) private {
        uint256 debt = IERC20(pool.getReserveData(weth).variableDebtTokenAddress).balanceOf(owner);
        // repay an explicit amount: AAVE refuses `type(uint256).max` on behalf of another account, and the debt read
        // here is exact for this block (interest accrues per second, not within a block)
        uint256 repay = x.repayAmount > debt ? debt : x.repayAmount;
        x.repayAmount = repay;
        if (repay == 0) {
            // nothing to repay: no flash loan (AAVE refuses a zero amount), the collateral is simply withdrawn
            _exitBody(x, 0, 0);
        } else {
            _inFlight = OP_EXIT;
            pool.flashLoanSimple(address(this), weth, repay, abi.encode(OP_EXIT, abi.encode(x)), REFERRAL);
            _inFlight = OP_NONE;
        }
        _sweepAll(x.lst);
    }

    /// Repay `amount` of the owner's debt with the flashed WETH, take the collateral, sell it, leave amount + premium
    /// WETH here for the Pool to pull (checked).
    function _exitBody(Exit memory x, uint256 amount, uint256 premium) private {
        if (amount > 0) {
            _approve(weth, address(pool), amount);
            pool.repay(weth, amount, VARIABLE_RATE, owner);
        }
        address aLst = pool.getReserveData(x.lst).aTokenAddress;
        uint256 collateral = x.collateralAmount;
        if (collateral == type(uint256).max) collateral = IERC20(aLst).balanceOf(owner);
        if (collateral == 0 && amount == 0) revert NothingToDo();
        uint256 withdrawn;
        if (collateral > 0) {
            // aLST accrues every second: an allowance granted a few blocks ago can be short of the whole balance
            uint256 allowance = IERC20(aLst).allowance(owner, address(this));
            if (allowance < collateral) revert CollateralNotApproved(collateral, allowance);
            // an aToken transfer out of the owner is validated by the Pool against the owner's HF
            _transferFrom(aLst, owner, address(this), collateral);
            withdrawn = pool.withdraw(x.lst, type(uint256).max, address(this));
        }
        uint256 sell = x.lstToSell == type(uint256).max ? withdrawn : x.lstToSell;
        if (sell > withdrawn) revert SellExceedsWithdrawn(sell, withdrawn);
        uint256 wethOut = sell > 0 ? _swap(x.lst, weth, x.fee, sell, x.minWethOut) : 0;
        uint256 owed = amount + premium;
        uint256 available = IERC20(weth).balanceOf(address(this));
        if (available < owed) revert InsufficientToRepayFlash(available, owed);
        emit Exited(x.lst, amount, premium, withdrawn, sell, wethOut);
    }

    // A signature can be copied from the mempool and submitted first by anyone: it then grants the same allowance to
    // this contract, and only a missing allowance is a failure.
    function _delegate(Grant calldata g) private {
        ICreditDelegationToken debt = ICreditDelegationToken(pool.getReserveData(weth).variableDebtTokenAddress);
        try debt.delegationWithSig(owner, address(this), g.value, g.deadline, g.v, g.r, g.s) {}
        catch {
            if (debt.borrowAllowance(owner, address(this)) < g.value) revert GrantFailed(address(debt));
        }
    }

    function _permit(address lst, Grant calldata g) private {
        address aLst = pool.getReserveData(lst).aTokenAddress;
        try IERC20Permit(aLst).permit(owner, address(this), g.value, g.deadline, g.v, g.r, g.s) {}
        catch {
            if (IERC20(aLst).allowance(owner, address(this)) < g.value) revert GrantFailed(aLst);
        }
    }

    function _swap(address tokenIn, address tokenOut, uint24 fee, uint256 amountIn, uint256 minOut)
        private
        returns (uint256)
    {
        _approve(tokenIn, address(router), amountIn);
        return router.exactInputSingle(
            ISwapRouter.ExactInputSingleParams(tokenIn, tokenOut, fee, address(this), amountIn, minOut, 0)
        );
    }

    function _checkDeadline(uint256 deadline) private view {
        if (block.timestamp > deadline) revert Expired(deadline, block.timestamp);
    }

    function _checkBoundsShape(Bounds memory b) private pure {
        if (b.minLtv > b.maxLtv) revert InvalidBounds(b.minLtv, b.maxLtv);
    }

    function _checkBounds(Bounds memory b) private view {
        (uint256 collateralBase, uint256 debtBase,,,, uint256 hf) = pool.getUserAccountData(owner);
        uint256 ltv = collateralBase == 0 ? 0 : (debtBase * WAD) / collateralBase;
        if (hf < b.minHealthFactor) revert HealthFactorTooLow(hf, b.minHealthFactor);
        if (ltv < b.minLtv || ltv > b.maxLtv) revert LtvOutOfBounds(ltv, b.minLtv, b.maxLtv);
    }

    function _sweepAll(address lst) private {
        _sweep(weth);
        _sweep(lst);
        _sweep(pool.getReserveData(lst).aTokenAddress);
    }

    function _sweep(address token) private {
        uint256 balance = IERC20(token).balanceOf(address(this));
        if (balance > 0) _transfer(token, owner, balance);
    }

    // ERC-20 calls that accept tokens returning nothing (USDT-style) and fail loudly on `false` or a revert.
    function _approve(address token, address spender, uint256 amount) private {
        _call(token, abi.encodeCall(IERC20.approve, (spender, amount)));
    }

    function _transfer(address token, address to, uint256 amount) private {
        _call(token, abi.encodeCall(IERC20.transfer, (to, amount)));
    }

    function _transferFrom(address token, address from, address to, uint256 amount) private {
        _call(token, abi.encodeCall(IERC20.transferFrom, (from, to, amount)));
    }

    function _call(address token, bytes memory data) private {
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool))) || token.code.length == 0) {
            revert TokenCallFailed(token, bytes4(data));
        }
    }
}
