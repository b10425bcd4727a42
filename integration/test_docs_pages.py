"""The docs pages' blocks that need a broker, run against the harness's: the tutorial's "Switch a queue
to RabbitMQ" runs as shown (``<!-- needs: rabbitmq -->`` blocks; tests/docs_runner.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.docs_runner import page_environment, parse_page, run_page  # noqa: E402

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq


def test_the_tutorial_runs_on_rabbitmq(rabbitmq: RabbitMQEndpoint, tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "kq").exists():
        pytest.skip(f"the page needs the workspace's kq next to {sys.executable}")
    page = parse_page(ROOT / "docs" / "getting-started.md", brokers=frozenset({"rabbitmq"}))
    assert not [reason for _, reason in page.not_run if reason == "needs rabbitmq"]
    folder, scratch = tmp_path / "page", tmp_path / "scratch"
    folder.mkdir()
    scratch.mkdir()
    env = page_environment()
    env["RABBITMQ_URL"] = rabbitmq.amqp_url  # kq.toml on the page reads ${RABBITMQ_URL:-...}
    run_page(page, folder, scratch, env)
    # The worker on RabbitMQ ran the command: its output file is there.
    assert (folder / "kq-tutorial" / "testoutput3.txt").read_text().strip().endswith("hello RabbitMQ")
