"""kq's own reading of entry points must find what importlib.metadata finds, or step aside."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import zipfile
from pathlib import Path

import pytest

from kq.core._entry_points import scan
from kq.core.plugins import load_driver_class


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    "group", ["kq.drivers", "kq.handlers", "kq.listeners", "kq.commands", "console_scripts"]
)
def test_the_scan_finds_what_importlib_metadata_finds(group: str) -> None:
    scanned = scan(group)
    assert scanned is not None  # this environment has folders only
    ours = sorted((e.name, e.value, _normal(e.dist.name) if e.dist else "") for e in scanned)
    theirs = sorted(
        (e.name, e.value, _normal(e.dist.name) if e.dist else "")
        for e in importlib.metadata.entry_points(group=group)
    )
    assert ours == theirs
    if group == "kq.drivers":
        assert ("sqlite", "kq.drivers.sqlite:SqliteDriver", "kq-core") in ours


def test_a_scanned_entry_point_loads_what_it_names() -> None:
    scanned = scan("kq.drivers")
    assert scanned is not None
    sqlite = next(e for e in scanned if e.name == "sqlite")
    assert sqlite.load() is load_driver_class("sqlite")


def test_the_first_distribution_of_a_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder, value in (("first", "first_module:Driver"), ("second", "second_module:Driver")):
        info = tmp_path / folder / "kqtest_shadowed-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kqtest-shadowed\nVersion: 1.0\n\nbody\n")
        (info / "entry_points.txt").write_text(f"[kqtest.group]\nthing = {value}\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "first"), str(tmp_path / "second")])
    scanned = scan("kqtest.group")
    assert scanned is not None
    assert [(e.name, e.value, e.dist.name if e.dist else None) for e in scanned] == [
        ("thing", "first_module:Driver", "kqtest-shadowed")
    ]


def test_a_zip_on_the_path_leaves_it_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("kqtest_zipped-1.0.dist-info/entry_points.txt", "[kq.drivers]\nzipped = z:D\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(archive)])
    assert scan("kq.drivers") is None


def test_a_first_distribution_without_the_group_still_shadows_a_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As importlib.metadata: distributions are told apart by their folder's name, whatever they hold."""
    for folder, text in (("first", "[other.group]\nx = a:b\n"), ("second", "[kqtest.group]\nthing = m:D\n")):
        info = tmp_path / folder / "kqtest_shadowed-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kqtest-shadowed\nVersion: 1.0\n\n")
        (info / "entry_points.txt").write_text(text)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "first"), str(tmp_path / "second")])
    assert scan("kqtest.group") == []
    assert list(importlib.metadata.entry_points(group="kqtest.group")) == []
    assert [e.dist.name if e.dist else None for e in scan("other.group") or []] == ["kqtest-shadowed"]


def _write_distribution(folder: Path, name: str, text: str) -> None:
    info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n")
    (info / "entry_points.txt").write_text(text)


def test_each_folder_is_read_once_for_every_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker scans drivers, then listeners (and handlers): one listing and one read of each
    ``entry_points.txt`` serve them all, until the registry's cache is cleared."""
    from kq.core import _entry_points
    from kq.core._registry import clear_cache

    _write_distribution(tmp_path, "kqtest-a", "[kqtest.one]\nx = a:X\n\n[kqtest.two]\ny = a:Y\n")
    _write_distribution(tmp_path, "kqtest-b", "[kqtest.two]\nz = b:Z\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    reads: list[str] = []
    read = _entry_points._read

    def counted(metadata: str) -> dict[str, list[tuple[str, str]]]:
        reads.append(Path(metadata).name)
        return read(metadata)

    monkeypatch.setattr(_entry_points, "_read", counted)
    clear_cache()
    assert [(e.name, e.value) for e in scan("kqtest.one") or []] == [("x", "a:X")]
    assert [(e.name, e.value, e.dist.name if e.dist else "") for e in scan("kqtest.two") or []] == [
        ("y", "a:Y", "kqtest-a"),
        ("z", "b:Z", "kqtest-b"),
    ]
    assert sorted(reads) == ["kqtest_a-1.0.dist-info", "kqtest_b-1.0.dist-info"]
    # A distribution installed while the process runs is seen once the cache is cleared, as before.
    _write_distribution(tmp_path, "kqtest-c", "[kqtest.one]\nw = c:W\n")
    assert [e.name for e in scan("kqtest.one") or []] == ["x"]
    clear_cache()
    assert [e.name for e in scan("kqtest.one") or []] == ["x", "w"]
    clear_cache()
