"""The prefetch a worker takes when nobody says: the handler's own (1 for console commands and HTTP
calls, 16 for in-process callables, services and noop), and what was asked for otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from kq.core import App, Handler, parse_config


def _app(tmp_path: Path, consumer: str) -> App:
    config = parse_config(
        {
            "default_driver": "mem",
            "drivers": {"mem": {"type": "memory"}},
            "queues": {"jobs": {"consumer": consumer}},
            "allow": {
                "commands": ["echoback"],
                "urls": ["https://example.com/"],
                "services": {"os": ["getcwd"]},
            },
        },
        source="test",
        root=str(tmp_path),
    )
    return App(config)


@pytest.mark.parametrize(
    ("consumer", "prefetch"),
    [
        ("console_command", 1),
        ("forked_console_command", 1),
        ("inprocess_console_command", 1),
        ("http", 1),
        ("service", 16),
        ("noop", 16),
        ("os:getcwd", 16),  # a module:function handler
    ],
)
def test_the_handler_decides_when_nobody_says(tmp_path: Path, consumer: str, prefetch: int) -> None:
    with _app(tmp_path, consumer) as app:
        loop = app.consume_loop("jobs", handle_signals=False)
        try:
            assert loop.prefetch == prefetch
        finally:
            loop.handler.close()


def test_what_is_asked_for_wins(tmp_path: Path) -> None:
    with _app(tmp_path, "noop") as app:
        assert app.consume_loop("jobs", prefetch=1, handle_signals=False).prefetch == 1
    with _app(tmp_path, "console_command") as app:
        loop = app.consume_loop("jobs", prefetch=8, handle_signals=False)
        assert loop.prefetch == 8
        loop.handler.close()


def test_a_handler_of_ones_own_takes_one_unless_it_says() -> None:
    class Quick(Handler):
        prefetch = 32

        def consume(self, body: object, delivery: object) -> None:
            return None

    class Plain(Handler):
        def consume(self, body: object, delivery: object) -> None:
            return None

    assert (Quick.prefetch, Plain.prefetch) == (32, 1)
