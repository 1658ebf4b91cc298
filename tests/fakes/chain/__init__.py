"""The chain test world: the real AAVE v3 market (npm @aave/core-v3 bytecode) on a local anvil node, deployed once,
dumped, and booted fresh per test. `plugin.py` has the fixtures; `chain.AaveChain` the levers a test pulls."""
