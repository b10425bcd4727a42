"""Signed messages: HMAC-SHA256 with key ids, a validity window and a replay cache.

A producer with a signing key adds four headers to every message: ``kq-key-id``, ``kq-signed-at``
(Unix seconds from which the message is valid: the publication time plus any delay), ``kq-nonce`` and
``kq-signature``. The signature covers, in a fixed canonical form: the logical queue it was published
to, the message id, the routing key, the content type, the SHA-256 of the body, and every header
except those kq itself changes in transit (listed in ``UNSIGNED_HEADERS``: the signature, the attempt
counter, the dead-letter notes, and what drivers carry for themselves).

A consumer that requires signatures checks them **before decoding the body**: a message that is
unsigned, signed with an unknown key, tampered with (body, routing key, headers...), not yet valid,
older than ``max_age`` or seen before (same nonce, within ``max_age``) is refused with a distinct
reason and never executed. Keys rotate by id: sign with one, verify with any listed. Queue names take
part in the signature, so a message signed for one queue is refused by another, unless the driver
routes one queue's messages into the other (queues sharing a RabbitMQ exchange).

The replay cache lives in each worker process: it stops a captured message from running twice on a
worker, not across workers or restarts (the validity window bounds that).
"""

from __future__ import annotations

import logging
import math
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from kq.core._errors import ConfigError, SignatureError
from kq.core._message import (
    TRANSIT_HEADERS,
    Delivery,
    Message,
    all_portable_header_names,
    is_portable_header_name,
    with_headers_unchecked,
)
from kq.core._numbers import MAX_TIMESTAMP, check_number

# hashlib and hmac are imported where a signature is made or checked, not here: importing them loads
# OpenSSL's digests (a few milliseconds at every start), which a worker whose queues neither sign nor
# verify never needs. Once loaded, each such import is a dictionary lookup (under 0.1 us).

logger = logging.getLogger(__name__.replace("._", "."))

KEY_ID = "kq-key-id"
SIGNED_AT = "kq-signed-at"
NONCE = "kq-nonce"
SIGNATURE = "kq-signature"
#: Headers kq changes after publication, so they cannot be signed.
UNSIGNED_HEADERS = TRANSIT_HEADERS | {SIGNATURE}
#: Seconds a signature may be dated in the future (clock differences between machines).
CLOCK_SKEW = 60.0
#: Shortest accepted key, in bytes.
MIN_KEY_BYTES = 32
#: Most nonces a worker remembers.
REPLAY_CACHE_SIZE = 200_000

# Why a message was refused (``SignatureError.reason``); the failure reasons of the same name.
#: Not signed, for a queue that requires signatures.
UNSIGNED: Final = "unsigned"
#: Signed with a key id that is not configured.
UNKNOWN_KEY: Final = "unknown-key"
#: The signature does not match the message (or its signature headers are garbled).
BAD_SIGNATURE: Final = "bad-signature"
#: Signed to become valid later.
NOT_YET_VALID: Final = "not-yet-valid"
#: Signed longer ago than ``[signing] max_age``.
EXPIRED: Final = "expired"
#: Its signature was already received by this worker.
REPLAYED: Final = "replayed"


def new_key() -> str:
    """A new random key: 32 bytes, URL-safe base64."""
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _escape(line: str) -> str:
    # Newlines cannot appear in names, and values are escaped, so fields cannot run into each other.
    if "\\" in line or "\n" in line:
        return line.replace("\\", "\\\\").replace("\n", "\\n")
    return line


