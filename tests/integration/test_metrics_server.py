"""The /metrics server under load and against hostile requests: a flood of local scrapes leaves the event loop
on time, scrapes past the limit get 503, only requests addressed to localhost (or carrying the token) are
answered, and HEAD, gzip and OpenMetrics work the way prometheus-client's own handler does."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from daemon.metrics import BasisdCollector, MetricsError, build_registry, serve_metrics
from daemon.metrics_server import MAX_ACTIVE, MetricsServer
from tests.conftest import ROOT
from tests.integration.daemon_process import DaemonProcess
from tests.unit.test_metrics import Books, leveraged_books, sources

TOKEN = "metrics-token-0123456789abcdef"
HEARTBEAT_INTERVAL_S = 0.1
HEARTBEAT_TIMEOUT_S = 1.0  # the supervisor's default ratio, 10 s against 1 s beats, scaled down ten times
FLOOD = 300


def registry(process: bool = True) -> CollectorRegistry:
    """The daemon's real registry over real books, with as many series as a live daemon exports (~760 lines);
    without the process's own collectors (CPU, memory), two scrapes give the same bytes."""
    s = sources(Books(leveraged_books()))
    s.gauges["basisd_test_padding"] = ("Padding to a live daemon's size", lambda: {
        (("series", f"s{i}"),): float(i) for i in range(600)})
    if process:
        return build_registry(s)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(BasisdCollector(s))
    return reg


@asynccontextmanager
async def serving(reg: CollectorRegistry, token: str | None = None) -> AsyncIterator[int]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, reg, "127.0.0.1", 0, token)
        yield port
        tg.cancel_scope.cancel()


