// SPDX-License-Identifier: UNLICENSED
// Test-only contracts for the anvil world (tests/fakes/chain): the AAVE contracts themselves are the real bytecode
// from npm @aave/core-v3; these stand in for what the market reads from outside AAVE.
pragma solidity 0.8.37;

/// A mintable ERC-20 whose exchange rate to ETH is set by the test: the LST behind its real read interface.
abstract contract RatedToken {
    string public name;
    string public symbol;
    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    uint256 internal rate; // ETH (eETH, stETH) per token, 1e18 fixed point
    address public immutable owner;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event RateSet(uint256 rate);

    constructor(string memory name_, string memory symbol_, uint256 rate_) {
        name = name_;
        symbol = symbol_;
        rate = rate_;
        owner = msg.sender;
    }

    /// Only the deployer moves the rate (tests may impersonate it); a real LST's rate moves by its own oracle.
    function setRate(uint256 rate_) external {
        require(msg.sender == owner, "only owner");
        require(rate_ > 0, "rate is zero");
        rate = rate_;
        emit RateSet(rate_);
    }

    /// Same overloads as AAVE's MintableERC20: its MockFlashLoanSimpleReceiver pays premiums through mint(address,uint256).
    function mint(uint256 value) external returns (bool) {
        _mint(msg.sender, value);
        return true;
    }

    function mint(address to, uint256 value) external returns (bool) {
        _mint(to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= value, "allowance");
            allowance[from][msg.sender] = allowed - value;
        }
        _move(from, to, value);
        return true;
    }

    function _mint(address to, uint256 value) internal {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function _move(address from, address to, uint256 value) internal {
        require(balanceOf[from] >= value, "balance");
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    function ethPerToken() public view returns (uint256) {
        return rate;
    }

    /// Staking as the real protocols do it, in one step: the ETH sent is staked (it stays in this contract: there is
    /// no beacon chain here) and wrapped, minting `msg.value / rate` tokens to the sender (rounded down).
    function _stake() internal returns (uint256 minted) {
        require(msg.value > 0, "zero stake");
        minted = (msg.value * 1e18) / rate;
        _mint(msg.sender, minted);
    }
}

/// EtherFi's weETH read interface: getRate() is eETH per weETH.
contract TestWeETH is RatedToken {
    constructor(uint256 rate_) RatedToken("Wrapped eETH", "weETH", rate_) {}

    function getRate() external view returns (uint256) {
        return rate;
    }

    function getEETHByWeETH(uint256 amount) external view returns (uint256) {
        return (amount * rate) / 1e18;
    }

    function getWeETHByeETH(uint256 amount) external view returns (uint256) {
        return (amount * 1e18) / rate;
    }

    /// EtherFi's DepositAdapter entry (`depositETHForWeETH(address _referral) payable returns (uint256)`): ETH in,
    /// weETH out in one call. On mainnet it is a separate contract; here the token is its own adapter.
    function depositETHForWeETH(address referral) external payable returns (uint256) {
        referral; // EtherFi only logs it
        return _stake();
    }
}

/// Lido's wstETH read interface: stEthPerToken() is stETH per wstETH.
contract TestWstETH is RatedToken {
    constructor(uint256 rate_) RatedToken("Wrapped liquid staked Ether 2.0", "wstETH", rate_) {}

    function stEthPerToken() external view returns (uint256) {
        return rate;
    }

    function tokensPerStEth() external view returns (uint256) {
        return (uint256(1e18) * 1e18) / rate;
    }

    function getStETHByWstETH(uint256 amount) external view returns (uint256) {
        return (amount * rate) / 1e18;
    }

    function getWstETHByStETH(uint256 amount) external view returns (uint256) {
        return (amount * 1e18) / rate;
    }

    /// Lido's wstETH shortcut: ETH sent to the contract is submitted to stETH and wrapped, wstETH to the sender.
    receive() external payable {
        _stake();
    }
}

interface ILatestAnswer {
    function latestAnswer() external view returns (int256);
}

interface IEthPerToken {
    function ethPerToken() external view returns (uint256);
}

/// The LST's USD price the way AAVE's mainnet rate adapters build it: ETH/USD × the LST's own exchange rate, so
/// moving the ETH feed moves both, and moving the rate (a slashing, a reward) moves AAVE's price of the LST.
contract LstRateFeed is ILatestAnswer {
    ILatestAnswer public immutable ethUsd;
    IEthPerToken public immutable lst;
    uint8 public constant decimals = 8;

    constructor(ILatestAnswer ethUsd_, IEthPerToken lst_) {
        ethUsd = ethUsd_;
        lst = lst_;
    }

    function latestAnswer() external view returns (int256) {
        return (ethUsd.latestAnswer() * int256(lst.ethPerToken())) / 1e18;
    }
}
