"""The control socket's protocol and where it lives, pure: what a request may say, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.control import MAX_REQUEST_BYTES, default_socket_path, parse_request


def test_a_request_is_one_json_object_with_a_known_command() -> None:
    assert parse_request(b'{"command": "halt", "reason": "drill", "flatten": true}') == (
        "halt", {"reason": "drill", "flatten": True})
    assert parse_request(b'{"command": "status"}') == ("status", {"reason": "", "flatten": None})


@pytest.mark.parametrize(("raw", "why"), [
    (b"halt", "not a JSON object"),
    (b'["halt"]', "not a JSON object"),
    (b'{"command": "liquidate"}', "unknown command 'liquidate'"),
    (b'{"command": "halt", "reason": 7}', "reason must be a string"),
    (b'{"command": "halt", "reason": "' + b"x" * 600 + b'"}', "at most 500"),
    (b'{"command": "resume", "flatten": true}', "only with halt"),
    (b'{"command": "halt", "flatten": "yes"}', "true or false"),
    (b"\xff\xfe", "not a JSON object"),
    (b"{" + b" " * MAX_REQUEST_BYTES + b"}", "longer than"),
])
def test_a_bad_request_is_refused_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_request(raw)


def test_the_socket_is_found_where_systemd_or_the_config_puts_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/basisd/acct1")
    assert default_socket_path("/var/lib/basisd", tmp_path / "a.yaml") == Path("/run/basisd/acct1/control.sock")
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert default_socket_path("/var/lib/basisd", tmp_path / "a.yaml") == Path("/var/lib/basisd/control.sock")
    one, other = default_socket_path(None, tmp_path / "a.yaml"), default_socket_path(None, tmp_path / "b.yaml")
    assert one != other and one == default_socket_path(None, tmp_path / "a.yaml")  # one per config, stable
