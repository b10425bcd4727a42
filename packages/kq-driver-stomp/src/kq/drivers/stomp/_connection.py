"""One STOMP 1.2 connection (stomp.py's ``Connection12``) and what kq tracks about it.

A :class:`Session` opens a connection to the first host of the failover list that answers (in the
configured order; stomp.py's own retries and reconnections are off: the consume loop and the next
publish reconnect), waits for the broker's CONNECTED frame within ``connect_timeout``, and follows
the frames that concern kq: receipts (a publish is confirmed by them), ERROR frames, MESSAGE frames
(handed to a callback on stomp.py's receiver thread) and the loss of the connection (a closed socket
or a heart-beat timeout), after which every use raises :class:`BrokerUnavailableError`.

Bodies stay bytes (stomp.py's ``auto_decode`` off): binary bodies travel with ``content-length``.
Frames received are parsed by kq rather than stomp.py (:mod:`kq.drivers.stomp._frames`: the same frames,
for a fraction of the receiver thread's time).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import stomp  # type: ignore[import-untyped,unused-ignore]
import stomp.exception  # type: ignore[import-untyped,unused-ignore]
import stomp.utils  # type: ignore[import-untyped,unused-ignore]
from kq.core.driver import BrokerUnavailableError, ConfigError
from kq.drivers.stomp import _frames

logger = logging.getLogger(__name__.replace("._", "."))

#: Name of the session's listener on its stomp.py connection (``connection.get_listener``).
SESSION_LISTENER = "kq-session"
#: Seconds a clean close waits for the broker's receipt of DISCONNECT before closing the socket.
DISCONNECT_WAIT = 2.0
#: Bytes of frames written to the socket at once by :meth:`Session.send_many`.
WRITE_BYTES = 1 << 20
#: What stomp.py and the socket raise when a frame cannot be written.
SEND_ERRORS: tuple[type[BaseException], ...] = (stomp.exception.StompException, OSError)

Frame = Any  # stomp.utils.Frame: cmd, headers (dict of str), body (bytes)


def escape(value: str) -> str:
    """A header value with STOMP 1.2's escapes (backslash, line feed, carriage return, colon), as
    stomp.py escapes the frames it writes."""
    if "\\" in value or "\n" in value or "\r" in value or ":" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")
    return value


def parse_hosts(hosts: Sequence[str] | str, *, key: str, source: str | None) -> tuple[tuple[str, int], ...]:
    """The ``(host, port)`` pairs of ``hosts`` ("host:port" items, or one text of them separated by
    commas, as ``${VAR}`` expansion gives), in order.

    Raises:
        ConfigError: no host, or an item that is not "host:port" with a port from 1 to 65535.
    """
    items = [h.strip() for h in hosts.split(",")] if isinstance(hosts, str) else list(hosts)
    parsed: list[tuple[str, int]] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"expected 'host:port' items, got {item!r}", key=key, source=source)
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")  # [::1]:61613
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"expected 'host:port' (e.g. 127.0.0.1:61613), got {item!r}", key=key, source=source
            )
        parsed.append((host, int(port)))
    if not parsed:
        raise ConfigError("at least one 'host:port' is needed", key=key, source=source)
    return tuple(parsed)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to reach the broker (from the driver's options)."""

    hosts: tuple[tuple[str, int], ...]
    login: str | None = None
    passcode: str | None = dataclasses.field(default=None, repr=False)
    vhost: str | None = None
    ssl: bool = False
    heartbeat: int = 10_000
    heartbeat_grace: float = 2.0
    connect_timeout: float = 5.0
    receipt_timeout: float = 10.0

    def describe(self) -> str:
        """The broker's addresses, for messages (no credentials)."""
        scheme = "stomp+ssl" if self.ssl else "stomp"
        return f"{scheme}://" + ",".join(f"{host}:{port}" for host, port in self.hosts)


