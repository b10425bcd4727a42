"""What a RabbitMQ worker's start imports: the driver and its consumer, not the producer, the queue manager,
the management client or OpenSSL's digests (each is imported when first used). Checked by what a fresh
interpreter loads, never by timing (``nox -s bench`` measures the start)."""

from __future__ import annotations

import subprocess
import sys

from kq.core.testing import check_lazy_exports, modules_loaded_after

WORKER_IMPORTS = (
    "import kq.drivers.rabbitmq, kq.drivers.rabbitmq._consumer, kq.core._loop, kq.core._app, "
    "kq.core._failure_policy, kq.core._signing"
)


def _run(code: str) -> str:
    argv = [sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def test_a_worker_loads_neither_the_producer_nor_the_management_client_nor_hashlib() -> None:
    loaded = modules_loaded_after(WORKER_IMPORTS)
    unwanted = {
        "kq.drivers.rabbitmq._producer",
        "kq.drivers.rabbitmq._publish",
        "kq.drivers.rabbitmq._queue_manager",
        "kq.drivers.rabbitmq._management",
        "hashlib",
        "hmac",
        "secrets",
    }
    assert sorted(loaded & unwanted) == []
    assert "pika" in loaded  # it did import the driver


def test_every_public_name_resolves_on_first_use() -> None:
    check_lazy_exports("kq.drivers.rabbitmq")


def test_signing_still_works_once_its_digests_are_imported_on_first_use() -> None:
    code = (
        "from kq.core import Signer, Verifier, Message\n"
        "s = Signer(key_id='k', key=b'x' * 32)\n"
        "m = s.sign(Message(body=b'hi'), 'q')\n"
        "print(len(m.headers['kq-signature']), len(m.headers['kq-nonce']))"
    )
    assert _run(code).split() == ["64", "32"]
