"""kq as a new user installs it: every distribution built (the sdist, then the wheel from the sdist, as
``uv build`` does) and the wheels installed, not editable, into a fresh virtual environment on each
installed Python 3.10-3.13, where ``kq --version``, ``kq managedriver list`` and the tutorial
(scripts/demo.sh) run.

``nox -s wheels`` runs this module (it needs uv and builds everything: about a minute); elsewhere it is
skipped. ``KQ_WHEELS_PYTHONS`` (interpreters or versions, separated by spaces) replaces the default
search for 3.10 to 3.13.
"""

from __future__ import annotations

import email
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

if not os.environ.get("KQ_TEST_WHEELS"):
    pytest.skip("run by nox -s wheels (builds and installs every distribution)", allow_module_level=True)

ROOT = Path(__file__).parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
DRIVERS = {"memory", "sqlite", "rabbitmq", "sqs", "stomp"}


def _uv() -> list[str]:
    found = os.environ.get("KQ_UV") or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def _interpreter(version: str) -> str | None:
    """A working interpreter of ``version``: what uv finds, else a pyenv installation."""
    done = subprocess.run(
        [*_uv(), "python", "find", "--system", version], capture_output=True, text=True, check=False
    )
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"), reverse=True):
        if subprocess.run([candidate, "-c", ""], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def _pythons() -> list[str]:
    chosen = os.environ.get("KQ_WHEELS_PYTHONS")
    return chosen.split() if chosen else list(PYTHONS)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every distribution's sdist and wheel, the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    for name in PACKAGES:
        _run(*_uv(), "build", "--quiet", "--out-dir", out, ROOT / "packages" / name)
    return out


def test_every_distribution_builds_an_sdist_and_a_wheel(dist: Path) -> None:
    wheels = sorted(p.name.split("-")[0] for p in dist.glob("*.whl"))
    sdists = sorted(p.name.rsplit("-", 1)[0] for p in dist.glob("*.tar.gz"))
    expected = sorted(name.replace("-", "_") for name in PACKAGES)
    assert (wheels, sdists) == (expected, expected)


def test_sdists_carry_the_license_and_the_tests(dist: Path) -> None:
    for sdist in dist.glob("*.tar.gz"):
        with tarfile.open(sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        assert {"LICENSE", "README.md", "pyproject.toml"} <= names, sdist.name
        assert any(name.startswith("tests/test_") for name in names), f"{sdist.name} has no tests"


def test_wheels_declare_their_license_file(dist: Path) -> None:
    for wheel in dist.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            headers = email.message_from_bytes(archive.read(metadata))
            assert headers.get_all("License-File") == ["LICENSE"], wheel.name
            assert metadata.replace("METADATA", "licenses/LICENSE") in archive.namelist(), wheel.name


@pytest.fixture(scope="module", params=_pythons())
def venv(request: pytest.FixtureRequest, dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with every wheel installed (and their dependencies from the index)."""
    wanted: str = request.param
    python = wanted if os.sep in wanted else _interpreter(wanted)
    if python is None:
        pytest.skip(f"no Python {wanted} on this machine")
    folder = tmp_path_factory.mktemp(f"venv-{wanted.rsplit(os.sep, 1)[-1]}-")  # venv-3.12-0
    _run(*_uv(), "venv", "--quiet", "--python", python, folder)
    _run(
        *_uv(),
        "pip",
        "install",
        "--quiet",
        "--python",
        folder / "bin" / "python",
        *sorted(dist.glob("*.whl")),
    )
    return folder


def _env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose PATH starts with the virtual environment (no workspace paths)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KQ_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def test_kq_version_lists_the_installed_wheels(venv: Path, tmp_path: Path) -> None:
    output = _run(venv / "bin" / "kq", "--version", env=_env(venv))
    section = output.split("Distributions:\n", 1)[1].split("Drivers (kq.drivers):\n", 1)[0]
    listed = [line.split()[0] for line in section.splitlines()]
    assert listed == PACKAGES
    assert "editable" not in output  # installed from the wheels
    python = output.splitlines()[1]
    assert f"({venv / 'bin' / 'python'})" in python
    wanted = venv.name.removeprefix("venv-").rsplit("-", 1)[0]
    if wanted.replace(".", "").isdigit():  # a version such as 3.12: the environment runs that Python
        assert f" {wanted}." in python, python


def test_kq_managedriver_lists_every_driver(venv: Path, tmp_path: Path) -> None:
    env = _env(venv)
    done = subprocess.run(
        [venv / "bin" / "kq", "managedriver", "list", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    listed = {entry["type"]: entry["distribution"] for entry in json.loads(done.stdout)["types"]}
    assert set(listed) == DRIVERS, done.stdout
    assert listed["rabbitmq"] == "kq-driver-rabbitmq"


def test_the_tutorial_runs(venv: Path) -> None:
    output = _run("bash", ROOT / "scripts" / "demo.sh", env=_env(venv), timeout=120)
    assert "Done: two commands were queued, executed by the worker, and acknowledged." in output


def test_optional_dependencies_stay_optional(venv: Path, tmp_path: Path) -> None:
    """requests and pytest are extras: not installed, and kq-core says which extra to install."""
    python = str(venv / "bin" / "python")
    code = (
        "import importlib.util\n"
        "print(importlib.util.find_spec('requests') is None)\n"
        "try:\n"
        "    import kq.core.testing\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    lines = _run(python, "-c", code, env=_env(venv)).splitlines()
    assert lines[0] == "True", "requests was installed without kq-core[http]"
    assert lines[1].endswith("pip install 'kq-core[testing]'")


def test_a_foreign_kq_package_is_named_in_one_line(venv: Path, tmp_path: Path) -> None:
    """PyPI's unrelated ``kq`` installs a regular kq/__init__.py: the console script says what to do."""
    (tmp_path / "kq").mkdir()
    (tmp_path / "kq" / "__init__.py").write_text(
        "raise RuntimeError('the foreign kq package was imported')\n"
    )
    done = subprocess.run(
        [venv / "bin" / "kq", "managedriver", "list"],
        capture_output=True,
        text=True,
        env=_env(venv, PYTHONPATH=str(tmp_path)),
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "`pip uninstall kq`" in done.stderr
