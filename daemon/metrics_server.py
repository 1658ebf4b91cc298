"""`GET /metrics`: a small HTTP/1.1 server inside the daemon's task tree, sized so that no scraper can slow trading.

The collectors read the actors' plain state (dicts and counters the event loop mutates), so they run on the
loop: prometheus-client's own threaded server would iterate those dicts while the loop changes them ("dictionary
changed size during iteration", or a histogram's count from one moment and its sum from another). What is
expensive and thread-safe is done elsewhere or once:

- the families are collected on the loop at most once per `MIN_COLLECT_INTERVAL_S`, each collection shared
  by every scrape that arrived before it (so none is served figures older than itself);
- each encoding (text or OpenMetrics, gzipped or not) is rendered once per collection, in a worker thread,
  with concurrent requests waiting for that one render;
- at most `MAX_ACTIVE` requests are rendered and sent at once; one that waits `SLOT_WAIT_S` for a slot gets
  `503`, and past `MAX_OPEN` connections a new one is closed at once;
- running out of file descriptors under a flood pauses accepting, and a failing request or collector answers
  500: neither takes the daemon down.

Access is the API's (daemon.api.http): without a token, only requests whose `Host:` header names this
machine (a page that rebinds its DNS name to 127.0.0.1 still sends its own name), on a loopback listener; with
one, a bearer token, on any address.
"""

from __future__ import annotations

import errno
import gzip
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from daemon.api.http import BearerAuth, loopback_host
from daemon.errors import BasisdError, ExitCode
from daemon.log import register_secrets
from daemon.settings import is_loopback

log = structlog.get_logger()

MAX_REQUEST_BYTES = 8192
MAX_ACTIVE = 16  # requests rendered and sent at once (a Prometheus needs one per scrape; an HA pair two)
MAX_OPEN = 512  # connections held at all (under systemd's default of 1024 descriptors); beyond, closed at once
SLOT_WAIT_S = 1.0  # how long a request waits for one of the MAX_ACTIVE slots before it is answered 503
REQUEST_TIMEOUT_S = 5.0  # a client that has not sent its request (or read the answer) by then is dropped
MIN_COLLECT_INTERVAL_S = 0.1  # the collectors run at most this often, however many scrapes arrive
MAX_RENDERINGS = 8  # encodings kept per collection (content type × gzip); others are rendered unshared
ACCEPT_PAUSE_S = 0.1  # after accept() fails (EMFILE under a flood): the listening socket stays readable
PATHS = ("/metrics", "/")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}


class MetricsError(BasisdError):
    """Raised when the metrics endpoint cannot start as configured: the port is taken, the address is not this
    machine's, or a non-loopback address has no token. Restarting will not help (exit 78)."""

    exit_code = ExitCode.CONFIG

    def __init__(self, key: str, problem: str) -> None:
        self.key = key  # the setting to change, e.g. "metrics.port"
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, list[str]]  # lower-case name → every value given

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, head_only: bool) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS[self.status]}", *(f"{k}: {v}" for k, v in self.headers),
                 f"Content-Length: {len(self.body)}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else self.body)


def text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, message.encode() + b"\n", (("Content-Type", "text/plain; charset=utf-8"), *headers))


def parse_request(raw: bytes) -> Request | None:
    """The request line and headers of `raw` (everything up to the blank line), or None if malformed."""
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    line, *header_lines = head.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, list[str]] = {}
    for header in header_lines:
        name, colon, value = header.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers.setdefault(name.lower(), []).append(value.strip())
    return Request(parts[0], parts[1].split("?", 1)[0], headers)


