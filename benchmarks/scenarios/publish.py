"""Publishing to RabbitMQ: kq's producers against plain pika, Kombu and stomp.py doing the same work.

Every side publishes persistent 1 KiB messages to a durable classic queue behind a durable topic exchange
(kq's topology for a logical queue), in a connection of its own, and a publish counts only once the
broker confirmed it (AMQP publisher confirms, STOMP receipts). Building each message (kq's ``Message``,
pika's properties with a fresh message id) is part of publishing it. Each round uses a fresh queue,
deleted afterwards; connecting and declaring happen before the clock starts, except in the first-publish
and ``kq queuecommand`` scenarios, which time exactly that.

The helpers at the top (:func:`pika_connection`, :func:`declare`, :func:`prefill`, :class:`PlainStomp`,
...) are shared with ``consume.py`` and ``latency.py``.
"""

from __future__ import annotations

import collections
import functools
import importlib
import json
import statistics
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika

from benchmarks import harness
from benchmarks.run import Context
from kq.core import Message
from kq.core.driver import Driver, DriverSpec
from kq.core.plugins import load_driver_class

_EMPTY = b'{"command":"echoback","arguments":[""],"options":{}}'
#: A command message padded to 1 KiB, as JSON (what kq's console-command producers send).
BODY = json.dumps(
    {"command": "echoback", "arguments": ["x" * (1024 - len(_EMPTY))], "options": {}}, separators=(",", ":")
).encode()
ROUTING_KEY = "bench"
JSON = "application/json"


# -- helpers shared by the broker scenarios --------------------------------------------------------------


def new_queue(prefix: str) -> str:
    """A queue name of its own for one round."""
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def pika_connection(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def declare(channel: Any, queue: str) -> None:
    """kq's topology for logical queue ``queue``: a durable topic exchange of that name, a durable
    classic queue of that name, bound with ``#``."""
    channel.exchange_declare(queue, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, queue, routing_key="#")


def properties() -> pika.BasicProperties:
    """What kq's producer sets on a message, give or take its headers."""
    return pika.BasicProperties(
        content_type=JSON,
        delivery_mode=2,
        message_id=uuid.uuid4().hex,
        timestamp=int(time.time()),
        app_id="bench",
    )


def delete_queues(url: str, *queues: str) -> None:
    """Delete ``queues`` and their exchanges (a missing one is no error)."""
    connection = pika_connection(url)
    try:
        for queue in queues:
            channel = connection.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
    finally:
        connection.close()


class ConfirmingChannel:
    """A pika channel in confirm mode that sends a batch whole and then waits once for its confirms.

    pika's ``BlockingChannel`` waits for the broker after each message; its underlying (asynchronous)
    channel lets a batch be sent whole and its confirms awaited together, as an asynchronous pika
    program (``SelectConnection``) would.
    """

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.impl: Any = self.channel._impl
        self.pending: set[int] = set()
        self.nacked = 0
        self.tag = 0
        selected: list[bool] = []
        self.impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _f: selected.append(True)
        )
        while not selected:
            connection.process_data_events(time_limit=0.001)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        done = {t for t in self.pending if t <= tag} if method.multiple else {tag}
        self.pending.difference_update(done)
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += len(done)
        if not self.pending:
            self.connection.call_later(0, _nothing)  # a confirm alone does not end process_data_events

    def publish(self, exchange: str, bodies: Sequence[bytes]) -> None:
        """Publish ``bodies`` and return once the broker confirmed them all."""
        for body in bodies:
            self.impl.basic_publish(exchange, ROUTING_KEY, body, properties())
            self.tag += 1
            self.pending.add(self.tag)
        deadline = time.monotonic() + 60
        while self.pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pika: {len(self.pending)} confirms missing after 60 s")
            self.connection.process_data_events(time_limit=1)
        if self.nacked:
            raise RuntimeError(f"pika: the broker refused {self.nacked} messages")


