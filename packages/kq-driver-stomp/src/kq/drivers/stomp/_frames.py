"""Reading the frames the broker sends, on stomp.py's receiver thread, at a fraction of stomp.py's cost.

stomp.py cuts the byte stream into frames (``content-length`` honoured) and then parses each one with
regular expressions, one ``re.sub`` call per header name and value to undo the STOMP 1.2 escapes. On a
consumer that parse is most of the receiver thread's work per message, and it competes for the CPU and
the GIL with the thread handling the messages (and, on a small machine, with the broker).
:func:`parse_frame` reads a frame into the same ``stomp.utils.Frame`` as stomp.py's ``parse_frame``
(command, headers, body; held equal to it by a test on generated frames), with plain string methods,
and unescapes only the headers holding a backslash.

:func:`install` makes one connection's transport use it. It replaces the transport's private
``__read_frames`` step (stomp.py >= 9), which reads the frames and hands each one to
``process_frame``, so listeners, receipts, heart-beats and disconnection stay stomp.py's. A stomp.py
without that step (8.x parses inside its receiver loop) keeps its own parsing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import stomp.utils  # type: ignore[import-untyped,unused-ignore]

logger = logging.getLogger(__name__.replace("._", "."))
#: stomp.py's logger: at DEBUG, frames go through its own process_frame, which logs each one.
_stomp_log = logging.getLogger("stomp.py")

Frame = Any  # stomp.utils.Frame

#: What undoes a STOMP 1.2 header escape; an unknown escape stays as it is (as stomp.py leaves it).
_UNESCAPES = {"\\r": "\r", "\\n": "\n", "\\c": ":", "\\\\": "\\"}
_ESCAPE = re.compile(r"\\.")

#: The private steps of stomp.py's ``BaseTransport`` that :func:`install` relies on (name-mangled).
_READ = "_BaseTransport__read"
_READ_FRAMES = "_BaseTransport__read_frames"


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda match: _UNESCAPES.get(match.group(0), match.group(0)), text)


def parse_frame(data: bytes) -> Frame | None:
    """The frame in ``data`` (one frame's bytes, without its NUL), as stomp.py's ``parse_frame`` reads
    it: the header block ends at the first blank line (LF or CRLF); lines end with LF or CRLF; blank
    lines before the command are skipped (``None`` when nothing else is there); a header line is
    ``name:value`` with a non-empty name, and the first of repeated names wins; names and values are
    unescaped; the body is the bytes after the blank line."""
    lf = data.find(b"\n\n")
    crlf = data.find(b"\r\n\r\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        preamble, body = data[:lf], data[lf + 2 :]
    elif crlf >= 0:
        preamble, body = data[:crlf], data[crlf + 4 :]
    else:
        preamble, body = data, b""
    lines = preamble.decode("utf-8", errors="replace").split("\n")
    last = len(lines) - 1
    first = 0
    while first <= last and (lines[first] == "" or (first < last and lines[first] == "\r")):
        first += 1
    if first > last:
        return None
    command = lines[first]
    if first < last and command.endswith("\r"):
        command = command[:-1]
    headers: dict[str, str] = {}
    for index in range(first + 1, last + 1):
        line = lines[index]
        if index < last and line.endswith("\r"):
            line = line[:-1]
        name, colon, value = line.partition(":")
        if not colon or not name:
            continue
        if "\\" in name:
            name = _unescape(name)
        if name not in headers:
            headers[name] = _unescape(value) if "\\" in value else value
    return stomp.utils.Frame(command, headers, body)


def install(transport: Any) -> bool:
    """Make ``transport`` (a stomp.py ``Transport`` not started yet) parse incoming frames with
    :func:`parse_frame`; ``False`` (and nothing changed) where this stomp.py has no step to replace or
    decodes bodies (``auto_decode``)."""
    read: Callable[[], list[bytes]] | None = getattr(transport, _READ, None)
    if read is None or not callable(getattr(transport, _READ_FRAMES, None)):
        logger.debug("stomp.py %s has no frame-reading step to replace; it parses frames itself", _version())
        return False
    if getattr(transport, "_BaseTransport__auto_decode", True):
        return False
    heartbeat = stomp.utils.HEARTBEAT_FRAME
    process = transport.process_frame
    listeners: dict[str, Any] = transport.listeners

    def read_frames() -> None:
        # What stomp.py's step does (a lone LF is a heart-beat), with the cheaper parser; MESSAGE frames
        # go to the listeners as stomp.py's process_frame hands them over, in one pass.
        for data in read():
            if data == b"\n":
                process(heartbeat, data)
                continue
            frame = parse_frame(data)
            if frame is None:
                continue
            if frame.cmd == "MESSAGE" and not _stomp_log.isEnabledFor(logging.DEBUG):
                deliver(frame, [listener for _, listener in sorted(listeners.items())])
            else:
                process(frame, data)

    setattr(transport, _READ_FRAMES, read_frames)
    return True


def deliver(frame: Frame, listeners: list[Any]) -> None:
    """Hand a MESSAGE frame to ``listeners`` (in the order of their names) as stomp.py's
    ``process_frame`` does: every ``on_before_message``, then every ``on_message``. stomp.py takes its
    listener lock, sorts them and looks each method up by name twice per frame; this does it once."""
    for listener in listeners:
        before = getattr(listener, "on_before_message", None)
        if before is not None:
            before(frame)
    for listener in listeners:
        on_message = getattr(listener, "on_message", None)
        if on_message is not None:
            on_message(frame)


def _version() -> str:
    return str(getattr(stomp, "__version__", "?"))
