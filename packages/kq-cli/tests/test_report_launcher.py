"""The ``kq`` console script's launcher: a regular ``kq`` package (PyPI's unrelated ``kq``, a Kafka job
queue) hides the kq namespace; ``kq`` then says in one line what to uninstall and exits 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

CLI = Path(__file__).parents[1]
#: Runs the console script's target as the installed script does, with ``site`` first on sys.path.
SCRIPT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from _kq_launcher import main; sys.exit(main())"


def _foreign_kq(site: Path) -> Path:
    """A regular ``kq`` package whose code must never run."""
    package = site / "kq"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the foreign kq package was imported')\n")
    return package / "__init__.py"


def _kq(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_console_script_is_the_launcher() -> None:
    project = tomllib.loads((CLI / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"kq": "_kq_launcher:main"}


@pytest.mark.parametrize("args", [(), ("--version",), ("consume", "demo")])
def test_a_foreign_kq_package_gives_one_line_naming_what_to_uninstall(
    tmp_path: Path, args: tuple[str]
) -> None:
    init = _foreign_kq(tmp_path)
    done = _kq(tmp_path, *args)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"kq: error: {init} is a regular 'kq' package that hides the 'kq' namespace of kq-core and kq-cli: "
        "remove it from the Python path, or run `pip uninstall kq` if PyPI's unrelated 'kq' installed it "
        "(kq's distributions are kq-core, kq-cli and kq-driver-*, never kq)\n"
    )


def test_an_installed_foreign_kq_distribution_is_named_with_its_version(tmp_path: Path) -> None:
    init = _foreign_kq(tmp_path)
    metadata = tmp_path / "kq-2.2.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: kq\nVersion: 2.2.0\n\n")
    (metadata / "top_level.txt").write_text("kq\n")
    done = _kq(tmp_path, "--help")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"kq: error: the distribution kq 2.2.0 ({init}) hides the 'kq' namespace of kq-core and kq-cli: "
        "run `pip uninstall kq` (kq's distributions are kq-core, kq-cli and kq-driver-*, never kq)\n"
    )


def test_without_a_foreign_kq_the_launcher_runs_kq(tmp_path: Path) -> None:
    done = _kq(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: kq" in done.stdout
    done = _kq(tmp_path, "nosuchcommand")
    assert done.returncode == 2  # kq's own exit code for a usage error: the launcher adds nothing


def test_python_m_kq_cli_fails_the_normal_way(tmp_path: Path) -> None:
    """Only the console script checks; ``python -m kq.cli`` is Python's import failing."""
    _foreign_kq(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "kq.cli", "--help"],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "the foreign kq package was imported" in done.stderr


def test_the_check_reads_no_distribution_metadata_when_all_is_well(tmp_path: Path) -> None:
    code = (
        "import sys; import _kq_launcher; assert _kq_launcher.namespace_problem() is None; "
        "print('importlib.metadata' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
