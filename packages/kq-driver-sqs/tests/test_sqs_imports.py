"""What a worker's start imports from the SQS package: the driver and its consumer, not the producer or the
queue manager (each is imported when first used). Checked by what a fresh interpreter loads, never by
timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kq.drivers.sqs

UNWANTED = ("_producer", "_queue_manager")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    argv = [sys.executable, "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_worker_does_not_load_the_producer() -> None:
    loaded = _loaded_after("import kq.drivers.sqs, kq.drivers.sqs._consumer, kq.core._loop")
    assert sorted(m for m in loaded if m.startswith("kq.drivers.sqs._") and m.endswith(UNWANTED)) == []
    assert "kq.drivers.sqs._driver" in loaded


def test_every_public_name_resolves_and_unknown_ones_fail() -> None:
    loaded = _loaded_after(
        "import kq.drivers.sqs as m\n"
        "for name in m.__all__: getattr(m, name)\n"
        "assert set(m.__all__) <= set(dir(m))"
    )
    assert "kq.drivers.sqs._producer" in loaded
    assert set(kq.drivers.sqs._LAZY) == set(kq.drivers.sqs.__all__) - {"SqsDriver", "__version__"}
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        getattr(kq.drivers.sqs, "nosuch")  # noqa: B009 - a literal name on purpose