class Session(stomp.ConnectionListener):  # type: ignore[misc]
    """A connection to the broker, and what kq needs to know of it.

    Args:
        settings: Where and how to connect.
        purpose: What the connection is for ("publish", "consume demo", ...), for log lines.
        on_message: Called with each MESSAGE frame, on stomp.py's receiver thread.
        on_trouble: Called (without arguments) once an ERROR frame or the loss of the connection is
            recorded, on the thread that noticed it (a consumer wakes its waiting receive).
    """

    def __init__(
        self,
        settings: Settings,
        purpose: str,
        on_message: Callable[[Frame], None] | None = None,
        on_trouble: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.purpose = purpose
        heartbeat = int(settings.heartbeat)
        self.connection = stomp.Connection12(
            host_and_ports=list(settings.hosts),
            prefer_localhost=False,  # the configured order is the failover order
            try_loopback_connect=False,
            reconnect_attempts_max=1,  # each host once; kq reconnects (old ack ids die with a connection)
            timeout=settings.connect_timeout,
            heartbeats=(heartbeat, heartbeat),
            vhost=settings.vhost,
            auto_decode=False,  # bodies are bytes
            heart_beat_receive_scale=settings.heartbeat_grace,
        )
        if settings.ssl:
            self.connection.set_ssl(for_hosts=list(settings.hosts))
        _frames.install(self.connection.transport)  # kq's cheaper parse of the frames received
        self._on_message = on_message
        self._on_trouble = on_trouble
        self._cond = threading.Condition()
        self._connected = False
        self._receipts: set[str] = set()
        self._errors: list[Frame] = []
        self._closing = False
        self.lost: str | None = None
        self.connection.set_listener(SESSION_LISTENER, self)

    # -- opening and closing -----------------------------------------------------------------------

    def open(self) -> Session:
        """Connect and wait for the broker's CONNECTED frame.

        Raises:
            BrokerUnavailableError: no host could be reached, the broker refused the connection (its
                ERROR frame's words are in the message), or it did not answer within connect_timeout.
        """
        settings = self.settings
        try:
            self.connection.connect(settings.login, settings.passcode, wait=False)
        except (stomp.exception.StompException, OSError) as exc:
            self._close_socket()
            raise BrokerUnavailableError(
                f"cannot connect to {settings.describe()} ({self.purpose}): "
                f"{type(exc).__name__} {exc}".rstrip()
            ) from None
        deadline = time.monotonic() + settings.connect_timeout
        with self._cond:
            while not self._connected and not self._errors and self.lost is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            connected, errors, lost = self._connected, list(self._errors), self.lost
        if connected and not errors:
            logger.debug("connected to %s (%s)", self.where(), self.purpose)
            return self
        self._close_socket()
        if errors:
            cause = f"the broker refused: {error_text(errors[0])}"
        elif lost is not None:
            cause = f"the connection closed before CONNECTED ({lost})"
        else:
            cause = f"no CONNECTED frame within {settings.connect_timeout:g}s"
        raise BrokerUnavailableError(f"cannot connect to {settings.describe()} ({self.purpose}): {cause}")

    def where(self) -> str:
        """The host and port connected to (or the configured ones)."""
        current = self.connection.transport.current_host_and_port
        return f"{current[0]}:{current[1]}" if current else self.settings.describe()

    def close(self) -> None:
        """DISCONNECT cleanly (the broker gives back what was not acknowledged), then close the socket;
        a lost connection is only cleaned up."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            alive = self._connected and self.lost is None
        if alive:
            self._no_delay()
            try:
                # stomp.py puts a receipt on DISCONNECT and closes the socket when it comes.
                self.connection.disconnect()
            except SEND_ERRORS:
                logger.debug("%s: DISCONNECT could not be sent", self.purpose, exc_info=True)
            else:
                self._wait_lost(DISCONNECT_WAIT)
        self._close_socket()

    def _no_delay(self) -> None:
        """Turn Nagle's algorithm off (TCP_NODELAY) before the last frames: otherwise the kernel holds
        the small DISCONNECT back while an earlier small frame (the last ACK) awaits the broker's TCP
        acknowledgement, which a broker with nothing to send delays by 40 ms on Linux, and close waits
        for DISCONNECT's receipt."""
        sock = self.connection.transport.socket
        if sock is None:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # closing under us; DISCONNECT finds out
            logger.debug("%s: could not set TCP_NODELAY", self.purpose, exc_info=True)

    def _wait_lost(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.lost is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.debug("%s: no receipt of DISCONNECT within %gs", self.purpose, timeout)
                    return
                self._cond.wait(left)

    def abort(self) -> None:
        """Close the socket without DISCONNECT, as a killed process would (tests)."""
        with self._cond:
            self._closing = True
        self._close_socket()

    def _close_socket(self) -> None:
        try:
            self.connection.transport.disconnect_socket()
        except Exception:  # a socket that fails to close is garbage anyway
            logger.debug("%s: closing the socket failed", self.purpose, exc_info=True)

    # -- state -------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Connected, and not lost since."""
        return self._connected and self.lost is None and not self._closing

    def check(self) -> None:
        """Raise :class:`BrokerUnavailableError` when the connection is lost."""
        lost = self.lost
        if lost is not None:
            raise BrokerUnavailableError(
                f"lost the connection to {self.settings.describe()} ({self.purpose}): {lost}"
            )

    @property
    def troubled(self) -> bool:
        """Whether an ERROR frame came or the connection is lost (no lock: a quick look)."""
        return bool(self._errors) or self.lost is not None

    def take_errors(self) -> list[Frame]:
        """The ERROR frames received since the last call."""
        with self._cond:
            errors, self._errors = self._errors, []
        return errors

    # -- sending -----------------------------------------------------------------------------------

    def send(self, destination: str, body: bytes, headers: dict[str, str]) -> None:
        """Write one SEND frame (``headers`` is consumed: stomp.py escapes it in place).

        Raises:
            BrokerUnavailableError: the connection is lost, or the frame could not be written.
        """
        self.check()
        try:
            self.connection.send(destination=destination, body=body, headers=headers)
        except SEND_ERRORS as exc:
            raise self._failed(exc) from None

    def send_many(self, frames: Iterable[tuple[str, bytes, dict[str, str]]]) -> None:
        """Write SEND frames ``(destination, body, headers)`` in as few socket writes as possible
        (up to :data:`WRITE_BYTES` each), escaped as stomp.py's ``send`` escapes them.

        Raises:
            BrokerUnavailableError: the connection is lost, or a write failed (some frames may have
                gone: their receipts say which).
        """
        self.check()
        pending: list[bytes] = []
        size = 0
        for destination, body, given in frames:
            headers = {name: escape(value) for name, value in given.items()}
            headers["destination"] = escape(destination)
            encoded = stomp.utils.pack(stomp.utils.convert_frame(stomp.utils.Frame("SEND", headers, body)))
            pending.append(encoded)
            size += len(encoded)
            if size >= WRITE_BYTES:
                self._write(b"".join(pending))
                pending, size = [], 0
        if pending:
            self._write(b"".join(pending))

    def _write(self, data: bytes) -> None:
        transport = self.connection.transport
        try:
            if transport.blocking:
                transport.send(data)
            else:  # TLS: stomp.py's receiver thread writes
                transport.send_queue.put(data)
        except SEND_ERRORS as exc:
            raise self._failed(exc) from None

    def settle(self, command: str, ack_id: str) -> None:
        """Write an ``ACK`` or ``NACK`` frame for ``ack_id`` (outside a transaction).

        The frame is written straight to the socket, as :meth:`send_many` writes: stomp.py's generic
        frame path (listeners' ``on_send``, building and converting a frame object) costs a consumer
        more than the rest of a message's handling by kq.

        Raises:
            BrokerUnavailableError: the connection is lost, or the frame could not be written.
        """
        self.check()
        self._write(f"{command}\nid:{escape(ack_id)}\n\n\x00".encode())

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a stomp.py connection method (``ack``, ``nack``, ``begin``, ``commit``, ``subscribe``).

        Raises:
            BrokerUnavailableError: the connection is lost, or the frame could not be written.
        """
        self.check()
        try:
            return getattr(self.connection, method)(*args, **kwargs)
        except SEND_ERRORS as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> BrokerUnavailableError:
        with self._cond:
            if self.lost is None:
                self.lost = f"{type(exc).__name__} {exc}".rstrip()
            self._cond.notify_all()
        self._close_socket()
        return BrokerUnavailableError(
            f"lost the connection to {self.settings.describe()} ({self.purpose}): {self.lost}"
        )

    def wait_receipts(self, ids: Iterable[str], timeout: float) -> tuple[set[str], Frame | None]:
        """Wait up to ``timeout`` seconds for the receipts of ``ids``; return those received, and the
        first ERROR frame if one came. After an ERROR the wait goes on until the broker closes the
        connection: ActiveMQ may still take (and confirm) frames written after the refused one."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = wanted & self._receipts
                if got == wanted or self.lost is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._receipts -= wanted
            error = self._errors[0] if self._errors else None
        return got, error

    # -- stomp.py listener callbacks (on its receiver thread) ----------------------------------------

    def on_connected(self, frame: Frame) -> None:
        with self._cond:
            self._connected = True
            self._cond.notify_all()

    def on_receipt(self, frame: Frame) -> None:
        with self._cond:
            self._receipts.add(frame.headers.get("receipt-id", ""))
            self._cond.notify_all()

    def on_error(self, frame: Frame) -> None:
        logger.warning(
            "%s: the broker at %s sent an ERROR frame: %s", self.purpose, self.where(), error_text(frame)
        )
        with self._cond:
            self._errors.append(frame)
            self._cond.notify_all()
        if self._on_trouble is not None:
            self._on_trouble()

    def on_message(self, frame: Frame) -> None:
        if self._on_message is not None:
            self._on_message(frame)

    def on_heartbeat_timeout(self) -> None:
        self._lose("no heart-beat from the broker within the grace period")

    def on_disconnected(self) -> None:
        self._lose("the connection closed")

    def _lose(self, why: str) -> None:
        with self._cond:
            if self.lost is None:
                self.lost = why
                if not self._closing:
                    logger.warning("%s: %s (%s)", self.purpose, why, self.settings.describe())
            self._cond.notify_all()
        if self._on_trouble is not None:
            self._on_trouble()


def error_text(frame: Frame) -> str:
    """What an ERROR frame says: its ``message`` header and the first line of its body."""
    headers = getattr(frame, "headers", {}) or {}
    body = getattr(frame, "body", b"") or b""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    first = text.strip().splitlines()[0] if text.strip() else ""
    message = str(headers.get("message", "")).strip()
    parts = [message] if message else []
    if first and first != message:
        parts.append(first)
    return "; ".join(parts) or "no details"
