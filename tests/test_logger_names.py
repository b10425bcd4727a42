"""Logger names users can configure: ``kq.core.loop``, not ``kq.core._loop``.

Modules are private (``_loop.py``) but their loggers are public names: every module of every
distribution (and the example driver) names its logger ``__name__`` without the leading underscores.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("examples/*/src/**/*.py")])
PUBLIC = 'logging.getLogger(__name__.replace("._", "."))'


def test_every_module_logger_has_a_public_name() -> None:
    assert SOURCES, "no sources found"
    private = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"getLogger\(__name__\)", line)
    ]
    assert private == [], f"use {PUBLIC}: {private}"


def test_literal_logger_names_have_no_private_part() -> None:
    literal = [
        (f"{path.relative_to(ROOT)}:{number}", name)
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in re.findall(r'getLogger\("([^"]+)"\)', line)
        if "._" in name or name.startswith("_")
    ]
    assert literal == []


def test_the_rule_maps_private_modules_to_public_names() -> None:
    names = {
        "kq.core._loop": "kq.core.loop",
        "kq.core.handlers._console": "kq.core.handlers.console",
        "kq.drivers.rabbitmq._consumer": "kq.drivers.rabbitmq.consumer",
        "kq.core.listeners": "kq.core.listeners",
    }
    for module, public in names.items():
        assert module.replace("._", ".") == public
