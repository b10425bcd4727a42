"""Every number kq reads is finite and in range: configuration keys, driver and queue options, message
fields, the signed-at header, retry policies and listeners; one helper, one message format.

TOML has ``nan`` and ``inf`` literals, ``float()`` reads "nan", "inf" and "1e999", and ``nan <= 0`` is
false: each surface is tried with all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    App,
    ConfigError,
    Delivery,
    Limits,
    Message,
    MessageFormatError,
    RetryPolicy,
    encode_json,
    load_config,
    make_http_request,
    parse_config,
)
from kq.core._numbers import MAX_SECONDS, check_number, check_whole_number
from kq.core._options import resolve_options
from kq.core._signing import SIGNATURE, SIGNED_AT, Signer, Verifier, _canonical, _signed_fields, new_key
from kq.core.driver import DriverSpec, Option
from kq.core.listeners import RequeueFailedCommands
from kq.drivers.memory import MemoryDriver

#: TOML literals that are not finite numbers, or overflow to one.
TOML_NOT_FINITE = ["nan", "+nan", "inf", "+inf", "-inf", "1e309"]
#: The same as Python values and as text (what ``${VAR}`` gives).
NOT_FINITE: list[Any] = [math.nan, math.inf, -math.inf, "nan", "inf", "-inf", "1e309", "1e999", "NaN"]
FINITE_TEXT = re.escape("must be a finite number between")


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()


# --- the helper --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, -1.0, True, None, "5", 10**400])
def test_check_number_refuses_what_is_not_a_finite_number_in_range(value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^delay {FINITE_TEXT} 0 and 315576000, not "):
        check_number(value, "delay")


def test_check_number_message_format() -> None:
    exact = "must be a finite number between 0 (excluded) and 315576000, not nan"
    with pytest.raises(ValueError, match=f"^{re.escape(exact)}$"):
        check_number(math.nan, minimum=0, exclusive_minimum=True)
    with pytest.raises(ValueError, match=r"between 0 and 1 \(excluded\), not 1$"):
        check_number(1, maximum=1, exclusive_maximum=True)
    with pytest.raises(ValueError, match=r"not 'x{40}\.\.\.'$"):
        check_number("x" * 1000, text=True)
    assert check_number(" 2.5 ", text=True) == 2.5
    assert check_number(MAX_SECONDS) == MAX_SECONDS
    assert check_number(0) == 0.0


def test_check_whole_number() -> None:
    assert check_whole_number(3, minimum=1) == 3
    for value in (1.0, True, math.nan, -1, "3"):
        with pytest.raises(ValueError, match=r"must be a whole number between 0 and \d+, not "):
            check_whole_number(value)
    assert check_whole_number("3", text=True) == 3


# --- configuration keys ------------------------------------------------------------------------------

#: (TOML with {value} in place of the number, the key the error names)
CONFIG_KEYS = [
    pytest.param("[console]\ntimeout = {value}\n", "console.timeout", id="console.timeout"),
    pytest.param("[signing]\nmax_age = {value}\n", "signing.max_age", id="signing.max_age"),
    pytest.param("[queues.jobs.retry]\ndelay = {value}\n", "queues.jobs.retry.delay", id="retry.delay"),
    pytest.param(
        "[queues.jobs.retry]\nmultiplier = {value}\n", "queues.jobs.retry.multiplier", id="retry.multiplier"
    ),
    pytest.param(
        "[queues.jobs.retry]\nmax_delay = {value}\n", "queues.jobs.retry.max_delay", id="retry.max_delay"
    ),
    pytest.param("[queues.jobs.retry]\njitter = {value}\n", "queues.jobs.retry.jitter", id="retry.jitter"),
    pytest.param(
        "[workers.w]\noptions = {{ timeout = {value} }}\n", "workers.w.options.timeout", id="worker.timeout"
    ),
    pytest.param(
        "[workers.w]\noptions = {{ memory_limit = {value} }}\n",
        "workers.w.options.memory_limit",
        id="worker.memory_limit",
    ),
    pytest.param(
        "[workers.w]\noptions = {{ poll_interval = {value} }}\n",
        "workers.w.options.poll_interval",
        id="worker.poll_interval",
    ),
    pytest.param(
        "[workers.w]\noptions = {{ grace = {value} }}\n", "workers.w.options.grace", id="worker.grace"
    ),
]


@pytest.mark.parametrize("value", TOML_NOT_FINITE)
@pytest.mark.parametrize(("template", "key"), CONFIG_KEYS)
def test_configuration_numbers_must_be_finite(tmp_path: Path, template: str, key: str, value: str) -> None:
    path = tmp_path / "kq.toml"
    path.write_text(template.format(value=value), encoding="utf-8")
    with pytest.raises(ConfigError, match=FINITE_TEXT) as caught:
        load_config(path)
    assert f"key '{key}'" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("template", "key"),
    [
        pytest.param("[console]\ntimeout = 1e300\n", "console.timeout", id="huge-timeout"),
        pytest.param("[signing]\nmax_age = 1e12\n", "signing.max_age", id="huge-max-age"),
        pytest.param("[queues.jobs]\nmax_deliveries = 1" + "0" * 30 + "\n", "queues.jobs.max_deliveries"),
        pytest.param(
            "[workers.w]\noptions = { messages = -1 }\n", "workers.w.options.messages", id="negative"
        ),
    ],
)
def test_configuration_numbers_must_be_in_range(tmp_path: Path, template: str, key: str) -> None:
    path = tmp_path / "kq.toml"
    path.write_text(template, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"must be a (finite|whole) number between") as caught:
        load_config(path)
    assert f"key '{key}'" in str(caught.value)


def test_a_year_old_message_cannot_run_because_max_age_nan_does_not_load(tmp_path: Path) -> None:
    """``max_age = nan`` used to turn off expiry and the replay cache."""
    path = tmp_path / "kq.toml"
    path.write_text("[signing]\nmax_age = nan\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{FINITE_TEXT} 0 \(excluded\) and 315576000, not nan"):
        load_config(path)


# --- driver and queue options ------------------------------------------------------------------------

SCHEMA = {
    "visibility_timeout": Option(30.0, float, "seconds", positive=True),
    "heartbeat": Option(60, int, "seconds, 0: none", minimum=0),
    "timeout": Option(None, (int, float), "seconds"),
}


@pytest.mark.parametrize("value", [*NOT_FINITE, 1e300, 10**400, "1e300"])
@pytest.mark.parametrize("name", ["visibility_timeout", "timeout"])
def test_option_numbers_must_be_finite(name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=FINITE_TEXT) as caught:
        resolve_options(SCHEMA, {name: value}, prefix="drivers.local", source="/srv/kq.toml")
    assert f"key 'drivers.local.{name}'" in str(caught.value)
    assert "/srv/kq.toml" in str(caught.value)


def test_option_numbers_in_range_pass() -> None:
    resolved = resolve_options(
        SCHEMA, {"visibility_timeout": "2.5", "heartbeat": 0, "timeout": 3}, prefix="p", source=None
    )
    assert resolved == {"visibility_timeout": 2.5, "heartbeat": 0, "timeout": 3.0}
    with pytest.raises(ConfigError, match=r"between 0 \(excluded\)"):
        resolve_options(SCHEMA, {"visibility_timeout": 0}, prefix="p", source=None)
    with pytest.raises(ConfigError, match="whole number between 0 and"):
        resolve_options(SCHEMA, {"heartbeat": -1}, prefix="p", source=None)


SQLITE_VISIBILITY = {
    "drivers.default": '[drivers.default]\ntype = "sqlite"\nvisibility_timeout = {value}\n[queues.jobs]\n',
    "queues.jobs": "[queues.jobs]\nvisibility_timeout = {value}\n",
}


@pytest.mark.parametrize("value", ["nan", "inf", "1e309"])
@pytest.mark.parametrize("table", list(SQLITE_VISIBILITY))
def test_the_sqlite_visibility_timeout_from_toml(tmp_path: Path, table: str, value: str) -> None:
    """``visibility_timeout = nan`` crashed the worker on its first message; ``inf`` never gave a killed
    worker's message back."""
    path = tmp_path / "kq.toml"
    path.write_text(SQLITE_VISIBILITY[table].format(value=value), encoding="utf-8")
    with pytest.raises(ConfigError, match=FINITE_TEXT) as caught, App(load_config(path)) as app:
        app.producer("jobs")
    assert f"key '{table}.visibility_timeout'" in str(caught.value)
    assert str(path) in str(caught.value)


