"""Deploy the real AAVE v3 market (npm `@aave/core-v3` 1.19.3 bytecode) onto a fresh anvil, as the test world.

The sequence follows `shared/recipes/aave_anvil.md` §2; its order constraints are facts of the contracts (the ACL
admin before the ACLManager, the Pool before the configurator proxy, the e-mode category before its assets, token
implementations built on the Pool *proxy*). Reserves: WETH (AAVE's WETH9Mocked), weETH and wstETH (the world's own
rated tokens behind the real `getRate()` / `stEthPerToken()`), USDT (6 decimals). Prices: ETH/USD and USDT/USD are
AAVE's MockAggregator; each LST is priced as mainnet's rate adapters do, ETH/USD × the LST's own rate, so moving the
rate moves AAVE's price of it. E-mode 1 holds WETH and both LSTs; flash loans cost 5 bps, half to the treasury.

Every transaction goes from anvil's unlocked dev accounts, in a fixed order: the addresses are the same on every
build. An LP (account 8) has supplied WETH and USDT, so a test can borrow at once; nothing is borrowed, so every rate
is 0 and the snapshot does not depend on when it is booted.
"""

from __future__ import annotations

from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from .artifacts import aave_artifact, aave_error_names, library_dependencies, linked_bytecode

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_UINT = 2**256 - 1
WAD = 10**18
USD = 10**8  # AaveOracle's base currency unit with base currency address(0): USD with 8 decimals
MARKET_ID = "basisd anvil market"
ADMIN, LP, TREASURY = 0, 8, 9  # anvil dev account indexes
EMODE_ETH = 1
EMODE = {"id": EMODE_ETH, "ltv": 9300, "lt": 9500, "bonus": 10100, "label": "ETH correlated"}
FLASH_PREMIUM_TOTAL_BPS = 5  # of the amount
FLASH_PREMIUM_TO_PROTOCOL_BPS = 5000  # of the premium
ETH_USD = 3000 * USD
LP_SUPPLY = {"WETH": 1_000 * WAD, "USDT": 10_000_000 * 10**6}
# The DEX (deploy/contracts' test-only FixedRateSwapRouter, Uniswap V3 SwapRouter02's exactInputSingle) pays out of
# its own inventory at the rate a test sets; it starts at the oracle's rates with no fee.
SWAP_ROUTER = "FixedRateSwapRouter"
DEX_INVENTORY = {"WETH": 10_000 * WAD, "weETH": 10_000 * WAD, "wstETH": 10_000 * WAD, "USDT": 30_000_000 * 10**6}

# symbol, where the bytecode comes from, decimals, ltv/lt/bonus/reserve factor (bps), borrowable, e-mode,
# interest rate strategy (optimal usage, base, slope1, slope2; percent), initial LST rate (1e18 = 1 ETH per token)
RESERVES: list[dict[str, Any]] = [
    {"symbol": "WETH", "kind": "weth", "decimals": 18, "ltv": 8050, "lt": 8300, "bonus": 10500, "rf": 1500,
     "borrow": True, "emode": EMODE_ETH, "rate": (90, 0, 2.7, 80)},
    {"symbol": "weETH", "kind": "lst", "contract": "TestWeETH", "lst_rate": 1_060_000_000_000_000_000,
     "decimals": 18, "ltv": 7250, "lt": 7500, "bonus": 10700, "rf": 4500, "borrow": False, "emode": EMODE_ETH,
     "rate": (45, 0, 7, 300)},
    {"symbol": "wstETH", "kind": "lst", "contract": "TestWstETH", "lst_rate": 1_200_000_000_000_000_000,
     "decimals": 18, "ltv": 7850, "lt": 8100, "bonus": 10600, "rf": 1500, "borrow": False, "emode": EMODE_ETH,
     "rate": (45, 0, 4.5, 80)},
    {"symbol": "USDT", "kind": "stable", "decimals": 6, "ltv": 7500, "lt": 7800, "bonus": 10450, "rf": 1000,
     "borrow": True, "emode": 0, "rate": (92, 0, 4, 60)},
]


