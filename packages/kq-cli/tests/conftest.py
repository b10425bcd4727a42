"""Fixtures shared by kq-cli's tests (they live in kq.core.testing; this only registers them)."""

from kq.core.testing import workspace

__all__ = ["workspace"]
