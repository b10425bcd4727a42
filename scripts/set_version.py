"""Set the version of every distribution under packages/ for a release.

Usage: ``python scripts/set_version.py 0.2.0``.

kq's distributions are released together, with one version. Each keeps it in its own
``src/kq/**/version.py`` (hatchling reads it there, so an sdist builds on its own), and each requires its
siblings' release as ``~=X.Y.Z``; this script rewrites both, and test_packaging.py fails whenever a
distribution disagrees. ``--root`` names another checkout (the tests use a copy).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)
#: A release version as kq writes them: 1.2.3, optionally with a pre-release (1.2.3rc1, 1.2.3.dev4).
RELEASE = re.compile(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?")


def version_files(root: Path) -> dict[str, Path]:
    """Each distribution's version.py, by distribution name."""
    found = {}
    for pyproject in sorted(root.glob("packages/*/pyproject.toml")):
        [path] = pyproject.parent.glob("src/kq/**/version.py")
        found[pyproject.parent.name] = path
    return found


def set_version(root: Path, version: str) -> list[Path]:
    """Write ``version`` into every version.py and every sibling requirement; the files changed."""
    files = version_files(root)
    changed = []
    for path in files.values():
        text = path.read_text()
        new = VERSION.sub(f'__version__ = "{version}"', text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    siblings = "|".join(re.escape(name) for name in files)
    requirement = re.compile(rf'^(\s*"(?:{siblings}))~=[^"]+(",?)$', re.MULTILINE)
    for name in files:
        pyproject = root / "packages" / name / "pyproject.toml"
        text = pyproject.read_text()
        new = requirement.sub(rf"\g<1>~={version}\g<2>", text)
        if new != text:
            pyproject.write_text(new)
            changed.append(pyproject)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("version", help="the release's version, such as 0.2.0")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    if not RELEASE.fullmatch(args.version):
        parser.error(f"{args.version!r} is not a version such as 0.2.0 or 0.2.0rc1")
    changed = set_version(args.root, args.version)
    for path in changed:
        sys.stdout.write(f"{path}\n")
    sys.stdout.write(f"{len(changed)} files set to {args.version}; add its section to CHANGELOG.md\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
