"""kq against ActiveMQ Classic and RabbitMQ's STOMP plugin with real processes: the tutorial, managequeue
with ``--format json``, and interoperability with plain stomp.py (and so with the PHP library's STOMP
bundle), in both directions."""

from __future__ import annotations

import json
import queue as queues
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import stomp  # type: ignore[import-untyped,unused-ignore]

from kq.core.testing import Workspace, unique_queue_name

if TYPE_CHECKING:
    from integration.stomp_fixture import StompEndpoint

pytestmark = pytest.mark.stomp

#: Seconds to wait for a broker's receipt or a frame from a plain stomp.py connection.
FRAME_TIMEOUT = 15.0


def _config(stomp: StompEndpoint, queue: str, extra: str = "") -> str:
    """kq.toml for one queue on the broker; ``extra`` goes in the queue's table."""
    return f"""
default_driver = "mq"

{stomp.driver_table()}
[queues.{queue}]
{extra}
[allow]
commands = ["echoback"]
"""


def _remove(space: Workspace, stomp: StompEndpoint, *names: str) -> None:
    """Delete the test's queues where the broker can (ActiveMQ cannot over STOMP: unique names keep
    its leftovers apart)."""
    if stomp.flavour == "rabbitmq":
        for name in names:
            space.kq("managequeue", "delete", name, check=False)


@pytest.fixture
def queue() -> str:
    """A fresh logical queue name, so that runs on one broker stay apart."""
    return unique_queue_name("e2e")


@pytest.fixture
def space(workspace: Workspace, stomp: StompEndpoint, queue: str) -> Iterator[Workspace]:
    """A workspace whose kq.toml has ``queue`` on the broker; workers run kq's own commands."""
    workspace.write_config(_config(stomp, queue), recorder=False)
    yield workspace
    _remove(workspace, stomp, queue, f"{queue}.failed")


class _Frames(stomp.ConnectionListener):  # type: ignore[misc]
    """Collects what a plain stomp.py connection receives: MESSAGE frames, receipts and ERROR frames."""

    def __init__(self) -> None:
        self.messages: queues.Queue[Any] = queues.Queue()
        self.receipts: set[str] = set()
        self.errors: list[Any] = []
        self._changed = threading.Condition()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: Any) -> None:
        with self._changed:
            self.receipts.add(frame.headers["receipt-id"])
            self._changed.notify_all()

    def on_error(self, frame: Any) -> None:
        with self._changed:
            self.errors.append(frame)
            self._changed.notify_all()

    def wait_receipt(self, receipt: str) -> None:
        """Wait for the broker's RECEIPT of ``receipt``; fail on an ERROR frame or after FRAME_TIMEOUT."""
        with self._changed:
            self._changed.wait_for(lambda: receipt in self.receipts or bool(self.errors), FRAME_TIMEOUT)
            assert not self.errors, [(e.headers, e.body) for e in self.errors]
            assert receipt in self.receipts, f"no receipt {receipt} within {FRAME_TIMEOUT}s"

    def next_message(self) -> Any:
        """The next MESSAGE frame; fails after FRAME_TIMEOUT."""
        try:
            return self.messages.get(timeout=FRAME_TIMEOUT)
        except queues.Empty:
            raise AssertionError(f"no message within {FRAME_TIMEOUT}s") from None


@contextmanager
def _plain_stomp(stomp_endpoint: StompEndpoint) -> Iterator[tuple[Any, _Frames]]:
    """A plain stomp.py STOMP 1.2 connection to the broker (no kq involved), and what it receives."""
    connection = stomp.Connection12(
        [(stomp_endpoint.host, stomp_endpoint.port)],
        vhost=stomp_endpoint.vhost,
        auto_decode=False,  # bodies as bytes
        reconnect_attempts_max=1,
    )
    frames = _Frames()
    connection.set_listener("test", frames)
    connection.connect(stomp_endpoint.login, stomp_endpoint.passcode, wait=True)
    try:
        yield connection, frames
    finally:
        connection.disconnect()


def _send_php_message(stomp_endpoint: StompEndpoint, queue: str, body: dict[str, Any]) -> None:
    """What the PHP library's STOMP producer sends for a console command: the JSON body with its
    ``content-type``, a ``receipt`` it waits for, and nothing of kq's (no message id, no signature)."""
    with _plain_stomp(stomp_endpoint) as (connection, frames):
        connection.send(
            f"/queue/{queue}",
            json.dumps(body).encode(),
            content_type="application/json",
            headers={"receipt": "php-1"},
        )
        frames.wait_receipt("php-1")


def test_tutorial_flow(space: Workspace, queue: str) -> None:
    """kq consume in the background, kq queuecommand echoback, the output file appears."""
    worker = space.start_consumer(queue, "testconsumer")
    space.kq("queuecommand", queue, "echoback", "hello world again", "-o", "f=testoutput2.txt")
    output = space.root / "testoutput2.txt"
    space.wait_for(output.exists, 60, "testoutput2.txt")
    assert output.read_text().rstrip().endswith("says: hello world again")
    assert space.stop(worker) == 0, space.output("testconsumer")
    assert "Stopped because: received SIGTERM" in space.output("testconsumer")
    # RabbitMQ's management API counts with a few seconds' lag: poll until the ack shows.
    space.wait_for(
        lambda: space.kq_json("managequeue", "info", queue)["messages"] == 0, 30, "the queue empty"
    )


