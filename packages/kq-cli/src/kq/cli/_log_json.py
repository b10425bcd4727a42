"""``--log-format json``: one JSON object per log line, for log shippers (journald, Loki, CloudWatch).

Each line is an object with ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message`` (the formatted text, as the text format shows it) and ``pid``; ``queue`` and ``message_id``
when the record concerns one; ``exception`` (the formatted traceback) when it carries one; and every
field an application passed with ``extra={...}``.

kq's log lines name their queue and message in a fixed form, ``"queue %s message %s: ..."`` or
``"queue %s: ..."``, so ``queue`` and ``message_id`` are read from the record's arguments when the
record does not carry them as attributes (``extra={"queue": ..., "message_id": ...}``), which win.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

#: The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)

#: How kq's own log lines begin when they concern a queue, or a message of a queue.
_SUBJECT = re.compile(r"queue %s(?P<message> message %s)?[:;,\s]")


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON (see the module's documentation for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line (newlines in the message are escaped by JSON)."""
        document: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        document.update(_subject(record))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def _utc(created: float) -> str:
    whole = int(created)
    millis = int((created - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _subject(record: logging.LogRecord) -> dict[str, Any]:
    """``queue`` and ``message_id`` from the arguments of a ``"queue %s message %s: ..."`` line."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple) or not record.args:
        return {}
    match = _SUBJECT.match(record.msg)
    if match is None:
        return {}
    subject = {"queue": str(record.args[0])}
    if match.group("message") and len(record.args) > 1:
        subject["message_id"] = str(record.args[1])
    return subject
