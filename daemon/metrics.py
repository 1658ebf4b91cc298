"""Prometheus metrics, computed at scrape time from `statistics()` and the supervisor's records.

Nothing on the hot path touches prometheus-client: channels and actors keep plain counters, and this
collector turns them into metric families when Prometheus asks. Names follow Prometheus conventions:
`basisd_` prefix, base units (`_seconds`), `_total` for counters. Labels are bounded (actor and channel
names, venue, state), never order ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import SocketStream
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from daemon import __version__
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.domain.messages import TradingState
from daemon.lifecycle import LATENCY_BUCKETS_S, ActorState
from daemon.supervisor import Supervisor
from daemon.trading import TradingStateCell

log = structlog.get_logger()

GaugeSource = Callable[[], Mapping[tuple[tuple[str, str], ...], float]]


@dataclass
class MetricSources:
    supervisor: Supervisor
    trading: TradingStateCell
    channels: Mapping[str, LosslessChannel[object] | ConflatingChannel[object]]
    inbox_of: Mapping[str, str]  # actor name -> the channel name of its inbox
    runtime_mode: str
    strategy_mode: str
    # Extra gauges (name -> (help, source)); each source returns {label pairs: value}.
    gauges: dict[str, tuple[str, GaugeSource]] = field(default_factory=dict)


class BasisdCollector:
    def __init__(self, sources: MetricSources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._actor_metrics()
        yield from self._channel_metrics()
        yield from self._state_metrics()
        for name, (doc, source) in self._s.gauges.items():
            values = source()
            labelnames = [k for k, _ in next(iter(values))] if values else []
            family = GaugeMetricFamily(name, doc, labels=labelnames)
            for labels, value in values.items():
                family.add_metric([v for _, v in labels], value)
            yield family

    def _actor_metrics(self) -> Iterator[Metric]:
        records = self._s.supervisor.records.values()
        now = time.monotonic()
        handled = CounterMetricFamily("basisd_actor_messages_handled", "Messages handled", labels=["actor"])
        restarts = CounterMetricFamily("basisd_actor_restarts", "Actor restarts", labels=["actor"])
        failures = CounterMetricFamily("basisd_actor_failures", "Actor failures (exceptions)", labels=["actor"])
        dead = CounterMetricFamily(
            "basisd_actor_dead_letters", "Messages dropped after repeated handler failure", labels=["actor"]
        )
        age = GaugeMetricFamily(
            "basisd_actor_heartbeat_age_seconds", "Seconds since the actor's last heartbeat", labels=["actor"]
        )
        up = GaugeMetricFamily("basisd_actor_up", "1 while the actor runs", labels=["actor", "state"])
        depth = GaugeMetricFamily(
            "basisd_actor_queue_depth", "Messages waiting in the actor's inbox", labels=["actor"]
        )
        latency = HistogramMetricFamily(
            "basisd_actor_handler_latency_seconds", "Time spent handling one message", labels=["actor"]
        )
        for r in records:
            handled.add_metric([r.name], r.handled)
            restarts.add_metric([r.name], r.restarts)
            failures.add_metric([r.name], r.failures)
            dead.add_metric([r.name], r.dead_letters)
            beat_age = r.heartbeat_age_s(now)
            age.add_metric([r.name], beat_age if beat_age != float("inf") else -1.0)
            up.add_metric([r.name, r.state.value], 1.0 if r.state is ActorState.RUNNING else 0.0)
            inbox = self._s.inbox_of.get(r.name)
            if inbox is not None:
                depth.add_metric([r.name], len(self._s.channels[inbox]))
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), r.latency_counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            latency.add_metric([r.name], buckets, r.latency_sum_s)
        yield from (handled, restarts, failures, dead, age, up, depth, latency)

    def _channel_metrics(self) -> Iterator[Metric]:
        labels = ["channel", "policy"]
        fams: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "depth": GaugeMetricFamily("basisd_channel_depth", "Messages queued", labels=labels),
            "high_water": GaugeMetricFamily("basisd_channel_high_water", "Highest depth seen", labels=labels),
            "capacity": GaugeMetricFamily("basisd_channel_capacity", "Configured bound", labels=labels),
            "sent": CounterMetricFamily("basisd_channel_sent", "Messages offered", labels=labels),
            "received": CounterMetricFamily("basisd_channel_received", "Messages taken", labels=labels),
            "send_waits": CounterMetricFamily(
                "basisd_channel_send_waits", "Times a producer waited for room", labels=labels
            ),
            "dropped": CounterMetricFamily("basisd_channel_dropped", "Messages dropped", labels=labels),
            "conflated": CounterMetricFamily(
                "basisd_channel_conflated", "Messages replaced by a newer value", labels=labels
            ),
        }
        for channel in self._s.channels.values():
            st = channel.statistics()
            for attr, fam in fams.items():
                fam.add_metric([st.name, st.policy.value], getattr(st, attr))
        yield from fams.values()

    def _state_metrics(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "basisd_trading_state", "1 for the current trading state, 0 for the others", labels=["state"]
        )
        for s in TradingState:
            state.add_metric([s.value], 1.0 if self._s.trading.state is s else 0.0)
        yield state
        halted = GaugeMetricFamily("basisd_trading_halted", "1 while trading is halted")
        halted.add_metric([], 1.0 if self._s.trading.state is TradingState.HALTED else 0.0)
        yield halted
        info = InfoMetricFamily("basisd_build", "Version and run configuration of this process")
        info.add_metric([], {
            "version": __version__, "runtime_mode": self._s.runtime_mode, "strategy_mode": self._s.strategy_mode,
        })
        yield info


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def build_registry(sources: MetricSources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BasisdCollector(sources))
    return registry


MAX_REQUEST_BYTES = 8192


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    """A minimal HTTP/1.1 server for `GET /metrics` inside the daemon's task tree (no threads)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound_port = listener.extra(anyio.abc.SocketAttribute.local_port)
    log.info("metrics_listening", host=host, port=bound_port)
    task_status.started(bound_port)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(5):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
                    try:
                        request += await stream.receive(4096)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                line = request.split(b"\r\n", 1)[0].decode("latin-1")
                parts = line.split(" ")
                if len(parts) != 3 or parts[0] != "GET":
                    await _respond(stream, 405, b"only GET is supported\n", "text/plain")
                elif parts[1].split("?")[0] not in ("/metrics", "/"):
                    await _respond(stream, 404, b"see /metrics\n", "text/plain")
                else:
                    await _respond(stream, 200, generate_latest(registry), CONTENT_TYPE_LATEST)

    async with listener:
        await listener.serve(handle)


async def _respond(stream: SocketStream, status: int, body: bytes, content_type: str) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        await stream.send(head + body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return
