"""Re-driving dead letters (``kq.core._redrive``): show, retry and remove, on the memory and sqlite drivers.

Dead letters are made the real way: messages published by the app's (signing) producers, consumed by a
``ConsumeLoop`` whose handler fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    App,
    Delivery,
    GenericMessageProducer,
    Handler,
    Limits,
    Message,
    MessageConsumptionFailed,
    _redrive,
    _redrive_browse,
    parse_config,
)
from kq.core._failures import body_preview
from kq.core._leases import Leases
from kq.core._redrive import remove_dead_letters, retry_dead_letters, show_dead_letters
from kq.core._redrive_retry import REDRIVE_DROPPED_HEADERS
from kq.core._signing import NONCE, SIGNATURE
from kq.drivers.memory import MemoryDriver

IDLE = 0.05


class Failing(Handler):
    """Fails every message it is given."""

    accepted_content_types = None
    kind = "failing"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError(f"cannot handle {body!r}")


class Recording(Handler):
    """Succeeds, and keeps what it handled."""

    accepted_content_types = None
    kind = "recording"

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.deliveries.append(delivery)
        return body


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    MemoryDriver.reset()
    driver: dict[str, Any] = {"type": "memory"}
    if request.param == "sqlite":
        driver = {"type": "sqlite", "path": "queues.sqlite3"}
    config = parse_config(
        {
            "default_driver": "d",
            "drivers": {"d": driver},
            "queues": {
                "jobs": {"consumer": "noop", "require_signature": True},
                "mail": {"consumer": "noop", "require_signature": True, "dead_letter_queue": "shared.dead"},
                "sms": {"consumer": "noop", "require_signature": True, "dead_letter_queue": "shared.dead"},
            },
        },
        source="kq.toml",
        root=str(tmp_path),
    )
    with App(config) as made:
        yield made
    MemoryDriver.reset()


def consume(app: App, queue: str, handler: Handler, messages: int) -> None:
    app.consume_loop(
        queue, handler=handler, limits=Limits(messages=messages, time=10), poll_interval=0.05
    ).run()


def dead_letter(app: App, queue: str = "jobs", count: int = 3, **publish: Any) -> list[str]:
    """Publish ``count`` signed messages to ``queue`` and have a worker fail them all."""
    producer = app.producer(queue)
    ids = [
        producer.publish(
            f'{{"n": {n}}}', routing_key=f"job.{n}", headers={"x-tenant": "acme"}, **publish
        ).message_id
        for n in range(count)
    ]
    consume(app, queue, Failing(), count)
    return ids


def ids_in(app: App, queue: str = "jobs") -> list[str]:
    return [item["message_id"] for item in show_dead_letters(app, queue, idle=IDLE)]


# --- show ------------------------------------------------------------------------------------------------


def test_show_describes_every_dead_letter_and_keeps_them(app: App) -> None:
    ids = dead_letter(app)
    shown = show_dead_letters(app, "jobs", idle=IDLE)
    assert [item["message_id"] for item in shown] == ids
    first = shown[0]
    assert first["reason"] == "failed"
    assert first["error"] == "RuntimeError: cannot handle {'n': 0}"
    assert first["original_queue"] == "jobs"
    assert first["routing_key"] == "job.0"
    assert first["content_type"] == "application/json"
    assert first["attempts"] == 1
    assert first["delivery_count"] == 1
    assert first["size"] == len(b'{"n": 0}')
    assert first["body"] == '{"n": 0}'
    assert first["headers"] == {"x-tenant": "acme"}
    assert first["key_id"] == "local"
    assert datetime.fromisoformat(first["dead_lettered_at"]).tzinfo is not None
    # Browsing settles nothing: everything is still there, and nothing was sent back.
    assert ids_in(app) == ids
    assert app.driver().queue_manager().info("jobs")["messages"] == 0


def test_show_limit(app: App) -> None:
    ids = dead_letter(app, count=3)
    assert [item["message_id"] for item in show_dead_letters(app, "jobs", limit=2, idle=IDLE)] == ids[:2]
    assert ids_in(app) == ids


def test_show_counts_attempts_of_retried_messages(app: App) -> None:
    def retry_once(event: MessageConsumptionFailed) -> None:
        if event.attempt < 2:
            event.retry(0)

    app.dispatcher.add_listener("message_consumption_failed", retry_once)
    app.producer("jobs").publish("{}")
    consume(app, "jobs", Failing(), 2)
    [item] = show_dead_letters(app, "jobs", idle=IDLE)
    assert item["attempts"] == 2


def test_show_empty_dead_letter_queue(app: App) -> None:
    assert show_dead_letters(app, "jobs", idle=IDLE) == []


def test_preview_of_text_and_binary_bodies() -> None:
    assert body_preview(b"x" * 500) == "x" * 200
    assert body_preview("é".encode()) == "é"
    assert body_preview(b"\x00\x01\x02") == "<3 bytes>"
    assert body_preview(b"\xff\xfe") == "<2 bytes>"
    assert body_preview(b"line 1\nline 2\ttab") == "line 1\nline 2\ttab"


def test_show_binary_body(app: App) -> None:
    producer = app.producer("jobs")
    producer.publish(b"\x00\xff" * 10, content_type="application/octet-stream")
    consume(app, "jobs", Failing(), 1)
    [item] = show_dead_letters(app, "jobs", idle=IDLE)
    assert item["body"] == "<20 bytes>"
    assert item["size"] == 20
    assert item["content_type"] == "application/octet-stream"


# --- retry -----------------------------------------------------------------------------------------------


def test_retry_one_by_id_sends_it_back_signed_and_clean(app: App) -> None:
    ids = dead_letter(app)
    [before] = [d for d in _raw(app, "jobs.failed") if d.message_id == ids[1]]

    result = retry_dead_letters(app, "jobs", [ids[1]], idle=IDLE)

    assert result.done == (ids[1],)
    assert result.targets == {ids[1]: "jobs"}
    assert result.ok
    assert ids_in(app) == [ids[0], ids[2]]
    # A worker that requires signatures runs it.
    worker = Recording()
    consume(app, "jobs", worker, 1)
    [again] = worker.deliveries
    assert again.message_id == ids[1]
    assert again.body == b'{"n": 1}'
    assert again.routing_key == "job.1"
    assert again.content_type == "application/json"
    assert again.headers["x-tenant"] == "acme"
    assert not REDRIVE_DROPPED_HEADERS & set(again.headers)
    assert again.headers[NONCE] != before.headers[NONCE]
    assert again.headers[SIGNATURE] != before.headers[SIGNATURE]
    assert ids_in(app) == [ids[0], ids[2]]


def test_retry_removes_the_attempt_count(app: App) -> None:
    def retry_once(event: MessageConsumptionFailed) -> None:
        if event.attempt < 2:
            event.retry(0)

    app.dispatcher.add_listener("message_consumption_failed", retry_once)
    message_id = app.producer("jobs").publish("{}").message_id
    consume(app, "jobs", Failing(), 2)
    assert retry_dead_letters(app, "jobs", idle=IDLE).done == (message_id,)
    worker = Recording()
    consume(app, "jobs", worker, 1)
    assert "kq-attempt" not in worker.deliveries[0].headers


def test_retry_all(app: App) -> None:
    ids = dead_letter(app)
    result = retry_dead_letters(app, "jobs", idle=IDLE)
    assert result.done == tuple(ids)
    assert result.ok
    assert show_dead_letters(app, "jobs", idle=IDLE) == []
    worker = Recording()
    consume(app, "jobs", worker, 3)
    assert [d.message_id for d in worker.deliveries] == ids
    assert show_dead_letters(app, "jobs", idle=IDLE) == []


def test_retry_sends_each_message_to_its_own_queue(app: App) -> None:
    mail = dead_letter(app, "mail", count=1)
    sms = dead_letter(app, "sms", count=2)
    # Both queues share one dead-letter queue; naming either shows it.
    assert ids_in(app, "mail") == mail + sms
    result = retry_dead_letters(app, "sms", idle=IDLE)
    assert result.targets == {mail[0]: "mail", sms[0]: "sms", sms[1]: "sms"}
    mail_worker, sms_worker = Recording(), Recording()
    consume(app, "mail", mail_worker, 1)
    consume(app, "sms", sms_worker, 2)
    assert [d.message_id for d in mail_worker.deliveries] == mail
    assert [d.message_id for d in sms_worker.deliveries] == sms


def test_one_message_id_failed_on_two_queues_goes_back_to_both(app: App) -> None:
    """Found in review: copies were grouped by message id alone, so the sms copy of a message also sent
    to mail was acknowledged without being queued again."""
    message = Message(b'"both"')
    for queue in ("mail", "sms"):
        app.producer(queue).send([message])
        consume(app, queue, Failing(), 1)
    result = retry_dead_letters(app, "mail", idle=IDLE)
    assert result.targets == {message.message_id: "mail, sms"}
    mail_worker, sms_worker = Recording(), Recording()
    consume(app, "mail", mail_worker, 1)
    consume(app, "sms", sms_worker, 1)
    assert [d.message_id for d in mail_worker.deliveries] == [message.message_id]
    assert [d.message_id for d in sms_worker.deliveries] == [message.message_id]
    assert ids_in(app, "mail") == []


def test_retry_reports_unknown_ids_and_does_the_others(app: App) -> None:
    ids = dead_letter(app)
    result = retry_dead_letters(app, "jobs", ["nope", ids[0], ids[0]], idle=IDLE)
    assert result.done == (ids[0],)
    assert result.missing == ("nope",)
    assert not result.ok
    assert result.as_dict()["missing"] == ["nope"]
    assert ids_in(app) == ids[1:]


def test_retry_whose_publish_fails_leaves_the_message(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = dead_letter(app)

    def broken(self: GenericMessageProducer, messages: Any) -> Any:
        raise ConnectionError("broker down")

    monkeypatch.setattr(GenericMessageProducer, "send", broken)
    result = retry_dead_letters(app, "jobs", [ids[0]], idle=IDLE)
    assert result.done == ()
    assert result.failed == {ids[0]: "could not be queued again on jobs: ConnectionError: broker down"}
    assert result.targets == {}
    monkeypatch.undo()
    assert ids_in(app) == ids
    assert app.driver().queue_manager().info("jobs")["messages"] == 0


def test_retry_queues_copies_of_one_message_once(app: App) -> None:
    [message_id] = dead_letter(app, count=1)
    [dead] = _raw(app, "jobs.failed")
    app.driver().producer("jobs.failed").send(dead.to_message())  # a duplicate (at-least-once)
    assert ids_in(app) == [message_id, message_id]
    assert retry_dead_letters(app, "jobs", idle=IDLE).done == (message_id,)
    assert show_dead_letters(app, "jobs", idle=IDLE) == []
    assert app.driver().queue_manager().info("jobs")["messages"] == 1


def test_retry_refuses_to_sign_a_forged_message(app: App) -> None:
    # Published unsigned straight to the broker, as an attacker with broker access would.
    forged = Message(body=b'"rm -rf"', routing_key="job.x")
    app.driver().producer("jobs").send(forged)
    worker = Recording()
    consume(app, "jobs", worker, 1)
    assert worker.deliveries == []
    [item] = show_dead_letters(app, "jobs", idle=IDLE)
    assert item["reason"] == "unsigned"

    result = retry_dead_letters(app, "jobs", idle=IDLE)
    assert result.done == ()
    assert "signature does not check (unsigned)" in result.failed[forged.message_id]
    assert ids_in(app) == [forged.message_id]

    result = retry_dead_letters(app, "jobs", idle=IDLE, resign_unverified=True)
    assert result.done == (forged.message_id,)
    consume(app, "jobs", worker, 1)
    assert [d.message_id for d in worker.deliveries] == [forged.message_id]


def test_retry_refuses_a_garbled_signature(app: App) -> None:
    headers = {
        "kq-key-id": "local",
        "kq-signed-at": "1",
        "kq-signature": "é" * 64,
        "kq-original-queue": "jobs",
    }
    garbled = Message(body=b"{}", headers=headers)
    app.driver().producer("jobs.failed").send(garbled)
    result = retry_dead_letters(app, "jobs", idle=IDLE)
    assert "signature does not check (bad-signature" in result.failed[garbled.message_id]
    assert ids_in(app) == [garbled.message_id]


def test_retry_of_a_message_kq_cannot_publish_leaves_it(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = dead_letter(app, count=2)
    real = _redrive_browse.chunks

    def chunks(*args: Any, **kwargs: Any) -> Iterator[list[Delivery]]:
        for n, found in enumerate(real(*args, **kwargs)):
            if n == 0:
                found[0].headers["x:foreign"] = "1"  # a foreign AMQP producer's header name kq does not carry
            yield found

    monkeypatch.setattr(_redrive, "chunks", chunks)
    result = retry_dead_letters(app, "jobs", idle=IDLE, resign_unverified=True)
    monkeypatch.undo()
    assert result.done == (ids[1],)
    assert result.failed[ids[0]].startswith("cannot be published again: ")
    assert ids_in(app) == [ids[0]]


def test_retry_signs_again_a_message_whose_signature_expired(app: App) -> None:
    old = app.signer.sign(Message(body=b"{}"), "jobs", valid_from=time.time() - 3 * 86400)
    app.driver().producer("jobs").send(old)
    worker = Recording()
    consume(app, "jobs", worker, 1)
    [item] = show_dead_letters(app, "jobs", idle=IDLE)
    assert item["reason"] == "expired"
    assert retry_dead_letters(app, "jobs", idle=IDLE).done == (old.message_id,)
    consume(app, "jobs", worker, 1)
    assert [d.message_id for d in worker.deliveries] == [old.message_id]


def test_retry_without_original_queue_goes_to_the_queue_named(app: App) -> None:
    [message_id] = dead_letter(app, count=1)
    [dead] = _raw(app, "jobs.failed")
    remove_dead_letters(app, "jobs", idle=IDLE)
    headers = {k: v for k, v in dead.headers.items() if k != "kq-original-queue"}
    app.driver().producer("jobs.failed").send(dead.to_message(headers=headers))
    result = retry_dead_letters(app, "jobs", idle=IDLE)
    assert result.targets == {message_id: "jobs"}
    worker = Recording()
    consume(app, "jobs", worker, 1)
    assert [d.message_id for d in worker.deliveries] == [message_id]


# --- remove ----------------------------------------------------------------------------------------------


def test_remove_by_id_and_all(app: App) -> None:
    ids = dead_letter(app)
    result = remove_dead_letters(app, "jobs", [ids[1], "nope"], idle=IDLE)
    assert result.done == (ids[1],)
    assert result.missing == ("nope",)
    assert result.as_dict() == {
        "queue": "jobs",
        "dead_letter_queue": "jobs.failed",
        "removed": [ids[1]],
        "missing": ["nope"],
        "failed": {},
    }
    assert ids_in(app) == [ids[0], ids[2]]
    assert remove_dead_letters(app, "jobs", idle=IDLE).done == (ids[0], ids[2])
    assert show_dead_letters(app, "jobs", idle=IDLE) == []
    assert app.driver().queue_manager().info("jobs")["messages"] == 0


def test_remove_nothing_asked(app: App) -> None:
    ids = dead_letter(app, count=2)
    assert remove_dead_letters(app, "jobs", [], idle=IDLE).done == ()
    assert ids_in(app) == ids


def test_bad_arguments(app: App) -> None:
    with pytest.raises(ValueError, match="limit"):
        show_dead_letters(app, "jobs", limit=0)
    with pytest.raises(ValueError, match="prefetch"):
        show_dead_letters(app, "jobs", prefetch=0)


# --- leases ----------------------------------------------------------------------------------------------


def test_held_deliveries_stay_reserved_while_browsing_takes_long(tmp_path: Path) -> None:
    MemoryDriver.reset()
    config = parse_config(
        {"drivers": {"default": {"type": "memory", "visibility_timeout": 0.5}}},
        source="kq.toml",
        root=str(tmp_path),
    )
    with App(config) as app:
        app.producer("jobs.failed").publish("{}")
        driver = app.driver()
        holder = driver.consumer("jobs.failed")
        delivery = holder.receive(1)
        assert delivery is not None
        leases = Leases(holder, holder.lease_duration)
        leases.add(delivery)
        time.sleep(0.3)
        leases.keep()
        time.sleep(0.35)  # past the first lease, within the extended one
        with driver.consumer("jobs.failed") as other:
            assert other.receive(0) is None
        holder.ack(delivery)
        holder.close()
    MemoryDriver.reset()


def _raw(app: App, queue: str) -> list[Delivery]:
    """Every delivery waiting in ``queue``, released again afterwards."""
    with app.driver().consumer(queue, prefetch=100) as consumer:
        found: list[Delivery] = []
        while (delivery := consumer.receive(IDLE)) is not None:
            found.append(delivery)
        return found