def _signed_fields(
    message_id: str, routing_key: str, content_type: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """What a signature covers besides the queue, in canonical form (computed once per message)."""
    import hashlib  # see the note at the top

    lines = [message_id, routing_key, content_type, hashlib.sha256(body).hexdigest()]
    lines += [f"{name}:{headers[name]}" for name in sorted(headers) if name not in UNSIGNED_HEADERS]
    text = "\n".join(lines)
    # Nearly always nothing needs escaping: then joining first gives the same text, faster.
    if "\\" in text or text.count("\n") != len(lines) - 1:
        text = "\n".join(map(_escape, lines))
    return text.encode()


def _canonical(queue: str, fields: bytes) -> bytes:
    """The signed text: a version line, the queue the message was published to, then ``fields``."""
    return b"kq-signature-v1\n" + _escape(queue).encode() + b"\n" + fields


@dataclass(frozen=True)
class Signer:
    """Signs messages with one key."""

    key_id: str
    key: bytes = field(repr=False)  # a secret: never in a repr or a traceback's locals

    def sign(self, message: Message, queue: str, *, valid_from: float | None = None) -> Message:
        """Return ``message`` with fresh signing headers, for ``queue``, valid from ``valid_from``
        (default: now plus the message's delay)."""
        headers = {k: v for k, v in message.headers.items() if k not in (KEY_ID, SIGNED_AT, NONCE, SIGNATURE)}
        if valid_from is None:
            start = time.time() + message.delay
        else:
            start = check_number(valid_from, "valid_from", maximum=MAX_TIMESTAMP)
        headers[KEY_ID] = self.key_id
        headers[SIGNED_AT] = f"{start:.3f}"
        headers[NONCE] = os.urandom(16).hex()
        fields = _signed_fields(
            message.message_id, message.routing_key, message.content_type, headers, message.body
        )
        payload = _canonical(queue, fields)
        import hmac  # see the note at the top

        headers[SIGNATURE] = hmac.digest(self.key, payload, "sha256").hex()
        # The message's headers were checked when it was made, and the four added are kq's own names
        # with text values: no need to check them all again.
        return with_headers_unchecked(message, headers)


class Verifier:
    """Checks signatures against any of several keys, with a validity window and a replay cache.

    Args:
        keys: Key id -> key.
        max_age: Seconds a signature stays valid after its ``kq-signed-at``: a finite number of
            seconds, or ``math.inf`` for no expiry (re-drive checks old dead letters so).
    """

    def __init__(self, keys: Mapping[str, bytes], max_age: float) -> None:
        self.keys = dict(keys)
        # nan would turn off expiry and the replay cache (every comparison with it is false).
        self.max_age = (
            max_age if max_age == math.inf else check_number(max_age, "max_age", exclusive_minimum=True)
        )
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, delivery: Delivery, queues: Collection[str]) -> None:
        """Check ``delivery``, signed for one of ``queues``; raise :class:`SignatureError` otherwise."""
        headers = delivery.headers
        signature = headers.get(SIGNATURE)
        if not signature:
            raise SignatureError(UNSIGNED, "the message is not signed, and this queue requires signatures")
        key_id = headers.get(KEY_ID, "")
        key = self.keys.get(key_id)
        if key is None:
            raise SignatureError(
                UNKNOWN_KEY,
                f"the message is signed with key id {key_id!r}, which this "
                "worker does not have ([signing] keys)",
            )
        signed_at = _signed_at(headers.get(SIGNED_AT, ""))
        if not all_portable_header_names(headers):
            name = next(name for name in headers if not is_portable_header_name(name))
            # No kq producer can send such a name, and "a:b" = "c" would sign like "a" = "b:c".
            raise SignatureError(
                BAD_SIGNATURE,
                f"header name {name[:60]!r} cannot come from a kq producer: the message was altered",
            )
        # Bytes, not str: compare_digest refuses non-ASCII text, and a header can hold anything.
        given = signature.encode(errors="surrogateescape")
        fields = _signed_fields(
            delivery.message_id, delivery.routing_key, delivery.content_type, headers, delivery.body
        )
        import hmac  # see the note at the top

        for queue in queues:
            expected = hmac.digest(key, _canonical(queue, fields), "sha256").hex().encode()
            if hmac.compare_digest(given, expected):
                break
        else:
            raise SignatureError(
                BAD_SIGNATURE,
                "the signature does not match: the message was altered, or "
                "signed for another queue or with another key",
            )
        now = time.time()
        if signed_at > now + CLOCK_SKEW:
            raise SignatureError(
                NOT_YET_VALID,
                f"the signature is valid only from {signed_at:.0f}, {signed_at - now:.0f}s from now",
            )
        if now > signed_at + self.max_age:
            raise SignatureError(
                EXPIRED,
                f"the signature expired {now - signed_at - self.max_age:.0f}s ago "
                f"(max_age {self.max_age:g}s)",
            )
        self._remember(_replay_token(delivery), signed_at, now)

    def forget(self, delivery: Delivery) -> None:
        """Take ``delivery``'s signature out of the replay cache: the worker did not settle it (its
        connection was lost, or it was put back on the queue), so it may be delivered again."""
        self._seen.pop(_replay_token(delivery), None)

    def _remember(self, token: str, signed_at: float, now: float) -> None:
        # Forget what is past the validity window (those messages are refused as expired anyway).
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if seen_at + self.max_age >= now and len(self._seen) < REPLAY_CACHE_SIZE:
                break
            del self._seen[oldest]
        if token in self._seen:
            raise SignatureError(REPLAYED, "this signed message was already received by this worker")
        self._seen[token] = signed_at


