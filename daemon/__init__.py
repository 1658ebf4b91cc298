"""basisd: a daemon for basis and market-neutral crypto strategies."""

__version__ = "0.1.0"
