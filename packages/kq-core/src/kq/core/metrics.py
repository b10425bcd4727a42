"""Prometheus metrics for workers (``pip install kq-core[prometheus]``).

``kq consume --metrics-port 9191`` serves them over HTTP; in Python, register :class:`PrometheusMetrics`
on an app's dispatcher and serve the registry yourself. Every metric has a ``queue`` label:

- ``kq_messages_total`` — messages received;
- ``kq_message_errors_total`` — failed messages, with a ``reason`` label (failed, malformed, undecodable,
  invalid, not-allowed, poison, signature reasons);
- ``kq_message_retries_total`` — failed messages queued again for another attempt (by the queue's
  retry policy or a listener);
- ``kq_message_dead_letters_total`` — messages sent to the dead-letter queue;
- ``kq_messages_vetoed_total`` — messages skipped by a ``message_received`` listener;
- ``kq_messages_inprogress`` — messages being handled now;
- ``kq_message_duration_seconds`` — handling time (histogram), consumed and failed alike.
"""

from __future__ import annotations

from typing import Any

from kq.core._errors import MissingExtraError
from kq.core._events import (
    EventDispatcher,
    MessageConsumed,
    MessageConsumptionFailed,
    MessageReceived,
)
from kq.core._failures import RECEIVED_FAILURE_REASONS, RETRIED_REASONS

#: Lower than any listener's priority: metrics see the outcome other listeners chose (veto, retry).
PRIORITY = -(2**31)
#: Histogram buckets, seconds: from a no-op to an hour-long command.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingExtraError(
            "metrics need the prometheus-client package: pip install 'kq-core[prometheus]'"
        ) from None
    return prometheus_client


class PrometheusMetrics:
    """Counts what the consume loop does, from its events.

    Args:
        registry: The Prometheus registry to register in (default: the global one).
    """

    def __init__(self, registry: Any = None) -> None:
        prometheus = _prometheus()
        registry = registry if registry is not None else prometheus.REGISTRY
        self.received = prometheus.Counter("kq_messages", "Messages received.", ["queue"], registry=registry)
        self.errors = prometheus.Counter(
            "kq_message_errors", "Messages whose handling failed.", ["queue", "reason"], registry=registry
        )
        self.retries = prometheus.Counter(
            "kq_message_retries", "Failed messages queued again.", ["queue"], registry=registry
        )
        self.dead_letters = prometheus.Counter(
            "kq_message_dead_letters", "Messages sent to the dead-letter queue.", ["queue"], registry=registry
        )
        self.vetoed = prometheus.Counter(
            "kq_messages_vetoed",
            "Messages skipped by a message_received listener.",
            ["queue"],
            registry=registry,
        )
        self.in_progress = prometheus.Gauge(
            "kq_messages_inprogress", "Messages being handled.", ["queue"], registry=registry
        )
        self.duration = prometheus.Histogram(
            "kq_message_duration_seconds",
            "Time spent handling a message.",
            ["queue"],
            buckets=BUCKETS,
            registry=registry,
        )

    def register(self, dispatcher: EventDispatcher) -> None:
        """Listen to the consume loop's events (last, after every other listener)."""
        dispatcher.add_listener(MessageReceived.name, self.on_received, priority=PRIORITY, observer=True)
        dispatcher.add_listener(MessageConsumed.name, self.on_consumed, priority=PRIORITY, observer=True)
        dispatcher.add_listener(
            MessageConsumptionFailed.name, self.on_failed, priority=PRIORITY, observer=True
        )

    def on_received(self, event: MessageReceived) -> None:
        """A message arrived and was decoded."""
        queue = event.delivery.queue
        self.received.labels(queue).inc()
        if event.vetoed_by is not None:
            self.vetoed.labels(queue).inc()
        else:
            self.in_progress.labels(queue).inc()

    def on_consumed(self, event: MessageConsumed) -> None:
        """A message was handled."""
        queue = event.delivery.queue
        self.in_progress.labels(queue).dec()
        self.duration.labels(queue).observe(event.duration)

    def on_failed(self, event: MessageConsumptionFailed) -> None:
        """A message failed; one that failed before being announced (undecodable, poison, refused
        signature) was never counted as received, so it is counted here."""
        queue = event.delivery.queue
        if event.reason in RECEIVED_FAILURE_REASONS:
            self.in_progress.labels(queue).dec()
        else:
            self.received.labels(queue).inc()
        self.errors.labels(queue, event.reason).inc()
        self.duration.labels(queue).observe(event.duration)
        if event.retry_delay is not None and event.reason in RETRIED_REASONS:
            self.retries.labels(queue).inc()
        else:
            self.dead_letters.labels(queue).inc()


def serve(port: int, address: str = "127.0.0.1", registry: Any = None) -> None:
    """Serve the metrics on ``http://address:port/metrics`` from a background thread."""
    prometheus = _prometheus()
    prometheus.start_http_server(port, addr=address, registry=registry or prometheus.REGISTRY)


__all__ = ["BUCKETS", "PrometheusMetrics", "serve"]