def swap_rate_wad(rate_out_per_in: int | float, decimals_in: int, decimals_out: int) -> int:
    """FixedRateSwapRouter's rate: out = in × wad / 1e18, both in their tokens' smallest units."""
    return int(int(rate_out_per_in * 10**decimals_out) * 10**18 // 10**decimals_in)


def _oracle_swap_rates() -> list[tuple[str, str, int]]:
    """LST ↔ WETH at the LST's rate, WETH ↔ USDT at ETH/USD (the reverse rates rounded down)."""
    eth_usd = ETH_USD // USD
    rates = [("WETH", "USDT", swap_rate_wad(eth_usd, 18, 6)), ("USDT", "WETH", 10**(18 + 18 - 6) // eth_usd)]
    for r in RESERVES:
        if r["kind"] == "lst":
            rates += [(r["symbol"], "WETH", r["lst_rate"]), ("WETH", r["symbol"], 10**36 // r["lst_rate"])]
    return rates


def pct_ray(percent: float) -> int:
    """A percentage (2.7 for 2.7 %) as a ray, exact for the values above (through 1e6 fixed point)."""
    return round(percent * 10**6) * 10**19


class Deployer:
    """Sends from unlocked dev accounts and waits for each receipt; a revert names AAVE's error code."""

    def __init__(self, w3: Web3, test_contracts: dict[str, Any]) -> None:
        self.w3 = w3
        self.test_contracts = test_contracts
        self.accounts = w3.eth.accounts
        self.transactions = 0
        self._errors = aave_error_names()

    def _abi_and_code(self, name: str, libraries: dict[str, str] | None) -> tuple[list[Any], str]:
        if name in self.test_contracts:
            art = self.test_contracts[name]
            return art["abi"], art["bytecode"]
        art = aave_artifact(name)
        code = linked_bytecode(art, libraries or {}) if art["linkReferences"] else art["bytecode"]
        return art["abi"], code

    def at(self, name: str, address: str) -> Contract:
        abi = self.test_contracts[name]["abi"] if name in self.test_contracts else aave_artifact(name)["abi"]
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi, decode_tuples=True)

    def _explain(self, error: ContractLogicError) -> str:
        text = str(error)
        code = text.rsplit(":", 1)[-1].strip().strip("'")
        return f"{text} [Errors.{self._errors[code]}]" if code in self._errors else text

    def _mined(self, tx_hash: HexBytes, what: str) -> TxReceipt:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
        self.transactions += 1
        if receipt["status"] != 1:
            raise RuntimeError(f"{what} failed in transaction {tx_hash.hex()}")
        return receipt

    def send(self, fn: Any, sender: str) -> TxReceipt:
        try:
            tx_hash = fn.transact({"from": sender})
        except ContractLogicError as e:
            raise RuntimeError(f"{fn.fn_name} reverted: {self._explain(e)}") from None
        return self._mined(tx_hash, fn.fn_name)

    def deploy(self, name: str, *args: Any, libraries: dict[str, str] | None = None) -> Contract:
        abi, code = self._abi_and_code(name, libraries)
        try:
            tx_hash = self.w3.eth.contract(abi=abi, bytecode=code).constructor(*args).transact(
                {"from": self.accounts[ADMIN]})
        except ContractLogicError as e:
            raise RuntimeError(f"deploying {name} reverted: {self._explain(e)}") from None
        receipt = self._mined(tx_hash, f"deploying {name}")
        address = receipt["contractAddress"]
        if not address:
            raise RuntimeError(f"deploying {name} created no contract")
        return self.at(name, address)

    def deploy_libraries(self, contract: str) -> dict[str, str]:
        """The libraries `contract` links, in dependency order (FlashLoanLogic itself links BorrowLogic)."""
        done: dict[str, str] = {}

        def visit(lib: str) -> None:
            if lib in done:
                return
            for dep in library_dependencies(lib):
                visit(dep)
            done[lib] = self.deploy(lib, libraries=done).address

        for lib in library_dependencies(contract):
            visit(lib)
        return done


def deploy_market(w3: Web3, test_contracts: dict[str, Any]) -> dict[str, Any]:
    """Deploy and configure the market; returns the address book (JSON-ready)."""
    d = Deployer(w3, test_contracts)
    admin, treasury = d.accounts[ADMIN], d.accounts[TREASURY]
    send = d.send

    provider = d.deploy("PoolAddressesProvider", MARKET_ID, admin)
    send(provider.functions.setACLAdmin(admin), admin)  # the ACLManager's constructor reads it
    acl = d.deploy("ACLManager", provider.address)
    send(provider.functions.setACLManager(acl.address), admin)
    for role in ("addPoolAdmin", "addEmergencyAdmin", "addRiskAdmin", "addAssetListingAdmin"):
        send(getattr(acl.functions, role)(admin), admin)

    pool_libraries = d.deploy_libraries("Pool")
    pool_impl = d.deploy("Pool", provider.address, libraries=pool_libraries)
    send(pool_impl.functions.initialize(provider.address), admin)  # nobody else can initialize the bare implementation
    send(provider.functions.setPoolImpl(pool_impl.address), admin)  # the provider builds the proxy and initializes it
    pool = d.at("Pool", provider.functions.getPool().call())

    configurator_libraries = d.deploy_libraries("PoolConfigurator")
    configurator_impl = d.deploy("PoolConfigurator", libraries=configurator_libraries)
    send(configurator_impl.functions.initialize(provider.address), admin)
    send(provider.functions.setPoolConfiguratorImpl(configurator_impl.address), admin)
    configurator = d.at("PoolConfigurator", provider.functions.getPoolConfigurator().call())

    eth_feed = d.deploy("MockAggregator", ETH_USD)
    tokens: dict[str, Contract] = {}
    feeds: dict[str, Contract] = {}
    for r in RESERVES:
        sym = r["symbol"]
        if r["kind"] == "weth":
            tokens[sym], feeds[sym] = d.deploy("WETH9Mocked"), eth_feed
        elif r["kind"] == "lst":
            tokens[sym] = d.deploy(r["contract"], r["lst_rate"])
            feeds[sym] = d.deploy("LstRateFeed", eth_feed.address, tokens[sym].address)
        else:
            tokens[sym] = d.deploy("MintableERC20", "Tether USD", sym, r["decimals"])
            feeds[sym] = d.deploy("MockAggregator", 1 * USD)
    fallback = d.deploy("PriceOracle")
    oracle = d.deploy("AaveOracle", provider.address, [tokens[r["symbol"]].address for r in RESERVES],
                      [feeds[r["symbol"]].address for r in RESERVES], fallback.address, ZERO_ADDRESS, USD)
    send(provider.functions.setPriceOracle(oracle.address), admin)
    data_provider = d.deploy("AaveProtocolDataProvider", provider.address)
    send(provider.functions.setPoolDataProvider(data_provider.address), admin)

    # Token implementations check msg.sender == POOL, so they are built on the proxy's address.
    a_impl = d.deploy("AToken", pool.address)
    stable_impl = d.deploy("StableDebtToken", pool.address)
    variable_impl = d.deploy("VariableDebtToken", pool.address)
    strategies = {}
    for r in RESERVES:
        optimal, base, slope1, slope2 = r["rate"]
        strategies[r["symbol"]] = d.deploy(
            "DefaultReserveInterestRateStrategy", provider.address, pct_ray(optimal), pct_ray(base),
            pct_ray(slope1), pct_ray(slope2), 0, 0, pct_ray(1), 0, pct_ray(20))

    send(configurator.functions.updateFlashloanPremiumTotal(FLASH_PREMIUM_TOTAL_BPS), admin)  # 0 in a fresh Pool
    send(configurator.functions.updateFlashloanPremiumToProtocol(FLASH_PREMIUM_TO_PROTOCOL_BPS), admin)
    inputs = [
        (a_impl.address, stable_impl.address, variable_impl.address, r["decimals"], strategies[r["symbol"]].address,
         tokens[r["symbol"]].address, treasury, ZERO_ADDRESS, f"Aave Anvil {r['symbol']}", f"aAnv{r['symbol']}",
         f"Aave Anvil Variable Debt {r['symbol']}", f"variableDebtAnv{r['symbol']}",
         f"Aave Anvil Stable Debt {r['symbol']}", f"stableDebtAnv{r['symbol']}", b"")
        for r in RESERVES
    ]
    send(configurator.functions.initReserves(inputs), admin)
    _configure_reserves(d, configurator, tokens)
    flash_receiver = d.deploy("MockFlashLoanSimpleReceiver", provider.address)

    router = _seed(d, pool, tokens)

    book: dict[str, Any] = {
        "chainId": w3.eth.chain_id, "admin": admin, "treasury": treasury, "liquidityProvider": d.accounts[LP],
        "PoolAddressesProvider": provider.address, "ACLManager": acl.address, "Pool": pool.address,
        "PoolImpl": pool_impl.address, "PoolConfigurator": configurator.address,
        "AaveOracle": oracle.address, "FallbackPriceOracle": fallback.address, "EthUsdAggregator": eth_feed.address,
        "AaveProtocolDataProvider": data_provider.address, "MockFlashLoanSimpleReceiver": flash_receiver.address,
        "SwapRouter": router.address, "libraries": {**pool_libraries, **configurator_libraries},
        "emode": EMODE, "flashPremiumTotalBps": FLASH_PREMIUM_TOTAL_BPS,
        "flashPremiumToProtocolBps": FLASH_PREMIUM_TO_PROTOCOL_BPS, "deployTransactions": d.transactions,
        "reserves": {},
    }
    for r in RESERVES:
        sym = r["symbol"]
        data = pool.functions.getReserveData(tokens[sym].address).call()
        book["reserves"][sym] = {
            "underlying": tokens[sym].address, "decimals": r["decimals"], "kind": r["kind"],
            "contract": r.get("contract", "WETH9Mocked" if r["kind"] == "weth" else "MintableERC20"),
            "aggregator": feeds[sym].address, "strategy": strategies[sym].address,
            "aToken": data.aTokenAddress, "variableDebtToken": data.variableDebtTokenAddress,
            "stableDebtToken": data.stableDebtTokenAddress, "id": data.id,
            "ltv": r["ltv"], "lt": r["lt"], "bonus": r["bonus"], "emode": r["emode"], "lst_rate": r.get("lst_rate"),
        }
    return book


def _configure_reserves(d: Deployer, configurator: Contract, tokens: dict[str, Contract]) -> None:
    admin, send = d.accounts[ADMIN], d.send
    # initReserves sets only decimals and active: borrowing, collateral, reserve factor and flash loans start off.
    for r in RESERVES:
        asset = tokens[r["symbol"]].address
        send(configurator.functions.configureReserveAsCollateral(asset, r["ltv"], r["lt"], r["bonus"]), admin)
        send(configurator.functions.setReserveFactor(asset, r["rf"]), admin)
        if r["borrow"]:
            send(configurator.functions.setReserveBorrowing(asset, True), admin)
        send(configurator.functions.setReserveFlashLoaning(asset, True), admin)
    send(configurator.functions.setEModeCategory(EMODE["id"], EMODE["ltv"], EMODE["lt"], EMODE["bonus"],
                                                 ZERO_ADDRESS, EMODE["label"]), admin)
    for r in RESERVES:
        if r["emode"]:
            send(configurator.functions.setAssetEModeCategory(tokens[r["symbol"]].address, r["emode"]), admin)


def _seed(d: Deployer, pool: Contract, tokens: dict[str, Contract]) -> Contract:
    """The LP's liquidity and the DEX with its inventory and the oracle's rates; returns the DEX."""
    admin, send = d.accounts[ADMIN], d.send
    lp = d.accounts[LP]
    for sym, amount in LP_SUPPLY.items():
        token = tokens[sym]
        send(token.get_function_by_signature("mint(address,uint256)")(lp, amount), lp)
        send(token.functions.approve(pool.address, MAX_UINT), lp)
        send(pool.functions.supply(token.address, amount, lp, 0), lp)
    router = d.deploy(SWAP_ROUTER)
    for sym, amount in DEX_INVENTORY.items():
        send(tokens[sym].get_function_by_signature("mint(address,uint256)")(router.address, amount), admin)
    for token_in, token_out, wad in _oracle_swap_rates():
        send(router.functions.setRate(tokens[token_in].address, tokens[token_out].address, wad), admin)
    return router
