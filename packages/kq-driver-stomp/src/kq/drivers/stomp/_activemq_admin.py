"""ActiveMQ Classic administration over STOMP alone: Debian's ActiveMQ has no web console, no Jolokia and
JMX off, so ``kq managequeue`` reads what it can through messages.

- **Statistics plugin.** With ``<statisticsBrokerPlugin/>`` in ``activemq.xml``, a message sent to
  ``ActiveMQ.Statistics.Destination.<queue>`` with a ``reply-to`` is answered with that queue's counters,
  and one sent to ``ActiveMQ.Statistics.Destination.>`` with one answer per queue. The answers are JMS map
  messages, which reach a STOMP client only through ``transformation: jms-map-json``, and that
  transformation needs xstream and jettison on the broker's classpath (Debian ships both under
  /usr/share/java; symlink them into ``$ACTIVEMQ_BASE/lib``). Without them the broker closes the
  connection of a subscription asking for it (plugin or not; its log says NoClassDefFoundError).
- **A fence.** The plugin does not answer for a queue that does not exist (and creates nothing), so each
  request is followed by one to ``ActiveMQ.Statistics.Broker`` on the same connection: the broker handles
  them in order and answers into the same temporary queue, so once the broker's answer is in, every
  answer to the earlier requests is in too. Silence about a queue then means "no such queue", and no
  answer at all means "no plugin", without guessing from timings.
- **Browser.** A subscription with ``browser: true`` delivers a copy of every message in the queue and
  then one frame with ``browser: end``: a count that needs no plugin (but creates the queue, empty, if it
  was not there, as every ActiveMQ subscription does).
- **Scheduler.** Delayed messages (``AMQ_SCHEDULED_DELAY``) wait in the broker's scheduler, not in the
  queue. A message to ``ActiveMQ.Scheduler.Management`` with ``AMQ_SCHEDULER_ACTION: BROWSE`` and a
  ``reply-to`` copies every scheduled message there (with ``original-destination`` and
  ``scheduledJobId``); ``REMOVE`` with a ``scheduledJobId`` deletes one.
- **Draining.** There is no purge frame: ``purge`` consumes and acknowledges until the queue is idle.

Without the plugin, the requests above land in ordinary queues named ``ActiveMQ.Statistics.*``; they are
sent non-persistent and expire after a minute, so nothing accumulates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue as queues
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from kq.core.driver import BrokerUnavailableError, UnsupportedOperationError
from kq.drivers.stomp._connection import SESSION_LISTENER

logger = logging.getLogger(__name__.replace("._", "."))

__all__ = ["PLUGIN_NEEDS", "ActiveMQAdmin", "StatisticsUnavailableError", "parse_statistics"]

#: What the broker needs for statistics, said in every error about them.
PLUGIN_NEEDS = (
    "ActiveMQ answers statistics requests only with <statisticsBrokerPlugin/> in the <plugins> of its "
    "activemq.xml and with xstream.jar and jettison.jar on its classpath (for example symlinked from "
    "/usr/share/java into $ACTIVEMQ_BASE/lib)"
)
#: Seconds a statistics request may wait in the broker when no plugin takes it.
REQUEST_TTL = 60.0
_LISTENER = "kq-queue-manager"
#: The scheduler's control destination (``schedulerSupport="true"``) and its action header.
SCHEDULER_MANAGEMENT = "/topic/ActiveMQ.Scheduler.Management"
SCHEDULER_ACTION = "AMQ_SCHEDULER_ACTION"


class StatisticsUnavailableError(UnsupportedOperationError):
    """ActiveMQ did not answer a statistics request: the statistics plugin is missing or cannot run."""


def parse_statistics(body: str | bytes) -> dict[str, Any]:
    """The entries of a statistics answer (a JMS map as xstream's JSON) as a plain dict.

    A map arrives as ``{"map": {"entry": [{"string": "size", "long": 3}, {"string": ["brokerName",
    "localhost"]}, ...]}}``: a number is the entry's second key, a string value the second item of the
    ``string`` list. A map of one entry has a dict instead of the list.
    """
    document = json.loads(body)
    entries = document.get("map", {}).get("entry", [])
    if isinstance(entries, dict):
        entries = [entries]
    result: dict[str, Any] = {}
    for entry in entries:
        name = entry.get("string")
        if isinstance(name, list) and len(name) == 2:
            result[str(name[0])] = name[1]
        elif isinstance(name, str):
            values = [value for key, value in entry.items() if key != "string"]
            result[name] = values[0] if values else None
    return result


class _ConnectionLostError(Exception):
    """The admin connection closed while kq waited for the broker."""


class _Inbox:
    """A stomp.py listener collecting the frames of one admin connection (stomp.py calls it from its
    receiver thread; the admin reads from the caller's thread)."""

    def __init__(self) -> None:
        self.frames: queues.Queue[Any] = queues.Queue()
        self.receipts: queues.Queue[str] = queues.Queue()
        self.lost = threading.Event()
        self.error = ""

    def on_message(self, frame: Any) -> None:
        self.frames.put(frame)

    def on_error(self, frame: Any) -> None:
        body = frame.body.decode("utf-8", "replace") if isinstance(frame.body, bytes) else str(frame.body)
        self.error = str(frame.headers.get("message", "")) or body.strip()[:200]

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(str(frame.headers.get("receipt-id", "")))

    def on_disconnected(self) -> None:
        self.lost.set()
        self.frames.put(None)
        self.receipts.put("")

    def get(self, timeout: float) -> Any:
        """The next frame, ``None`` after ``timeout`` seconds; :class:`_ConnectionLostError` if it closed."""
        try:
            frame = self.frames.get(timeout=max(timeout, 0.0))
        except queues.Empty:
            if self.lost.is_set():
                raise _ConnectionLostError(self.error) from None
            return None
        if frame is None:
            raise _ConnectionLostError(self.error)
        return frame


class ActiveMQAdmin:
    """Statistics, browser counts and draining of ActiveMQ queues, each on a connection of its own.

    Args:
        connect: Opens a new, connected ``stomp.Connection12`` (``StompDriver.connect``); the admin
            disconnects it when done.
        timeout: Seconds to wait for the broker's answer before concluding that nobody answers.
        idle: Seconds without a message after which a drained queue counts as empty.
    """

    #: Prefix of the plugin's request destinations (a test points it elsewhere to act as if the plugin
    #: were missing).
    statistics_prefix = "ActiveMQ.Statistics."

    def __init__(self, connect: Callable[[str], Any], timeout: float, idle: float = 1.0) -> None:
        self._connect = connect
        self.timeout = timeout
        self.idle = idle

    # -- statistics plugin ---------------------------------------------------------------------------

    def statistics(self, name: str) -> dict[str, Any] | None:
        """The plugin's counters of queue ``name``, or ``None`` when the broker has no such queue.

        Raises:
            StatisticsUnavailableError: nobody answered (no plugin) or the broker closed the connection
                while answering (no xstream/jettison).
        """
        answers = self._ask(f"Destination.{name}", purpose=f"statistics of queue {name}")
        for answer in answers:
            if answer.get("destinationName") == f"queue://{name}":
                return answer
        return None

    def all_statistics(self) -> list[dict[str, Any]]:
        """The plugin's counters of every queue of the broker (one answer per queue)."""
        answers = self._ask("Destination.>", purpose="statistics of every queue")
        return [a for a in answers if str(a.get("destinationName", "")).startswith("queue://")]

    def _ask(self, query: str, purpose: str) -> list[dict[str, Any]]:
        """Send ``query`` and the broker-statistics fence behind it; return the answers to ``query``."""
        request_id = uuid.uuid4().hex
        reply_to = f"/temp-queue/kq-statistics-{request_id}"
        expires = str(int((time.time() + REQUEST_TTL) * 1000))
        answers: list[dict[str, Any]] = []
        with self._session(purpose) as (connection, inbox):
            connection.subscribe(
                reply_to, id="kq-statistics", ack="auto", headers={"transformation": "jms-map-json"}
            )
            for correlation, target in ((f"{request_id}-query", query), (f"{request_id}-fence", "Broker")):
                connection.send(
                    f"/queue/{self.statistics_prefix}{target}",
                    "",
                    headers={"reply-to": reply_to, "correlation-id": correlation, "expires": expires},
                )
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    frame = inbox.get(deadline - time.monotonic())
                except _ConnectionLostError as lost:
                    raise StatisticsUnavailableError(
                        f"ActiveMQ closed the connection when kq asked for the {purpose}"
                        f"{f' ({lost})' if str(lost) else ''}: a broker without xstream and jettison on its "
                        "classpath does so as soon as a subscription asks for 'transformation: "
                        f"jms-map-json' (its log says NoClassDefFoundError). {PLUGIN_NEEDS}"
                    ) from None
                if frame is None:
                    raise StatisticsUnavailableError(
                        f"ActiveMQ did not answer a request for the {purpose} within {self.timeout:g} s. "
                        f"{PLUGIN_NEEDS}"
                    )
                correlation = frame.headers.get("correlation-id", "")
                if correlation == f"{request_id}-fence":
                    return answers
                if correlation == f"{request_id}-query":
                    try:
                        answers.append(parse_statistics(frame.body))
                    except (ValueError, AttributeError, TypeError) as exc:
                        logger.warning(
                            "ActiveMQ statistics: ignored an answer that is not a JSON map (%s)", exc
                        )

    # -- scheduler -----------------------------------------------------------------------------------

    def scheduled(self, name: str) -> list[str]:
        """The job ids of the messages scheduled (delayed) for queue ``name``.

        The scheduler's BROWSE copies every scheduled message of the broker (all queues) to a temporary
        queue, each with its ``original-destination``; a message kq sends to that temporary queue right
        behind the request arrives after the last copy. A broker without ``schedulerSupport`` has no
        scheduled messages, and the request goes to a topic nobody reads: the answer is then empty.
        """
        with self._session(f"scheduled messages of queue {name}") as (connection, inbox):
            return self._scheduled_jobs(connection, inbox, name)

    def remove_scheduled(self, name: str) -> int:
        """Remove the messages scheduled for queue ``name`` from the scheduler; return how many."""
        with self._session(f"removing the scheduled messages of queue {name}") as (connection, inbox):
            jobs = self._scheduled_jobs(connection, inbox, name)
            for job in jobs:
                connection.send(
                    SCHEDULER_MANAGEMENT, "", headers={SCHEDULER_ACTION: "REMOVE", "scheduledJobId": job}
                )
        return len(jobs)

    def _scheduled_jobs(self, connection: Any, inbox: _Inbox, name: str) -> list[str]:
        request_id = uuid.uuid4().hex
        reply_to = f"/temp-queue/kq-scheduled-{request_id}"
        connection.subscribe(reply_to, id="kq-scheduled", ack="auto")
        connection.send(SCHEDULER_MANAGEMENT, "", headers={SCHEDULER_ACTION: "BROWSE", "reply-to": reply_to})
        connection.send(reply_to, "", headers={"correlation-id": f"{request_id}-fence"})
        target = f"/queue/{name}"
        jobs: list[str] = []
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                frame = inbox.get(deadline - time.monotonic())
            except _ConnectionLostError:
                raise BrokerUnavailableError(
                    f"ActiveMQ closed the connection while kq listed the messages scheduled for queue {name}"
                ) from None
            if frame is None:
                raise BrokerUnavailableError(
                    f"ActiveMQ did not answer within {self.timeout:g} s while kq listed the messages "
                    f"scheduled for queue {name}"
                )
            if frame.headers.get("correlation-id") == f"{request_id}-fence":
                return jobs
            if frame.headers.get("original-destination") == target and frame.headers.get("scheduledJobId"):
                jobs.append(str(frame.headers["scheduledJobId"]))

    # -- browser -------------------------------------------------------------------------------------

    def browse_count(self, name: str) -> int:
        """How many messages queue ``name`` holds, counted through a browser subscription (creates the
        queue, empty, if the broker did not have it)."""
        count = 0
        with self._session(f"browsing queue {name}") as (connection, inbox):
            connection.subscribe(f"/queue/{name}", id="kq-browser", ack="auto", headers={"browser": "true"})
            while True:
                try:
                    frame = inbox.get(self.timeout)
                except _ConnectionLostError:
                    raise BrokerUnavailableError(
                        f"ActiveMQ closed the connection while kq browsed queue {name} "
                        f"({count} messages seen)"
                    ) from None
                if frame is None:
                    raise BrokerUnavailableError(
                        f"ActiveMQ sent no message for {self.timeout:g} s while kq browsed queue {name} "
                        f"({count} seen) and never said the browse had ended"
                    )
                if frame.headers.get("browser") == "end":
                    return count
                count += 1

    # -- draining ------------------------------------------------------------------------------------

    def drain(self, name: str, expected: int | None = None) -> int:
        """Consume and acknowledge every message of queue ``name`` until it stays idle; return how many.

        ``expected`` (the count from the statistics, when known) shortens the final idle wait once that
        many went. Messages other consumers hold unacknowledged and scheduled (delayed) ones are not in
        the queue yet, so they stay.
        """
        drained = 0
        with self._session(f"purging queue {name}") as (connection, inbox):
            connection.subscribe(
                f"/queue/{name}",
                id="kq-purge",
                ack="client-individual",
                headers={"activemq.prefetchSize": "100"},
            )
            while True:
                done = expected is not None and drained >= expected
                try:
                    frame = inbox.get(min(self.idle, 0.2) if done else self.idle)
                except _ConnectionLostError:
                    raise BrokerUnavailableError(
                        f"ActiveMQ closed the connection while kq purged queue {name} "
                        f"({drained} messages deleted so far)"
                    ) from None
                if frame is None:
                    break
                connection.ack(frame.headers["ack"])
                drained += 1
            # The broker handles frames in order: its receipt of the UNSUBSCRIBE means every ACK is in.
            receipt = f"kq-purge-{uuid.uuid4().hex}"
            connection.unsubscribe("kq-purge", headers={"receipt": receipt})
            try:
                confirmed = inbox.receipts.get(timeout=self.timeout) == receipt
            except queues.Empty:
                confirmed = False
            if not confirmed:
                raise BrokerUnavailableError(
                    f"ActiveMQ did not confirm within {self.timeout:g} s that it took the acknowledgements "
                    f"of {drained} message(s) drained from queue {name}: those it did not take come back"
                )
        return drained

    # -- connections ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self, purpose: str) -> Iterator[tuple[Any, _Inbox]]:
        connection = self._connect(f"queue manager: {purpose}")
        inbox = _Inbox()
        connection.set_listener(_LISTENER, inbox)
        try:
            yield connection, inbox
        finally:
            _disconnect(connection, inbox)


def _disconnect(connection: Any, inbox: _Inbox) -> None:
    """DISCONNECT with a receipt, so the broker has handled every ACK sent before it returns: through
    the driver's :class:`~kq.drivers.stomp._connection.Session` when the connection has one (it then
    knows the close is wanted, and closes the socket), else with stomp.py's own receipted disconnect."""
    session = connection.get_listener(SESSION_LISTENER)
    try:
        if session is not None and hasattr(session, "close"):
            session.close()
        elif not inbox.lost.is_set():
            connection.disconnect(receipt=f"kq-admin-{uuid.uuid4().hex}")
    except Exception as exc:
        logger.debug("ActiveMQ admin connection: DISCONNECT failed (%s); the broker closes it anyway", exc)
