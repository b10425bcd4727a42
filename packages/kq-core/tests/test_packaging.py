"""Every distribution in the repository is fit to publish: its wheel keeps kq, kq.drivers and kq.contrib as
PEP 420 namespace packages (no __init__.py at those levels), ships py.typed in its leaf packages and
declares its entry points; wheel and sdist carry the LICENSE and the metadata the package index shows;
its README links only to absolute URLs; and all of them have one version, which their requirements on each
other name."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tarfile
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

ROOT = Path(__file__).parents[3]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
NAMESPACES = ("kq/__init__.py", "kq/drivers/__init__.py", "kq/contrib/__init__.py")
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
DOCS_SITE = "https://kq-project.github.io/kq/"
PROJECT_URLS = {
    "Homepage": "https://github.com/kq-project/kq",
    "Documentation": DOCS_SITE,
    "Source": "https://github.com/kq-project/kq",
    "Issues": "https://github.com/kq-project/kq/issues",
    "Changelog": "https://github.com/kq-project/kq/blob/main/CHANGELOG.md",
}


def _build(package: Path, out: Path, kind: str = "wheel") -> Path:
    # The PEP 517 hook, in a child process whose working directory is the package.
    code = f"import hatchling.build, sys; print(hatchling.build.build_{kind}(sys.argv[1]))"
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
        assert "kq = _kq_launcher:main" in entry_points
        assert "_kq_launcher.py" in names


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_wheel_metadata_is_fit_to_publish(package: Path, tmp_path: Path) -> None:
    wheel = _build(package, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        [metadata_name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        dist_info = metadata_name.rsplit("/", 1)[0]
        metadata = email.message_from_bytes(archive.read(metadata_name))
        license_text = archive.read(f"{dist_info}/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Author"] == "kq developers"
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL", []))
    assert urls == PROJECT_URLS
    assert len(metadata["Keywords"].split(",")) >= 3
    classifiers = set(metadata.get_all("Classifier", []))
    wanted = {f"Programming Language :: Python :: {v}" for v in PYTHONS}
    wanted |= {"Operating System :: POSIX", "Development Status :: 4 - Beta", "Typing :: Typed"}
    assert wanted <= classifiers, wanted - classifiers
    assert metadata["Requires-Python"] == f">={PYTHONS[0]}"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload() == (package / "README.md").read_text()


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_sdist_has_the_license_the_readme_and_the_tests(package: Path, tmp_path: Path) -> None:
    sdist = _build(package, tmp_path, "sdist")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= names
    tests = {p.relative_to(package).as_posix() for p in (package / "tests").glob("*.py")}
    assert tests, f"{package.name} has no tests"
    assert tests <= names, tests - names
    sources = {p.relative_to(package).as_posix() for p in (package / "src").rglob("*.py")}
    assert sources <= names, sources - names


def test_every_package_license_is_the_repository_license() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n")
    assert "Copyright (c) " in license_text
    assert "kq developers" in license_text
    for package in PACKAGES:
        assert (package / "LICENSE").read_text() == license_text, f"{package.name}/LICENSE differs"


#: Markdown links and images: [text](target).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_readme_links_are_absolute_and_name_existing_docs_pages(package: Path) -> None:
    """The package index shows the README alone: a relative link (../../README.md) leads nowhere, and
    a link into the docs site must name a page that exists under docs/."""
    text = (package / "README.md").read_text()
    links = LINK.findall(text)
    assert links, f"{package.name}'s README links nowhere"
    relative = [link for link in links if not link.startswith("https://")]
    assert relative == [], f"{package.name}'s README has links that are not absolute: {relative}"
    for link in links:
        if not link.startswith(DOCS_SITE):
            continue
        page = link.removeprefix(DOCS_SITE).split("#", 1)[0].strip("/")
        candidates = (
            [ROOT / "docs" / "index.md"]
            if not page
            else [
                ROOT / "docs" / f"{page}.md",
                ROOT / "docs" / page / "index.md",
            ]
        )
        assert any(c.is_file() for c in candidates), f"{link} in {package.name}'s README: no docs/{page}.md"
    assert text.startswith(f"# {package.name}\n")


def test_the_changelog_is_kept() -> None:
    """Keep a Changelog's form: an Unreleased section first, then releases, newest first."""
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    releases = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert releases[0] == "Unreleased"
    sections = re.findall(r"^### (.+)$", text, re.MULTILINE)
    allowed = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert sections, "no change sections"
    assert set(sections) <= allowed, set(sections) - allowed


def _version(package: Path) -> Version:
    [version_file] = package.glob("src/kq/**/version.py")
    found = re.search(r'^__version__ = "([^"]+)"$', version_file.read_text(), re.MULTILINE)
    assert found, version_file
    return Version(found.group(1))


def test_every_distribution_has_the_release_version() -> None:
    """One version for the monorepo's releases (scripts/set_version.py writes it everywhere)."""
    versions = {p.name: _version(p) for p in PACKAGES}
    assert len(set(versions.values())) == 1, f"the distributions disagree on the version: {versions}"


def test_sibling_requirements_name_the_release() -> None:
    """A distribution requires its siblings' release exactly as ``~=X.Y.Z``."""
    versions = {p.name: _version(p) for p in PACKAGES}
    for package in PACKAGES:
        project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
        for requirement in map(Requirement, project.get("dependencies", [])):
            if requirement.name in versions:
                wanted = f"~={versions[requirement.name]}"
                assert str(requirement.specifier) == wanted, f"{package.name} requires {requirement}"


def test_set_version_rewrites_every_version_and_sibling_requirement(tmp_path: Path) -> None:
    for package in PACKAGES:
        copy = tmp_path / "packages" / package.name
        copy.mkdir(parents=True)
        shutil.copy(package / "pyproject.toml", copy / "pyproject.toml")
        for version_file in package.glob("src/kq/**/version.py"):
            target = copy / version_file.relative_to(package)
            target.parent.mkdir(parents=True)
            shutil.copy(version_file, target)
    script = ROOT / "scripts" / "set_version.py"
    done = subprocess.run(
        [sys.executable, str(script), "1.4.0rc2", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    copies = sorted((tmp_path / "packages").iterdir())
    assert {_version(p) for p in copies} == {Version("1.4.0rc2")}
    required = [
        str(r)
        for p in copies
        for r in map(
            Requirement, tomllib.loads((p / "pyproject.toml").read_text())["project"]["dependencies"]
        )
        if r.name.startswith("kq-")
    ]
    assert required, "no sibling requirements"
    assert all(r.endswith("~=1.4.0rc2") for r in required), required
    bad = subprocess.run(
        [sys.executable, str(script), "next", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "'next' is not a version" in bad.stderr


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
