"""pytest fixtures for the exchange fake (registered from tests/conftest.py through `pytest_plugins`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from .server import FakeExchange


@pytest_asyncio.fixture
async def exchange_fake(tmp_path: Path) -> AsyncIterator[FakeExchange]:
    """A started fake; every session and ccxt client it made is closed at teardown."""
    fake = FakeExchange(cert_dir=tmp_path / "exchange-fake-tls")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def binanceusdm(exchange_fake: FakeExchange) -> Any:
    """ccxt.async_support.binanceusdm on the fake's default account (real URLs, rate limiter off)."""
    return await exchange_fake.client("binanceusdm")


@pytest_asyncio.fixture
async def binance_spot(exchange_fake: FakeExchange) -> Any:
    """ccxt.async_support.binance limited to spot markets, on the fake's default account."""
    return await exchange_fake.client("binance")