def get(port: int, method: str = "GET", path: str = "/metrics",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (in a worker thread: the server runs on the test's loop)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def aget(port: int, method: str = "GET", path: str = "/metrics",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return await anyio.to_thread.run_sync(lambda: get(port, method, path, headers))


# A separate process floods the server, so that the clients' own work is not done on the loop being measured.
FLOOD_CLIENT = textwrap.dedent("""
    import asyncio, json, sys

    async def one(port):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 20)
            writer.write(b"GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "empty"
        except Exception as exc:
            return type(exc).__name__

    async def main(port, n):
        results = await asyncio.gather(*(one(port) for _ in range(n)))
        print(json.dumps({r: results.count(r) for r in set(results)}))

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
""")


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_flood_of_local_scrapes_leaves_the_heartbeats_on_time() -> None:
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(HEARTBEAT_INTERVAL_S)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with serving(registry()) as port, anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        flood = await anyio.run_process([sys.executable, "-c", FLOOD_CLIENT, str(port), str(FLOOD)])
        tg.cancel_scope.cancel()
    counts = json.loads(flood.stdout)
    assert set(counts) <= {"200", "503"}, counts  # each scrape was answered, with metrics or "retry"
    assert counts.get("200", 0) >= MAX_ACTIVE, counts
    assert gaps and max(gaps) < HEARTBEAT_TIMEOUT_S, (
        f"the loop stalled {max(gaps):.2f} s ({max(gaps) / HEARTBEAT_INTERVAL_S:.0f} heartbeat intervals) under "
        f"{FLOOD} concurrent scrapes; answers {counts}")


class GatedFamily(Metric):
    """A family whose samples the encoder (in the worker thread) can read only once the gate opens: renders
    stay in progress, and the requests waiting for them keep their slots, for as long as the test wants."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__("basisd_test_gated", "Held until the test opens the gate", "gauge")
        self._gate = gate

    @property
    def samples(self) -> list[Sample]:
        self._gate.wait(timeout=30)
        return [Sample("basisd_test_gated", {}, 1.0)]

    @samples.setter
    def samples(self, _: list[Sample]) -> None:
        pass


class Gated:
    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def collect(self) -> Iterable[Metric]:
        return [GatedFamily(self.gate)]


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_scrapes_beyond_the_concurrent_limit_get_503_and_the_slots_come_back() -> None:
    gate = threading.Event()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Gated(gate))
    server = MetricsServer(reg, None)
    answers: list[int] = []

    async def scrape() -> None:
        answers.append((await aget(port))[0])

    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(server.serve, "127.0.0.1", 0)
            async with anyio.create_task_group() as scrapes:
                for _ in range(MAX_ACTIVE):
                    scrapes.start_soon(scrape)
                while server.active < MAX_ACTIVE:  # every slot held by a scrape waiting for the render
                    await anyio.sleep(0.01)
                status, headers, body = await aget(port)
                assert status == 503 and headers["retry-after"] == "1", body
                gate.set()
            assert answers == [200] * MAX_ACTIVE
            assert (await aget(port))[0] == 200 and server.active == 0
            tg.cancel_scope.cancel()
    finally:
        gate.set()  # a render still in its thread must end, or the test would hang there


@pytest.mark.asyncio
async def test_head_gzip_and_openmetrics_are_negotiated_as_prometheus_client_does() -> None:
    async with serving(registry(process=False)) as port:
        status, headers, plain = await aget(port)
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name for f in text_string_to_metric_families(plain.decode())}
        assert {"basisd_trading_halted", "basisd_liquidations", "basisd_test_padding"} <= families

        status, headers, body = await aget(port, "HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) == len(plain)

        status, headers, body = await aget(port, headers={"Accept-Encoding": "deflate, gzip;q=0.5"})
        assert status == 200 and headers["content-encoding"] == "gzip" and gzip.decompress(body) == plain
        status, headers, body = await aget(port, headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in headers and body == plain

        status, headers, body = await aget(port, headers={"Accept": "application/openmetrics-text; version=1.0.0,"
                                                                    "text/plain;version=0.0.4;q=0.5"})
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

        assert (await aget(port, "POST"))[0] == 405
        assert (await aget(port, path="/elsewhere"))[0] == 404


@pytest.mark.asyncio
async def test_a_scrape_right_after_a_change_shows_it_while_a_flood_shares_collections() -> None:
    s = sources(Books(leveraged_books()))
    server = MetricsServer(build_registry(s), None)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        assert b"basisd_trading_halted 0.0" in (await aget(port))[2]
        s.trading.halt("drill", source="operator")
        assert b"basisd_trading_halted 1.0" in (await aget(port))[2]  # not the figures of the scrape before

        async def scrape() -> None:
            await aget(port)

        before = server.cache.collections
        async with anyio.create_task_group() as scrapes:
            for _ in range(MAX_ACTIVE):
                scrapes.start_soon(scrape)
        assert server.cache.collections - before < MAX_ACTIVE  # concurrent scrapes shared collections
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_without_a_token_only_requests_addressed_to_localhost_are_answered() -> None:
    async with serving(registry()) as port:
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert (await aget(port, headers={"Host": host}))[0] == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "10.0.0.5:9464"):  # DNS rebinding
            status, _, body = await aget(port, headers={"Host": host})
            assert status == 403 and b"localhost" in body, host
            assert (await aget(port, "HEAD", headers={"Host": host}))[0] == 403


@pytest.mark.asyncio
async def test_with_a_token_every_scrape_needs_it_and_any_host_may_ask() -> None:
    async with serving(registry(), TOKEN) as port:
        status, headers, _ = await aget(port)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert (await aget(port, headers={"Authorization": "Bearer wrong-token-0123456789"}))[0] == 401
        status, _, body = await aget(port, headers={"Authorization": f"Bearer {TOKEN}", "Host": "basisd.lan:9464"})
        assert status == 200 and b"basisd_trading_halted" in body


class Broken:
    def collect(self) -> Iterable[Metric]:
        raise ZeroDivisionError("a bug in a collector")


@pytest.mark.asyncio
async def test_a_collector_that_fails_answers_500_and_the_server_goes_on() -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Broken())
    async with serving(reg) as port:
        status, _, body = await aget(port)
        assert status == 500 and b"metrics_render_failed" in body
        assert (await aget(port))[0] == 500  # still serving


@contextmanager
def occupied_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.asyncio
async def test_a_port_in_use_is_a_metrics_error_naming_metrics_port() -> None:
    with occupied_port() as port, pytest.raises(MetricsError, match=rf"metrics\.port: 127\.0\.0\.1:{port} is already "
                                                                     "in use") as caught:
        await serve_metrics(registry(), "127.0.0.1", port)
    assert caught.value.exit_code == 78


@pytest.mark.asyncio
async def test_listening_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(MetricsError, match=r"metrics\.token: required: metrics\.host is '0\.0\.0\.0'"):
        await serve_metrics(registry(), "0.0.0.0", 0)


# The server in a process allowed a handful of descriptors more than it has open: a flood exhausts them.
FEW_DESCRIPTORS = textwrap.dedent("""
    import os, resource, sys, anyio
    from prometheus_client import CollectorRegistry, ProcessCollector
    from daemon import log
    from daemon.metrics import serve_metrics

    log.configure("json", "info", stream=sys.stderr)

    async def main():
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, registry, "127.0.0.1", 0)
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8,
                                                        resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            print(port, flush=True)

    anyio.run(main)
""")


@pytest.mark.timeout(30)
def test_running_out_of_descriptors_pauses_the_server_and_never_ends_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", FEW_DESCRIPTORS], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]  # the backlog holds them
        time.sleep(0.5)  # the server accepts what it can, then meets EMFILE
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for s in flood:
            s.close()
        deadline = time.monotonic() + 10
        while True:  # the held connections time out or close; then scrapes are answered again
            try:
                status, _, body = get(port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-3000:]
                time.sleep(0.1)
        assert status == 200 and b"process_open_fds" in body
        assert proc.poll() is None
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
    assert "metrics_accept_failed" in stderr and "Too many open files" in stderr


@pytest.mark.subprocess
@pytest.mark.timeout(60)
def test_the_daemon_exits_78_naming_metrics_port_when_the_port_is_taken(catalog: Path, tmp_path: Path) -> None:
    with occupied_port() as port:
        proc = DaemonProcess(catalog / "replay.yaml", tmp_path, env={"BASISD_METRICS__PORT": str(port)})
        try:
            code = proc.wait_exit(30)
        finally:
            proc.close()
    failed = [e for e in proc.events() if e.get("event") == "daemon_failed"]
    assert code == 78, proc.output()[-3000:]
    assert failed and failed[0]["error"].startswith(f"metrics.port: 127.0.0.1:{port} is already in use"), failed
    assert "Traceback" not in proc.output()
