"""The actors: each a thin receive loop around pure domain code, wired together in `daemon.app`."""
