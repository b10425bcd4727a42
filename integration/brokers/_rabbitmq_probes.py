"""RabbitMQ helpers of :mod:`integration.brokers.rabbitmq`: finding epmd, probing a node, stopping it."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pika  # type: ignore[import-untyped, unused-ignore]
import requests
from pika.exceptions import AMQPError  # type: ignore[import-untyped, unused-ignore]

from integration.brokers import LOOPBACK, port_accepts, process_state

__all__ = ["GUEST", "amqp_answers", "epmd_executable", "is_beam_of", "management_answers", "stop_server"]

logger = logging.getLogger(__name__)

GUEST = ("guest", "guest")  # the default user; RabbitMQ only lets it in over loopback, which is all we use


def epmd_executable() -> str | None:
    """The epmd of the installed Erlang, None if there is none."""
    return shutil.which("epmd") or next(
        (str(p) for p in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")) if p.is_file()), None
    )


def amqp_answers(port: int) -> bool:
    """True once a real AMQP connection as guest succeeds (``rabbitmq-diagnostics ping`` answers sooner)."""
    # Port first: cheap, and it keeps pika from logging a connection error on every poll during boot.
    if not port_accepts(port):
        return False
    params = pika.ConnectionParameters(
        host=LOOPBACK,
        port=port,
        credentials=pika.PlainCredentials(*GUEST),
        connection_attempts=1,
        socket_timeout=2.0,
        stack_timeout=5.0,
    )
    try:
        pika.BlockingConnection(params).close()
    except (AMQPError, OSError):
        return False
    return True


def management_answers(management_url: str) -> bool:
    """True once the management API answers ``/api/overview`` with a 200."""
    try:
        response = requests.get(f"{management_url}/api/overview", auth=GUEST, timeout=2.0)
    except requests.RequestException:
        return False
    return response.status_code == 200


def stop_server(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the start script (it forwards to beam), SIGKILL its process group after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the script's trap forwards it to beam and waits for it
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        logger.warning("RabbitMQ did not stop within %.0f s of SIGTERM; killing its process group", grace)
        # Safe to address the group by the script's PID: the script is not reaped yet, so it is ours.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def is_beam_of(pid: int, node_name: str) -> bool:
    """True if ``pid`` is alive and is the beam of ``node_name`` (PIDs get reused; check the command)."""
    if process_state(pid) in (None, "Z"):
        return False
    try:
        return node_name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
