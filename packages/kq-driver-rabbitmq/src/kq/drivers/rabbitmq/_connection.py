"""Connections: pika parameters from the driver's URL and options, TLS included."""

from __future__ import annotations

import logging
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from kq.core.driver import ConfigError

logger = logging.getLogger(__name__.replace("._", "."))


def connection_parameters(
    options: Mapping[str, Any], *, name: str, key: str, source: str | None
) -> pika.URLParameters:
    """Build pika's parameters from ``[drivers.<name>]``.

    The URL carries host, port, virtual host and credentials (``amqp://user:pass@host:5672/%2F``, or
    ``amqps://`` for TLS); the driver options override what they name.
    """
    url = options["url"]
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("amqp", "amqps"):
        raise ConfigError(
            f"the URL must start with amqp:// or amqps://, not {scheme or 'nothing'}://",
            key=f"{key}.url",
            source=source,
        )
    try:
        parameters = pika.URLParameters(url)
    except Exception as exc:  # pika raises assorted errors for malformed query strings
        raise ConfigError(f"invalid AMQP URL: {exc}", key=f"{key}.url", source=source) from None
    parameters.heartbeat = options["heartbeat"]
    parameters.blocked_connection_timeout = options["blocked_connection_timeout"]
    parameters.socket_timeout = options["socket_timeout"]
    parameters.stack_timeout = options["socket_timeout"] * 2
    parameters.connection_attempts = 1  # kq's own loops retry, with backoff and logs
    parameters.client_properties = {"connection_name": f"kq {name} pid {os.getpid()}", "product": "kq"}
    if scheme == "amqps" or options["tls_ca_file"] or options["tls_cert_file"]:
        parameters.ssl_options = pika.SSLOptions(_tls_context(options, key, source), parameters.host)
    return parameters


def _tls_context(options: Mapping[str, Any], key: str, source: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=options["tls_ca_file"])
        if options["tls_cert_file"]:
            context.load_cert_chain(options["tls_cert_file"], options["tls_key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot set up TLS: {exc}", key=f"{key}.tls_ca_file", source=source) from None
    if not options["tls_verify"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe(parameters: pika.URLParameters) -> str:
    """``host:port/vhost`` (the virtual host quoted as in a URL: ``/`` is ``%2F``) without credentials,
    for log lines."""
    return f"{parameters.host}:{parameters.port}/{urllib.parse.quote(parameters.virtual_host, safe='')}"


def connection_failure(error: BaseException) -> str:
    """Why pika could not connect, in words: pika's own messages are often empty or nested."""
    if isinstance(error, pika.exceptions.ProbableAuthenticationError | pika.exceptions.AuthenticationError):
        return "the broker refused the user name or password (check the URL's credentials)"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return (
            "the broker refused access to the virtual host (check the URL's path and the user's permissions)"
        )
    if isinstance(error, pika.exceptions.IncompatibleProtocolError):
        return "the server did not answer as an AMQP 0-9-1 broker (is this the AMQP port?)"
    cause: object = error
    # pika wraps the socket error: AMQPConnectionError(AMQPConnectorSocketConnectError(OSError(...)))
    while isinstance(cause, pika.exceptions.AMQPConnectionError) and cause.args:
        cause = cause.args[0]
    cause = getattr(cause, "exception", cause)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    text = str(cause) or repr(cause)
    return text if text != "()" else type(error).__name__


def close_quietly(connection: BlockingConnection) -> None:
    """Close ``connection`` if it is open; a dead one often fails to close, and that is no news."""
    try:
        if connection.is_open:
            connection.close()
    except Exception as exc:
        logger.debug("closing an AMQP connection failed: %s", exc)
