"""Run the exchange fake as a process: `python -m tests.fakes.exchange --port 8443`.

It prints the port, the certificate to trust, the accounts' keys, and how to point a ccxt client at it. The
secrets are printed on purpose: they are throwaway keys of a local fake, and a demo needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

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


def write_env(fake: FakeExchange, env_file: Path) -> None:
    lines = [f"BASISD_VENUE_REDIRECT__ADDRESS=127.0.0.1:{fake.port}",
             f"BASISD_VENUE_REDIRECT__CA_FILE={fake.tls.cert_path}"]
    for venue in ("binance", "bybit", "okx"):
        c = fake.credentials(venue)
        lines += [f"BASISD_CREDENTIALS__{venue.upper()}__API_KEY={c.api_key}",
                  f"BASISD_CREDENTIALS__{venue.upper()}__API_SECRET={c.secret}"]
    lines.append(f"BASISD_CREDENTIALS__OKX__PASSPHRASE={fake.credentials('okx').passphrase}")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)  # the fake's keys: test secrets, but kept as a credential file would be


async def serve(args: argparse.Namespace) -> None:
    credentials = None
    if args.binance_key and args.binance_secret:
        credentials = {"binance": Credentials(args.binance_key, args.binance_secret),
                       "bybit": Credentials("fake-bybit", "fake-bybit-secret"),
                       "okx": Credentials("fake-okx", "fake-okx-secret", "fake-okx-pass")}
    fake = FakeExchange(port=args.port, cert_dir=Path(args.cert_dir) if args.cert_dir else None,
                        credentials=credentials, funding_every_s=args.funding_every)
    fake.market_streams.heartbeat_s = 1.0  # guest (mstreams): public streams tick every second, as the venues do
    await fake.start()
    creds = fake.credentials("binance")
    if args.env:  # what `basisd run` needs to trade the fake in live mode: `set -a; . FILE; set +a`
        write_env(fake, Path(args.env))
    if args.json:  # one line for a script that starts the fake and then the daemon
        print(json.dumps({"port": fake.port, "cert": str(fake.tls.cert_path), "credentials": {
            v: {"api_key": c.api_key, "secret": c.secret, "passphrase": c.passphrase}
            for v in ("binance", "bybit", "okx") for c in [fake.credentials(v)]}}), flush=True)
    else:
        print(f"exchange fake listening on https://127.0.0.1:{fake.port} (TLS)", flush=True)
        print(f"certificate to trust: {fake.tls.cert_path}")
        for venue in ("binance", "bybit", "okx"):
            c = fake.credentials(venue)
            print(f"{venue}: api key {c.api_key}  secret {c.secret}" + (f"  passphrase {c.passphrase}"
                                                                         if venue == "okx" else ""))
        print(SNIPPET.format(port=fake.port, cert=str(fake.tls.cert_path), key=creds.api_key, secret=creds.secret),
              flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


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
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