def _nothing() -> None:
    """A timer callback that only wakes pika's event loop."""


def prefill(url: str, queue: str, count: int, batch: int = 1000) -> None:
    """Declare ``queue`` (kq's topology) and put ``count`` confirmed messages in it, untimed."""
    connection = pika_connection(url)
    try:
        declare(connection.channel(), queue)
        channel = ConfirmingChannel(connection)
        for start in range(0, count, batch):
            channel.publish(queue, [BODY] * min(batch, count - start))
    finally:
        connection.close()


def kq_driver(driver_type: str, **options: Any) -> Driver:
    """A new kq driver of ``driver_type``, as an application would get it from its configuration."""
    driver: Driver = load_driver_class(driver_type)(
        DriverSpec(name="bench", type=driver_type, options=options)
    )
    return driver


def warm_up(*driver_types: str, modules: Sequence[str] = ()) -> None:
    """Import the kq drivers and peer libraries the sides use, so that no side's first round pays for
    imports inside its timing."""
    for driver_type in driver_types:
        load_driver_class(driver_type)
    for module in modules:
        importlib.import_module(module)


def kq_message() -> Message:
    return Message(BODY, routing_key=ROUTING_KEY)


def stomp_host(context: Context) -> str:
    """``host:port`` of the node's STOMP listener."""
    if not context.stomp_url:
        raise RuntimeError("no STOMP listener known: pass --stomp-url with --amqp-url")
    return context.stomp_url.split("://", 1)[-1].rstrip("/")


class PlainStomp:
    """A plain stomp.py client on RabbitMQ's STOMP plugin: receipts and messages, nothing else."""

    def __init__(self, host: str) -> None:
        import stomp  # type: ignore[import-untyped,unused-ignore]

        name, port = host.rsplit(":", 1)
        self.connection: Any = stomp.Connection12(
            [(name, int(port))], heartbeats=(10_000, 10_000), vhost="/", auto_decode=False
        )
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.frames: collections.deque[Any] = collections.deque()
        self.on_frame: Callable[[Any], None] | None = None
        listener = stomp.ConnectionListener()
        listener.on_receipt = self._on_receipt
        listener.on_message = self._on_message
        self.connection.set_listener("bench", listener)
        self.connection.connect(wait=True)

    def _on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def _on_message(self, frame: Any) -> None:
        if self.on_frame is not None:
            self.on_frame(frame)
            return
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def publish(self, destination: str, bodies: Sequence[bytes]) -> None:
        """SEND each body persistent with a receipt, then wait once for all the receipts."""
        ids = []
        for body in bodies:
            receipt = f"r-{uuid.uuid4().hex}"
            ids.append(receipt)
            self.connection.send(
                destination,
                body,
                headers={
                    "content-type": JSON,
                    "persistent": "true",
                    "receipt": receipt,
                    "kq-message-id": uuid.uuid4().hex,
                },
            )
        with self.cond:
            while not self.receipts.issuperset(ids):
                if not self.cond.wait(30):
                    raise RuntimeError("plain stomp.py: receipts missing after 30 s")
            self.receipts.difference_update(ids)

    def subscribe(self, destination: str, prefetch: int) -> None:
        self.connection.subscribe(
            destination, id="bench", ack="client-individual", headers={"prefetch-count": str(prefetch)}
        )

    def take(self) -> Any:
        with self.cond:
            while not self.frames:
                if not self.cond.wait(30):
                    raise RuntimeError("plain stomp.py: no message for 30 s")
            return self.frames.popleft()

    def ack(self, frame: Any) -> None:
        self.connection.ack(frame.headers["ack"])

    def close(self) -> None:
        self.connection.disconnect()


@contextmanager
def cleanup(url: str, *queues: str) -> Iterator[None]:
    """Delete ``queues`` (and exchanges of the same name) afterwards, whatever happened."""
    try:
        yield
    finally:
        delete_queues(url, *queues)


