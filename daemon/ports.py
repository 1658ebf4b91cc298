"""The ports through which actors reach venues. ccxt and web3 live only behind these (daemon/venues/)."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from daemon.domain.ids import VenueId
from daemon.domain.messages import AccountReport, OrderStatusReport, SubmitOrder


class ExchangeVenue(Protocol):
    """An exchange account. Fills are not returned here: the adapter publishes `FillReport`s to the
    report channel it was built with, because on a real venue they arrive on their own stream."""

    venue: VenueId

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        """Send `order`. Idempotent on `client_order_id`: a repeat returns the first outcome."""
        ...

    async def cancel_all_orders(self) -> int:
        """Cancel every open order of this account; return how many were cancelled."""
        ...

    async def fetch_account(self) -> AccountReport:
        """The venue's own view of the account: balances, open perps (the reconciler's ground truth)."""
        ...


class ChainVenue(Protocol):
    """The on-chain wallet and the transfers between it and the exchanges. Each operation is one transaction
    whose effect the adapter reports as `BalancesChanged` on the venue report channel."""

    @property
    def transactions(self) -> int:
        """Transactions reported so far (each one `BalancesChanged`): how many reports a step produced."""
        ...

    def oracle_rate(self) -> Decimal:
        """ETH per unit of the strategy's LST, as the protocol's oracle has it now."""
        ...

    async def fetch_wallet(self) -> AccountReport:
        """The chain's view of the wallet: every token balance (aTokens and debt tokens scaled, as held)."""
        ...

    async def transfer_usdt_to_cex(self, venue: str, amount: Decimal, ref: str) -> None: ...

    async def transfer_eth_to_cex(self, venue: str, amount_eth: Decimal, ref: str) -> None: ...

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal | None:
        """What reached the wallet, where the adapter knows it (a live venue's fee, a balance a spot fee left a
        little short): the steps after it are sized on that. None: as asked, less the venue's fixed fee."""
        ...

    async def withdraw_usdt_from_cex(self, venue: str, amount: Decimal, ref: str) -> Decimal | None: ...

    async def stake(self, amount_eth: Decimal, ref: str) -> None: ...

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None: ...

    async def atomic_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                free_eth: Decimal | None = None) -> Decimal:
        """Returns the ETH left in the wallet after the flash loan is repaid. With `free_eth`, both legs are
        scaled at the same LTV so that exactly that lands after the swap fee (a margin top-up's target)."""
        ...

    async def atomic_reduce_debt(self, repay_eth: Decimal, ref: str) -> None: ...

    async def sequential_leverage_entry(self, equity_eth: Decimal, target_ltv: Decimal, min_borrow_eth: Decimal,
                                        max_iterations: int | None, ref: str) -> int:
        """Stake, supply, borrow, round after round (no flash loan); returns the transactions sent."""
        ...

    async def sequential_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                    redeem: bool = False) -> Decimal:
        """Withdraw, swap (or redeem), repay, round after round; returns the ETH left in the wallet."""
        ...

    async def supply(self, asset: str, amount: Decimal, ref: str) -> None: ...

    async def withdraw(self, asset: str, amount: Decimal, ref: str) -> None: ...

    async def swap_lst_to_eth(self, amount_lst: Decimal, ref: str) -> Decimal: ...

    async def redeem_lst(self, amount_lst: Decimal, ref: str) -> Decimal: ...

    async def swap_eth_to_usdt(self, amount_eth: Decimal, ref: str) -> None: ...


class WalletRails(Protocol):
    """The exchanges' side of the wallet's transfers in live (`daemon.venues.ccxt_transfers.TransferDesk`): the
    chain adapter sends the transaction and books its debit; the rails follow the money until it has landed."""

    async def deposit_address(self, venue: str, asset: str) -> str:
        """`venue`'s deposit address for `asset` on the chain the config names."""
        ...

    async def deposit_sent(self, venue: str, asset: str, amount: Decimal, tx_hash: str, ref: str) -> None:
        """The wallet's transfer of `amount` to `venue`'s deposit address is mined (transaction `tx_hash`) and its
        debit booked (wallet −amount, transit +amount): follow it until `venue` credits it (transit → venue, booked
        by the rails) and return then. Raises a RetryableVenueError if it has not landed in the rails' wait: the
        transfer stays in transit and is still followed (nothing is lost or sent again)."""
        ...

    async def withdraw_to_wallet(self, venue: str, asset: str, amount: Decimal, address: str, ref: str) -> Decimal:
        """Withdraw `amount` of `asset` from `venue` to the wallet's `address` (venue → transit when the venue accepts,
        transit → wallet when it has paid); returns what reached the wallet once it has. Idempotent on `ref`."""
        ...
