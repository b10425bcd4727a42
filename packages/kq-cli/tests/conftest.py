"""Fixtures shared by kq-cli's tests (the workspace fixture lives in kq.core.testing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kq.core.testing import workspace

__all__ = ["workdir", "workspace"]


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty folder, with no configuration file and no $KQ_CONFIG."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KQ_CONFIG", raising=False)
    return tmp_path
