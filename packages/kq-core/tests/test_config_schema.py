"""One validator for every section: unknown keys name the key, the file and the closest known key."""

from __future__ import annotations

from typing import Any

import pytest

from kq.core import ConfigError, consume_arguments, parse_config
from kq.core._config import Config
from kq.core._consume_options import CONSUME_OPTIONS, WORKER_OPTIONS, check_worker_options
from kq.core._options import SIMILAR, closest
from kq.core._spec import QueueSpec

SRC = "/srv/app/kq.toml"
LISTENER = {"event": "message_sent", "handler": "m:f"}


@pytest.mark.parametrize(
    ("data", "key", "closest"),
    [
        ({"queus": {}}, "queus", "queues"),
        ({"console": {"timout": 3}}, "console.timout", "timeout"),
        ({"signing": {"max_ag": 3}}, "signing.max_ag", "max_age"),
        ({"workers": {"w": {"cont": 2}}}, "workers.w.cont", "count"),
        ({"workers": {"w": {"options": {"mesages": 2}}}}, "workers.w.options.mesages", "messages"),
        ({"listeners": [{**LISTENER, "evnt": "x"}]}, "listeners[0].evnt", "event"),
        ({"queues": {"q": {"consumerr": "x"}}}, "queues.q.consumerr", "consumer"),
        ({"queues": {"q": {"routing_key": "a.b"}}}, "queues.q.routing_key", "routing_keys"),
        ({"queues": {"q": {"retry": {"max_attemps": 2}}}}, "queues.q.retry.max_attemps", "max_attempts"),
        ({"drivers": {"d": {"type": "sqlite", "types": "x"}}}, "drivers.d.types", "type"),
    ],
)
def test_unknown_keys_say_what_was_meant(data: dict[str, Any], key: str, closest: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source=SRC)
    assert (info.value.key, info.value.source) == (key, SRC)
    assert "unknown" in str(info.value)
    assert f"did you mean '{closest}'?" in str(info.value)


KNOWN = ("type", "timeout", "max_age", "count", "consumer", "routing_keys", "max_attempts", "queues", "ab")


@pytest.mark.parametrize(
    "name",
    [
        *("url", "path", "typ", "tpye", "types", "timout", "age_max", "cnt", "consumerr", "routing"),
        *("a", "ba", "maxage"),
    ],
)
def test_closest_picks_what_difflib_would(name: str) -> None:
    """Leaving out the names too unlike to qualify changes nothing (they share too few letters)."""
    import difflib

    expected = difflib.get_close_matches(name, list(KNOWN), n=1, cutoff=SIMILAR)
    assert closest(name, KNOWN) == (expected[0] if expected else None)


def test_a_key_far_from_every_known_one_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"console": {"shell": "sh"}}, source=SRC)
    assert "did you mean" not in str(info.value)
    assert "accepted: callable, cwd, env, inherit_env, prefix, timeout" in str(info.value)


def test_other_queue_and_driver_keys_are_left_to_the_driver() -> None:
    config = parse_config(
        {"drivers": {"d": {"type": "sqlite", "busy_timeout": 3}}, "queues": {"q": {"visibility_timeout": 2}}}
    )
    assert dict(config.drivers["d"].options) == {"busy_timeout": 3}
    assert dict(config.queues["q"].options) == {"visibility_timeout": 2}


def test_worker_options_are_checked_against_the_declaration() -> None:
    assert set(WORKER_OPTIONS) == {
        "messages",
        "timeout",
        "memory_limit",
        "failure_limit",
        "routing_key",
        "driver",
        "prefetch",
        "poll_interval",
        "grace",
        "summary_interval",
        "handler_timeout",
    }
    options = {"messages": 5, "memory_limit": 256, "poll_interval": 0.5, "routing_key": "a.#"}
    assert check_worker_options(options, prefix="workers.w.options", source=SRC) == options
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": "5"}, r"wrong type \(str\)"),
        ({"messages": True}, r"wrong type \(bool\)"),
        ({"prefetch": 0}, "prefetch"),
        ({"poll_interval": 0.001}, "poll_interval"),
        ({"label": "x"}, "unknown kq consume option 'label'"),
    ]
    for bad, words in cases:
        with pytest.raises(ConfigError, match=words):
            check_worker_options(bad, prefix="workers.w.options", source=SRC)


