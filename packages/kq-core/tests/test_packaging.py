"""Every distribution in the repository builds a wheel that keeps kq, kq.drivers and kq.contrib as
PEP 420 namespace packages (no __init__.py at those levels), ships py.typed in its leaf packages and
declares its entry points."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

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


def _version(package: Path) -> Version:
    [version_file] = package.glob("src/kq/**/version.py")
    found = re.search(r'^__version__ = "([^"]+)"$', version_file.read_text(), re.MULTILINE)
    assert found, version_file
    return Version(found.group(1))


def test_sibling_requirements_are_pinned_to_the_siblings_minor_release() -> None:
    """kq-cli requires the kq-core it was released with (``~=X.Y.Z``), not any later one."""
    versions = {p.name: _version(p) for p in PACKAGES}
    pinned = []
    for package in PACKAGES:
        project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
        for requirement in map(Requirement, project.get("dependencies", [])):
            if requirement.name not in versions:
                continue
            current = versions[requirement.name]
            next_minor = Version(f"{current.major}.{current.minor + 1}.0")
            where = f"{package.name} requires {requirement}"
            assert current in requirement.specifier, f"{where}, which excludes the current {current}"
            assert next_minor not in requirement.specifier, f"{where}, which lets {next_minor} in"
            assert Version("0") not in requirement.specifier, f"{where}, which has no lower bound"
            pinned.append((package.name, requirement.name))
    assert ("kq-cli", "kq-core") in pinned
    drivers = {p.name for p in PACKAGES if p.name.startswith("kq-driver-")}
    assert drivers <= {package for package, sibling in pinned if sibling == "kq-cli"}
