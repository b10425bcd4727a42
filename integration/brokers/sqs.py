"""SQS emulators for the integration tests: moto's server and LocalStack, as local processes (no Docker).

Each runs from a virtual environment of its own that :mod:`integration.brokers.venvs` builds from PyPI
on first use and caches per machine, on 127.0.0.1, with its log (and LocalStack's state) in a work
folder. The traps behind the recipes (``reference/brokers.md`` §3, checked with moto 5.2.5 and
localstack-core 2026.3.0):

* **moto** (:class:`MotoServer`) installs on any Python the tests run on and starts in under a second.
  It is lax about AWS's content rules (see ``contract-review.md`` §0). ``reset()`` wipes its state.
* **LocalStack** (:class:`LocalStack`) is the endpoint users name. Only ``localstack-core`` run as
  ``python -m localstack.runtime.main`` works without Docker (the ``localstack`` CLI wants Docker or a
  licence). It needs **Python >= 3.12** (it installs on 3.11 but fails at start with "No component
  plugins found"; :func:`find_localstack_python` looks for one) and three pins: ``cbor2<6``,
  ``pyopenssl<25`` with ``cryptography<45``. ``GATEWAY_SERVER=hypercorn``, because the default twisted
  gateway needs an undeclared dependency and binds 0.0.0.0 whatever ``GATEWAY_LISTEN`` says;
  ``SQS_ENDPOINT_STRATEGY=path`` so queue URLs stay on 127.0.0.1. Its environment is built from
  scratch (``HOME`` and ``TMPDIR`` in the work folder), so no ``LOCALSTACK_*`` or AWS variable of the
  developer's shell changes it, and nothing is written under ``~/.localstack`` or ``/var/lib``.

Both are stopped with SIGTERM to their process group, then SIGKILL after ``stop_grace`` seconds.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import requests

from integration.brokers import (
    LOOPBACK,
    POLL_INTERVAL,
    BrokerStartError,
    PortInUseError,
    port_in_use,
    spawn,
    stop_process_group,
    tail,
)
from integration.brokers.venvs import VenvSpec, ensure_venv, install_seconds

__all__ = [
    "REGION",
    "ACCESS_KEY_ID",
    "SECRET_ACCESS_KEY",
    "SqsEmulator",
    "MotoServer",
    "LocalStack",
    "EMULATORS",
    "find_localstack_python",
]

logger = logging.getLogger(__name__)

#: What clients of an emulator use: neither checks credentials, and both default to this region.
REGION = "us-east-1"
ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"

#: The versions checked (brokers.md §3); a new release is a deliberate change here, not a surprise in CI.
MOTO_REQUIREMENTS = ("moto[server]>=5.2,<5.3",)
LOCALSTACK_REQUIREMENTS = ("localstack-core[runtime]==2026.3.*",)
#: Forced after LocalStack: cbor2 6 lacks cbor2._decoder; pyOpenSSL 25+ lacks X509.add_extensions and
#: needs a cryptography that lacks GEN_EMAIL. pip then warns about joserfc, which SQS does not use.
LOCALSTACK_PINS = ("cbor2<6", "pyopenssl<25", "cryptography<45")
LOCALSTACK_PYTHON_ENV = "KQ_TEST_LOCALSTACK_PYTHON"


@dataclass
class SqsEmulator(ABC):
    """An SQS emulator run from ``workdir`` on ``port``; subclasses say how to install, start and probe it."""

    workdir: Path
    port: int
    #: Seconds from spawning the process to serving SQS (not counting the first install).
    timeout: float = 60.0
    #: Seconds a graceful stop may take before the process group is killed.
    stop_grace: float = 10.0
    #: Where the environments are cached (None: :func:`integration.brokers.venvs.cache_root`).
    cache: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _venv: Path | None = field(default=None, init=False, repr=False)

    #: The emulator's name: the test ids, log file names and ``KQ_TEST_SQS_<NAME>_PORT``.
    name: ClassVar[str]

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.name} port must be between 1 and 65535, got {self.port}")

    @property
    def endpoint_url(self) -> str:
        """The URL boto3 gets as ``endpoint_url``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_file(self) -> Path:
        """Where the emulator's output goes."""
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        """True while the emulator's process runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The PID of the running emulator, None when it is not running."""
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def install_seconds(self) -> float | None:
        """How long building this emulator's environment took (once per machine)."""
        return install_seconds(self._venv) if self._venv is not None else None

    def install(self) -> Path:
        """Build the emulator's environment if needed (see :mod:`integration.brokers.venvs`); its folder."""
        if self._venv is None:
            self._venv = ensure_venv(self.venv_spec(), self.cache)
        return self._venv

    def start(self) -> None:
        """Install if needed, start, and wait until SQS answers (a no-op while running)."""
        if self.running:
            return
        self.stop()
        if port_in_use(self.port):
            raise PortInUseError(self.port, self.name, f" (KQ_TEST_SQS_{self.name.upper()}_PORT)")
        venv = self.install()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        logger.info("starting %s on %s (work folder %s)", self.name, self.endpoint_url, self.workdir)
        try:
            self._proc = spawn(self.command(venv), self.log_file, self.environment(), cwd=self.workdir)
            self._wait_until_ready(started + self.timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("%s ready on %s in %.1f s", self.name, self.endpoint_url, time.monotonic() - started)

    def stop(self) -> None:
        """Stop the emulator (SIGTERM, then SIGKILL) and wait until it has exited; safe to repeat."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        started = time.monotonic()
        stop_process_group(proc, self.stop_grace, self.name)
        logger.info("%s on port %d stopped in %.1f s", self.name, self.port, time.monotonic() - started)

    def log_tails(self) -> str:
        """The end of the emulator's log."""
        return tail(self.log_file)

    def __enter__(self) -> SqsEmulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @abstractmethod
    def venv_spec(self) -> VenvSpec:
        """The environment to build."""

    @abstractmethod
    def command(self, venv: Path) -> list[str]:
        """The command line that runs the emulator from ``venv``."""

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """The process environment."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the emulator serves SQS requests."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every queue and message."""

    def _wait_until_ready(self, deadline: float) -> None:
        while not self.ready():
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise BrokerStartError(
                    f"{self.name} exited with code {code} while starting.\n{self.log_tails()}"
                )
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"{self.name} did not serve SQS on {self.endpoint_url} within {self.timeout:.0f} s.\n"
                    f"{self.log_tails()}"
                )
            time.sleep(POLL_INTERVAL)