# --- message fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("1e309"), 1e300, "5", True])
@pytest.mark.parametrize("name", ["ttl", "delay"])
def test_message_ttl_and_delay_must_be_finite(name: str, value: Any) -> None:
    with pytest.raises(MessageFormatError, match=rf"^{name} {FINITE_TEXT}"):
        Message(b"{}", **{name: value})


def test_message_ttl_and_delay_in_range_pass() -> None:
    message = Message(b"{}", ttl=MAX_SECONDS, delay=0)
    assert (message.ttl, message.delay) == (MAX_SECONDS, 0)
    with pytest.raises(MessageFormatError, match=r"ttl .* 0 \(excluded\)"):
        Message(b"{}", ttl=0)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300, -1.0])
def test_an_http_timeout_must_be_finite(value: float) -> None:
    with pytest.raises(MessageFormatError, match=rf"HTTP option 'timeout' {FINITE_TEXT}"):
        make_http_request("https://example.invalid/", {"timeout": value})


# --- the signed-at header ----------------------------------------------------------------------------

KEY = new_key()


def _signed_with(signed_at: str, key: str = KEY) -> Delivery:
    """A delivery whose ``kq-signed-at`` is ``signed_at``, with a signature that matches it."""
    message = Signer("k", key.encode()).sign(Message(encode_json("hello")), "jobs")
    headers = {**message.headers, SIGNED_AT: signed_at}
    fields = _signed_fields(message.message_id, "", message.content_type, headers, message.body)
    headers[SIGNATURE] = hmac.new(key.encode(), _canonical("jobs", fields), hashlib.sha256).hexdigest()
    return Delivery(
        body=message.body,
        content_type=message.content_type,
        headers=headers,
        routing_key="",
        message_id=message.message_id,
        queue="jobs",
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "1e300", "-1e300", "", "soon", "1" * 5000])
def test_a_signed_at_out_of_range_is_refused_with_a_signature_reason(value: str) -> None:
    from kq.core._errors import SignatureError

    verifier = Verifier({"k": KEY.encode()}, max_age=600)
    with pytest.raises(SignatureError) as caught:
        verifier.verify(_signed_with(value), ["jobs"])
    assert caught.value.reason == "bad-signature"
    assert "kq-signed-at" in str(caught.value)
    assert len(str(caught.value)) < 300
    verifier.verify(_signed_with(f"{time.time():.3f}"), ["jobs"])  # the same message, dated now, passes