# -- first publish -------------------------------------------------------------------------------------


def _first_publishes(count: int, once: Callable[[str, str], float], url: str) -> float:
    """Median milliseconds of ``count`` first publishes, each to a new queue (deleted afterwards)."""
    queues = [new_queue("first") for _ in range(count)]
    with cleanup(url, *queues):
        return statistics.median(once(url, queue) for queue in queues) * 1000


def _pika_first_publish(url: str, queue: str) -> float:
    started = time.perf_counter()
    connection = pika_connection(url)
    channel = connection.channel()
    declare(channel, queue)
    channel.confirm_delivery()
    channel.basic_publish(queue, ROUTING_KEY, BODY, properties())
    connection.close()
    return time.perf_counter() - started


def _kq_first_publish(url: str, queue: str) -> float:
    started = time.perf_counter()
    driver = kq_driver("rabbitmq", url=url)
    driver.producer(queue).send(kq_message())
    driver.close()
    return time.perf_counter() - started


# -- kq queuecommand, a process ----------------------------------------------------------------------

_PIKA_SCRIPT = """\
import json, sys, time, uuid
import pika

url, queue = sys.argv[1], sys.argv[2]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.exchange_declare(queue, exchange_type="topic", durable=True)
channel.queue_declare(queue, durable=True)
channel.queue_bind(queue, queue, routing_key="#")
channel.confirm_delivery()
body = json.dumps({"command": "echoback", "arguments": ["hi"], "options": {}}).encode()
properties = pika.BasicProperties(
    content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex, timestamp=int(time.time())
)
channel.basic_publish(queue, "echoback", body, properties)
connection.close()
print("published", file=sys.stderr)
"""


