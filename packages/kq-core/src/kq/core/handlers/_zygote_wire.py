"""The forked mode's wire format: length-prefixed JSON frames on a Unix stream socket.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object). A frame may carry
file descriptors (``SCM_RIGHTS``) with its first bytes: the worker hands the zygote the write ends of a
command's stdout and stderr pipes that way. Both sides are kq; nothing else speaks this format.

Worker to zygote: ``{"path": [...]}`` once (the worker's ``sys.path``), then ``{"run": argv, "env":
{...}}`` with two descriptors, and ``{"kill": true}`` while a command runs. Zygote to worker: ``{"ready":
pid}`` or ``{"error": text}`` after importing the entry point, then per command ``{"pid": n}`` (or
``{"error": text}`` when it cannot fork) and ``{"exit": code}`` once the child has been reaped.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
#: Largest frame accepted: far above the largest valid command (1,000 items of 64 KiB), far below what
#: a corrupted length would ask for.
MAX_FRAME = 256 * 1024 * 1024


class WireError(Exception):
    """The other side closed the socket or sent something that is not a frame."""


def encode(payload: dict[str, Any]) -> bytes:
    """``payload`` as one frame."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


def send(sock: socket.socket, payload: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send ``payload`` as one frame, with ``fds`` attached to its first bytes."""
    frame = encode(payload)
    sent = socket.send_fds(sock, [frame], fds) if fds else 0
    sock.sendall(frame[sent:])


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """Read one frame (blocking) and the descriptors that came with it; ``None`` at end of stream.

    Raises:
        WireError: the stream ended inside a frame, or the frame is not a JSON object.
    """
    fds: list[int] = []
    header = _read(sock, _HEADER.size, fds)
    if not header:
        return None, fds
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise WireError(f"frame of {length} bytes announced")
    return decode(_read(sock, length, fds, partial_ok=False)), fds


def decode(data: bytes) -> dict[str, Any]:
    """A frame's JSON body (``WireError`` if it is not an object)."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise WireError("a frame must hold a JSON object")
    return payload


class FrameBuffer:
    """Frames reassembled from whatever ``recv`` returned, for a reader that must not block."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._data += data

    def next(self) -> dict[str, Any] | None:
        """The next complete frame, or ``None`` until one has fully arrived."""
        if len(self._data) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._data)
        if length > MAX_FRAME:
            raise WireError(f"frame of {length} bytes announced")
        end = _HEADER.size + length
        if len(self._data) < end:
            return None
        payload = decode(bytes(self._data[_HEADER.size : end]))
        del self._data[:end]
        return payload


def _read(sock: socket.socket, size: int, fds: list[int], *, partial_ok: bool = True) -> bytes:
    """Exactly ``size`` bytes (with any descriptors), or ``b""`` if the stream ends before the first."""
    data = bytearray()
    while len(data) < size:
        chunk, received, _, _ = socket.recv_fds(sock, size - len(data), 4)
        fds.extend(received)
        if not chunk:
            if not data and partial_ok:
                return b""
            raise WireError("the stream ended inside a frame")
        data += chunk
    return bytes(data)