def gzip_wanted(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` asks for gzip (`gzip`, `*`; never with q=0)."""
    for item in (accept_encoding or "").split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


class _Collected(Collector):
    """Families collected earlier, served to an encoder in another thread: nothing in them is shared with
    the loop."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _render(families: list[Metric], encoder: Callable[[CollectorRegistry], bytes], gzipped: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families))
    body = encoder(registry)
    return gzip.compress(body, compresslevel=6) if gzipped else body


class RenderCache:
    """Collections shared by every scrape that arrived before them, at most one per `min_interval_s`, and one
    rendering of each per encoding.

    A scrape is never served figures older than itself (a scrape right after a halt shows the halt), yet a
    flood costs the loop at most one collection per interval: the scrapes that queue meanwhile share the next.
    """

    def __init__(self, registry: CollectorRegistry, min_interval_s: float = MIN_COLLECT_INTERVAL_S) -> None:
        self._registry = registry
        self._min_interval_s = min_interval_s
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._families: list[Metric] | None = None
        self._taken = -float("inf")
        self._rendered: dict[tuple[str, bool], bytes] = {}
        self.collections = 0  # how often the collectors ran (what sharing saves)

    async def render(self, accept: str | None, gzipped: bool, arrived: float) -> tuple[bytes, str]:
        """(body, content type) for an `Accept` header, negotiated as prometheus-client does, from a collection
        taken after `arrived` (the request's time.monotonic())."""
        encoder, content_type = choose_encoder(accept or "")
        async with self._lock:
            if self._families is None or self._taken < arrived:
                await anyio.sleep(max(0.0, self._taken + self._min_interval_s - time.monotonic()))
                self._families = list(self._registry.collect())  # on the loop: see the module's docstring
                self._taken, self._rendered = time.monotonic(), {}
                self.collections += 1
            key = (content_type, gzipped)
            body = self._rendered.get(key)
            if body is None:
                body = await anyio.to_thread.run_sync(_render, self._families, encoder, gzipped,
                                                      limiter=self._limiter)
                if len(self._rendered) < MAX_RENDERINGS:
                    self._rendered[key] = body
        return body, content_type


class MetricsServer:
    """The endpoint: one task per connection, at most `max_active` of them rendering or sending at once."""

    def __init__(self, registry: CollectorRegistry, token: str | None, *, max_active: int = MAX_ACTIVE,
                 max_open: int = MAX_OPEN, min_collect_interval_s: float = MIN_COLLECT_INTERVAL_S) -> None:
        self.cache = RenderCache(registry, min_collect_interval_s)
        if token is not None:
            register_secrets([token])  # a token pasted into a URL or an error is scrubbed from the log too
        self._auth = BearerAuth(token)
        self._token_required = token is not None
        self._slots = anyio.Semaphore(max_active)
        self._max_open = max_open
        self.active = 0  # requests holding a slot
        self.open = 0  # connections held
        self.busy = 0  # requests answered 503 and connections closed at once

    async def serve(self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port until cancelled; `task_status.started(bound port)`. Raises `MetricsError`."""
        if not self._token_required and not is_loopback(host):
            raise MetricsError("metrics.token", f"required: metrics.host is {host!r}, which is not a loopback "
                                                "address (set metrics.token, or listen on 127.0.0.1)")
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
        except OSError as exc:
            raise _bind_problem(host, port, exc) from None
        async with listener, anyio.create_task_group() as tg:
            bound_port = listener.extra(SocketAttribute.local_port)
            log.info("metrics_listening", host=host, port=bound_port, token_required=self._token_required)
            task_status.started(bound_port)
            for each in listener.listeners:
                assert isinstance(each, SocketListener)
                tg.start_soon(self._accept, each)

    async def _accept(self, listener: SocketListener) -> None:
        failing = False
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # Out of descriptors (EMFILE/ENFILE) or buffers under a flood: wait for connections to close
                    # rather than fail (the listening socket stays readable, so retrying at once would spin).
                    if not failing:
                        log.warning("metrics_accept_failed", error=exc.strerror or str(exc), errno=exc.errno,
                                    open_connections=self.open)
                    failing = True
                    await anyio.sleep(ACCEPT_PAUSE_S)
                    continue
                if failing:
                    log.info("metrics_accept_resumed", open_connections=self.open)
                    failing = False
                tg.start_soon(self.handle, stream)

    async def handle(self, stream: SocketStream) -> None:
        self.open += 1
        try:
            async with stream:
                if self.open > self._max_open:
                    self.busy += 1
                    return
                with anyio.move_on_after(REQUEST_TIMEOUT_S):
                    await self._answer(stream)
        except Exception as exc:  # one bad connection must never take the daemon (and trading) down with it
            log.warning("metrics_request_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.open -= 1

    async def _answer(self, stream: SocketStream) -> None:
        raw = b""
        while b"\r\n\r\n" not in raw:
            if len(raw) >= MAX_REQUEST_BYTES:
                await _send(stream, text(400, "request head too large"), False)
                return
            try:
                raw += await stream.receive(4096)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
        arrived = time.monotonic()
        request = parse_request(raw)
        if request is None:
            await _send(stream, text(400, "malformed request"), False)
            return
        refusal = self._refusal(request)
        if refusal is not None:
            await _send(stream, refusal, request.method == "HEAD")
            return
        acquired = False
        with anyio.move_on_after(SLOT_WAIT_S):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            self.busy += 1
            await _send(stream, text(503, "too many concurrent scrapes; retry", (("Retry-After", "1"),)), False)
            return
        self.active += 1
        try:  # the slot is held while sending too: it bounds the memory queued for slow readers
            await _send(stream, await self._metrics(request, arrived), request.method == "HEAD")
        finally:
            self.active -= 1
            self._slots.release()

    def _refusal(self, request: Request) -> Response | None:
        """Why this request is not answered with metrics (the API's order: 404, 405, then host and token)."""
        if request.path not in PATHS:
            return text(404, "see /metrics")
        if request.method not in ("GET", "HEAD"):
            return text(405, "only GET and HEAD are supported", (("Allow", "GET, HEAD"),))
        hosts, authorizations = request.headers.get("host", []), request.headers.get("authorization", [])
        if len(hosts) > 1 or len(authorizations) > 1:
            return text(400, "repeated Host or Authorization header")
        if not self._auth.required and not loopback_host(hosts[0] if hosts else None):
            # Without a token the listener is loopback (serve_metrics): this refuses DNS rebinding.
            return text(403, "without metrics.token, /metrics answers only requests addressed to localhost")
        refusal = self._auth.check(authorizations[0] if authorizations else None)
        if refusal is not None:
            return text(refusal.status, refusal.error, refusal.headers)
        return None

    async def _metrics(self, request: Request, arrived: float) -> Response:
        gzipped = gzip_wanted(request.header("accept-encoding"))
        try:
            body, content_type = await self.cache.render(request.header("accept"), gzipped, arrived)
        except Exception as exc:  # a collector's bug: say so, and keep serving (and trading)
            log.error("metrics_render_failed", error=f"{type(exc).__name__}: {exc}")
            return text(500, "metrics could not be rendered (see the daemon's log: metrics_render_failed)")
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, body, tuple(headers))


async def _send(stream: SocketStream, response: Response, head_only: bool) -> None:
    try:
        await stream.send(response.encode(head_only))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return


def _bind_problem(host: str, port: int, exc: OSError) -> MetricsError:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return MetricsError("metrics.port", f"{where} is already in use by another process (another basisd? "
                                            "give each its own metrics.port, or 0 to pick a free one)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return MetricsError("metrics.port", f"{where}: permission denied (ports below 1024 need privileges; "
                                            "use the default 9464)")
    return MetricsError("metrics.host", f"cannot listen on {where}: {exc.strerror or exc} (is it an address of "
                                        "this machine?)")


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, token: str | None = None, *,
                        task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve `registry` on host:port until cancelled; `task_status.started(bound port)` once listening.

    Raises `MetricsError` (exit 78, naming the setting) if it cannot listen, or if `host` is not loopback and
    there is no token."""
    await MetricsServer(registry, token).serve(host, port, task_status=task_status)
