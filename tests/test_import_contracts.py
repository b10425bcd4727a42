"""Each import-linter contract of pyproject.toml fails when a forbidden import is added.

The sources are copied to a temporary folder, one import is appended to one module, and ``lint-imports``
runs there on the copy alone. Run by ``nox -s lint`` (skipped where import-linter is not installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(ROOT.glob("packages/*/src"))

#: Runs lint-imports with only the copied sources on the path: editable installs of the real tree
#: (``.pth`` entries) would otherwise add its folders to the ``kq`` namespace package.
PROBE = """
import sys
real = {real!r}
sys.path[:] = [*{sources!r}, *(p for p in sys.path if not p.startswith(real))]
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", "--no-cache", "--no-logo", *sys.argv[1:]]
lint_imports_command()
"""


def _copy_tree(tmp_path: Path) -> list[Path]:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    copies = []
    for source in SOURCES:
        target = tmp_path / source.relative_to(ROOT)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(target)
    return copies


def _lint_imports(tmp_path: Path, copies: list[Path], *args: str) -> subprocess.CompletedProcess[str]:
    probe = PROBE.format(real=str(ROOT / "packages"), sources=[str(c) for c in copies])
    env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _module_file(copies: list[Path], module: str) -> Path:
    relative = Path(*module.split("."))
    for copy in copies:
        for candidate in (copy / relative.with_suffix(".py"), copy / relative / "__init__.py"):
            if candidate.exists():
                return candidate
    raise AssertionError(f"{module} is not in the copied sources")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The copied tree keeps every contract (so that a failure below comes from the added import)."""
    tmp_path = tmp_path_factory.mktemp("pristine")
    done = _lint_imports(tmp_path, _copy_tree(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.usefixtures("pristine")
@pytest.mark.parametrize(
    ("contract", "importer", "statement", "imported"),
    [
        ("core", "kq.core.version", "import kq.cli", "kq.cli"),
        ("core", "kq.core.version", "import kq.drivers.sqlite", "kq.drivers.sqlite"),
        ("cli", "kq.cli.version", "import kq.drivers.sqlite", "kq.drivers.sqlite"),
        ("cli", "kq.cli.version", "import kq.contrib.xmlrpc", "kq.contrib.xmlrpc"),
        ("drivers", "kq.drivers.rabbitmq.version", "import kq.drivers.memory", "kq.drivers.memory"),
        ("drivers-above", "kq.drivers.sqlite", "import kq.cli", "kq.cli"),
        ("private", "kq.cli.version", "from kq.core._errors import KqError", "kq.core._errors"),
        ("private", "kq.drivers.rabbitmq.version", "import kq.core._errors", "kq.core._errors"),
        ("private", "kq.drivers.sqlite", "import kq.core._errors", "kq.core._errors"),
        ("private", "kq.contrib.xmlrpc.version", "from kq.cli._common import State", "kq.cli._common"),
    ],
    ids=str,
)
def test_a_forbidden_import_breaks_the_contract(
    tmp_path: Path, contract: str, importer: str, statement: str, imported: str
) -> None:
    copies = _copy_tree(tmp_path)
    module = _module_file(copies, importer)
    module.write_text(module.read_text() + f"\n{statement}  # added by the test\n")
    done = _lint_imports(tmp_path, copies, "--contract", contract)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "BROKEN" in output
    assert f"{importer} -> {imported}" in output, output
