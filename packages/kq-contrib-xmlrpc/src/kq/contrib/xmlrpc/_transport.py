"""HTTP transports for ``xmlrpc.client``: a socket timeout, one attempt, a bounded and DTD-free response.

``ServerProxy`` has no timeout parameter, retries a request once when the connection drops (which can
run a call twice), accepts gzip-compressed responses of any decompressed size, and parses with an expat
parser that accepts a DTD. These transports change exactly that:

- every socket operation (connect, TLS handshake, each read) times out after ``timeout`` seconds;
- a request is sent once: every call has its own connection, so there is no stale one to retry;
- no compression is asked for, and a compressed or oversized response is refused;
- a response with a ``<!DOCTYPE`` is refused, so no entity can be declared, whatever expat's version
  (values are built by ``xmlrpc.client.Unmarshaller``, which evaluates nothing).

Redirects are not followed (``xmlrpc.client`` never does): a 3xx answer is a ``ProtocolError``.
"""

from __future__ import annotations

import http.client
import xmlrpc.client
from typing import Any
from xml.parsers import expat

from kq.contrib.xmlrpc._errors import ResponseRefusedError

#: Bytes read from the response at a time.
CHUNK = 64 * 1024


class LimitedTransport(xmlrpc.client.Transport):
    """An ``http://`` transport with a socket timeout and a limit on the response size.

    Args:
        timeout: Seconds each socket operation may take.
        max_response: Most bytes of response body read.
    """

    accept_gzip_encoding = False

    def __init__(self, *, timeout: float, max_response: int, **kwargs: Any) -> None:
        super().__init__(use_builtin_types=True, **kwargs)
        self.timeout = timeout
        self.max_response = max_response

    def request(self, host: Any, handler: str, request_body: Any, verbose: bool = False) -> tuple[Any, ...]:
        """Send the request once (the standard transport may send it twice)."""
        return self.single_request(host, handler, request_body, verbose)

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        """The standard connection, with the timeout set before it connects."""
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection

    def parse_response(self, response: http.client.HTTPResponse) -> tuple[Any, ...]:
        """Parse at most ``max_response`` bytes, refusing compression and DTDs."""
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise ResponseRefusedError(f"the response is compressed ({encoding}), which was not asked for")
        declared = response.getheader("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_response:
            raise ResponseRefusedError(
                f"the response announces {int(declared)} bytes, more than the limit of {self.max_response}"
            )
        unmarshaller = xmlrpc.client.Unmarshaller(use_builtin_types=True)
        # What xmlrpc.client's own parser does: expat hands out str, so there is nothing to decode
        # (typeshed says str, but None is the value that turns decoding off).
        unmarshaller.xml(None, None)  # type: ignore[arg-type]
        parser = expat.ParserCreate()
        parser.StartElementHandler = unmarshaller.start
        parser.EndElementHandler = unmarshaller.end
        parser.CharacterDataHandler = unmarshaller.data
        parser.StartDoctypeDeclHandler = _refuse_doctype
        size = 0
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > self.max_response:
                raise ResponseRefusedError(
                    f"the response is larger than the limit of {self.max_response} bytes"
                )
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
        return unmarshaller.close()


class LimitedSafeTransport(LimitedTransport, xmlrpc.client.SafeTransport):
    """The ``https://`` transport: the same limits, certificates verified by the default SSL context."""

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        """The standard TLS connection, with the timeout set before it connects."""
        connection = xmlrpc.client.SafeTransport.make_connection(self, host)
        connection.timeout = self.timeout
        return connection


def transport_for(server: str, *, timeout: float, max_response: int) -> LimitedTransport:
    """The transport for ``server``'s scheme."""
    kind = LimitedSafeTransport if server[:6].lower() == "https:" else LimitedTransport
    return kind(timeout=timeout, max_response=max_response)


def _refuse_doctype(*args: Any) -> None:
    raise ResponseRefusedError("the response has a <!DOCTYPE>, which XML-RPC never needs")
