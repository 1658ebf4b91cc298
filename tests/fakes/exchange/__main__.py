"""Run the exchange fake as a process: `python -m tests.fakes.exchange --port 8443`.

It prints the port, the certificate to trust, the accounts' keys, and how to point a ccxt client at it. The
secrets are printed on purpose: they are throwaway keys of a local fake, and a demo needs them.

With `--chain-url URL` (an anvil node of the test world, `tests/fakes/chain`) the venues' deposits and withdrawals
happen on that chain (`tests/fakes/chain_bridge.py`): each venue's ERC20 deposit address is an anvil dev account, a
transfer to it is credited when mined, a withdrawal is paid with a real transaction. `--chain-book` is the world's
address book (default: the built world's, built or taken from its cache); `--chain-boot` starts that node itself (a
fresh world on `--chain-port`), stopped with the fake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from .call import Credentials
from .server import FakeExchange

SNIPPET = """\
# Point ccxt at the fake (real URLs; the resolver sends venue hosts to 127.0.0.1:{port}, refuses the rest):
import ccxt.async_support as ccxt
from tests.fakes.exchange import venue_session
session = venue_session({port}, {cert!r})
ex = ccxt.binanceusdm({{"apiKey": {key!r}, "secret": {secret!r}, "session": session,
                       "enableRateLimit": False, "options": {{"fetchCurrencies": False}}}})
# ... await ex.load_markets(); then: await ex.close(); await session.close()
"""


def fake_env(fake: FakeExchange) -> dict[str, str]:
    """The environment a live daemon needs to trade the fake: the venue redirect and every venue's keys."""
    env = {"BASISD_VENUE_REDIRECT__ADDRESS": f"127.0.0.1:{fake.port}",
           "BASISD_VENUE_REDIRECT__CA_FILE": str(fake.tls.cert_path)}
    for venue in ("binance", "bybit", "okx"):
        c = fake.credentials(venue)
        env[f"BASISD_CREDENTIALS__{venue.upper()}__API_KEY"] = c.api_key
        env[f"BASISD_CREDENTIALS__{venue.upper()}__API_SECRET"] = c.secret
    env["BASISD_CREDENTIALS__OKX__PASSPHRASE"] = fake.credentials("okx").passphrase
    return env


def write_env(fake: FakeExchange, env_file: Path) -> None:
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in fake_env(fake).items()))
    env_file.chmod(0o600)  # the fake's keys: test secrets, but kept as a credential file would be


async def serve(args: argparse.Namespace, world: tuple[Any, str, dict[str, Any]] | None = None) -> None:
    """`world`: (the node booted for it or None, its URL, its address book) to settle funds on."""
    credentials = None
    if args.binance_key and args.binance_secret:
        credentials = {"binance": Credentials(args.binance_key, args.binance_secret),
                       "bybit": Credentials("fake-bybit", "fake-bybit-secret"),
                       "okx": Credentials("fake-okx", "fake-okx-secret", "fake-okx-pass")}
    fake = FakeExchange(port=args.port, cert_dir=Path(args.cert_dir) if args.cert_dir else None,
                        credentials=credentials, funding_every_s=args.funding_every)
    fake.market_streams.heartbeat_s = 1.0  # guest (mstreams): public streams tick every second, as the venues do
    await fake.start()
    bridge = None
    chain: dict[str, Any] = {}
    if world is not None:
        from tests.fakes.chain_bridge import ChainBridge

        _, url, book = world
        bridge = await ChainBridge(url, book, {"binance": fake.binance, "bybit": fake.bybit, "okx": fake.okx}).start()
        chain = {"chain": {"url": url, "deposit_addresses": bridge.addresses}}
    creds = fake.credentials("binance")
    if args.env:  # what `basisd run` needs to trade the fake in live mode: `set -a; . FILE; set +a`
        write_env(fake, Path(args.env))
    if args.json:  # one line for a script that starts the fake and then the daemon
        print(json.dumps({"port": fake.port, "cert": str(fake.tls.cert_path), "credentials": {
            v: {"api_key": c.api_key, "secret": c.secret, "passphrase": c.passphrase}
            for v in ("binance", "bybit", "okx") for c in [fake.credentials(v)]}, **chain}), flush=True)
    else:
        print(f"exchange fake listening on https://127.0.0.1:{fake.port} (TLS)", flush=True)
        print(f"certificate to trust: {fake.tls.cert_path}")
        for venue in ("binance", "bybit", "okx"):
            c = fake.credentials(venue)
            print(f"{venue}: api key {c.api_key}  secret {c.secret}" + (f"  passphrase {c.passphrase}"
                                                                         if venue == "okx" else ""))
        if chain:
            print(f"chain: {chain['chain']['url']} (deposits and withdrawals on it); deposit addresses: "
                  + ", ".join(f"{v} {a}" for v, a in chain["chain"]["deposit_addresses"].items()))
        print(SNIPPET.format(port=fake.port, cert=str(fake.tls.cert_path), key=creds.api_key, secret=creds.secret),
              flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if bridge is not None:
            await bridge.stop()
        await fake.stop()


def prepare_world(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]] | None:
    """The chain to settle on: (the node booted with `--chain-boot` or None, its URL, the world's address book)."""
    if not (args.chain_url or args.chain_boot):
        return None
    from tests.fakes.chain.node import AnvilNode
    from tests.fakes.chain.world import build_world

    book = json.loads(Path(args.chain_book).read_text()) if args.chain_book else build_world().book
    if not args.chain_boot:
        return None, args.chain_url, book
    built = build_world()
    node = AnvilNode(load_state=built.state, timestamp=built.boot_timestamp, port=args.chain_port or None)
    return node, node.url, book


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.exchange", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TLS port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--cert-dir", help="where to write the certificate and key (default: a temporary dir)")
    parser.add_argument("--binance-key", help="fixed API key (default: random)")
    parser.add_argument("--binance-secret", help="fixed API secret (default: random)")
    parser.add_argument("--env", metavar="FILE", help="write the environment a live daemon needs to trade the fake "
                                                      "(venue redirect, every venue's keys) to FILE")
    parser.add_argument("--json", action="store_true", help="print one JSON line (port, cert, credentials)")
    parser.add_argument("--funding-every", type=float, default=None, metavar="SECONDS",
                        help="settle funding on open positions at this period (a compressed 8 h)")
    parser.add_argument("--chain-url", metavar="URL", help="settle deposits and withdrawals on this anvil node of the "
                                                           "test world (the bridge)")
    parser.add_argument("--chain-book", metavar="PATH", help="the world's address book (book.json; default: the built "
                                                             "world's)")
    parser.add_argument("--chain-boot", action="store_true", help="start a fresh node of the test world and settle on "
                                                                  "it (stopped with the fake)")
    parser.add_argument("--chain-port", type=int, default=0, help="the booted node's port (0: any free port)")
    args = parser.parse_args(argv)
    if args.chain_url and args.chain_boot:
        parser.error("--chain-url and --chain-boot exclude each other")
    world = prepare_world(args)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args, world))
    finally:
        if world is not None and world[0] is not None:
            world[0].stop()  # (also when the fake failed to start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
