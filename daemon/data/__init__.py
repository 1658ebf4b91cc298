"""Market and protocol history: readers, as-of lookups and the manifest (the backtest's data layer)."""
