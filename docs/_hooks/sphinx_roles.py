"""A griffe extension for the API reference: kq's docstrings are Google style with Sphinx roles.

``:class:`App``` and ``:func:`~kq.core._options.resolve_options``` become code spans (the name as
Sphinx would show it: the last part when the target starts with ``~``), and a paragraph ending in
``::`` before an indented literal block ends in ``:`` (the block itself is already Markdown code).
Only the text the site renders changes; the sources keep their roles for ``help()`` and IDEs.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const|term):`(~?)([^`]+)`")
_LITERAL_INTRO = re.compile(r"(\S)::$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    name = target.rsplit(".", 1)[-1] if short else target
    return f"`{name}`"


def markdown(text: str) -> str:
    """``text`` (a docstring) with its Sphinx roles and ``::`` literal introductions in Markdown."""
    return _LITERAL_INTRO.sub(r"\1:", _ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrites each docstring as :func:`markdown` says, once the object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