@pytest.mark.parametrize("value", [math.nan, -1.0, 0.0])
def test_a_verifier_needs_a_max_age(value: float) -> None:
    with pytest.raises(ValueError, match=rf"max_age {FINITE_TEXT}"):
        Verifier({"k": KEY.encode()}, max_age=value)
    Verifier({"k": KEY.encode()}, max_age=math.inf)  # re-drive's "any age": allowed through the API


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 1e300])
def test_a_signer_needs_a_real_time(value: float) -> None:
    with pytest.raises(ValueError, match=rf"valid_from {FINITE_TEXT}"):
        Signer("k", KEY.encode()).sign(Message(b"{}"), "jobs", valid_from=value)


def test_signatures_from_a_configuration_with_max_age_in_range_still_work() -> None:
    config = parse_config({"signing": {"keys": {"k": KEY}, "max_age": 60}}, source="kq.toml")
    assert config.signing.max_age == 60.0


# --- retry policies, listeners, requeue delays --------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [{"delay": math.nan}, {"max_delay": math.inf}, {"multiplier": math.nan}, {"jitter": math.nan}],
    ids=lambda c: next(iter(c)),
)
def test_a_retry_policy_needs_finite_numbers(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=rf"{next(iter(changes))} {FINITE_TEXT}"):
        RetryPolicy(**changes)


def test_a_retry_delay_never_overflows() -> None:
    """2.0 ** 1024 raises OverflowError: the delay after the 1025th attempt used to crash."""
    policy = RetryPolicy(max_attempts=5000, delay=1.0, multiplier=2.0, max_delay=300.0, jitter=0.0)
    assert policy.delay_after(1100) == 300
    assert RetryPolicy(max_attempts=5000, delay=0.0, multiplier=2.0, max_delay=300.0).delay_after(2000) == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_the_requeue_listener_needs_a_finite_delay(value: float) -> None:
    with pytest.raises(ValueError, match=rf"delay {FINITE_TEXT}"):
        RequeueFailedCommands(delay=value)


