"""How a kq message travels in SQS: a body and at most three message attributes.

- ``contentType`` (String): the content type, named as the PHP library names it, so that PHP producers
  and consumers interoperate;
- ``routingKey`` (String): the routing key, only when there is one (SQS refuses empty values);
- ``kq`` (String): JSON with everything else kq needs: ``id`` (the message id), ``h`` (the headers, the
  ``kq-`` ones included), ``exp`` (the TTL's expiry, seconds since the epoch) and ``enc`` (how the body is
  encoded, when it is not plain text).

JSON escapes control characters and non-ASCII text (``ensure_ascii``), so header values that SQS would
refuse as attribute values (an empty value, a terminal colour escape) travel unchanged, and any number
of headers fits: no message ever needs more than the 10 attributes SQS allows (counted here, since
neither LocalStack nor moto enforces the limit).

Bodies: a non-empty UTF-8 body made only of characters SQS accepts travels as it is (PHP's JSON);
anything else is base64 with ``"enc": "base64"``; an empty body, which SQS refuses, is one ``-`` with
``"enc": "empty"``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from kq.core.driver import JSON, Message, MessageFormatError

#: Attribute names: the PHP library's two, and kq's own.
CONTENT_TYPE = "contentType"
ROUTING_KEY = "routingKey"
KQ = "kq"
#: Most message attributes SQS accepts on one message.
MAX_ATTRIBUTES = 10
#: What SQS accepts in a body or string attribute: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
_REFUSED = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_EMPTY_BODY = "-"


def is_sendable(text: str) -> bool:
    """Whether SQS accepts ``text`` as a body or a non-empty attribute value."""
    return bool(text) and _REFUSED.search(text) is None


@dataclass(frozen=True)
class Packed:
    """A message as SQS takes it: the body text and the message attributes."""

    body: str
    attributes: dict[str, dict[str, str]]

    @property
    def size(self) -> int:
        """Bytes SQS counts against its size limit: the body, and each attribute's name, type and value."""
        total = len(self.body.encode())
        for name, value in self.attributes.items():
            total += len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        return total


def pack(message: Message, *, now: float) -> Packed:
    """The body and attributes of ``message``; ``now`` (epoch seconds) dates its TTL.

    Raises:
        MessageFormatError: the attributes would exceed SQS's limit (which kq's packing never does).
    """
    meta: dict[str, Any] = {"id": message.message_id}
    if message.headers:
        meta["h"] = dict(message.headers)
    if message.ttl is not None:
        meta["exp"] = round(now + message.ttl, 3)
    text = _text(message.body)
    if text is None:
        if message.body:
            text = base64.b64encode(message.body).decode("ascii")
            meta["enc"] = "base64"
        else:
            text = _EMPTY_BODY
            meta["enc"] = "empty"
    attributes: dict[str, dict[str, str]] = {}
    if is_sendable(message.content_type):
        attributes[CONTENT_TYPE] = _string(message.content_type)
    else:
        meta["ct"] = message.content_type
    if message.routing_key:
        if is_sendable(message.routing_key):
            attributes[ROUTING_KEY] = _string(message.routing_key)
        else:
            meta["rk"] = message.routing_key
    attributes[KQ] = _string(json.dumps(meta, ensure_ascii=True, separators=(",", ":")))
    if len(attributes) > MAX_ATTRIBUTES:  # pragma: no cover - three at most, by construction
        raise MessageFormatError(f"message {message.message_id} would need {len(attributes)} SQS attributes")
    return Packed(text, attributes)


@dataclass
class Unpacked:
    """What a received SQS message says, as far as it can be read."""

    body: bytes
    content_type: str
    headers: dict[str, str]
    routing_key: str
    message_id: str
    #: When its TTL ends (epoch seconds), or ``None``.
    expires: float | None = None
    #: What could not be read, in words (the consume loop dead-letters it as malformed).
    defects: list[str] = field(default_factory=list)

    @property
    def defect(self) -> str | None:
        """The defects in one line, or ``None``."""
        return "; ".join(self.defects) or None


def unpack(body: str, attributes: dict[str, Any], sqs_message_id: str) -> Unpacked:
    """Read a received message; never raises (what cannot be read goes to ``defects``).

    A message without the ``kq`` attribute (from the PHP library or plain boto3) keeps its body as UTF-8,
    its ``contentType`` (JSON when absent), its ``routingKey``, SQS's message id, and its other String or
    Number attributes as headers.
    """
    result = Unpacked(
        body=body.encode("utf-8", "surrogatepass"),
        content_type=_attribute(attributes, CONTENT_TYPE) or JSON,
        headers={},
        routing_key=_attribute(attributes, ROUTING_KEY) or "",
        message_id=sqs_message_id,
    )
    for name, value in attributes.items():
        if name in (CONTENT_TYPE, ROUTING_KEY, KQ):
            continue
        if isinstance(value, dict) and isinstance(value.get("StringValue"), str):
            result.headers[name] = value["StringValue"]
        else:
            result.defects.append(f"attribute {name!r} is not a String or Number")
    raw = _attribute(attributes, KQ)
    if raw is None:
        return result
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        result.defects.append(f"attribute 'kq' is not JSON ({exc})")
        return result
    if not isinstance(meta, dict):
        result.defects.append("attribute 'kq' is not a JSON object")
        return result
    _read_meta(meta, body, result)
    return result


def _read_meta(meta: dict[str, Any], body: str, result: Unpacked) -> None:
    message_id = meta.get("id")
    if isinstance(message_id, str) and message_id:
        result.message_id = message_id
    elif message_id is not None:
        result.defects.append("the message id in attribute 'kq' is not text")
    headers = meta.get("h", {})
    if isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values()):
        result.headers.update(headers)
    else:
        result.defects.append("the headers in attribute 'kq' are not a mapping of text to text")
    expires = meta.get("exp")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        result.expires = float(expires)
    elif expires is not None:
        result.defects.append("the expiry in attribute 'kq' is not a number")
    for key, name in (("ct", "content_type"), ("rk", "routing_key")):
        if isinstance(meta.get(key), str):
            setattr(result, name, meta[key])
    encoding = meta.get("enc")
    if encoding == "base64":
        try:
            result.body = base64.b64decode(body.encode("ascii"), validate=True)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            result.defects.append("the body is marked base64 but is not")
    elif encoding == "empty":
        result.body = b""
    elif encoding is not None:
        result.defects.append(f"unknown body encoding {encoding!r}")


def _text(body: bytes) -> str | None:
    """``body`` as text when SQS can carry it as it is, else ``None``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if is_sendable(text) else None


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _attribute(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if isinstance(value, dict) and isinstance(value.get("StringValue"), str):
        text: str = value["StringValue"]
        return text
    return None
