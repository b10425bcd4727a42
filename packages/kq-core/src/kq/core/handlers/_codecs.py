"""Message bodies: decoding by content type, JSON encoding, and the JSON-object envelope every call has.

``application/json`` (and ``+json`` types) decode to Python values, ``text/*`` to ``str`` (UTF-8 unless
the type names another charset) and ``application/octet-stream`` to ``bytes``. Nothing is ever
evaluated: the PHP library's ``x-httpd-php-source`` and ``vnd.php.serialized`` have no equivalent here.

Every execution type's message is a JSON object with a fixed set of keys: :func:`parse_object` checks
that once for all of them, and :func:`check_list` the ``arguments`` list most of them carry.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from kq.core._errors import MessageFormatError
from kq.core._message import JSON

TEXT = "text/plain"
BINARY = "application/octet-stream"


@functools.lru_cache(maxsize=64)
def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; param=value`` into the lower-cased media type and its parameters.

    The result is cached (a queue carries few distinct content types): do not modify the dict.
    """
    main, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def _reject_constant(name: str) -> Any:
    raise MessageFormatError(f"body is not valid JSON: {name} is not a JSON number")


# One decoder for every message: json.loads with keyword arguments would build a new one each time.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode_json(body: bytes, params: dict[str, str]) -> Any:
    try:
        return _JSON_DECODER.decode(body.decode(params.get("charset", "utf-8")))
    except (UnicodeDecodeError, LookupError) as exc:
        raise MessageFormatError(f"JSON body is not valid text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MessageFormatError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MessageFormatError("body is JSON nested too deeply to decode") from None


def _decode_text(body: bytes, params: dict[str, str]) -> Any:
    charset = params.get("charset", "utf-8")
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise MessageFormatError(f"text body cannot be decoded as {charset}: {exc}") from None


def _decode_binary(body: bytes, params: dict[str, str]) -> Any:
    return body


def _decoder(media: str) -> Callable[[bytes, dict[str, str]], Any] | None:
    if media == JSON or (media.startswith("application/") and media.endswith("+json")):
        return _decode_json
    if media.startswith("text/"):
        return _decode_text
    if media == BINARY:
        return _decode_binary
    return None


def decode_body(body: bytes, content_type: str, accepted: Collection[str] | None = None) -> Any:
    """Decode ``body`` according to ``content_type``.

    Args:
        body: The raw body.
        content_type: Its content type; an empty one is treated as JSON, kq's default.
        accepted: Media types the caller accepts (``None``: any kq can decode).

    Raises:
        MessageFormatError: the content type is not accepted or not decodable, or the body is malformed.
    """
    media, params = media_type(content_type or JSON)
    if accepted is not None and media not in accepted:
        raise MessageFormatError(
            f"content type {content_type!r} is not accepted here (accepted: {', '.join(sorted(accepted))})"
        )
    decoder = _decoder(media)
    if decoder is None:
        raise MessageFormatError(f"cannot decode content type {content_type!r}")
    return decoder(body, params)


def encode_json(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise MessageFormatError(f"cannot encode the message as JSON: {exc}") from None


def json_kind(value: Any) -> str:
    """What ``value`` is, for an error message: ``null`` for ``None``, else the Python type's name."""
    return "null" if value is None else type(value).__name__


def parse_object(body: Any, what: str, keys: Collection[str]) -> dict[str, Any]:
    """Check that a decoded body is a JSON object using only ``keys``, and return it.

    Args:
        body: The decoded message body.
        what: What the message is, for errors (``"service-call"`` gives "the service-call message ...").
        keys: The keys the message may have; which of them are required is the caller's to check.

    Raises:
        MessageFormatError: ``body`` is not an object, or has a key not in ``keys`` (all are named).
    """
    if not isinstance(body, dict):
        raise MessageFormatError(f"the {what} message must be a JSON object, not {json_kind(body)}")
    unknown = set(body).difference(keys)
    if unknown:
        raise MessageFormatError(f"unknown keys in {what} message: {', '.join(sorted(map(str, unknown)))}")
    return body


def check_list(value: Any, what: str = "'arguments'") -> tuple[Any, ...]:
    """``value`` as a tuple when it is a list (any iterable but a string, bytes or a mapping).

    Raises:
        MessageFormatError: ``value`` is not list-like; the message names ``what``.
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise MessageFormatError(f"{what} must be a list, not {json_kind(value)}")
    return tuple(value)
