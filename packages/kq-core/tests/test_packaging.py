"""Every distribution in the repository builds a wheel that keeps kq, kq.drivers and kq.contrib as
PEP 420 namespace packages (no __init__.py at those levels), ships py.typed in its leaf packages and
declares its entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PACKAGES = sorted(p for p in (Path(__file__).parents[2]).iterdir() if (p / "pyproject.toml").is_file())
NAMESPACES = ("kq/__init__.py", "kq/drivers/__init__.py", "kq/contrib/__init__.py")


def _build(package: Path, out: Path) -> Path:
    # The PEP 517 hook, in a child process whose working directory is the package.
    code = "import hatchling.build, sys; print(hatchling.build.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=package, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def test_there_are_packages() -> None:
    assert {p.name for p in PACKAGES} >= {"kq-core", "kq-cli"}


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_wheel_keeps_namespace_packages(package: Path, tmp_path: Path) -> None:
    wheel = _build(package, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next((archive.read(n).decode() for n in names if n.endswith("entry_points.txt")), "")
    assert not names & set(NAMESPACES), f"{wheel.name} ships a namespace __init__.py"
    leaves = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py") and n.startswith("kq/")}
    top_leaves = {leaf for leaf in leaves if not any(leaf.startswith(other + "/") for other in leaves)}
    assert top_leaves, f"{wheel.name} ships no kq package"
    for leaf in top_leaves:
        assert f"{leaf}/py.typed" in names, f"{leaf} lacks py.typed"
    if package.name == "kq-core":
        assert "memory = kq.drivers.memory:MemoryDriver" in entry_points
        assert "sqlite = kq.drivers.sqlite:SqliteDriver" in entry_points
    if package.name == "kq-cli":
        assert "kq = kq.cli:main" in entry_points
