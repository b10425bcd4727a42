"""The API reference (docs/api/*.md) shows every public name of the four public surfaces, and no other.

Each page lists its names with mkdocstrings directives (``::: kq.core.App``) or, for names documented on
another page, links (``[`Message`](core.md#kq.core.Message)``); a name added to a module's ``__all__``
without a place on its page fails here instead of silently missing from the site. The modules' export
lists are read from their source (``__all__`` and the lazy-export tables), so nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"
#: Module -> (its source, its page).
SURFACES = {
    "kq.core": ("packages/kq-core/src/kq/core/__init__.py", "core.md"),
    "kq.core.driver": ("packages/kq-core/src/kq/core/driver.py", "driver.md"),
    "kq.core.testing": ("packages/kq-core/src/kq/core/testing/__init__.py", "testing.md"),
    "kq.cli.plugin": ("packages/kq-cli/src/kq/cli/plugin.py", "cli-plugin.md"),
}
#: Names that are public but not API objects worth a section.
NOT_RENDERED = {"__version__"}


def exported(source: str) -> set[str]:
    """The names in the module's ``__all__``."""
    tree = ast.parse((ROOT / source).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return {str(name) for name in value}
    raise AssertionError(f"{source} has no __all__")


def documented(module: str, page: str) -> set[str]:
    """The names of ``module`` the page renders (``::: module.Name``) or links to on another page."""
    text = (API / page).read_text(encoding="utf-8")
    names = set(re.findall(rf"^::: {re.escape(module)}\.(\w+)\s*$", text, flags=re.MULTILINE))
    names |= set(re.findall(r"\[`(\w+)`\]\([\w.-]+\.md#[\w.]+\)", text))
    return names


@pytest.mark.parametrize("module", sorted(SURFACES))
def test_each_public_name_has_a_place_in_the_api_reference(module: str) -> None:
    source, page = SURFACES[module]
    expected = exported(source) - NOT_RENDERED
    found = documented(module, page)
    missing, unknown = sorted(expected - found), sorted(found - expected)
    assert found == expected, f"docs/api/{page}: missing {missing}; not in {module}.__all__ {unknown}"


def test_links_to_names_on_other_pages_point_at_rendered_names() -> None:
    rendered = {
        f"{module}.{name}" for module, (_, page) in SURFACES.items() for name in documented(module, page)
    }
    for page in API.glob("*.md"):
        for target in re.findall(r"\]\([\w.-]+\.md#([\w.]+)\)", page.read_text(encoding="utf-8")):
            assert target in rendered, f"{page.name} links to {target}, which no page renders"
