"""The folder layout of one queue, and the names of its message files.

A queue is a folder (its name percent-encoded) with three folders in it:

- ``tmp/``: files being written; renamed into ``ready/`` once complete, so a reader never sees half a
  message;
- ``ready/``: messages waiting, one file each, named ``<seq>-<available>-<expires>-<count>-<id>``:
  the publication order, when it may be delivered and when it expires (nanoseconds since the epoch,
  0: never), how often it was handed out, and a unique id. Sorting the names gives the queue's order,
  and a consumer decides what to take from the names alone;
- ``claimed/``: messages handed out, named ``<deadline>-<token>-<name in ready/>``. A consumer claims
  a message by renaming it from ``ready/`` to ``claimed/``: a rename is atomic, so of two consumers
  racing for one file, one gets it and the other gets ``FileNotFoundError``. Extending a lease renames
  it to a later deadline; acknowledging deletes it; anyone who finds a lapsed deadline renames it back
  to ``ready/``. Whoever renames first wins; the others learn that the file is gone.

Deadlines are wall-clock times (``time.time_ns()``), since the consumers of one folder may be
different processes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from kq.core.driver import Message
from kq.drivers.example._errors import FolderError

_sequence = itertools.count()


@dataclasses.dataclass(frozen=True, order=True)
class Name:
    """The name of a message file in ``ready/``."""

    seq: int
    available: int
    expires: int
    count: int
    id: str

    def __str__(self) -> str:
        return f"{self.seq:020d}-{self.available:020d}-{self.expires:020d}-{self.count:06d}-{self.id}"

    @classmethod
    def parse(cls, text: str) -> Name | None:
        """The name's fields, or ``None`` for a file kq did not name (left alone)."""
        parts = text.split("-")
        if len(parts) != 5 or not all(part.isdigit() for part in parts[:4]):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), parts[4])


@dataclasses.dataclass(frozen=True)
class Claim:
    """The name of a message file in ``claimed/``."""

    deadline: int
    token: str
    name: Name

    def __str__(self) -> str:
        return f"{self.deadline:020d}-{self.token}-{self.name}"

    @classmethod
    def parse(cls, text: str) -> Claim | None:
        parts = text.split("-", 2)
        name = Name.parse(parts[2]) if len(parts) == 3 and parts[0].isdigit() else None
        return None if name is None else cls(int(parts[0]), parts[1], name)


class QueueFolder:
    """The folders of one queue under the driver's ``path``."""

    def __init__(self, root: Path, queue: str) -> None:
        self.path = root / quote(queue, safe="")
        self.tmp = self.path / "tmp"
        self.ready = self.path / "ready"
        self.claimed = self.path / "claimed"

    @staticmethod
    def queue_name(folder: str) -> str:
        """The logical queue a folder under ``path`` holds."""
        return unquote(folder)

    def create(self) -> None:
        """Make the queue's folders if they are missing."""
        try:
            for folder in (self.tmp, self.ready, self.claimed):
                folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise FolderError(f"cannot use {self.path} as a queue folder: {exc}") from exc

    def exists(self) -> bool:
        return self.ready.is_dir()

    def write(self, message: Message) -> None:
        """Add ``message`` to ``ready/``, the file complete before it appears there."""
        self.create()
        now = time.time_ns()
        name = Name(
            seq=now * 1000 + next(_sequence) % 1000,
            available=now + int(message.delay * 1e9),
            expires=0 if message.ttl is None else now + int(message.ttl * 1e9),
            count=0,
            id=uuid.uuid4().hex,
        )
        temporary = self.tmp / str(name)
        temporary.write_bytes(encode(message))
        os.replace(temporary, self.ready / str(name))

    def waiting(self) -> list[Name]:
        """The names in ``ready/``, in queue order (files kq did not name are left out)."""
        try:
            entries = os.listdir(self.ready)
        except FileNotFoundError:
            return []
        return sorted(name for name in map(Name.parse, entries) if name is not None)

    def claims(self) -> list[Claim]:
        try:
            entries = os.listdir(self.claimed)
        except FileNotFoundError:
            return []
        return [claim for claim in map(Claim.parse, entries) if claim is not None]

    def reclaim(self, now: int) -> None:
        """Put every message whose lease lapsed back in ``ready/`` (if nobody did it first)."""
        for claim in self.claims():
            if claim.deadline <= now:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.claimed / str(claim), self.ready / str(claim.name))


def encode(message: Message) -> bytes:
    """The file of a message: JSON, with the body in base64 (it may be binary)."""
    return json.dumps(
        {
            "message_id": message.message_id,
            "body": base64.b64encode(message.body).decode("ascii"),
            "content_type": message.content_type,
            "headers": message.headers,
            "routing_key": message.routing_key,
        }
    ).encode()


def decode(data: bytes) -> tuple[dict[str, Any], str | None]:
    """The fields of a message file and, for a file another tool wrote, what is wrong with it.

    Never raises: whatever can be read is returned, with the rest described in the second value.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return {}, f"not a message file ({type(exc).__name__})"
    if not isinstance(document, dict):
        return {}, "not a message file (not a JSON object)"
    fields: dict[str, Any] = {}
    problems = []
    for key in ("message_id", "content_type", "routing_key"):
        value = document.get(key)
        if isinstance(value, str):
            fields[key] = value
        else:
            problems.append(f"{key} is not a string")
    headers = document.get("headers")
    if isinstance(headers, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        fields["headers"] = headers
    else:
        problems.append("headers are not strings")
    body = document.get("body")
    try:
        if not isinstance(body, str):
            raise ValueError(body)
        fields["body"] = base64.b64decode(body, validate=True)
    except ValueError:
        problems.append("body is not base64")
    return fields, "; ".join(problems) or None
