"""Signed messages: every way a message can be unsigned, forged, altered, stale or replayed is refused
with its own reason, before decoding, and never executed."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    App,
    ConfigError,
    Delivery,
    Handler,
    Message,
    MessageConsumptionFailed,
    encode_json,
    parse_config,
)
from kq.core._signing import NONCE, SIGNED_AT, Signer, Verifier, new_key
from kq.drivers.memory import MemoryDriver

KEY_1 = new_key()
KEY_2 = new_key()


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()


class _Recorder(Handler):
    """A consumer that remembers what it executed (the queues require signatures)."""

    accepted_content_types = None
    executed: list[Any] = []  # noqa: RUF012 - shared on purpose: read after the loop ran

    def consume(self, body: Any, delivery: Delivery) -> Any:
        _Recorder.executed.append(body)
        if body == "fail":
            raise RuntimeError("failing on purpose")
        return body


def _app(keys: dict[str, str], sign_with: str | None = None, **signing: Any) -> App:
    table: dict[str, Any] = {"keys": keys, **signing}
    if sign_with:
        table["sign_with"] = sign_with
    return App(
        parse_config(
            {
                "default_driver": "mem",
                "drivers": {"mem": {"type": "memory"}},
                "queues": {
                    "jobs": {"consumer": "noop", "require_signature": True},
                    "other": {"consumer": "noop", "require_signature": True},
                },
                "signing": table,
            },
            source="kq.toml",
        )
    )


def _run(app: App, count: int = 1, queue: str = "jobs") -> list[MessageConsumptionFailed]:
    _Recorder.executed = []
    failures: list[MessageConsumptionFailed] = []
    app.dispatcher.add_listener("message_consumption_failed", failures.append)
    from kq.core import Limits

    app.consume_loop(
        queue, handler=_Recorder(), limits=Limits(messages=count, time=10), poll_interval=0.1
    ).run()
    return failures


def _raw(app: App, message: Message, queue: str = "jobs") -> None:
    """Publish without signing, as an attacker with access to the broker would."""
    driver, _ = app.queue(queue)
    driver.producer(queue).send(message)


def _signed(app: App, body: Any = "hello", queue: str = "jobs", **fields: Any) -> Message:
    message = Message(encode_json(body), routing_key="jobs.run", headers={"x-user": "ops"}, **fields)
    return app.signer.sign(message, queue)


def test_a_signed_message_is_executed() -> None:
    with _app({"k1": KEY_1}) as app:
        app.producer("jobs").publish(encode_json("hello"))
        assert _run(app) == []
        assert _Recorder.executed == ["hello"]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda m: dataclasses.replace(m, headers={}), "unsigned"),
        (lambda m: dataclasses.replace(m, body=encode_json("rm -rf /")), "bad-signature"),
        (lambda m: dataclasses.replace(m, routing_key="admin.delete"), "bad-signature"),
        (lambda m: dataclasses.replace(m, content_type="text/plain"), "bad-signature"),
        (lambda m: dataclasses.replace(m, message_id="another"), "bad-signature"),
        (lambda m: dataclasses.replace(m, headers={**m.headers, "x-user": "root"}), "bad-signature"),
        (lambda m: dataclasses.replace(m, headers={**m.headers, "x-added": "1"}), "bad-signature"),
        (
            lambda m: dataclasses.replace(m, headers={**m.headers, SIGNED_AT: str(time.time() + 3600)}),
            "bad-signature",
        ),
        (lambda m: dataclasses.replace(m, headers={**m.headers, "kq-key-id": "nope"}), "unknown-key"),
    ],
    ids=[
        "unsigned",
        "body",
        "routing-key",
        "content-type",
        "message-id",
        "header",
        "added-header",
        "signed-at",
        "key-id",
    ],
)
def test_altered_messages_are_refused_unexecuted(tamper: Any, reason: str) -> None:
    with _app({"k1": KEY_1}) as app:
        _raw(app, tamper(_signed(app)))
        [failure] = _run(app)
        assert (failure.reason, failure.outcome) == (reason, "dead-lettered")
        assert _Recorder.executed == []
        driver, _ = app.queue("jobs")
        with driver.consumer("jobs.failed") as consumer:
            dead = consumer.receive(1)
            assert dead is not None
            assert dead.headers["kq-dead-letter-reason"] == reason


def test_a_message_signed_with_another_secret_is_refused() -> None:
    with _app({"k1": KEY_1}) as app:
        forged = Signer(key_id="k1", key=KEY_2.encode()).sign(Message(encode_json("x")), "jobs")
        _raw(app, forged)
        [failure] = _run(app)
        assert failure.reason == "bad-signature"
        assert _Recorder.executed == []


def test_a_message_signed_for_another_queue_is_refused() -> None:
    with _app({"k1": KEY_1}) as app:
        _raw(app, _signed(app, queue="other"))
        [failure] = _run(app)
        assert failure.reason == "bad-signature"


def test_expired_and_not_yet_valid_signatures() -> None:
    with _app({"k1": KEY_1}, max_age=60) as app:
        signer = app.signer
        _raw(app, signer.sign(Message(encode_json("old")), "jobs", valid_from=time.time() - 3600))
        _raw(app, signer.sign(Message(encode_json("future")), "jobs", valid_from=time.time() + 3600))
        failures = _run(app, count=2)
        assert sorted(f.reason for f in failures) == ["expired", "not-yet-valid"]
        assert _Recorder.executed == []


def test_a_replayed_message_is_refused_by_the_same_worker() -> None:
    with _app({"k1": KEY_1}) as app:
        message = _signed(app)
        _raw(app, message)
        _raw(app, dataclasses.replace(message))  # the captured message, published again
        failures = _run(app, count=2)
        assert [f.reason for f in failures] == ["replayed"]
        assert _Recorder.executed == ["hello"]


def test_key_rotation() -> None:
    # Producers moved to k2; workers know k1 and k2: both old and new messages run.
    with (
        _app({"k1": KEY_1, "k2": KEY_2}, sign_with="k1") as old,
        _app({"k1": KEY_1, "k2": KEY_2}, "k2") as new,
    ):
        old.producer("jobs").publish(encode_json("old key"))
        new.producer("jobs").publish(encode_json("new key"))
        assert _run(new, count=2) == []
        assert sorted(_Recorder.executed) == ["new key", "old key"]
    # A worker that dropped k1 refuses what is still signed with it.
    with _app({"k1": KEY_1}, "k1") as old, _app({"k2": KEY_2}) as new:
        old.producer("jobs").publish(encode_json("old key"))
        [failure] = _run(new)
        assert failure.reason == "unknown-key"


def test_retried_copies_are_signed_again_and_not_taken_for_replays() -> None:
    with _app({"k1": KEY_1}) as app:

        def retry(event: MessageConsumptionFailed) -> None:
            if event.attempt < 3:
                event.retry()

        app.dispatcher.add_listener("message_consumption_failed", retry)
        app.producer("jobs").publish(encode_json("fail"))
        failures = _run(app, count=3)
        assert [f.reason for f in failures] == ["failed", "failed", "failed"]
        assert [f.attempt for f in failures] == [1, 2, 3]
        assert _Recorder.executed == ["fail", "fail", "fail"]


def test_the_dead_letter_queue_accepts_what_was_signed_for_its_queue() -> None:
    with _app({"k1": KEY_1}) as app:
        app.producer("jobs").publish(encode_json("fail"))
        _run(app)
        assert _run(app, queue="jobs.failed")[0].reason == "failed"  # executed again, not refused


def test_no_secret_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        with _app({"k1": KEY_1}) as app:
            app.producer("jobs").publish(encode_json("hello"))
            _raw(app, Signer(key_id="k1", key=KEY_2.encode()).sign(Message(encode_json("x")), "jobs"))
            _run(app, count=2)
        with pytest.raises(ConfigError) as short:
            _app({"k1": "too short"}).signer  # noqa: B018 - the property loads the keys
    assert KEY_1 not in caplog.text
    assert KEY_2 not in caplog.text
    assert "too short" not in str(short.value)


def test_the_local_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    config = parse_config({}, source="kq.toml", root=str(tmp_path))
    first = App(config).signer
    second = App(config).signer
    assert first.key == second.key
    assert first.key_id == "local"
    assert os.stat(tmp_path / ".kq" / "signing.key").st_mode & 0o777 == 0o600


def test_keys_from_files_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k1.key").write_text(KEY_1 + "\n")
    config = parse_config(
        {"signing": {"keys": {"k1": "file:keys/k1.key"}}}, source="kq.toml", root=str(tmp_path)
    )
    assert App(config).signer.key == KEY_1.encode()
    missing = parse_config(
        {"signing": {"keys": {"k1": "file:nope.key"}}}, source="kq.toml", root=str(tmp_path)
    )
    with pytest.raises(ConfigError, match=r"cannot read the key file.*key 'signing\.keys\.k1'"):
        App(missing).signer  # noqa: B018


@pytest.mark.parametrize(
    ("signing", "key", "words"),
    [
        ({"keys": {"a": KEY_1, "b": KEY_2}}, "signing.sign_with", "must name one of the keys"),
        ({"keys": {"a": KEY_1}, "sign_with": "b"}, "signing.sign_with", "must name one of the keys"),
        ({"max_age": 0}, "signing.max_age", "finite number"),
        ({"require": "service"}, "signing.require", "list of consumer names"),
        ({"keyring": {}}, "signing.keyring", "unknown key"),
    ],
)
def test_signing_configuration_errors(signing: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse_config({"signing": signing}, source="kq.toml")
    assert caught.value.key == key


def test_verifier_replay_cache_forgets_beyond_the_window() -> None:
    verifier = Verifier({"k1": KEY_1.encode()}, max_age=0.2)
    message = Signer("k1", KEY_1.encode()).sign(Message(b"{}"), "q")
    delivery = Delivery(
        body=message.body,
        content_type=message.content_type,
        headers=dict(message.headers),
        routing_key="",
        message_id=message.message_id,
        queue="q",
    )
    verifier.verify(delivery, ["q"])
    assert len(verifier._seen) == 1
    time.sleep(0.3)
    other = Signer("k1", KEY_1.encode()).sign(Message(b"{}"), "q")
    fresh = dataclasses.replace(delivery, headers=dict(other.headers), message_id=other.message_id)
    verifier.verify(fresh, ["q"])
    assert len(verifier._seen) == 1, "the expired nonce should have been forgotten"
    assert NONCE in fresh.headers


# --- found by review (issue 6): each failed before its fix ------------------------------------------


def _forced(message: Message, headers: dict[str, str]) -> Message:
    """``message`` with headers no kq producer can send, as a foreign producer or an attacker may."""
    object.__setattr__(message, "headers", headers)
    return message


def test_a_header_renamed_across_the_colon_is_refused() -> None:
    """``x-role: user:admin`` and ``x-role:user: admin`` used to sign alike."""
    with _app({"k1": KEY_1}) as app:
        signed = app.signer.sign(Message(encode_json("hello"), headers={"x-role": "user:admin"}), "jobs")
        renamed = {k: v for k, v in signed.headers.items() if k != "x-role"} | {"x-role:user": "admin"}
        _raw(app, _forced(signed, renamed))
        [failure] = _run(app)
        assert failure.reason == "bad-signature"
        assert "cannot come from a kq producer" in str(failure.error)
        assert _Recorder.executed == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "", "soon", "-1", "1e30", "0x10"])
def test_a_signed_at_that_is_not_a_time_is_refused(value: str) -> None:
    with _app({"k1": KEY_1}) as app:
        signed = _signed(app)
        _raw(app, dataclasses.replace(signed, headers={**signed.headers, SIGNED_AT: value}))
        [failure] = _run(app)
        assert failure.reason == "bad-signature"
        assert "kq-signed-at must be a finite number" in str(failure.error)
        assert "it is not a time" in str(failure.error)
        assert _Recorder.executed == []


def test_values_with_newlines_and_backslashes_sign_and_cannot_be_split() -> None:
    """The canonical form escapes ``\\`` and newlines, so a value cannot pose as a second header."""
    tricky = {"x-a": "1\ny:2", "x-b": "back\\slash", "x-c": "\\n"}
    with _app({"k1": KEY_1}) as app:
        for headers in (tricky, {"x-a": "1", "y": "2"}):
            _raw(app, app.signer.sign(Message(encode_json("hello"), headers=headers), "jobs"))
        assert [f.reason for f in _run(app, 2)] == []
        assert len(_Recorder.executed) == 2
        signed = app.signer.sign(Message(encode_json("hello"), headers={"x-a": "1\ny:2"}), "jobs")
        split = {k: v for k, v in signed.headers.items() if k != "x-a"} | {"x-a": "1", "y": "2"}
        _raw(app, _forced(signed, split))
        [failure] = _run(app)
        assert failure.reason == "bad-signature"
        assert _Recorder.executed == []


def test_portable_names_seen_are_remembered_within_a_bound() -> None:
    from kq.core import _message

    for number in range(_message._PORTABLE_NAMES_SEEN_MAX + 10):
        assert _message.is_portable_header_name(f"x-name-{number}")
    assert 0 < len(_message._PORTABLE_NAMES_SEEN) <= _message._PORTABLE_NAMES_SEEN_MAX
    # What is refused is never remembered, however often it comes.
    for _ in range(3):
        assert not _message.is_portable_header_name("x-role:user")
        assert not _message.is_portable_header_name("priority")
        assert not _message.all_portable_header_names(["x-ok", "priority"])
    assert _message.all_portable_header_names(["x-ok", "x-name-1"])


def test_the_dead_letter_queue_keeps_the_signature_requirement_of_its_queue() -> None:
    """A queue that opts in with require_signature = true: an unsigned message it refused must not run
    when its dead-letter queue is consumed."""
    with _app({"k1": KEY_1}) as app:
        _raw(app, Message(encode_json("rm -rf")))
        assert [f.reason for f in _run(app)] == ["unsigned"]
        assert [f.reason for f in _run(app, queue="jobs.failed")] == ["unsigned"]
        assert _Recorder.executed == []


def test_the_dead_letter_queue_of_a_queue_without_signatures_accepts_unsigned_messages() -> None:
    config = parse_config(
        {
            "default_driver": "mem",
            "drivers": {"mem": {"type": "memory"}},
            "queues": {"legacy": {"consumer": "console_command", "require_signature": False}},
            "signing": {"keys": {"k1": KEY_1}},
        }
    )
    with App(config) as app:
        driver, _ = app.queue("legacy")
        driver.producer("legacy").send(Message(encode_json("fail")))
        _run(app, queue="legacy")
        assert [f.reason for f in _run(app, queue="legacy.failed")] == ["failed"]
        assert _Recorder.executed == ["fail"]  # ran again from the dead-letter queue


def test_zero_configuration_dead_letter_queue_accepts_what_was_signed_for_its_queue(
    tmp_path: Path,
) -> None:
    """With no queue configured, `kq consume demo.failed` used to refuse every dead letter of demo as
    bad-signature (it accepted only signatures made for demo.failed)."""
    config = parse_config({"drivers": {"default": {"type": "memory"}}}, root=str(tmp_path))
    with App(config) as app:
        app.producer("demo").publish(encode_json("fail"))
        assert [f.reason for f in _run(app, queue="demo")] == ["failed"]
        assert [f.reason for f in _run(app, queue="demo.failed")] == ["failed"]
        assert _Recorder.executed == ["fail"]  # ran again from the dead-letter queue
        assert app.signed_for("demo.failed") == {"demo", "demo.failed"}


def test_a_message_requeued_by_its_worker_is_not_taken_for_a_replay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the dead-letter queue cannot be written to, the message goes back to its queue; the same
    worker used to refuse it as `replayed` when it came back, losing the real failure."""
    with _app({"k1": KEY_1}) as app:
        app.producer("jobs").publish(encode_json("fail"))
        driver, _ = app.queue("jobs")
        real = type(driver.producer("jobs.failed")).send
        broken = {"times": 1}

        def publish(self: Any, message: Message) -> Any:
            if self.queue.name == "jobs.failed" and broken["times"]:
                broken["times"] -= 1
                raise RuntimeError("dead-letter queue unavailable")
            return real(self, message)

        monkeypatch.setattr(type(driver.producer("jobs.failed")), "send", publish)
        monkeypatch.setattr("kq.core._failure_policy.RETRY_DEAD_LETTER_AFTER", 0.0)
        failures = _run(app, count=2)
        assert [(f.reason, f.outcome) for f in failures] == [
            ("failed", "requeued"),
            ("failed", "dead-lettered"),
        ]
        assert _Recorder.executed == ["fail", "fail"]


