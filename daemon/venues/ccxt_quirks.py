"""ccxt's classifications corrected where they mislead, before an exception is mapped (`ccxt_errors.map_error`).

Each correction names the venue's own words it keys on; nothing else is touched.
"""

from __future__ import annotations

import ccxt

# OKX's "order timed out, please try again later" (51149, in an order's sCode): the order may or may not have been
# placed — the same case as 50004, which ccxt maps to RequestTimeout. ccxt 4.5.90 does not know 51149 and raises a
# plain ExchangeError, which would read as "the venue refused it".
OKX_ORDER_TIMED_OUT = "51149"
# Binance's -2015 ("Invalid API-key, IP, or permissions for action"): ccxt turns it into DDoSProtection once a
# private call has succeeded (its guess: a temporary ban shows up this way). A key revoked, stripped of a
# permission, or an IP dropped from the allow-list answers exactly this, and treating it as a rate limit would
# keep sending signed requests with a key the venue refuses; we treat it as lost access (trading halts, an operator
# looks, and a restart re-checks the key: exit 78 if it really is gone).
BINANCE_KEY_REFUSED = '"code":-2015'


def corrected(exc: BaseException) -> BaseException:
    """`exc`, or the ccxt exception it should have been."""
    message = str(exc)
    compact = message.replace(" ", "")
    if isinstance(exc, ccxt.DDoSProtection) and BINANCE_KEY_REFUSED in compact and " 418 " not in message \
            and " 429 " not in message:
        auth: BaseException = ccxt.AuthenticationError(message)
        return auth
    if type(exc) is ccxt.ExchangeError and message.startswith("okx") and f'"sCode":"{OKX_ORDER_TIMED_OUT}"' in compact:
        timeout: BaseException = ccxt.RequestTimeout(message)
        return timeout
    return exc
