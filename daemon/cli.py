"""`basisd` command line: run the daemon, or check a configuration.

Exit codes: 0 success; 64 bad command line; 70 an actor kept failing (restart budget exhausted);
78 invalid configuration (systemd's RestartPreventExitStatus keeps it from looping).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

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
    data = sub.add_parser("data", help="inspect market and protocol history")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    man = data_sub.add_parser("manifest", help="each series' real range, duplicates and gaps")
    man.add_argument("--data", required=True, metavar="DIR", help="the history directory, e.g. ../shared/data")
    return parser


def _load(path: str) -> ResolvedConfig | None:
    """The config, with its secrets registered for redaction; or None, every problem printed to stderr."""
    try:
        config = load_config(path)
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
    return _run(args.config)


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
