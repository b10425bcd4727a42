"""An execution type added from outside kq-core: one module and one ``kq.handlers`` entry point.

The distribution is written to a temporary folder (a module and a ``.dist-info`` folder declaring the
entry point) and put on ``sys.path``, as ``pip install`` would: kq-core finds its handler by name,
reads the ``[allow]`` section the handler declares, and consumes its producer's messages in
``App.consume_loop``, with no kq-core edit. ``docs/execution-types.md`` shows the same module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import App, Limits, MessageFormatError, parse_config
from kq.core._registry import clear_cache, handler_names
from kq.core.listeners import Accumulator

# The whole execution type, as a third party writes it (docs/execution-types.md walks through it).
SHOUT = """
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kq.core import Delivery, Message, MessageFormatError, NotAllowedError
from kq.core.handlers import Handler, HandlerContext, MessageProducer, parse_object


@dataclass(frozen=True)
class ShoutCall:
    word: str
    times: int = 1

    def to_body(self) -> dict[str, Any]:
        return {"word": self.word, "times": self.times}


def make_shout(word: str, times: int = 1) -> ShoutCall:
    if not isinstance(word, str) or not word.isalpha():
        raise MessageFormatError("'word' must be letters only")
    if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= 3:
        raise MessageFormatError("'times' must be 1, 2 or 3")
    return ShoutCall(word, times)


def parse_shout(body: Any) -> ShoutCall:
    body = parse_object(body, "shout", ("word", "times"))
    return make_shout(body.get("word"), body.get("times", 1))


class ShoutHandler(Handler):
    kind = "shout"
    allow_section: ClassVar[str | None] = "shouts"

    def __init__(self, allowed: Any) -> None:
        self.allowed = allowed

    @classmethod
    def from_context(cls, context: HandlerContext) -> ShoutHandler:
        return cls(context.config.allow.allow_list("shouts"))

    def consume(self, body: Any, delivery: Delivery) -> str:
        call = parse_shout(body)
        if not self.allowed.allows(call.word):
            raise NotAllowedError(f"{call.word!r} is not in [allow] shouts")
        return " ".join([call.word.upper()] * call.times)


class ShoutProducer(MessageProducer):
    def build(
        self,
        word: str,
        times: int = 1,
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        call = make_shout(word, times)
        key = f"shout.{call.word}" if routing_key is None else routing_key
        return self.json_message(call.to_body(), key, ttl=ttl, delay=delay, headers=headers)
"""

ENTRY_POINTS = "[kq.handlers]\nshout = kqtest_shout:ShoutHandler\n"


@pytest.fixture
def shout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The installed ``kqtest-shout`` distribution's module."""
    (tmp_path / "kqtest_shout.py").write_text(SHOUT)
    dist_info = tmp_path / "kqtest_shout-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: kqtest-shout\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_cache()
    try:
        yield importlib.import_module("kqtest_shout")
    finally:
        clear_cache()
        sys.modules.pop("kqtest_shout", None)


def _app(tmp_path: Path) -> App:
    config = parse_config(
        {
            "drivers": {"mem": {"type": "memory"}},
            "default_driver": "mem",
            "queues": {"loud": {"consumer": "shout"}},
            "allow": {"shouts": ["hello", "re:h[a-z]"]},
        },
        source=str(tmp_path / "kq.toml"),
        root=str(tmp_path),
    )
    return App(config)


def test_a_type_from_another_distribution_is_found_by_its_entry_point(shout: Any) -> None:
    assert "shout" in handler_names()


def test_a_type_from_another_distribution_is_produced_and_consumed(shout: Any, tmp_path: Path) -> None:
    accumulator = Accumulator()
    with _app(tmp_path) as app:
        app.dispatcher.add_listener("message_consumed", accumulator)
        app.dispatcher.add_listener("message_consumption_failed", accumulator)
        producer = app.producer_of(shout.ShoutProducer, "loud")
        sent = producer.publish("hello", 2)
        assert sent.routing_key == "shout.hello"
        producer.publish_batch([{"word": "hi"}, {"word": "nope", "times": None}, "ho"], ttl=60)
        loop = app.consume_loop("loud", limits=Limits(messages=4))
        assert isinstance(loop.handler, shout.ShoutHandler)
        loop.run()
    assert accumulator.results == ["HELLO HELLO", "HI", "HO"]
    [failed] = accumulator.failures
    assert failed.reason == "not-allowed"
    assert "'nope' is not in [allow] shouts" in str(failed.error)


def test_its_producer_validates_with_its_own_rules(shout: Any, tmp_path: Path) -> None:
    with _app(tmp_path) as app:
        producer = app.producer_of(shout.ShoutProducer, "loud")
        with pytest.raises(MessageFormatError, match="letters only"):
            producer.publish("two words")
        with pytest.raises(MessageFormatError, match="'times' must be"):
            producer.publish_batch([{"word": "ok"}, {"word": "ok", "times": 9}])
        assert app.driver().queue_manager().info("loud")["messages"] == 0
