"""A stateful fake of the venues' REST APIs that ccxt reaches with its real URLs (TLS on loopback + a resolver)."""

from .binance_model import BinanceError, BinanceState, Order, Position, Trade
from .call import Credentials, LoggedRequest
from .faults import Faults, Rule
from .resolver import RefusedHost, VenueResolver
from .server import FakeExchange, venue_session
from .tls import TlsMaterial, make_tls_material

__all__ = ["BinanceError", "BinanceState", "Credentials", "FakeExchange", "Faults", "LoggedRequest", "Order",
           "Position", "RefusedHost", "Rule", "TlsMaterial", "Trade", "VenueResolver", "make_tls_material",
           "venue_session"]
