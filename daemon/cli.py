"""`basisd` command line: run the daemon, backtest it, check a configuration, and operate a running daemon.

Exit codes (README "Exit codes"; tests/integration/test_exit_codes.py checks every row):
0 success; 64 bad command line; 65 the history is malformed or lacks a value the run needs (no proxy);
66 a data directory or file that is not there (or holds no history); 69 no daemon answered on the control
socket, it refused, or its answer was incomplete; 70 an actor kept failing, a backtest stopped short of its
window, or an internal error; 73 the backtest's --out cannot be written; 78 invalid configuration (systemd's
RestartPreventExitStatus keeps it from looping); 130 interrupted (Ctrl-C); 141 the reader of the output went
away (`basisd status | head -1`), quietly, as a command killed by SIGPIPE.

No command prints a traceback for an error: one line names it. `BASISD_DEBUG=1` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import anyio
import structlog

from daemon import __version__
from daemon import log as logging_setup
from daemon.config import ResolvedConfig, load_config
from daemon.errors import BasisdError, ConfigError, ExitCode, find_basisd_error
from daemon.failures import describe

MIN_WINDOW_H = 2  # replay.hours' own lower bound


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
    # runtime.mode live is refused by load_config (check-config refuses it too); paper runs (daemon.world).

    from daemon.app import Daemon  # the composition root imports every actor; keep check-config light

    async def main() -> None:
        await Daemon(config).run()

    try:
        # uvloop where available: the event loop's own overhead dominates the bus's tail latency.
        anyio.run(main, backend_options={"use_uvloop": _has_uvloop()})
    except BaseException as exc:
        error = find_basisd_error(exc)
        if error is not None:
            log.critical("daemon_failed", error=str(error), exit_code=int(error.exit_code))
            return error.exit_code
        if isinstance(exc, KeyboardInterrupt):
            return ExitCode.OK
        if not isinstance(exc, Exception):
            raise  # SystemExit and the like: not a crash
        log.critical("daemon_crashed", error=describe(exc), exit_code=int(ExitCode.SOFTWARE), exc_info=_debug())
        return ExitCode.SOFTWARE
    return ExitCode.OK


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _backtest(args: argparse.Namespace) -> int:
    from daemon.backtest import run_backtest
    from daemon.report import REPORT

    if args.start and args.end and args.end <= args.start:
        print("basisd backtest: --end must be after --start", file=sys.stderr)
        return ExitCode.USAGE
    if args.start and args.end and args.end - args.start < timedelta(hours=MIN_WINDOW_H):
        print(f"basisd backtest: --end must be at least {MIN_WINDOW_H} hours after --start", file=sys.stderr)
        return ExitCode.USAGE
    if args.data is not None:
        problem = _history_problem(Path(args.data))
        if problem:
            print(f"basisd backtest: --data {problem}", file=sys.stderr)
            return ExitCode.NO_INPUT
    config = _backtest_config(args)
    if config is None:
        return ExitCode.CONFIG
    if args.end is not None and args.end - config.settings.replay.start < timedelta(hours=MIN_WINDOW_H):
        print(f"basisd backtest: --end must be at least {MIN_WINDOW_H} hours after the window's start "
              f"({config.settings.replay.start.isoformat()})", file=sys.stderr)
        return ExitCode.USAGE
    replay = config.settings.replay
    if replay.source == "history" and replay.data_dir is not None:
        problem = _history_problem(config.path.parent / replay.data_dir)
        if problem:
            print(f"basisd backtest: {config.path}: replay.data_dir: {problem}", file=sys.stderr)
            return ExitCode.NO_INPUT
    logging_setup.configure(config.settings.logging.format, "warning")
    try:
        _, summary = run_backtest(config)
    except BasisdError as exc:
        print(f"basisd backtest: {exc}", file=sys.stderr)
        return exc.exit_code
    stats = summary["statistics"]
    sharpe = "n/a" if stats["sharpe"] is None else f"{stats['sharpe']:.2f}"
    cagr = "n/a" if stats["cagr"] is None else f"{stats['cagr']:.2%}"
    print(f"{args.out}/summary.json: {summary['mode']} {summary['window']['hours']} h, final NAV "
          f"{summary['final_nav']} {summary['currency']}, CAGR {cagr}, Sharpe {sharpe} (daily), max drawdown "
          f"{stats['max_drawdown']['depth']:.2%}, P&L residual {summary['pnl_residual_max_abs']}")
    print(f"report: {Path(args.out) / REPORT}")  # the last line: the page to open
    return ExitCode.OK


def _backtest_config(args: argparse.Namespace) -> ResolvedConfig | None:
    """The config with the command line's window, mode, capital and directories. `--end` alone ends the
    config's own window: its start is only known once the config is read, so it is read twice."""
    from daemon.backtest import HOUR_S, overrides

    def load(start: datetime | None, end: datetime | None) -> ResolvedConfig | None:
        return _load(args.config, overrides(data=args.data, start=start, end=end, mode=args.mode,
                                            capital=args.capital, out=args.out))

    config = load(args.start, args.end)
    if config is None or args.end is None or args.start is not None:
        return config
    start = config.settings.replay.start
    if (args.end - start).total_seconds() < MIN_WINDOW_H * HOUR_S:
        return config  # the caller refuses it, naming the start
    return load(start, args.end)


