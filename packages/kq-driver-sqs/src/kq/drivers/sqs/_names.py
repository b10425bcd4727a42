"""Logical queue names to SQS queue names.

SQS accepts 1 to 80 letters, digits, ``-`` and ``_`` (a FIFO queue's name ends in ``.fifo``, which
counts), so kq's dotted names need a mapping: ``demo.failed``, the dead-letter queue of ``demo``, cannot
exist as it is. The mapping, applied after ``queue_prefix``:

- letters, digits, ``-`` and ``_`` stay as they are, so an SQS name is its own logical name;
- a logical name ending in ``.fifo`` keeps that suffix (and is a FIFO queue), and a FIFO queue's name
  gets it;
- every other ``.`` becomes ``-`` (``demo.failed`` -> ``demo-failed``);
- any other character becomes ``_`` followed by its code point in hex and ``_`` (``a:b`` -> ``a_3a_b``);
- a name longer than 80 characters is cut and ends with ``-`` and 8 hex digits of a hash of the whole.

The mapping is not one-to-one (``demo.failed`` and ``demo-failed`` meet): the driver refuses two logical
queues that would share one SQS queue.
"""

from __future__ import annotations

import hashlib
import re

#: Longest SQS queue name, the ``.fifo`` suffix included.
MAX_NAME = 80
FIFO_SUFFIX = ".fifo"
_KEPT = re.compile(r"[A-Za-z0-9_-]")


def is_fifo_name(logical: str) -> bool:
    """Whether a logical name asks for a FIFO queue by its ``.fifo`` suffix."""
    return logical.endswith(FIFO_SUFFIX) and len(logical) > len(FIFO_SUFFIX)


def sqs_queue_name(logical: str, *, prefix: str = "", fifo: bool = False) -> str:
    """The SQS queue name of logical queue ``logical`` (see the module docstring)."""
    stem = logical[: -len(FIFO_SUFFIX)] if is_fifo_name(logical) else logical
    fifo = fifo or is_fifo_name(logical)
    mapped = "".join(_map_character(c) for c in prefix + stem)
    suffix = FIFO_SUFFIX if fifo else ""
    room = MAX_NAME - len(suffix)
    if len(mapped) > room:
        digest = hashlib.sha256(logical.encode()).hexdigest()[:8]
        mapped = f"{mapped[: room - 9]}-{digest}"
    return mapped + suffix


def logical_name(sqs_name: str, *, prefix: str = "") -> str | None:
    """The logical name that maps to ``sqs_name`` as it is (``None`` when it lacks ``prefix``)."""
    if not sqs_name.startswith(prefix):
        return None
    return sqs_name[len(prefix) :] or None


def _map_character(character: str) -> str:
    if _KEPT.match(character):
        return character
    if character == ".":
        return "-"
    return f"_{ord(character):x}_"
