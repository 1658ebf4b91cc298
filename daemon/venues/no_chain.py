"""The wallet of a `live` run without a chain (`chain.address_book` unset): none.

Such a run trades the CEX-only modes (`eth_basis`, `btc_basis`) with the capital already on the venues; nothing moves
between them (the strategy plans no transfer: `ModeSpec.wallet_transfers` is False in live). This stands where the
`ChainVenue` port is wired, so the actors stay the same in every world: its wallet is empty (the reconciler finds
it so), it has sent no transaction, and any operation that would need the chain is refused before anything is
sent, naming what is missing — never carried out on a pretend wallet.
"""

from __future__ import annotations

from decimal import Decimal

from daemon.clock import Clock
from daemon.domain.ledger import WALLET
from daemon.domain.messages import AccountReport
from daemon.errors import NonRetryableVenueError


class ChainUnavailable(NonRetryableVenueError):
    """An operation needs the chain, and this run has none."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"{operation} needs the wallet on chain, and this run has none (chain.address_book is not "
                         "set): capital stays on the venues it was deposited to (move it by hand, then restart)")
        self.operation = operation


class NoChain:
    """The `ChainVenue` port with no chain behind it."""

    liquidations = 0

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    @property
    def transactions(self) -> int:
        return 0

    def oracle_rate(self) -> Decimal:
        raise ChainUnavailable("reading the LST's oracle rate")

    async def fetch_wallet(self) -> AccountReport:
        now = self._clock.now_ns()
        return AccountReport(WALLET, (), (), 0, now, now)

    async def transfer_usdt_to_cex(self, venue: str, amount: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"moving {amount} USDT from the wallet to {venue} ({ref})")

    async def transfer_eth_to_cex(self, venue: str, amount_eth: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"moving {amount_eth} ETH from the wallet to {venue} ({ref})")

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal | None:
        raise ChainUnavailable(f"withdrawing {amount_eth} ETH from {venue} to the wallet ({ref})")

    async def withdraw_usdt_from_cex(self, venue: str, amount: Decimal, ref: str) -> Decimal | None:
        raise ChainUnavailable(f"withdrawing {amount} USDT from {venue} to the wallet ({ref})")

    async def stake(self, amount_eth: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"staking {amount_eth} ETH ({ref})")

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None:
        raise ChainUnavailable(f"the leveraged entry ({ref})")

    async def atomic_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                free_eth: Decimal | None = None) -> Decimal:
        raise ChainUnavailable(f"the deleverage ({ref})")

    async def atomic_reduce_debt(self, repay_eth: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"the debt reduction ({ref})")

    async def sequential_leverage_entry(self, equity_eth: Decimal, target_ltv: Decimal, min_borrow_eth: Decimal,
                                        max_iterations: int | None, ref: str) -> int:
        raise ChainUnavailable(f"the sequential leverage loop ({ref})")

    async def sequential_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                    redeem: bool = False) -> Decimal:
        raise ChainUnavailable(f"the sequential deleverage ({ref})")

    async def supply(self, asset: str, amount: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"supplying {amount} {asset} ({ref})")

    async def withdraw(self, asset: str, amount: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"withdrawing {amount} {asset} from AAVE ({ref})")

    async def swap_lst_to_eth(self, amount_lst: Decimal, ref: str) -> Decimal:
        raise ChainUnavailable(f"swapping {amount_lst} LST ({ref})")

    async def redeem_lst(self, amount_lst: Decimal, ref: str) -> Decimal:
        raise ChainUnavailable(f"redeeming {amount_lst} LST ({ref})")

    async def swap_eth_to_usdt(self, amount_eth: Decimal, ref: str) -> None:
        raise ChainUnavailable(f"swapping {amount_eth} ETH to USDT ({ref})")