def _history_problem(directory: Path) -> str:
    """Why `directory` cannot be a history directory ("" if it can): not there, or no catalogued file in it."""
    from daemon.data.history import catalogued_files

    if not directory.is_dir():
        return f"{directory}: no such directory"
    try:
        found = catalogued_files(directory)
    except OSError as exc:
        return f"{directory}: cannot be read: {exc.strerror or exc}"
    if not found:
        return (f"{directory}: holds no history files (expected the layout `basisd data manifest --data DIR` "
                "lists, e.g. cex/perp_ohlcv_1h/binance_ETHUSDT_perp_1h_*.csv)")
    return ""


def _control(args: argparse.Namespace) -> int:
    """`basisd halt | flatten | resume | status | reconcile`: one request over the running daemon's control socket."""
    from daemon.control import ControlError, request, socket_path

    config_path: Path | None = None
    if args.socket:
        path = Path(args.socket)
    else:
        config = _load(args.config)
        if config is None:
            return ExitCode.CONFIG
        s = config.settings
        path, config_path = socket_path(s.control.socket, s.runtime.state_dir, config.path), config.path
    command, flatten = args.command, getattr(args, "flatten", None)
    if command == "flatten":
        command, flatten = "halt", True
    try:
        answer = request(path, command, getattr(args, "reason", ""), flatten=flatten, config_path=config_path)
    except ControlError as exc:
        print(f"basisd {args.command}: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    try:
        lines = [json.dumps(answer, indent=2, sort_keys=True)] if args.json else _render_answer(args.command, answer)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        missing = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else describe(exc)
        print(f"basisd {args.command}: the daemon's answer on {path} was incomplete ({missing}): "
              "nothing is known about what it did", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    print("\n".join(lines))
    if command == "halt" and answer.get("trading") != "HALTED":
        # The emergency stop's whole point: exit 0 only when the daemon says it is halted.
        print(f"basisd {args.command}: the daemon answered trading {answer.get('trading')!r}, not 'HALTED'",
              file=sys.stderr)
        return ExitCode.UNAVAILABLE
    return ExitCode.OK


def _render_answer(command: str, answer: dict[str, Any]) -> list[str]:
    """The daemon's answer as the lines to print: all or nothing (a KeyError names a missing key before any
    line is printed, so an incomplete answer never looks like a complete one cut short)."""
    lines = [f"trading: {answer['trading']} ({answer.get('reason', '')})"]
    if command == "reconcile":
        found = answer["drifts"]
        lines.append(f"reconciled {', '.join(answer['accounts'])}: " + (
            "books and venues agree" if answer["clean"] else f"{len(found)} difference(s), {answer['total_usd']} USD"))
        lines.extend(f"  {line}" for line in found)
    if answer.get("flatten"):
        lines.append(f"flatten: {answer['flatten']}")
    if command == "status":
        lines.extend(_render_status(answer["status"]))
    return lines


def _render_status(status: dict[str, Any]) -> list[str]:
    lines = [f"market time: {status['market_time']}  mode: {status['mode']} ({status['share_class']})"]
    waiting = (status.get("trading") or {}).get("waiting_for")
    if waiting:
        lines.insert(0, f"not trading yet: {waiting}")
    portfolio = status.get("portfolio")
    if portfolio:
        lines.append(f"NAV: {portfolio['nav_usd']} USD  ETH: {portfolio['eth_usd']}  net delta: "
                     f"{portfolio['net_delta_eth']} ETH")
        lines.extend(f"  {p['instrument']:28} {p['quantity']:>12} entry {p['entry']:>10} mark {p['mark']:>10} "
                     f"uPnL {p['unrealized_pnl']:>10}" for p in portfolio["positions"])
    risk = status.get("risk")
    if risk:
        ratios = " ".join(f"{v}={r}" for v, r in risk["margin_ratios"].items())
        lines.append(f"risk: solvency {risk['solvency']}, drawdown {risk['drawdown']}, margin {ratios or '-'}"
                     + (f", stale: {', '.join(risk['stale'])}" if risk["stale"] else ""))
    rec = status["reconciliation"]
    drift = sum(float(v) for v in rec["drift_usd"].values())
    lines.append(f"reconciled: {rec['runs']} run(s), last at {rec['last_market_time'] or 'never'}, "
                 f"drift {drift:.2f} USD" + (f", {rec['failures']} failed" if rec["failures"] else ""))
    journal = status.get("journal")
    lines.append(f"journal: {journal['path']} (run {journal['run']}, {journal['records']} records)"
                 + (f" — WRITES FAILING: {journal['failed']}" if journal["failed"] else "") if journal else
                 "journal: none (runtime.state_dir is not set)")
    unclean = journal.get("previous_run_unclean") if journal else None
    if unclean:
        lines.append(f"previous run {unclean['run']} ENDED UNCLEANLY (started {unclean['started']}, last record "
                     f"{unclean['last_record']}): check its last records against the venues")
    lines.extend(f"  actor {name:12} {a['state']:10} restarts {a['restarts']:3} heartbeat {a['heartbeat_age_s']} s"
                 for name, a in status["actors"].items())
    return lines


def _data_manifest(directory: str) -> int:
    from daemon.data.manifest import manifest, render

    path = Path(directory)
    if not path.is_dir():
        print(f"basisd data manifest: --data {directory}: no such directory", file=sys.stderr)
        return ExitCode.NO_INPUT
    rows = manifest(path)
    print(render(rows))
    if all(r.error for r in rows):
        print(f"basisd data manifest: --data {directory}: no catalogued series could be read", file=sys.stderr)
        return ExitCode.NO_INPUT
    return ExitCode.OK


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


def _debug() -> bool:
    """`BASISD_DEBUG=1`: tracebacks for errors (for a bug report), which are otherwise one line."""
    return os.environ.get("BASISD_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def guarded(command: Callable[[], int]) -> int:
    """Run a command the way a command-line tool should end: with an exit code and at most one line on stderr.

    The output's reader going away (`basisd status | head -1`) ends the command quietly with 141, what a
    shell reports for a command killed by SIGPIPE. Ctrl-C is 130. An error raised on purpose that no command
    caught is its own exit code and its message; anything else is a bug: one line naming it, exit 70, and the
    traceback only with `BASISD_DEBUG=1`."""
    try:
        try:
            return command()
        finally:  # also after argparse's SystemExit (--help, --version): buffered output fails here, if it does
            sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return ExitCode.BROKEN_PIPE
    except KeyboardInterrupt:
        print("basisd: interrupted (SIGINT)", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if _debug():
            raise
        error = find_basisd_error(exc)
        if error is not None:
            print(f"basisd: {error}", file=sys.stderr)
            return error.exit_code
        print(f"basisd: internal error: {describe(exc)} (BASISD_DEBUG=1 shows the traceback)", file=sys.stderr)
        return ExitCode.SOFTWARE


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit meets no closed pipe either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def entry() -> NoReturn:
    sys.exit(guarded(main))


if __name__ == "__main__":
    entry()
