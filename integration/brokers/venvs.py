"""Virtual environments for the brokers that install from PyPI, created on first use and cached.

A broker's environment is built once per machine (per interpreter and requirement list) under
:func:`cache_root`: ``$KQ_TEST_BROKERS_CACHE``, else ``$XDG_CACHE_HOME/kq-test-brokers``, else
``~/.cache/kq-test-brokers``. It is outside the repository, so nothing needs ignoring and every clone
and CI run on the machine shares it. The folder name carries a hash of the interpreter and the
requirements: changing a pin builds a new environment next to the old one instead of mixing them.

An environment counts as installed only once a marker file is written after the last ``pip install``;
one without it (an install killed half-way) is removed and built again. A file lock serialises two
test runs that would build the same environment at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from integration.brokers import BrokerStartError, tail

__all__ = ["VenvSpec", "cache_root", "ensure_venv", "install_seconds"]

logger = logging.getLogger(__name__)

CACHE_ENV = "KQ_TEST_BROKERS_CACHE"
_MARKER = ".kq-installed.json"
#: One ``pip install`` from PyPI; LocalStack's takes about 90 s here.
_STEP_TIMEOUT = 900.0


@dataclass(frozen=True)
class VenvSpec:
    """What to build: ``python -m venv`` with ``python``, then one ``pip install`` per step, in order.

    Steps are separate on purpose: LocalStack's pins (``cryptography<45``...) contradict what its own
    dependencies ask for, so they have to be forced by a second install instead of resolved together.
    """

    name: str
    python: str
    steps: tuple[tuple[str, ...], ...]

    @property
    def key(self) -> str:
        """A short hash of the interpreter and the requirements: the folder's suffix."""
        text = json.dumps([os.path.realpath(self.python), list(map(list, self.steps))])
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def cache_root() -> Path:
    """Where the environments live (see the module docstring)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kq-test-brokers"


def ensure_venv(spec: VenvSpec, root: Path | None = None) -> Path:
    """The folder of ``spec``'s environment, built first if it is not (completely) there."""
    root = cache_root() if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{spec.name}-{spec.key}"
    with _locked(root / f"{folder.name}.lock"):
        if (folder / _MARKER).is_file():
            return folder
        if folder.exists():
            logger.warning("%s: removing the unfinished environment %s, building it again", spec.name, folder)
            shutil.rmtree(folder)
        _build(spec, folder, root / f"{folder.name}.install.log")
    return folder


def install_seconds(folder: Path) -> float | None:
    """How long building the environment in ``folder`` took, None if it is not installed."""
    try:
        return float(json.loads((folder / _MARKER).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(spec: VenvSpec, folder: Path, log: Path) -> None:
    logger.info(
        "%s: creating its environment %s from PyPI (first use on this machine; this takes a minute or two, "
        "output in %s)",
        spec.name,
        folder,
        log,
    )
    started = time.monotonic()
    log.write_text("")
    _run([spec.python, "-m", "venv", str(folder)], log, spec.name)
    python = str(folder / "bin" / "python")
    for step in spec.steps:
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        _run([*pip, *step], log, spec.name)
    seconds = time.monotonic() - started
    marker = {"seconds": round(seconds, 1), "python": spec.python, "steps": [list(s) for s in spec.steps]}
    (folder / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    logger.info("%s: environment %s installed in %.0f s", spec.name, folder, seconds)


def _run(command: list[str], log: Path, name: str) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=_STEP_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BrokerStartError(
                f"{name}: `{' '.join(command)}` did not finish within {_STEP_TIMEOUT:.0f} s\n{tail(log)}"
            ) from None
    if result.returncode != 0:
        raise BrokerStartError(
            f"{name}: `{' '.join(command)}` failed with code {result.returncode} (is PyPI reachable?)\n"
            f"{tail(log)}"
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
