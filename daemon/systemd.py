"""sd_notify(3) without libsystemd: one datagram per state change to `$NOTIFY_SOCKET`.

A no-op when `NOTIFY_SOCKET` is unset (a terminal, a test, a non-notify unit).
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # A leading "@" names a socket in the Linux abstract namespace.
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop on a busy systemd: a full socket queue drops the notification
            # (the watchdog will ping again) instead of freezing every actor.
            self._sock.setblocking(False)
        self.sent: list[str] = []  # what was sent, for `basisd status` and the tests' failure messages

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> None:
        if self._sock is None or self._address is None:
            return
        payload = "\n".join(fields)
        try:
            self._sock.sendto(payload.encode(), self._address)
        except OSError:
            # systemd gone (shutdown) or socket unreachable: the unit's watchdog will notice, not us.
            return
        self.sent.append(payload)
        del self.sent[:-50]

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        self.notify("RELOADING=1")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of systemd's `WATCHDOG_USEC` (the documented safe ping rate), if this process is the target."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