def test_managequeue_actions_in_json(space: Workspace, stomp: StompEndpoint, queue: str) -> None:
    """What the flavour offers works with --format json: list-configured, info, list-available, purge
    (and delete on RabbitMQ); ActiveMQ's delete fails saying why, without a traceback."""
    configured = space.kq_json("managequeue", "list-configured")
    assert [(item["queue"], item["driver"]) for item in configured] == [(queue, "mq")], configured
    space.kq("queuemessage", queue, '{"n": 1}', "-n", "3", "-b")

    def waiting() -> Any:
        return space.kq_json("managequeue", "info", queue)

    space.wait_for(lambda: waiting()["messages"] == 3, 30, "3 messages counted")
    info = waiting()
    assert (info["exists"], info["messages"], info["in_flight"], info["consumers"]) == (True, 3, 0, 0), info
    assert info["queue"] == queue
    assert info["destination"] == f"/queue/{queue}"
    assert "capabilities" in info
    assert queue in space.kq_json("managequeue", "list-available")
    purged = space.kq_json("managequeue", "purge", queue)
    # ActiveMQ drains and counts; RabbitMQ's management API purges without saying how many.
    assert purged == {"queue": queue, "purged": 3 if stomp.flavour == "activemq" else None}, purged
    space.wait_for(lambda: waiting()["messages"] == 0, 30, "the purged queue empty")
    if stomp.flavour == "rabbitmq":
        assert space.kq_json("managequeue", "delete", queue) == {"queue": queue, "deleted": True}
        assert waiting()["exists"] is False
        assert queue not in space.kq_json("managequeue", "list-available")
        return
    refused = space.kq("managequeue", "delete", queue, "--format", "json", check=False)
    assert refused.returncode != 0, refused.stdout
    assert "Traceback" not in refused.stderr, refused.stderr
    message = refused.stderr.strip()
    assert message.startswith("kq: error:"), message
    assert "delete" in message, message
    # Why, not only that: ActiveMQ offers no way to delete a queue over STOMP.
    assert "ActiveMQ" in message, message
    assert "STOMP" in message, message
    assert waiting()["exists"] is True, "the refused delete must leave the queue"


def test_a_php_shaped_message_from_plain_stomp_runs_where_unsigned_messages_are_accepted(
    workspace: Workspace, stomp: StompEndpoint, queue: str
) -> None:
    """The PHP bundle's console-command JSON, sent with plain stomp.py, is executed by kq consume on a
    queue that accepts unsigned messages (the PHP library cannot sign)."""
    workspace.write_config(_config(stomp, queue, "require_signature = false"), recorder=False)
    try:
        _send_php_message(
            stomp, queue, {"command": "echoback", "arguments": ["from PHP"], "options": {"f": "php.txt"}}
        )
        result = workspace.kq("consume", queue, "-m", "1", "-t", "60", "--poll-interval", "1")
        assert "Stopped because: message limit of 1 reached" in result.stdout, result.stdout + result.stderr
        assert (workspace.root / "php.txt").read_text().rstrip().endswith("says: from PHP")
    finally:
        _remove(workspace, stomp, queue, f"{queue}.failed")


def test_a_php_shaped_message_is_refused_where_signatures_are_required(
    space: Workspace, stomp: StompEndpoint, queue: str
) -> None:
    """The same message on a console-command queue with the default signing rule: not run, dead-lettered
    as unsigned."""
    _send_php_message(
        stomp, queue, {"command": "echoback", "arguments": ["forged"], "options": {"f": "forged.txt"}}
    )
    space.kq("consume", queue, "-m", "1", "-t", "60", "--poll-interval", "1")
    assert not (space.root / "forged.txt").exists()
    dead = space.kq_json("failed", "show", queue)
    assert [entry["reason"] for entry in dead] == ["unsigned"], dead


def test_a_message_queued_by_kq_reads_as_expected_with_plain_stomp(
    space: Workspace, stomp: StompEndpoint, queue: str
) -> None:
    """kq queuecommand and kq queuemessage, then plain stomp.py: the bodies, content types, persistence,
    kq's message id and routing key, the user's header, kq's signature, and the TTL as each broker
    carries it (ActiveMQ: ``expires``, absolute; RabbitMQ: ``expiration``, relative)."""
    before = time.time()
    command = space.kq_json("queuecommand", queue, "echoback", "to stomp", "-o", "f=out.txt", "--ttl", "30")
    plain = space.kq_json(
        "queuemessage", queue, "plain text", "-c", "text/plain", "-H", "trace=abc", "-r", "hello.world"
    )
    after = time.time()
    with _plain_stomp(stomp) as (connection, frames):
        connection.subscribe(f"/queue/{queue}", id="plain", ack="auto")
        first = frames.next_message()
        second = frames.next_message()

    assert json.loads(first.body) == {
        "command": "echoback",
        "arguments": ["to stomp"],
        "options": {"f": "out.txt"},
    }
    headers = first.headers
    assert headers["content-type"] == "application/json"
    assert headers["kq-message-id"] == command["message_id"]
    assert headers["kq_routing_key"] == "echoback"
    assert headers["persistent"] == "true"
    # Signed by kq's producer (the local key, as no [signing] keys are configured).
    assert headers["kq-key-id"] == "local"
    assert {"kq-signature", "kq-nonce", "kq-signed-at"} <= set(headers), headers
    if stomp.flavour == "activemq":
        expires = int(headers["expires"]) / 1000
        assert before + 30 - 1 <= expires <= after + 30 + 1, headers
    else:
        assert headers["expiration"] == "30000", headers

    assert second.body == b"plain text"
    headers = second.headers
    assert headers["content-type"] == "text/plain"
    assert headers["kq-message-id"] == plain["message_ids"][0]
    assert headers["kq_routing_key"] == "hello.world"
    assert headers["trace"] == "abc"
    assert headers["persistent"] == "true"
    assert headers.get("expires", "0") == "0", headers  # ActiveMQ writes 0 for "never"
    assert "expiration" not in headers, headers
