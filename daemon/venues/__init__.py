"""Venue adapters: the simulated venues here; ccxt and web3 adapters come with the venue issue."""
