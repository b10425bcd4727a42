"""The ``sqs`` fixture: an SQS endpoint per emulator (moto, LocalStack), or the one the environment names.

* ``KQ_TEST_SQS_ENDPOINT`` set: that endpoint is used as is (test id ``external``), with
  ``KQ_TEST_SQS_REGION`` (default us-east-1) and ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  (default test/test). Nothing is started.
* Otherwise every test that takes ``sqs`` runs once per emulator (ids ``moto`` and ``localstack``;
  ``KQ_TEST_SQS_EMULATORS=moto`` picks fewer). Each emulator is installed on first use (see
  ``brokers/venvs.py``), started once per session on ``KQ_TEST_SQS_MOTO_PORT`` (4576) or
  ``KQ_TEST_SQS_LOCALSTACK_PORT`` (4577), and stopped at the end of the session. Its log stays in the
  session's temporary folder; a failed start puts its tail in the reason.
* An emulator that cannot be had skips its tests with the reason, or fails them when ``CI`` is set.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.brokers import BrokerError, PortInUseError
from integration.brokers.sqs import (
    ACCESS_KEY_ID,
    EMULATORS,
    REGION,
    SECRET_ACCESS_KEY,
    SqsEmulator,
)
from integration.policy import port_from_env, unavailable

__all__ = ["SqsEndpoint", "SqsEmulators", "sqs", "sqs_emulators", "sqs_targets", "DEFAULT_PORTS"]

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "KQ_TEST_SQS_ENDPOINT"
EMULATORS_ENV = "KQ_TEST_SQS_EMULATORS"
#: In LocalStack's 4566-4599 range but off 4566 itself, which a developer's own LocalStack may hold.
DEFAULT_PORTS = {"moto": 4576, "localstack": 4577}


@dataclass(frozen=True)
class SqsEndpoint:
    """What a test gets from the ``sqs`` fixture: everything a boto3 client needs."""

    #: ``moto``, ``localstack`` or ``external``.
    name: str
    endpoint_url: str
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    #: The emulator the harness started, None for an external endpoint.
    emulator: SqsEmulator | None = None

    def driver_table(self, name: str = "aws", **options: object) -> str:
        """A ``[drivers.<name>]`` table of type ``sqs`` for this endpoint, plus ``options`` (numbers and
        strings), for the ``kq.toml`` of end-to-end tests."""
        lines = [
            f"[drivers.{name}]",
            'type = "sqs"',
            f'endpoint_url = "{self.endpoint_url}"',
            f'region = "{self.region}"',
            f'access_key_id = "{self.access_key_id}"',
            f'secret_access_key = "{self.secret_access_key}"',
        ]
        for key, value in options.items():
            lines.append(f"{key} = {json.dumps(value) if isinstance(value, str) else value}")
        return "\n".join(lines) + "\n"

    def reset(self) -> None:
        """Make the emulator forget every queue; skips the test for an endpoint we did not start."""
        if self.emulator is None:
            pytest.skip(f"reset() needs an emulator started by the harness, but {ENDPOINT_ENV} is set")
        self.emulator.reset()


def sqs_targets() -> list[str]:
    """The ``sqs`` fixture's parameters: ``["external"]``, or the emulators to start."""
    if os.environ.get(ENDPOINT_ENV):
        return ["external"]
    chosen = os.environ.get(EMULATORS_ENV, "")
    names = [n.strip() for n in chosen.split(",") if n.strip()] or list(EMULATORS)
    unknown = sorted(set(names) - set(EMULATORS))
    if unknown:
        raise pytest.UsageError(f"{EMULATORS_ENV}: unknown emulator(s) {unknown}; known: {list(EMULATORS)}")
    return names


class SqsEmulators:
    """Starts each emulator the first time a test asks for it, and stops them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._running: dict[str, SqsEmulator] = {}
        #: Why an emulator could not be had: its tests are not made to retry a failed install.
        self._failed: dict[str, str] = {}

    def endpoint(self, name: str) -> SqsEndpoint:
        """The running emulator ``name``, started now if it is not; skips (or fails in CI) if impossible."""
        if name in self._failed:
            unavailable(self._failed[name])
        if name not in self._running:
            try:
                self._running[name] = self._start(name)
            except BrokerError as exc:
                self._failed[name] = self._reason(name, exc)
                unavailable(self._failed[name])
        emulator = self._running[name]
        return SqsEndpoint(name=name, endpoint_url=emulator.endpoint_url, emulator=emulator)

    def stop_all(self) -> None:
        """Stop every emulator this session started."""
        while self._running:
            _, emulator = self._running.popitem()
            emulator.stop()

    def _start(self, name: str) -> SqsEmulator:
        port = port_from_env(f"KQ_TEST_SQS_{name.upper()}_PORT", DEFAULT_PORTS[name])
        emulator = EMULATORS[name](workdir=self._workdir / name, port=port)
        emulator.start()
        return emulator

    @staticmethod
    def _reason(name: str, exc: BrokerError) -> str:
        if isinstance(exc, PortInUseError):
            return (
                f"{name} could not be started: {exc}, or point {ENDPOINT_ENV} at a running endpoint "
                f"(or leave {name} out with {EMULATORS_ENV})"
            )
        return f"{name} could not be started: {exc}"


@pytest.fixture(scope="session")
def sqs_emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqsEmulators]:
    """The emulators of this session (started lazily, stopped at the end)."""
    emulators = SqsEmulators(tmp_path_factory.mktemp("sqs"))
    try:
        yield emulators
    finally:
        emulators.stop_all()


@pytest.fixture(scope="session", params=sqs_targets())
def sqs(request: pytest.FixtureRequest, sqs_emulators: SqsEmulators) -> SqsEndpoint:
    """An SQS endpoint: each emulator in turn, or the external one (see the module docstring)."""
    name: str = request.param
    if name == "external":
        return SqsEndpoint(
            name="external",
            endpoint_url=os.environ[ENDPOINT_ENV],
            region=os.environ.get("KQ_TEST_SQS_REGION") or REGION,
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or ACCESS_KEY_ID,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or SECRET_ACCESS_KEY,
        )
    return sqs_emulators.endpoint(name)
