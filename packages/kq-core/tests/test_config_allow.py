"""Open ``[allow]`` sections: read by the handler that declares them, checked for shape and typos."""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

from kq.core import App, ConfigError, parse_config
from kq.core._allow import AllowList, AllowMap, AllowSettings, declared_sections
from kq.core._message import Delivery
from kq.core.handlers._base import Handler, HandlerContext

SRC = "/etc/kq/kq.toml"


class ScriptHandler(Handler):
    """A handler from outside kq-core with its own [allow] section."""

    allow_section: ClassVar[str | None] = "scripts"

    def __init__(self, allowed: AllowList) -> None:
        self.allowed = allowed

    @classmethod
    def from_context(cls, context: HandlerContext) -> Handler:
        return cls(context.config.allow.allow_list("scripts"))

    def consume(self, body: Any, delivery: Delivery) -> Any:
        return self.allowed.allows(body)


@pytest.fixture
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> str:
    """The handler above, importable as ``kqtest_allow_plugin:ScriptHandler``."""
    module = types.ModuleType("kqtest_allow_plugin")
    module.ScriptHandler = ScriptHandler  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return f"{module.__name__}:ScriptHandler"


def _app(allow: dict[str, Any], consumer: str = "console_command") -> App:
    data = {
        "drivers": {"mem": {"type": "memory"}},
        "default_driver": "mem",
        "queues": {"q": {"consumer": consumer}},
        "allow": allow,
    }
    return App(parse_config(data, source=SRC))


def test_a_plugin_section_is_read_by_its_handler(plugin_module: str) -> None:
    with _app({"scripts": ["deploy", "re:report_.*"]}, consumer=plugin_module) as app:
        handler = app.handler("q")
        assert isinstance(handler, ScriptHandler)
        assert handler.allowed.allows("report_daily")
        assert not handler.allowed.allows("rm")


def test_sections_take_their_shape_from_the_file() -> None:
    allow = parse_config({"allow": {"things": ["a"], "targets": {"t": ["m", "re:x.*"]}}}, source=SRC).allow
    assert allow.allow_list("things").allows("a")
    assert allow.allow_map("targets").allows("t", "xyz")
    assert not allow.allow_list("absent")
    assert not allow.allow_map("absent")
    with pytest.raises(ConfigError) as info:
        allow.allow_map("things")
    assert (info.value.key, info.value.source) == ("allow.things", SRC)
    with pytest.raises(ConfigError, match="it is a table") as info:
        allow.allow_list("targets")
    assert info.value.key == "allow.targets"


def test_a_plugin_section_is_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"exponential.*allow\.targets\.t"):
        parse_config({"allow": {"targets": {"t": ["re:(a+)+b"]}}}, source=SRC)
    with pytest.raises(ConfigError, match=r"list of names.*allow\.things\.x") as info:
        parse_config({"allow": {"things": {"x": "m"}}}, source=SRC)
    assert info.value.key == "allow.things.x"


def test_defaults_allow_echoback_only() -> None:
    assert AllowSettings() == parse_config({"queues": {}}).allow
    from kq.core._config import Config

    assert Config().allow.allow_list("commands").entries == ("echoback",)


@pytest.mark.parametrize(
    ("consumer", "typo", "section"),
    [
        ("console_command", "comands", "commands"),
        ("inprocess_console_command", "command", "commands"),
        ("service", "service", "services"),
        ("http", "url", "urls"),
    ],
)
def test_a_near_miss_of_the_handlers_section_is_an_error(consumer: str, typo: str, section: str) -> None:
    value: Any = {"m": ["f"]} if section == "services" else ["x"]
    with _app({typo: value}, consumer=consumer) as app, pytest.raises(ConfigError) as info:
        app.handler("q")
    assert (info.value.key, info.value.source) == (f"allow.{typo}", SRC)
    assert f"did you mean '{section}'?" in str(info.value)
    assert "unknown key" in str(info.value)


def test_a_section_another_handler_declares_is_no_typo() -> None:
    assert {"commands", "services", "urls", "xmlrpc"} <= declared_sections()
    # "urls" is read by the HTTP handler: close to nothing a console worker reads, and declared anyway.
    with _app({"urls": ["example.com"], "services": {"m": ["f"]}}) as app:
        assert not app.handler("q").allowed  # type: ignore[attr-defined]


def test_a_section_nobody_reads_that_is_not_a_near_miss_passes() -> None:
    with _app({"scripts": ["x"], "commands": ["echoback"]}) as app:
        assert app.handler("q").allowed.allows("echoback")  # type: ignore[attr-defined]


def test_allow_map_keeps_its_limits() -> None:
    allow = parse_config({"allow": {"xmlrpc": {"re:https://.*": ["m"]}}}).allow
    long_url = "https://" + "a" * 300
    assert not allow.allow_map("xmlrpc").allows(long_url, "m")
    assert allow.allow_map("xmlrpc", max_target=2048).allows(long_url, "m")
    assert isinstance(allow.allow_map("xmlrpc"), AllowMap)
