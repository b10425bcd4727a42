"""The HTTP execution type: the "FastCGI" mode, where a worker turns messages into calls to a web app.

Body::

    {"url": "http://127.0.0.1:8000/jobs/report", "options": {"method": "POST", "json": {"week": 47}}}

Options (kq's own vocabulary; the PHP library used numeric curl constants): ``method`` (GET), ``headers``
(object of strings), ``params`` (query parameters), ``json`` (any JSON value, sent as the body) or
``data`` (a string, or an object sent as a form), ``timeout`` (seconds, 30), ``allow_redirects`` (true),
``verify`` (true: check TLS certificates). Anything else is refused.

Only ``http`` and ``https`` URLs whose host (exact) or whole URL (``re:``) is in ``[allow] urls`` are
requested; redirects are followed by kq itself, at most 10, and each target must pass the same
allow-list, so a redirect cannot lead a worker somewhere it is not allowed to go. A status outside 2xx
is a failed execution. The result is the status, the response headers and the body (text, at most 1 MiB).

The default routing key is the URL with ``:`` and ``/`` turned into ``.``.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kq.core._allow import MAX_URL_SUBJECT, AllowList
from kq.core._errors import ExecutionFailedError, MessageFormatError, MissingExtraError, NotAllowedError
from kq.core._message import Delivery, Message
from kq.core._numbers import check_number
from kq.core._routing import url_routing_key
from kq.core.handlers._base import Handler, HandlerContext
from kq.core.handlers._codecs import parse_object
from kq.core.handlers._producer import MessageProducer

logger = logging.getLogger(__name__.replace("._", "."))

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Options accepted in a message, with their types.
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "method": str,
    "headers": dict,
    "params": dict,
    "json": object,
    "data": (str, dict),
    "timeout": (int, float),
    "allow_redirects": bool,
    "verify": bool,
}
DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 10
#: Most characters of a response body kept in the result.
MAX_BODY = 1024 * 1024
#: Why a worker without requests cannot send HTTP requests, and what to install.
MISSING_REQUESTS = (
    "the http execution type needs requests, which is not installed: pip install 'kq-core[http]'"
)


@dataclass(frozen=True)
class HttpRequest:
    """A validated HTTP-request message."""

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The JSON-ready message body."""
        return {"url": self.url, "options": dict(self.options)}

    @property
    def method(self) -> str:
        """The HTTP method, upper case."""
        return str(self.options.get("method", "GET")).upper()