def test_the_worker_command_line_comes_from_the_declaration() -> None:
    assert consume_arguments({"messages": 5, "memory_limit": 256, "routing_key": "a.#"}) == [
        "--messages",
        "5",
        "--memory-limit",
        "256",
        "--routing-key",
        "a.#",
    ]
    assert consume_arguments({"without_signals": True, "checks": ("m:a", "m:b"), "label": None}) == [
        "--without-signals",
        "--check",
        "m:a",
        "--check",
        "m:b",
    ]
    assert consume_arguments({"without_signals": False}) == []
    worker = parse_config({"workers": {"w": {"options": {"grace": 2.5, "prefetch": 4}}}}).workers["w"]
    assert worker.consume_arguments() == ["--grace", "2.5", "--prefetch", "4"]
    assert all(option.long.startswith("--") for option in CONSUME_OPTIONS.values())


def _queue(consumer: str, require_signature: bool | None = None) -> QueueSpec:
    return QueueSpec(name="q", driver="default", consumer=consumer, require_signature=require_signature)


@pytest.mark.parametrize(
    ("consumer", "required"),
    [
        ("console_command", True),
        ("inprocess_console_command", True),
        ("service", True),
        ("http", False),
        ("noop", False),
        ("xmlrpc", False),  # as the default [signing] require list said before handlers declared it
        ("some.module:handler", False),  # not imported for this: the settings decide
        ("not_installed", True),  # unknown here: refusing is the safe side
    ],
)
def test_handlers_declare_whether_they_require_signatures(consumer: str, required: bool) -> None:
    assert Config().signature_required(_queue(consumer)) is required


def test_signing_require_and_the_queue_override_the_declarations() -> None:
    config = parse_config({"signing": {"require": ["http"]}})
    assert config.signing.require == ("http",)
    assert config.signature_required(_queue("http"))
    assert not config.signature_required(_queue("console_command"))
    assert not config.signature_required(_queue("console_command", require_signature=False))
    assert Config().signature_required(_queue("noop", require_signature=True))
    assert parse_config({}).signing.require is None


def test_every_consume_option_with_a_target_sets_an_argument_of_the_loop_or_a_limit() -> None:
    """A declared option's target names a real keyword of App.consume_loop or field of Limits, so that
    adding an option cannot silently do nothing."""
    import dataclasses
    import inspect

    from kq.core import CONSUME_OPTIONS, App, Limits

    loop_keywords = set(inspect.signature(App.consume_loop).parameters) - {"self", "queue"}
    limit_fields = {field.name for field in dataclasses.fields(Limits)}
    for option in CONSUME_OPTIONS.values():
        kind, _, argument = option.target.partition(".")
        if not option.target:
            continue
        assert kind in {"loop", "limits"}, option
        assert argument in (loop_keywords if kind == "loop" else limit_fields), option


def test_loop_arguments_turn_option_values_into_the_loops_arguments() -> None:
    from kq.core import Limits, loop_arguments

    arguments = loop_arguments(
        {
            "messages": 5,
            "timeout": 2.5,
            "memory_limit": 0.0,
            "failure_limit": 1,
            "checks": (),
            "without_signals": True,
            "routing_key": None,
            "prefetch": 3,
            "grace": 1.0,
            "metrics_port": 9100,
        }
    )
    assert arguments == {
        "limits": Limits(messages=5, time=2.5, memory=0.0, failures=1, checks=()),
        "handle_signals": False,
        "prefetch": 3,
        "grace": 1.0,
    }
