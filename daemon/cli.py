"""`basisd` command line: run the daemon, backtest it, check a configuration, and operate a running daemon.

Exit codes: 0 success; 64 bad command line; 69 no daemon answered on the control socket (or it refused);
70 an actor kept failing (restart budget exhausted);
78 invalid configuration (systemd's RestartPreventExitStatus keeps it from looping).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import anyio
import structlog

from daemon import __version__
from daemon import log as logging_setup
from daemon.config import ResolvedConfig, load_config
from daemon.errors import BasisdError, ConfigError, ExitCode


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="basisd", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"basisd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, metavar="FILE", help="root YAML config, e.g. configs/replay.yaml")
    check = sub.add_parser("check-config", help="validate a config and report every problem")
    check.add_argument("file", metavar="FILE")
    bt = sub.add_parser("backtest", help="run the daemon's actors flat out on history and write a report")
    bt.add_argument("--config", required=True, metavar="FILE")
    bt.add_argument("--mode", help="a mode from the catalog (default: the config's)")
    bt.add_argument("--start", type=_utc_datetime, help="UTC, e.g. 2024-05-12T01:00:00Z")
    bt.add_argument("--end", type=_utc_datetime, help="UTC, exclusive")
    bt.add_argument("--capital", type=float, help="initial capital in the share class's currency")
    bt.add_argument("--data", metavar="DIR", help="history directory (default: the config's replay source)")
    bt.add_argument("--out", metavar="DIR", default="backtest-out", help="report directory")
    for name, doc in (("halt", "emergency stop: trading HALTED at once, open orders cancelled; survives a restart"),
                      ("flatten", "halt and unwind every position, reduce-only (the same as halt --flatten)"),
                      ("resume", "lift a halt (after you have looked)"),
                      ("status", "trading state, positions, risk and actor health of the running daemon"),
                      ("reconcile", "reconcile the running daemon's books with the venues now; print what differs")):
        control = sub.add_parser(name, help=doc)
        where = control.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", metavar="FILE", help="the running daemon's config (finds its control socket)")
        where.add_argument("--socket", metavar="PATH", help="the control socket itself")
        if name in ("halt", "flatten", "resume"):
            control.add_argument("--reason", default="", help="why (logged, and kept with the halt)")
        if name == "halt":
            control.add_argument("--flatten", action=argparse.BooleanOptionalAction, default=None,
                                 help="also unwind every position (the strategy's unwind, reduce-only) while halted "
                                      "(default: the config's control.flatten_on_halt)")
        control.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    data = sub.add_parser("data", help="inspect market and protocol history")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    man = data_sub.add_parser("manifest", help="each series' real range, duplicates and gaps")
    man.add_argument("--data", required=True, metavar="DIR", help="the history directory, e.g. ../shared/data")
    return parser


def _utc_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date-time such as 2024-05-12T01:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _load(path: str, overrides: dict[str, Any] | None = None) -> ResolvedConfig | None:
    """The config, with its secrets registered for redaction; or None, every problem printed to stderr."""
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    logging_setup.register_secrets(config.settings.credentials.secret_values())
    return config


def _check_config(path: str) -> int:
    config = _load(path)
    if config is None:
        return ExitCode.CONFIG
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    p = config.params
    print(f"{path}: OK — mode {config.mode.name}, share class {config.share_class.name} "
          f"({config.share_class.currency}), venues {', '.join(config.venues)}, "
          f"hedged {'yes' if config.hedged else 'no'}"
          + (f", target LTV {p.target_ltv:.6f}" if config.mode.borrowing else ""))
    return ExitCode.OK


def _run(path: str) -> int:
    config = _load(path)
    if config is None:
        return ExitCode.CONFIG
    s = config.settings
    logging_setup.configure(s.logging.format, s.logging.level)
    log = structlog.get_logger()
    if s.runtime.mode != "replay":
        print(f"{path}: runtime.mode: {s.runtime.mode!r} is not available in this build yet; "
              "use 'replay'", file=sys.stderr)
        return ExitCode.CONFIG

    from daemon.app import Daemon  # the composition root imports every actor; keep check-config light

    async def main() -> None:
        await Daemon(config).run()

    try:
        # uvloop where available: the event loop's own overhead dominates the bus's tail latency.
        anyio.run(main, backend_options={"use_uvloop": _has_uvloop()})
    except BaseException as exc:
        error = _find_basisd_error(exc)
        if error is not None:
            log.critical("daemon_failed", error=str(error), exit_code=int(error.exit_code))
            return error.exit_code
        if isinstance(exc, KeyboardInterrupt):
            return ExitCode.OK
        log.critical("daemon_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        return ExitCode.FAILURE
    return ExitCode.OK


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _find_basisd_error(exc: BaseException) -> BasisdError | None:
    if isinstance(exc, BasisdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_basisd_error(inner)
            if found is not None:
                return found
    return None


def _backtest(args: argparse.Namespace) -> int:
    from daemon.backtest import overrides, run_backtest

    if args.start and args.end and args.end <= args.start:
        print("basisd backtest: --end must be after --start", file=sys.stderr)
        return ExitCode.USAGE
    config = _load(args.config, overrides(data=args.data, start=args.start, end=args.end, mode=args.mode,
                                          capital=args.capital, out=args.out))
    if config is None:
        return ExitCode.CONFIG
    logging_setup.configure(config.settings.logging.format, "warning")
    try:
        _, summary = run_backtest(config)
    except BasisdError as exc:
        print(f"basisd backtest: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{args.out}/summary.json: {summary['mode']} {summary['window']['hours']} h, final NAV "
          f"{summary['final_nav']} {summary['currency']}, APR {summary['apr']:.2%}, max drawdown "
          f"{summary['max_drawdown']:.2%}, P&L residual {summary['pnl_residual_max_abs']}")
    return ExitCode.OK


def _control(args: argparse.Namespace) -> int:
    """`basisd halt | resume | status`: one request over the running daemon's control socket."""
    from daemon.control import ControlError, request, socket_path

    if args.socket:
        path = Path(args.socket)
    else:
        config = _load(args.config)
        if config is None:
            return ExitCode.CONFIG
        s = config.settings
        path = socket_path(s.control.socket, s.runtime.state_dir, config.path)
    command, flatten = args.command, getattr(args, "flatten", None)
    if command == "flatten":
        command, flatten = "halt", True
    try:
        answer = request(path, command, getattr(args, "reason", ""), flatten=flatten)
    except ControlError as exc:
        print(f"basisd {args.command}: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return ExitCode.OK
    _print_answer(args.command, answer)
    return ExitCode.OK


def _print_answer(command: str, answer: dict[str, Any]) -> None:
    print(f"trading: {answer['trading']} ({answer.get('reason', '')})")
    if command == "reconcile":
        found = answer["drifts"]
        print(f"reconciled {', '.join(answer['accounts'])}: " + (
            "books and venues agree" if answer["clean"] else f"{len(found)} difference(s), {answer['total_usd']} USD"))
        for line in found:
            print(f"  {line}")
    if answer.get("flatten"):
        print(f"flatten: {answer['flatten']}")
    status = answer.get("status")
    if status:
        print(f"market time: {status['market_time']}  mode: {status['mode']} ({status['share_class']})")
        portfolio = status.get("portfolio")
        if portfolio:
            print(f"NAV: {portfolio['nav_usd']} USD  ETH: {portfolio['eth_usd']}  net delta: "
                  f"{portfolio['net_delta_eth']} ETH")
            for p in portfolio["positions"]:
                print(f"  {p['instrument']:28} {p['quantity']:>12} entry {p['entry']:>10} mark {p['mark']:>10} "
                      f"uPnL {p['unrealized_pnl']:>10}")
        risk = status.get("risk")
        if risk:
            ratios = " ".join(f"{v}={r}" for v, r in risk["margin_ratios"].items())
            print(f"risk: solvency {risk['solvency']}, drawdown {risk['drawdown']}, margin {ratios or '-'}"
                  + (f", stale: {', '.join(risk['stale'])}" if risk["stale"] else ""))
        rec = status["reconciliation"]
        drift = sum(float(v) for v in rec["drift_usd"].values())
        print(f"reconciled: {rec['runs']} run(s), last at {rec['last_market_time'] or 'never'}, drift {drift:.2f} USD"
              + (f", {rec['failures']} failed" if rec["failures"] else ""))
        journal = status.get("journal")
        print(f"journal: {journal['path']} (run {journal['run']}, {journal['records']} records)"
              + (f" — WRITES FAILING: {journal['failed']}" if journal["failed"] else "") if journal else
              "journal: none (runtime.state_dir is not set)")
        for name, a in status["actors"].items():
            print(f"  actor {name:12} {a['state']:10} restarts {a['restarts']:3} heartbeat {a['heartbeat_age_s']} s")


def _data_manifest(directory: str) -> int:
    from daemon.data.manifest import manifest, render

    path = Path(directory)
    if not path.is_dir():
        print(f"{directory}: not a directory", file=sys.stderr)
        return ExitCode.NO_INPUT
    rows = manifest(path)
    print(render(rows))
    return ExitCode.NO_INPUT if all(r.error for r in rows) else ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "data":
        return _data_manifest(args.data)
    if args.command == "backtest":
        return _backtest(args)
    if args.command in ("halt", "flatten", "resume", "status", "reconcile"):
        return _control(args)
    return _run(args.config)


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
