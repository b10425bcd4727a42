"""What a RabbitMQ worker's start imports: the driver and its consumer, not the producer, the queue manager,
the management client or OpenSSL's digests (each is imported when first used). Checked by what a fresh
interpreter loads, never by timing (``nox -s bench`` measures the start)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import kq.drivers.rabbitmq

WORKER_IMPORTS = (
    "import kq.drivers.rabbitmq, kq.drivers.rabbitmq._consumer, kq.core._loop, kq.core._app, "
    "kq.core._failure_policy, kq.core._signing"
)


def _run(code: str) -> str:
    argv = [sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    return set(json.loads(_run(probe).splitlines()[-1]))


def test_a_worker_loads_neither_the_producer_nor_the_management_client_nor_hashlib() -> None:
    loaded = _loaded_after(WORKER_IMPORTS)
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


def test_the_lazy_names_resolve_and_match_the_type_checking_imports() -> None:
    loaded = _loaded_after(
        "import kq.drivers.rabbitmq as m\n"
        "for name in m.__all__: getattr(m, name)\n"
        "assert set(m.__all__) <= set(dir(m))"
    )
    assert "kq.drivers.rabbitmq._producer" in loaded
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        getattr(kq.drivers.rabbitmq, "nosuch")  # noqa: B009 - a literal name on purpose
    # mypy reads the TYPE_CHECKING imports, the interpreter the lazy map: a moved name must move in both.
    tree = ast.parse(Path(kq.drivers.rabbitmq.__file__ or "").read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                assert statement.module
                for alias in statement.names:
                    typed[alias.name] = statement.module.rpartition(".")[2]
    assert typed == kq.drivers.rabbitmq._LAZY


def test_signing_still_works_once_its_digests_are_imported_on_first_use() -> None:
    code = (
        "from kq.core import Signer, Verifier, Message\n"
        "s = Signer(key_id='k', key=b'x' * 32)\n"
        "m = s.sign(Message(body=b'hi'), 'q')\n"
        "print(len(m.headers['kq-signature']), len(m.headers['kq-nonce']))"
    )
    assert _run(code).split() == ["64", "32"]