@pytest.mark.parametrize(
    ("handler", "options"),
    [
        ("RequeueFailedCommands", {"delay": math.nan}),
        ("RequeueFailedCommands", {"max_attempts": math.inf}),
        ("Stopwatch", {"every": math.nan}),
        ("Monitor", {"preview": math.inf}),
    ],
)
def test_listener_options_must_be_finite(handler: str, options: dict[str, Any]) -> None:
    listener = {"handler": f"kq.core.listeners:{handler}", "event": "message_consumed", "options": options}
    app = App(parse_config({"listeners": [listener]}, source="/srv/kq.toml"))
    with pytest.raises(ConfigError, match=r"must be a (finite|whole) number between") as caught:
        _ = app.dispatcher
    assert "listeners[0].options" in str(caught.value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_requeue_delay_must_be_finite(value: float) -> None:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    driver.producer("q").send(Message(b"{}"))
    with driver.consumer("q") as consumer:
        delivery = consumer.receive(1)
        assert delivery is not None
        with pytest.raises(ValueError, match=rf"delay {FINITE_TEXT}"):
            consumer.reject(delivery, delay=value)
        consumer.ack(delivery)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300])
@pytest.mark.parametrize("field", ["time", "memory"])
def test_limits_refuse_what_is_not_finite(field: str, value: float) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=rf"{field} limit {FINITE_TEXT}"):
        Limits(**changes)


# --- durations with units ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        (" 5M ", 300.0),
    ],
)
def test_durations_are_read_with_units(text: str, seconds: float) -> None:
    from kq.core._numbers import parse_duration

    assert parse_duration(text) == seconds
    assert check_number(text, duration=True) == seconds


@pytest.mark.parametrize("text", ["", "x", "5x", "m5", "-5s", "5 m", "1h-30m", "5mm"])
def test_what_is_not_a_duration_says_how_to_write_one(text: str) -> None:
    from kq.core._numbers import parse_duration

    assert parse_duration(text) is None
    with pytest.raises(
        ValueError, match=r"must be a duration between 0 and \d+ \(seconds, or with a unit: 500ms"
    ):
        check_number(text, duration=True)


def test_a_duration_is_still_range_checked() -> None:
    with pytest.raises(ValueError, match="must be a duration between 0 and 60"):
        check_number("2m", maximum=60, duration=True)
    with pytest.raises(ValueError, match="must be a finite number"):
        check_number(float("nan"), duration=True)


def test_configuration_durations_take_units(tmp_path: Any) -> None:
    from kq.core import parse_config

    config = parse_config(
        {
            "drivers": {"db": {"type": "sqlite", "visibility_timeout": "5m", "poll_interval": "250ms"}},
            "default_driver": "db",
            "queues": {"jobs": {"handler_timeout": "1m30s", "retry": {"max_attempts": 3, "delay": "30s"}}},
            "console": {"timeout": "2h"},
            "signing": {"max_age": "1d"},
        },
        source="test",
        root=str(tmp_path),
    )
    assert config.queues["jobs"].handler_timeout == 90.0
    assert config.queues["jobs"].retry.delay == 30.0
    assert config.console.timeout == 7200.0
    assert config.signing.max_age == 86400.0
    from kq.core import App

    with App(config) as app:
        options = app.driver("db").options
        assert (options["visibility_timeout"], options["poll_interval"]) == (300.0, 0.25)


def test_a_configured_duration_that_is_not_one_names_the_key(tmp_path: Any) -> None:
    from kq.core import App, ConfigError, parse_config

    config = parse_config(
        {"drivers": {"db": {"type": "sqlite", "visibility_timeout": "5 minutes"}}, "default_driver": "db"},
        source="kq.toml",
        root=str(tmp_path),
    )
    with (
        pytest.raises(ConfigError, match=r"expected a duration .*'5 minutes'.*drivers.db.visibility_timeout"),
        App(config) as app,
    ):
        app.driver("db")


def test_worker_options_keep_a_duration_as_written() -> None:
    from kq.core._consume_options import check_worker_options, consume_arguments

    checked = check_worker_options(
        {"timeout": "1h", "grace": "30s", "messages": 5}, prefix="workers.w.options", source=None
    )
    arguments = consume_arguments(checked)
    assert "1h" in arguments
    assert "30s" in arguments
    with pytest.raises(ConfigError, match=r"workers.w.options.timeout"):
        check_worker_options({"timeout": "soon"}, prefix="workers.w.options", source=None)