def _signed_at(text: str) -> float:
    """The ``kq-signed-at`` header as Unix seconds; :class:`SignatureError` when it is not a time."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        number = math.nan
    if 0.0 <= number <= MAX_TIMESTAMP:  # false for nan
        return number
    try:
        # Refuses what float() refused, or out of range, with the usual wording.
        return check_number(text, f"the signature's {SIGNED_AT}", maximum=MAX_TIMESTAMP, text=True)
    except ValueError as exc:
        raise SignatureError(BAD_SIGNATURE, f"{exc}: it is not a time") from None


def _replay_token(delivery: Delivery) -> str:
    """What the replay cache remembers: the signature, per queue received from (a dead letter carries
    the signature its queue's worker accepted, and consuming the dead-letter queue is no replay)."""
    headers = delivery.headers
    return "\n".join((delivery.queue, headers.get(NONCE, ""), headers.get(SIGNATURE, "")))


def read_key(value: str, *, key: str, source: str | None, root: str | None) -> bytes:
    """A key from the configuration: the value itself, or ``file:PATH`` (relative to the config file)."""
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        try:
            text = path.read_text().strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(
                f"cannot read the key file {path}: {exc.strerror}", key=key, source=source
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning(
                "signing key file %s can be read by other users (mode %o): anyone who reads it can sign "
                "commands for your workers; run: chmod 600 %s",
                path,
                stat.S_IMODE(mode),
                path,
            )
    else:
        text = value.strip()
        if _looks_like_a_path(text):
            raise ConfigError(
                'this looks like a path, not a key: write it as "file:PATH" to read the key from a file',
                key=key,
                source=source,
            )
    raw = text.encode()
    if len(raw) < MIN_KEY_BYTES:
        # The value is a secret: say how long it is, never what it is.
        raise ConfigError(
            f"a signing key must be at least {MIN_KEY_BYTES} bytes long (this one has {len(raw)}); "
            "create one with: kq signing new-key",
            key=key,
            source=source,
        )
    return raw


def _looks_like_a_path(text: str) -> bool:
    """A key value that is surely a path missing its ``file:`` (base64 has no ``.`` or ``~``)."""
    if any(c.isspace() for c in text):
        return False
    if text.startswith(("./", "../", "~/")):
        return True
    return text.startswith("/") and ("." in text.rsplit("/", 1)[-1] or Path(text).exists())


def local_key(folder: Path) -> bytes:
    """The key of the zero-configuration setup: ``<folder>/signing.key``, created once, mode 0600."""
    path = folder / "signing.key"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process may have created it a moment ago and not written it yet.
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text.encode()
            time.sleep(0.02)
        raise ConfigError(f"the signing key file {path} is empty; delete it to have a new one made") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(new_key() + "\n")
    logger.info(
        "created the signing key %s (mode 0600); producers and workers sharing this folder use it", path
    )
    return path.read_text().strip().encode()