def test_no_secret_in_reprs(tmp_path: Path) -> None:
    with _app({"k1": KEY_1}) as app:
        assert KEY_1 not in repr(app.signer)
        assert KEY_1 not in repr(app.config.signing)
        assert KEY_1 not in repr(app.config)


def test_a_key_file_others_can_read_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = tmp_path / "open.key"
    key_file.write_text(KEY_1)
    os.chmod(key_file, 0o644)
    with caplog.at_level(logging.WARNING):
        signer = App(parse_config({"signing": {"keys": {"k1": "file:open.key"}}}, root=str(tmp_path))).signer
    assert signer.key == KEY_1.encode()  # used, with the warning
    assert "can be read by other users (mode 644)" in caplog.text
    assert f"chmod 600 {key_file}" in caplog.text
    assert KEY_1 not in caplog.text


@pytest.mark.parametrize(
    "value", ["/etc/kq/keys/production-2026-11.key", "./keys/production-2026-11", "~/kq.key"]
)
def test_a_path_without_file_prefix_is_not_taken_for_a_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r'looks like a path, not a key: write it as "file:PATH"'):
        assert App(parse_config({"signing": {"keys": {"k1": value}}})).signer is None


def test_signing_keeps_every_field_and_yields_a_valid_message() -> None:
    """The signer skips validating the message again (it adds only its own headers): the result must be
    what building the message from scratch gives, field by field."""
    from kq.core._message import Message, with_headers_unchecked

    original = Message(
        b"body", content_type="text/plain", headers={"a": "1"}, routing_key="r.k", ttl=30.0, delay=2.0
    )
    signed = Signer(key_id="k1", key=b"s" * 32).sign(original, "jobs")
    rebuilt = Message(**{f.name: getattr(signed, f.name) for f in dataclasses.fields(Message)})
    assert signed == rebuilt
    assert {"a", "kq-key-id", "kq-signed-at", "kq-nonce", "kq-signature"} == set(signed.headers)
    # The copy names every field of Message: a field added later must be added there too.
    copy = with_headers_unchecked(original, {"b": "2"})
    for f in dataclasses.fields(Message):
        assert getattr(copy, f.name) == ({"b": "2"} if f.name == "headers" else getattr(original, f.name))