class _QueueCommand:
    """``kq queuecommand QUEUE echoback hi`` against a pika script doing the same publish, both as new
    processes of the bench interpreter; the median of ``runs`` invocations per round."""

    def __init__(self, context: Context, runs: int) -> None:
        self.context = context
        self.runs = runs
        self.folder = context.workdir / "h1-queuecommand"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.queue = new_queue("queuecommand")
        # The default configuration's signing: the local key .kq/signing.key next to this file, made by
        # the first command (outside the timing, see _ready).
        (self.folder / "kq.toml").write_text(
            textwrap.dedent(
                f"""\
                default_driver = "rabbit"

                [drivers.rabbit]
                type = "rabbitmq"
                url = "{context.amqp_url}"

                [queues."{self.queue}"]

                [allow]
                commands = ["echoback"]
                """
            )
        )
        self.script = self.folder / "pika_publish.py"
        self.script.write_text(_PIKA_SCRIPT)
        self._prepared = False

    def _spawn(self, command: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(
            command,
            cwd=self.folder,
            env=self.context.environ(),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return time.perf_counter() - started

    def _ready(self) -> None:
        if not self._prepared:  # creates the signing key and the topology, as any first use does
            self._spawn(self._kq())
            self._prepared = True

    def _kq(self) -> list[str]:
        return [self.context.python, "-m", "kq.cli", "queuecommand", self.queue, "echoback", "hi"]

    def kq(self) -> float:
        self._ready()
        with cleanup(self.context.amqp_url, self.queue):
            return statistics.median(self._spawn(self._kq()) for _ in range(self.runs)) * 1000

    def pika(self) -> float:
        self._ready()
        command = [self.context.python, str(self.script), self.context.amqp_url, self.queue]
        with cleanup(self.context.amqp_url, self.queue):
            return statistics.median(self._spawn(command) for _ in range(self.runs)) * 1000


# -- throughput ----------------------------------------------------------------------------------------


def _pika_publish_single(url: str, count: int) -> float:
    queue = new_queue("single-pika")
    with cleanup(url, queue):
        connection = pika_connection(url)
        channel = connection.channel()
        declare(channel, queue)
        channel.confirm_delivery()
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish(queue, ROUTING_KEY, BODY, properties())
        elapsed = time.perf_counter() - started
        connection.close()
        return harness.rate(count, elapsed)


def _kombu_publish_single(url: str, count: int) -> float:
    import kombu  # type: ignore[import-not-found,import-untyped,unused-ignore]

    queue = new_queue("single-kombu")
    parameters = pika.URLParameters(url)
    with cleanup(url, queue):
        connection: Any = kombu.Connection(
            hostname=parameters.host,
            port=parameters.port,
            userid=parameters.credentials.username,
            password=parameters.credentials.password,
            virtual_host=parameters.virtual_host,
            transport="pyamqp",
            transport_options={"confirm_publish": True},
        )
        with connection:
            exchange = kombu.Exchange(queue, type="topic", durable=True)
            target = kombu.Queue(queue, exchange, routing_key="#", durable=True)
            producer = connection.Producer(exchange=exchange, routing_key=ROUTING_KEY)
            target(connection.default_channel).declare()
            started = time.perf_counter()
            for _ in range(count):
                producer.publish(BODY, content_type=JSON, content_encoding="binary", delivery_mode=2)
            elapsed = time.perf_counter() - started
        return harness.rate(count, elapsed)


def _kq_publish(url: str, count: int, batch: int) -> float:
    """kq's rate publishing ``count`` messages in batches of ``batch`` (1: ``send``, one at a time)."""
    queue = new_queue(f"kq-{batch}")
    with cleanup(url, queue):
        driver = kq_driver("rabbitmq", url=url)
        try:
            producer = driver.producer(queue)
            producer.send(kq_message())  # connects, declares, confirm mode: outside the timing
            if batch == 1:
                started = time.perf_counter()
                for _ in range(count):
                    producer.send(kq_message())
            else:  # building the messages is part of publishing them, as pika's properties are
                started = time.perf_counter()
                for _ in range(count // batch):
                    producer.send_batch([kq_message() for _ in range(batch)])
            elapsed = time.perf_counter() - started
        finally:
            driver.close()
        return harness.rate(count // batch * batch, elapsed)


def _pika_publish_batches(url: str, count: int, batch: int) -> float:
    queue = new_queue(f"pika-{batch}")
    with cleanup(url, queue):
        connection = pika_connection(url)
        declare(connection.channel(), queue)
        channel = ConfirmingChannel(connection)
        channel.publish(queue, [BODY])  # as kq's first message: outside the timing
        started = time.perf_counter()
        for _ in range(count // batch):
            channel.publish(queue, [BODY] * batch)
        elapsed = time.perf_counter() - started
        connection.close()
        return harness.rate(count // batch * batch, elapsed)


def _stomp_publish(host: str, url: str, count: int, batch: int, kq: bool) -> float:
    queue = new_queue("stomp-kq" if kq else "stomp-plain")
    with cleanup(url, queue):
        if kq:
            driver = kq_driver("stomp", flavour="rabbitmq", hosts=[host])
            try:
                producer = driver.producer(queue)
                producer.send(kq_message())  # connects: outside the timing
                started = time.perf_counter()
                for _ in range(count // batch):
                    producer.send_batch([kq_message() for _ in range(batch)])
                elapsed = time.perf_counter() - started
            finally:
                driver.close()
        else:
            client = PlainStomp(host)
            try:
                client.publish(f"/queue/{queue}", [BODY])
                started = time.perf_counter()
                for _ in range(count // batch):
                    client.publish(f"/queue/{queue}", [BODY] * batch)
                elapsed = time.perf_counter() - started
            finally:
                client.close()
        return harness.rate(count // batch * batch, elapsed)


def scenarios(context: Context) -> list[harness.Scenario]:
    url = context.amqp_url
    warm_up("rabbitmq", *(["stomp"] if context.stomp_url else []), modules=("kombu", "stomp"))
    firsts = context.count(15, 3)
    single = context.count(1000, 100)
    queuecommand = _QueueCommand(context, runs=context.count(3, 1))
    found = [
        harness.Scenario(
            key="rabbitmq-first-publish",
            title="RabbitMQ: a new producer's first publish, connect to confirmed and closed",
            unit="ms",
            sides=(
                harness.Side("pika", lambda: _first_publishes(firsts, _pika_first_publish, url)),
                harness.Side("kq", lambda: _first_publishes(firsts, _kq_first_publish, url)),
            ),
            targets=(harness.Target("pika", "<=", 2),),
            note=(
                f"median of {firsts} per round, each to a new queue: pika connects, declares kq's topology "
                "(topic exchange, durable queue, binding), confirm_delivery, publishes one confirmed "
                "message and closes; kq builds a new driver, Producer.send, close."
            ),
        ),
        harness.Scenario(
            key="rabbitmq-queuecommand",
            title="RabbitMQ: `kq queuecommand` as a process vs a pika publish script",
            unit="ms",
            sides=(harness.Side("pika script", queuecommand.pika), harness.Side("kq", queuecommand.kq)),
            targets=(harness.Target("pika script", "<=", 2),),
            note=(
                f"median of {queuecommand.runs} runs per round of `python -m kq.cli queuecommand QUEUE "
                "echoback hi` (configuration: a kq.toml naming the RabbitMQ driver and the queue, default "
                "signing with the local key) against `python script.py` that connects, declares the same "
                "topology, confirm_delivery, publishes the same command and closes; spawn to exit."
            ),
        ),
        harness.Scenario(
            key="rabbitmq-publish-single",
            title="RabbitMQ: one confirmed publish per call",
            unit="msg/s",
            sides=(
                harness.Side("pika", lambda: _pika_publish_single(url, single)),
                harness.Side("Kombu", lambda: _kombu_publish_single(url, single)),
                harness.Side("kq", lambda: _kq_publish(url, single, 1)),
            ),
            targets=(harness.Target("pika", ">=", 1), harness.Target("Kombu", ">=", 1)),
            note=(
                f"{single} messages: kq Producer.send each; pika BlockingChannel.confirm_delivery + "
                "basic_publish; Kombu (py-amqp) Producer.publish with confirm_publish."
            ),
        ),
    ]
    for batch, count in ((100, context.count(6000, 300)), (3000, context.count(6000, 3000))):
        found.append(
            harness.Scenario(
                key=f"rabbitmq-publish-batch-{batch}",
                title=f"RabbitMQ: batches of {batch}, confirms awaited per batch",
                unit="msg/s",
                sides=(
                    harness.Side(
                        "pika async confirms", functools.partial(_pika_publish_batches, url, count, batch)
                    ),
                    harness.Side("kq", functools.partial(_kq_publish, url, count, batch)),
                ),
                targets=(harness.Target("pika async confirms", ">=", 0.9),),
                note=(
                    f"{count} messages: kq Producer.send_batch; pika publishes each batch on the "
                    "channel's asynchronous implementation and waits once for all its confirms."
                ),
            )
        )
    if context.stomp_url:
        host = stomp_host(context)
        stomp_count = context.count(3000, 200)
        found.append(
            harness.Scenario(
                key="stomp-rabbitmq-publish",
                title="STOMP on RabbitMQ: batches of 100 with receipts",
                unit="msg/s",
                sides=(
                    harness.Side("stomp.py", lambda: _stomp_publish(host, url, stomp_count, 100, kq=False)),
                    harness.Side("kq", lambda: _stomp_publish(host, url, stomp_count, 100, kq=True)),
                ),
                targets=(harness.Target("stomp.py", ">=", 0.9),),
                note=(
                    f"{stomp_count} persistent messages to /queue/<name>, each SEND with a receipt, the "
                    "receipts awaited once per batch (kq: Producer.send_batch)."
                ),
            )
        )
    return found