@dataclass(frozen=True)
class HttpResult:
    """What the server answered."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"url": self.url, "status": self.status, "headers": dict(self.headers), "body": self.body}


def make_http_request(url: str, options: Mapping[str, Any] | None = None) -> HttpRequest:
    """Build a validated :class:`HttpRequest` (raises MessageFormatError naming what is wrong)."""
    if not isinstance(url, str) or not url:
        raise MessageFormatError("'url' must be a non-empty string")
    if target_host(url) is None:
        raise MessageFormatError(
            f"url {url[:120]!r} must be an http:// or https:// URL with a host, without spaces, backslashes "
            "or control characters"
        )
    options = dict(options or {})
    for name, value in options.items():
        expected = OPTIONS.get(name)
        if expected is None:
            raise MessageFormatError(f"unknown HTTP option {name!r} (known: {', '.join(OPTIONS)})")
        if not isinstance(value, expected) or (isinstance(value, bool) and expected == (int, float)):
            raise MessageFormatError(f"HTTP option {name!r} has the wrong type ({type(value).__name__})")
    if "json" in options and "data" in options:
        raise MessageFormatError("HTTP options 'json' and 'data' exclude each other")
    if str(options.get("method", "GET")).upper() not in METHODS:
        raise MessageFormatError(f"HTTP method {options['method']!r} is not one of {', '.join(METHODS)}")
    for name in ("headers", "params"):
        table = options.get(name, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise MessageFormatError(f"HTTP option {name!r} must map strings to strings")
    if "timeout" in options:
        try:
            # Finite and bounded: nan passes "<= 0", and inf or 1e300 overflow the socket timeout.
            check_number(options["timeout"], "HTTP option 'timeout'", exclusive_minimum=True)
        except ValueError as exc:
            raise MessageFormatError(str(exc)) from None
    return HttpRequest(url=url, options=options)


def parse_http_request(body: Any) -> HttpRequest:
    """Validate a decoded HTTP-request body."""
    body = parse_object(body, "HTTP-request", ("url", "options"))
    url: Any = body.get("url")
    options: Any = body.get("options")
    if options is not None and not isinstance(options, (dict, list)):
        raise MessageFormatError("'options' must be an object")
    if isinstance(options, list) and options:
        raise MessageFormatError("'options' must be an object")
    # The PHP library's json_encode turns empty options into [].
    return make_http_request(url, options if isinstance(options, dict) else None)


# Characters no valid URL contains, but that parsers handle differently: "http://a\\@b/" is host b for
# urllib.parse and host a for urllib3, which requests uses.
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")


def target_host(url: str) -> str | None:
    """The host ``requests`` will connect to, or ``None`` for a URL kq refuses to send.

    Only http(s) URLs are accepted, without characters that make URL parsers disagree, and only when
    the standard library and urllib3 (which does the connecting) agree on the host: the allow-list must
    judge the host the request really goes to.
    """
    if _AMBIGUOUS.search(url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # a malformed IPv6 host, for one
        return None
    if parts.scheme not in ("http", "https") or not hostname:
        return None
    try:
        import urllib3.util
    except ImportError:
        # No HTTP client here (a producer without kq-core[http]): the worker that sends the request
        # has one, and checks the URL again before sending it.
        return hostname
    try:
        connected = urllib3.util.parse_url(url).host
    except Exception:
        return None
    if connected is None or connected.strip("[]").lower() != hostname.lower():
        return None
    return hostname


def url_allowed(url: str, allowed: AllowList) -> bool:
    """Whether ``url`` passes ``[allow] urls``: its host exactly, or the whole URL by a ``re:`` entry."""
    host = target_host(url)
    return host is not None and allowed.allows(host, pattern_subject=url)


class HttpHandler(Handler):
    """Sends the HTTP requests that messages describe, to allowed URLs only."""

    kind = "http"
    allow_section = "urls"

    def __init__(self, allowed: AllowList) -> None:
        self.allowed = allowed
        self._session: Any = None
        self._requests: Any = None
        try:
            import requests  # only workers that send HTTP requests pay for importing requests
        except ImportError:
            # The worker still starts: each message fails with the reason (and lands in the dead-letter
            # queue after its attempts), rather than a worker that dies before saying what it lacks.
            return
        self._session = requests.Session()
        self._requests = requests

    @classmethod
    def from_context(cls, context: HandlerContext) -> HttpHandler:
        """Use ``[allow] urls`` (``re:`` entries match URLs of up to ``MAX_URL_SUBJECT`` characters)."""
        handler = cls(context.config.allow.allow_list("urls", max_subject=MAX_URL_SUBJECT))
        if handler._session is None:
            logger.warning(
                "queue %s: HTTP requests cannot be sent: %s; its messages will fail until then",
                context.queue.name,
                MISSING_REQUESTS,
            )
        return handler

    def describe(self, body: Any) -> str:
        """``HTTP GET url``."""
        if isinstance(body, dict) and isinstance(body.get("url"), str):
            options: Any = body.get("options") if isinstance(body.get("options"), dict) else {}
            return f"HTTP {str(options.get('method', 'GET')).upper()} {body['url'][:200]}"
        return "HTTP request"

    def consume(self, body: Any, delivery: Delivery) -> HttpResult:
        """Send the request; a status outside 2xx raises ExecutionFailedError with the result."""
        request = parse_http_request(body)
        if self._session is None:
            raise MissingExtraError(f"HTTP {request.method} {request.url[:200]}: {MISSING_REQUESTS}")
        # Each message is a request of its own: no cookie set for one reaches another.
        self._session.cookies.clear()
        options = request.options
        url = self._with_params(request.url, options.get("params"))
        self._check(url)
        follow = options.get("allow_redirects", True)
        method = request.method
        kwargs: dict[str, Any] = {
            "headers": options.get("headers"),
            "timeout": float(options.get("timeout", DEFAULT_TIMEOUT)),
            "verify": options.get("verify", True),
            "allow_redirects": False,
            "stream": True,  # read at most MAX_BODY of the body, whatever the server sends
        }
        if "json" in options:
            kwargs["json"] = options["json"]
        if "data" in options:
            kwargs["data"] = options["data"]
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self._session.request(method, url, **kwargs)
            except self._requests.RequestException as exc:
                raise ExecutionFailedError(f"HTTP {method} {url}: {type(exc).__name__}: {exc}") from None
            if not (follow and response.is_redirect):
                break
            response.close()
            previous = urllib.parse.urlsplit(url)
            location = response.headers["location"]
            try:
                url = urllib.parse.urljoin(url, location)
            except ValueError:
                raise NotAllowedError(f"redirect to a malformed Location {location[:200]!r}") from None
            self._check(url)
            if urllib.parse.urlsplit(url)[:2] != previous[:2]:
                # Another host, port or scheme: credentials meant for the first one stay there.
                kwargs["headers"] = {
                    k: v
                    for k, v in (kwargs["headers"] or {}).items()
                    if k.lower() not in ("authorization", "cookie")
                } or None
            if response.status_code in (301, 302, 303) and method != "HEAD":
                method = "GET"  # as browsers and requests do; the body is dropped
                kwargs.pop("json", None)
                kwargs.pop("data", None)
        else:
            raise ExecutionFailedError(
                f"HTTP {request.method} {request.url}: more than {MAX_REDIRECTS} redirects"
            )
        result = HttpResult(
            url=url,
            status=response.status_code,
            headers=dict(response.headers),
            body=_read_text(response),
        )
        if not 200 <= response.status_code < 300:
            raise ExecutionFailedError(
                f"HTTP {method} {url} answered {response.status_code} {response.reason}", result
            )
        return result

    def _with_params(self, url: str, params: Mapping[str, Any] | None) -> str:
        """The URL with ``params`` in its query, exactly as ``requests`` would send it: the allow-list
        judges the URL that is requested, query included."""
        if not params:
            return url
        prepared = self._requests.PreparedRequest()
        try:
            prepared.prepare_url(url, params)
        except (self._requests.RequestException, ValueError, TypeError) as exc:
            raise MessageFormatError(f"'params' cannot be added to url {url[:120]!r}: {exc}") from None
        return str(prepared.url)

    def _check(self, url: str) -> None:
        if target_host(url) is None:
            raise NotAllowedError(f"URL {url[:200]!r} is not a plain http(s) URL")
        if not url_allowed(url, self.allowed):
            note = self.allowed.length_note(url, "the URL")
            raise NotAllowedError(f"URL {url[:200]!r} is not in the allow-list ([allow] urls){note}")

    def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            self._session.close()


def _read_text(response: Any) -> str:
    """The first ``MAX_BODY`` bytes of the body, decoded; the connection is released."""
    try:
        raw = response.raw.read(MAX_BODY, decode_content=True)
    finally:
        response.close()
    return bytes(raw).decode(response.encoding or "utf-8", errors="replace")


class HttpProducer(MessageProducer):
    """Queues HTTP requests for an HTTP handler (``kq queuehttp``).

    ``publish_batch`` takes mappings with ``url`` and ``options``.
    """

    def build(
        self,
        url: str,
        options: Mapping[str, Any] | None = None,
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message requesting ``url`` with ``options``."""
        request = make_http_request(url, options)
        key = url_routing_key(url) if routing_key is None else routing_key
        return self.json_message(request.to_body(), key, ttl=ttl, delay=delay, headers=headers)
