"""A configuration nested too deeply is a configuration error naming the file, not a RecursionError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kq.core import ConfigError, load_config, parse_config


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("kq.toml", "a = " + "[" * 50_000 + "]" * 50_000 + "\n"),
        ("kq.toml", "a = " + "{b = " * 5_000 + "1" + "}" * 5_000 + "\n"),
        ("pyproject.toml", "[tool.kq]\na = " + "[" * 50_000 + "]" * 50_000 + "\n"),
    ],
    ids=["arrays", "inline-tables", "pyproject"],
)
def test_a_file_nested_too_deeply(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_document_nested_too_deeply() -> None:
    """What tomllib parsed, or a caller built, can be deeper than the expansion of ${VAR} recurses."""
    data: Any = "x"
    for _ in range(50_000):
        data = [data]
    with pytest.raises(ConfigError, match=r"nested too deeply \(in /etc/kq\.toml\)"):
        parse_config({"signing": {"require": data}}, source="/etc/kq.toml")
