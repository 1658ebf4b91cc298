"""Replays of a market: the deterministic synthetic market (recorded history comes with the backtest issue)."""
