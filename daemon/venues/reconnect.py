"""How the venues' websocket streams wait before they reconnect (the private fill streams and the public market
streams alike): exponential from an initial wait, capped, each wait shortened at random by up to a jitter fraction
so that the streams a venue dropped at once do not all come back at once."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class Backoff(Protocol):
    @property
    def backoff_initial_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...

    @property
    def backoff_jitter(self) -> float: ...


def check_backoff(settings: Backoff, who: str) -> None:
    """Refuse settings whose waits cannot work, naming `who` has them."""
    if not 0 <= settings.backoff_jitter < 1 or settings.backoff_initial_s <= 0 or \
            settings.backoff_max_s < settings.backoff_initial_s:
        raise ValueError(f"{who}: backoff needs 0 < initial ≤ max and 0 ≤ jitter < 1")


def backoff_delay(attempt: int, settings: Backoff, rand: Callable[[], float] = random.random) -> float:
    """The wait before reconnect number `attempt` (0 first): exponential, capped, shortened by jitter."""
    base = min(settings.backoff_max_s, settings.backoff_initial_s * float(2 ** min(attempt, 30)))
    return base * (1 - settings.backoff_jitter * rand())