@dataclass
class MotoServer(SqsEmulator):
    """moto's server (``moto_server``), on the Python that runs the tests."""

    name: ClassVar[str] = "moto"

    def venv_spec(self) -> VenvSpec:
        """moto with its server extra, on the interpreter behind the running one."""
        return VenvSpec(self.name, _base_python(), (MOTO_REQUIREMENTS,))

    def command(self, venv: Path) -> list[str]:
        """``moto_server`` on the loopback address only."""
        return [str(venv / "bin" / "moto_server"), "-H", LOOPBACK, "-p", str(self.port)]

    def environment(self) -> dict[str, str]:
        """The tests' environment without AWS and moto settings (they would change what moto does)."""
        dropped = ("AWS_", "MOTO_", "TEST_SERVER_MODE")
        return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}

    def ready(self) -> bool:
        """True once moto's own API answers."""
        return _http_ok("GET", f"{self.endpoint_url}/moto-api/data.json")

    def reset(self) -> None:
        """``POST /moto-api/reset``: every backend forgets its state."""
        response = requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10.0)
        response.raise_for_status()


@dataclass
class LocalStack(SqsEmulator):
    """LocalStack's runtime in host mode with only SQS; needs Python >= 3.12 (see the module docstring)."""

    name: ClassVar[str] = "localstack"
    #: The interpreter to build the environment with (None: :func:`find_localstack_python`).
    python: str | None = None

    def venv_spec(self) -> VenvSpec:
        """localstack-core with its runtime, then the pins, on a Python >= 3.12."""
        python = self.python or find_localstack_python()
        if python is None:
            raise BrokerStartError(localstack_python_missing())
        return VenvSpec(self.name, python, (LOCALSTACK_REQUIREMENTS, LOCALSTACK_PINS))

    def command(self, venv: Path) -> list[str]:
        """The runtime module; the ``localstack`` CLI would want Docker or a licence."""
        return [str(venv / "bin" / "python"), "-m", "localstack.runtime.main"]

    def environment(self) -> dict[str, str]:
        """A clean environment: only PATH and locale from outside, everything else LocalStack's settings."""
        home = self.workdir / "home"
        tmp = self.workdir / "tmp"
        for folder in (home, tmp):
            folder.mkdir(parents=True, exist_ok=True)
        listen = f"{LOOPBACK}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": str(tmp),
                "GATEWAY_SERVER": "hypercorn",
                "GATEWAY_LISTEN": listen,
                "LOCALSTACK_HOST": listen,
                "SERVICES": "sqs",
                "EAGER_SERVICE_LOADING": "1",
                "SQS_ENDPOINT_STRATEGY": "path",
                "DNS_ADDRESS": "0",
                "DISABLE_EVENTS": "1",
                "SKIP_SSL_CERT_DOWNLOAD": "1",
            }
        )
        return env

    def ready(self) -> bool:
        """True once ``/_localstack/health`` says SQS is running."""
        try:
            response = requests.get(f"{self.endpoint_url}/_localstack/health", timeout=2.0)
            services = response.json().get("services", {}) if response.status_code == 200 else {}
        except (requests.RequestException, ValueError):
            return False
        return isinstance(services, dict) and services.get("sqs") == "running"

    def reset(self) -> None:
        """Delete every queue: LocalStack's community runtime has no endpoint that resets state."""
        import boto3  # type: ignore[import-untyped, import-not-found, unused-ignore]

        client = boto3.client(
            "sqs",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        for page in client.get_paginator("list_queues").paginate():
            for url in page.get("QueueUrls", []):
                client.delete_queue(QueueUrl=url)


#: The emulators by name, in the order the tests run against them.
EMULATORS: dict[str, type[SqsEmulator]] = {"moto": MotoServer, "localstack": LocalStack}


def find_localstack_python() -> str | None:
    """A Python >= 3.12 for LocalStack: ``$KQ_TEST_LOCALSTACK_PYTHON``, this one, PATH, then pyenv's."""
    explicit = os.environ.get(LOCALSTACK_PYTHON_ENV)
    if explicit:
        return explicit if _python_version(explicit) >= (3, 12) else None
    if sys.version_info >= (3, 12):
        return _base_python()
    candidates = [shutil.which(f"python3.{minor}") for minor in (13, 12)]
    candidates += [str(p) for p in _pyenv_pythons()]
    for candidate in candidates:
        if candidate and _python_version(candidate) >= (3, 12):
            return candidate
    return None


def localstack_python_missing() -> str:
    """The one-line reason LocalStack cannot be had without a Python >= 3.12."""
    return (
        "LocalStack needs Python >= 3.12 and none was found (not this interpreter, no python3.13/3.12 on "
        f"PATH, none under $(pyenv root)/versions, or {LOCALSTACK_PYTHON_ENV} names an older one); "
        f"install one or set {LOCALSTACK_PYTHON_ENV}"
    )


def _pyenv_pythons() -> list[Path]:
    """pyenv's interpreters, newest first (3.13 before 3.12; 3.14 last, as it is untested here)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = []
    for python in root.glob("versions/*/bin/python3"):
        match = re.fullmatch(r"3\.(\d+)\.(\d+)", python.parent.parent.name)
        if match:
            found.append(((int(match[1]) in (12, 13), int(match[1]), int(match[2])), python))
    return [python for _, python in sorted(found, reverse=True)]


def _python_version(python: str) -> tuple[int, int]:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30.0,
            check=True,
        )
        major, minor = result.stdout.split()
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError):
        return (0, 0)


def _base_python() -> str:
    """The interpreter behind the running one (a venv's python would tie the cache to that venv)."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def _http_ok(method: str, url: str) -> bool:
    try:
        return requests.request(method, url, timeout=2.0).status_code == 200
    except requests.RequestException:
        return False
