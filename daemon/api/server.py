"""The positions API's network edge: two HTTP GETs and the WebSocket stream on one port, a queue per client.

Why the `websockets` library (its asyncio server) rather than an HTTP layer of our own on anyio: it
implements RFC 6455 completely — framing, masking, fragmentation, UTF-8 checks, ping/pong, the closing
handshake and its timeout — which is the part that is easy to get subtly wrong, and its `process_request`
hook answers plain HTTP on the same port, which is all two read-only GETs need. The price is that it runs
on asyncio only; the daemon runs anyio on the asyncio backend (uvloop where available), so it shares the loop.

Fan-out never waits. A message is encoded once and shared: a client that is keeping up (nothing queued, its
socket taking the data) gets it written at once, with no task switch; otherwise it goes to the client's
deque, which its writer task drains as the socket allows. A client whose deque is full is cut off at once:
its queue is dropped, a close frame (1008, "client too slow ...") goes out behind what its socket already
holds, and the connection is aborted if the closing handshake has not finished within `close_timeout_s`.
Nothing a client does can reach the daemon's channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from daemon.api.http import GET_SUMMARY, HEALTH, SUMMARY, BearerAuth, Refusal, loopback_host, parse_action, route
from daemon.settings import ApiSettings

POLICY_VIOLATION, GOING_AWAY = 1008, 1001
MAX_CLIENT_MESSAGE_BYTES = 4096  # clients only ever send a one-line action
MAX_REQUEST_LINE_BYTES = 8192
SHUTDOWN_CLOSE_S = 1.0  # on shutdown, how long each client gets to complete the closing handshake
WRITE_LIMIT = 2**15  # bytes a connection's transport may buffer before its messages wait in its queue


class Views(Protocol):
    """What the server asks the API actor for (the summary is cached there per snapshot and trading state)."""

    def summary_bytes(self, kind: str | None) -> bytes:
        """The summary, encoded; as a stream message of type `kind` (`initial_state`, `summary`) or plain."""
        ...

    def health(self) -> tuple[int, bytes]: ...

    def pong(self) -> bytes: ...


class Client:
    """One stream subscriber: a bounded queue of encoded messages and the task that writes them."""

    __slots__ = ("closing", "id", "limit", "peer", "queue", "wake", "writer", "ws")

    def __init__(self, ws: ServerConnection, limit: int, client_id: int) -> None:
        self.ws = ws
        self.id = client_id
        self.peer = _peer(ws)
        self.limit = limit
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.writer: asyncio.Task[None] | None = None

    def offer(self, data: bytes) -> bool:
        """Queue `data`; False (nothing queued) when the queue is full."""
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(data)
        self.wake.set()
        return True


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


class MethodCheckingConnection(ServerConnection):
    """Answers a request that is not a GET (404 or 405) before websockets parses it.

    websockets reads requests without a body only, and closes the connection without a word on a POST that
    carries one; an operator trying to POST a command deserves the 405 that says why. The request line is
    checked as it arrives: a GET goes on to websockets untouched, anything else is answered and the rest of
    what the client sends is discarded until it closes (closing with unread data would reset the
    connection before the client read the answer), for at most `close_timeout`.
    """

    api: ApiServer  # set on the subclass each server makes (ApiServer.start)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: bytes | None = b""  # the request line so far; None once it was a GET
        self._answered = False

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            super().data_received(data)
            return
        if self._answered:
            return
        self._head += data
        line, found, _ = self._head.partition(b"\r\n")
        if not found and len(self._head) < MAX_REQUEST_LINE_BYTES:
            return  # wait for the whole request line
        method, _, rest = line.decode("latin-1").partition(" ")
        if method == "GET" or not found:
            head, self._head = self._head, None
            super().data_received(head)  # websockets takes it from here (and refuses an overlong line)
            return
        refusal = route(method, rest.partition(" ")[0])
        if not isinstance(refusal, Refusal):  # (never: route refuses every method but GET)
            refusal = Refusal(405, f"{method[:16]!r} is not allowed: use GET", (("Allow", "GET"),))
        self._answered = True
        self.api.refused += 1
        self.api.log.info("api_request_refused", status=refusal.status, method=method[:16],
                          path=rest.partition(" ")[0].split("?", 1)[0][:120], peer=_peer(self), error=refusal.error)
        self.transport.write(_response(refusal.status, refusal.body(), refusal.headers).serialize())
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.close_timeout or 1.0, self.transport.abort)

    def eof_received(self) -> None:
        if not self._answered:  # answered: the client is done too, and returning None closes the transport
            super().eof_received()


def _response(status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    head = Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"),
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"), *headers])
    return Response(status, HTTPStatus(status).phrase, head, body)


class ApiServer:
    def __init__(self, settings: ApiSettings, views: Views, log: Any) -> None:
        self._settings = settings
        token = settings.token.get_secret_value() if settings.token is not None else None
        self._auth = BearerAuth(token)
        self._views = views
        self.log = log
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._stopping = False
        self.clients: set[Client] = set()
        self.too_slow = 0  # clients cut off for falling behind, since start
        self.refused = 0  # requests answered 4xx

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Listen; return the bound port (the configured one, or the one the OS picked for 0)."""
        s = self._settings
        origins: list[Origin | None] | None = [None, *(Origin(o) for o in s.allowed_origins)]
        self._stopping = False

        class Connection(MethodCheckingConnection):
            api = self

        self._server = await serve(
            self._handle, s.host, s.port, process_request=self._process_request, origins=origins,
            compression=None,  # per-client deflate would cost CPU per client for a few hundred bytes
            open_timeout=s.close_timeout_s, ping_interval=s.ping_interval_s, ping_timeout=s.ping_interval_s,
            close_timeout=s.close_timeout_s, max_size=MAX_CLIENT_MESSAGE_BYTES, write_limit=WRITE_LIMIT,
            logger=logging.getLogger("basisd.api"), create_connection=Connection,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, close every client (1001) and return within a bounded time."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close(close_connections=False)
        for client in list(self.clients):
            self.kick(client, GOING_AWAY, "daemon stopping")
        try:
            async with asyncio.timeout(SHUTDOWN_CLOSE_S + 0.5):
                await server.wait_closed()
        except TimeoutError:
            for connection in list(server.all_connections):
                connection.transport.abort()
            for task in list(server.handler_tasks):
                task.cancel()

    # --- fan-out: never waits -------------------------------------------------------------------------

    def broadcast(self, data: bytes) -> None:
        keeping_up: list[ServerConnection] = []
        for client in list(self.clients):
            # Written directly only behind nothing queued, so a client always gets its messages in order.
            if not client.queue and client.ws.transport.get_write_buffer_size() < WRITE_LIMIT:
                keeping_up.append(client.ws)
            elif not client.offer(data):
                self.kick(client, POLICY_VIOLATION, f"client too slow: {client.limit} messages queued")
        if keeping_up:
            broadcast(keeping_up, data, text=True)  # websockets' own: writes synchronously, skips closing ones

    def send_to(self, client: Client, data: bytes) -> None:
        if client.closing is None and not client.offer(data):
            self.kick(client, POLICY_VIOLATION, f"client too slow: {client.limit} messages queued")

    def kick(self, client: Client, code: int, reason: str) -> None:
        """Disconnect `client` (its handler closes the connection): drop its queue, stop its writer."""
        if client.closing is not None:
            return
        client.closing = (code, reason)
        client.queue.clear()
        self.clients.discard(client)
        if client.writer is not None:
            client.writer.cancel()
        if code == POLICY_VIOLATION:
            self.too_slow += 1
            self.log.warning("api_client_too_slow", client=client.id, peer=client.peer, reason=reason)

    # --- HTTP -----------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        endpoint = route(request.method, request.path)
        if isinstance(endpoint, Refusal):
            return self._refuse(connection, request, endpoint)
        hosts, authorizations = request.headers.get_all("Host"), request.headers.get_all("Authorization")
        if len(hosts) > 1 or len(authorizations) > 1:
            return self._refuse(connection, request, Refusal(400, "repeated Host or Authorization header"))
        if not self._auth.required and not loopback_host(hosts[0] if hosts else None):
            return self._refuse(connection, request, Refusal(
                403, "without a token the API answers only requests addressed to localhost"))
        refusal = self._auth.check(authorizations[0] if authorizations else None)
        if refusal is not None:
            return self._refuse(connection, request, refusal)
        if endpoint == SUMMARY:
            return _response(200, self._views.summary_bytes(None))
        if endpoint == HEALTH:
            status, body = self._views.health()
            return _response(status, body)
        return None  # the stream: websockets completes the handshake (426 without an Upgrade header)

    def _refuse(self, connection: ServerConnection, request: Request, refusal: Refusal) -> Response:
        self.refused += 1
        self.log.info("api_request_refused", status=refusal.status, method=request.method[:16],
                       path=request.path.split("?", 1)[0][:120], peer=_peer(connection), error=refusal.error)
        return _response(refusal.status, refusal.body(), refusal.headers)

    # --- the stream -----------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        client = Client(ws, self._settings.client_queue_size, next(self._ids))
        if self._stopping:
            client.closing = (GOING_AWAY, "daemon stopping")
            await self._finish(client)
            return
        self.clients.add(client)
        self.log.info("api_client_connected", client=client.id, peer=client.peer, clients=len(self.clients))
        client.offer(self._views.summary_bytes("initial_state"))
        client.writer = asyncio.create_task(self._write(client))
        reader = asyncio.create_task(self._read(client))
        try:
            await asyncio.wait((client.writer, reader), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (client.writer, reader):
                task.cancel()
            await asyncio.gather(client.writer, reader, return_exceptions=True)
            self.clients.discard(client)
            await self._finish(client)

    async def _write(self, client: Client) -> None:
        queue, ws = client.queue, client.ws
        with contextlib.suppress(ConnectionClosed):
            while True:
                while not queue:
                    client.wake.clear()
                    await client.wake.wait()
                # Returns without yielding while the socket takes the data; waits only for a slow reader.
                await ws.send(queue.popleft(), text=True)

    async def _read(self, client: Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in client.ws:
                action = parse_action(message)
                if isinstance(action, Refusal):
                    self.refused += 1
                    self.log.info("api_message_refused", client=client.id, peer=client.peer, error=action.error)
                    self.send_to(client, action.frame())
                elif action == GET_SUMMARY:
                    self.send_to(client, self._views.summary_bytes("summary"))
                else:
                    self.send_to(client, self._views.pong())

    async def _finish(self, client: Client) -> None:
        """Close the connection (the kick's code and reason, if any); abort it if the peer does not answer."""
        ws = client.ws
        code, reason = client.closing or (1000, "")
        try:
            async with asyncio.timeout(SHUTDOWN_CLOSE_S if self._stopping else self._settings.close_timeout_s):
                await ws.close(code, reason)
        except TimeoutError:
            pass
        finally:
            if ws.state is not State.CLOSED:
                ws.transport.abort()
        self.log.info("api_client_disconnected", client=client.id, peer=client.peer, code=code,
                       reason=reason or _close_reason(ws), clients=len(self.clients))


def _close_reason(ws: ServerConnection) -> str:
    rcvd = ws.protocol.close_rcvd
    if rcvd is not None:
        return f"client closed ({rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
    return "connection lost"
