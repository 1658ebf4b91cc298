"""The persisted halt across restarts of a state directory, with the real StateStore, trading cell and operator:
the record on disk stays the original halt's (reason, source, time), the restored reason is built from it once,
and neither the record nor the reason carries a registered secret."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.domain.messages import TradingState
from daemon.log import register_secrets
from daemon.operator import HALT_KEY, Operator
from daemon.state_store import StateStore
from daemon.trading import TradingStateCell


def boot(state: Path) -> tuple[TradingStateCell, Operator]:
    """One start of the daemon's emergency-stop parts on `state`, as the composition root wires them."""
    trading = TradingStateCell()
    operator = Operator(trading, {}, StateStore(state), status=dict)
    operator.restore()
    return trading, operator


def test_a_halt_survives_five_restarts_with_its_reason_source_and_time_kept_once(tmp_path: Path) -> None:
    trading, operator = boot(tmp_path)
    operator.halt("operator: fat finger", source="operator")
    record = (tmp_path / f"{HALT_KEY}.json").read_bytes()
    first = json.loads(record)
    reasons = []
    for _ in range(5):
        trading, _ = boot(tmp_path)
        assert trading.state is TradingState.HALTED
        reasons.append(trading.reason)
        assert (tmp_path / f"{HALT_KEY}.json").read_bytes() == record  # the record is never re-written
    # (It grew 13 → 337 characters over 5 restarts: "halted before the restart (…): halted before the restart …")
    assert len(set(reasons)) == 1
    assert reasons[0] == f"halted since {first['since']} by operator: operator: fat finger; `basisd resume` lifts it"
    assert reasons[0].count("fat finger") == 1


def test_a_resume_after_restarts_clears_the_halt_for_good(tmp_path: Path) -> None:
    _, operator = boot(tmp_path)
    operator.halt("risk: drawdown", source="risk")
    trading, operator = boot(tmp_path)
    trading, operator = boot(tmp_path)
    assert operator.resume("operator: checked") and trading.state is TradingState.ACTIVE
    trading, _ = boot(tmp_path)
    assert trading.state is TradingState.ACTIVE


def test_a_record_an_older_daemon_nested_is_restored_as_its_original(tmp_path: Path) -> None:
    nested = "operator: x"
    for since in ("2024-06-01T00:00:00+00:00", "2024-06-02T00:00:00+00:00", "2024-06-03T00:00:00+00:00"):
        nested = f"halted before the restart ({since}): {nested}; `basisd resume` lifts it"
    StateStore(tmp_path).save(HALT_KEY, {"state": "HALTED", "reason": nested, "source": "persisted",
                                         "since": "2024-06-04T00:00:00+00:00"})
    trading, _ = boot(tmp_path)
    assert trading.reason == "halted since 2024-06-01T00:00:00+00:00 by unknown: operator: x; `basisd resume` lifts it"
    saved = StateStore(tmp_path).load(HALT_KEY)
    assert saved == {"state": "HALTED", "reason": "operator: x", "source": "unknown",
                     "since": "2024-06-01T00:00:00+00:00"}


def test_an_unreadable_halt_record_comes_back_halted_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / f"{HALT_KEY}.json").write_bytes(b"\xe9t\xe9 {")
    trading, _ = boot(tmp_path)
    assert trading.state is TradingState.HALTED
    assert f"{HALT_KEY}.json" in trading.reason and "cannot be read" in trading.reason


def test_a_halt_reason_with_a_secret_is_redacted_in_the_state_file_and_everywhere_it_shows(tmp_path: Path) -> None:
    secret = "halt-secret-Zq81x"
    register_secrets([secret])
    trading, operator = boot(tmp_path)
    operator.halt(f"operator: pasted the key {secret} by mistake", source="operator")
    assert secret not in trading.reason and "**********" in trading.reason  # the API, the socket, the log
    assert secret.encode() not in (tmp_path / f"{HALT_KEY}.json").read_bytes()
    trading, _ = boot(tmp_path)
    assert secret not in trading.reason and "pasted the key" in trading.reason


def test_a_record_written_with_a_secret_in_clear_is_rewritten_redacted_at_the_next_start(tmp_path: Path) -> None:
    secret = "halt-secret-Pw07y"
    register_secrets([secret])
    (tmp_path / f"{HALT_KEY}.json").write_text(json.dumps(
        {"state": "HALTED", "reason": f"operator: {secret}", "source": "operator", "since": "2024-06-01T00:00:00"}))
    trading, _ = boot(tmp_path)
    assert trading.state is TradingState.HALTED and secret not in trading.reason
    assert secret.encode() not in (tmp_path / f"{HALT_KEY}.json").read_bytes()
