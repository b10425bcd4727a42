"""The cached environments of the PyPI brokers (brokers/venvs.py), and finding a Python for LocalStack.

Offline: the environments built here install nothing from PyPI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from integration.brokers import BrokerStartError
from integration.brokers.sqs import LocalStack, find_localstack_python
from integration.brokers.venvs import VenvSpec, cache_root, ensure_venv, install_seconds

#: No pip step at all: only ``python -m venv``, a few seconds, no network.
EMPTY = VenvSpec("empty", sys.executable, ())


def test_built_once_then_reused(tmp_path: Path) -> None:
    folder = ensure_venv(EMPTY, tmp_path)
    assert (folder / "bin" / "python").exists()
    assert folder.name.startswith("empty-")
    seconds = install_seconds(folder)
    assert seconds is not None
    marker = next(folder.glob(".kq-installed*"))
    stamp = marker.stat().st_mtime_ns
    assert ensure_venv(EMPTY, tmp_path) == folder
    assert marker.stat().st_mtime_ns == stamp, "a finished environment was built again"


def test_an_unfinished_environment_is_built_again(tmp_path: Path) -> None:
    folder = tmp_path / f"empty-{EMPTY.key}"
    folder.mkdir()
    (folder / "left-over").write_text("an install killed half-way")
    assert ensure_venv(EMPTY, tmp_path) == folder
    assert not (folder / "left-over").exists()
    assert install_seconds(folder) is not None


def test_other_requirements_get_another_folder(tmp_path: Path) -> None:
    pinned = VenvSpec("empty", sys.executable, (("moto[server]==5.2.5",),))
    assert pinned.key != EMPTY.key


def test_a_failed_install_says_what_failed_and_is_not_reused(tmp_path: Path) -> None:
    broken = VenvSpec("broken", sys.executable, (("--no-index", str(tmp_path / "no-such-package")),))
    with pytest.raises(BrokerStartError, match=r"broken: .*pip install.* failed with code"):
        ensure_venv(broken, tmp_path)
    assert install_seconds(tmp_path / f"broken-{broken.key}") is None


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KQ_TEST_BROKERS_CACHE", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("KQ_TEST_BROKERS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "kq-test-brokers"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="this Python could run LocalStack itself")
def test_without_python_312_localstack_gives_a_one_line_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KQ_TEST_LOCALSTACK_PYTHON", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    assert find_localstack_python() is None
    with pytest.raises(BrokerStartError, match=r"^LocalStack needs Python >= 3\.12 [^\n]*$"):
        LocalStack(workdir=tmp_path, port=4599).venv_spec()


def test_an_older_python_named_for_localstack_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.version_info >= (3, 12):
        pytest.skip("this Python could run LocalStack itself")
    monkeypatch.setenv("KQ_TEST_LOCALSTACK_PYTHON", sys.executable)
    assert find_localstack_python() is None
