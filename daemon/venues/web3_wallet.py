"""The chain's wallet in the books' terms: a `ChainSnapshot` as the ledger's wallet tokens, and what a transaction
changed as the difference of two snapshots.

The books keep one "ETH" for the wallet: native ETH and WETH together (the executor takes equity as either and
hands back WETH; gas is paid in native ETH), so wrapping and unwrapping change nothing in them. AAVE positions are
the aToken and variable debt token *scaled* balances (`scaledBalanceOf`, in the token's units), as the ledger holds
them: a scaled balance moves only when the wallet acts (or is liquidated), never with interest, so the difference
between the snapshots at a transaction's block and the block before is that transaction's effect exactly — the
tokens it moved and the gas it paid — with nothing accrued mixed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from daemon.domain.ledger import WALLET, TokenChange
from daemon.venues.web3_reads import ChainSnapshot

ZERO = Decimal(0)
# reserve symbol on chain → (free token, aToken, variable debt token) in the books' names
BOOK_TOKENS: dict[str, tuple[str, str, str]] = {
    "WETH": ("ETH", "aWETH", "variableDebtWETH"),
    "weETH": ("weETH", "aWeETH", "variableDebtWeETH"),
    "wstETH": ("wstETH", "awstETH", "variableDebtWstETH"),
    "USDT": ("USDT", "aUSDT", "variableDebtUSDT"),
    "WBTC": ("BTC", "aBTC", "variableDebtBTC"),
}


def wallet_balances(snapshot: ChainSnapshot) -> dict[str, Decimal]:
    """Every non-zero wallet token of `snapshot`, as the ledger names and scales it."""
    out: dict[str, Decimal] = {"ETH": snapshot.eth_balance}
    for symbol, h in snapshot.holdings.items():
        try:
            free, a_token, debt = BOOK_TOKENS[symbol]
        except KeyError:
            known = sorted(BOOK_TOKENS)
            raise ValueError(f"the reserve {symbol!r} has no name in the books (known: {known})") from None
        out[free] = out.get(free, ZERO) + h.free
        if h.a_token_scaled:
            out[a_token] = h.supplied_scaled
        if h.variable_debt_scaled:
            out[debt] = h.borrowed_scaled
    return {token: amount for token, amount in out.items() if amount}


def balance_changes(before: Mapping[str, Decimal], after: Mapping[str, Decimal],
                    account: str = WALLET) -> tuple[TokenChange, ...]:
    """What moved from `before` to `after`, token by token (sorted by name, zeros left out)."""
    tokens = sorted(set(before) | set(after))
    deltas = ((t, after.get(t, ZERO) - before.get(t, ZERO)) for t in tokens)
    return tuple(TokenChange(account, t, d) for t, d in deltas if d)


def changes_between(before: ChainSnapshot, after: ChainSnapshot) -> tuple[TokenChange, ...]:
    """The wallet's token changes from one snapshot to a later one."""
    return balance_changes(wallet_balances(before), wallet_balances(after))
