"""``kq --version``: every kq distribution and driver with its version, Python and the platform, and the
warnings a bug report needs; only this path reads the distributions' metadata."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kq.cli import EXIT_OK, __version__, cli

REPOSITORY_PACKAGES = sorted(
    p.name for p in Path(__file__).parents[2].iterdir() if (p / "pyproject.toml").is_file()
)


def _version_output(*flags: str) -> str:
    result = CliRunner().invoke(cli, list(flags or ["--version"]), catch_exceptions=False)
    assert result.exit_code == EXIT_OK, result.output
    return result.output


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_first_line_is_the_version_then_python_and_platform(flag: str) -> None:
    lines = _version_output(flag).splitlines()
    assert lines[0] == f"kq, version {__version__}"
    assert lines[1].startswith(f"Python: {platform.python_implementation()} {platform.python_version()} (")
    assert lines[2] == f"Platform: {platform.platform()}"


def test_every_installed_kq_distribution_and_driver_is_listed() -> None:
    output = _version_output()
    section = output.split("Distributions:\n", 1)[1].split("Drivers (kq.drivers):\n", 1)[0]
    listed = {line.split()[0]: line.split()[1] for line in section.splitlines()}
    # The test environment has them all (and may have examples/' distributions too).
    assert set(listed) >= set(REPOSITORY_PACKAGES), listed
    assert {listed[name] for name in REPOSITORY_PACKAGES} == {__version__}
    drivers = output.split("Drivers (kq.drivers):\n", 1)[1].split("Other plugins:\n", 1)[0]
    rows = {line.split()[0]: line.split()[1:3] for line in drivers.splitlines()}
    assert rows["sqlite"] == ["kq-core", __version__]
    assert rows["memory"] == ["kq-core", __version__]
    assert rows["rabbitmq"] == ["kq-driver-rabbitmq", __version__]
    assert rows["stomp"] == ["kq-driver-stomp", __version__]
    assert "kq.commands queuexmlrpc  (kq-contrib-xmlrpc" in output
    assert re.search(r"^  requests +\S+  \(kq-core\[http\]\)$", output, re.MULTILINE)
    assert "warning:" not in output


def test_the_distributions_released_together_are_the_repositorys() -> None:
    from kq.cli._report import RELEASED_TOGETHER

    assert sorted(RELEASED_TOGETHER) == REPOSITORY_PACKAGES


def _dist_info(site: Path, name: str, version: str, entry_points: str = "", top_level: str = "") -> None:
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
    if entry_points:
        (folder / "entry_points.txt").write_text(entry_points)
    if top_level:
        (folder / "top_level.txt").write_text(top_level)


#: Runs kq with the folder given as its first argument first on sys.path.
FIRST_ON_PATH = "import sys; sys.path.insert(0, sys.argv.pop(1)); from kq.cli import main; main()"


def test_third_party_drivers_a_foreign_kq_and_mixed_releases(tmp_path: Path) -> None:
    """Distributions found first on sys.path: a driver from a third party, PyPI's unrelated ``kq`` (its
    metadata only: its package would hide ours), and a kq-core of another release."""
    site = tmp_path / "site"
    _dist_info(site, "acme-kq-redis", "2.5.1", "[kq.drivers]\nredis = acme_kq_redis:RedisDriver\n")
    _dist_info(site, "kq-driver-nats", "7.0.0", "[kq.drivers]\nnats = kq_nats:NatsDriver\n")
    _dist_info(site, "kq", "2.2.0", top_level="kq\n")
    _dist_info(site, "kq-core", "0.0.9", "[kq.drivers]\nmemory = kq.drivers.memory:MemoryDriver\n")
    done = subprocess.run(
        [sys.executable, "-c", FIRST_ON_PATH, str(site), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout
    assert re.search(r"^  acme-kq-redis +2\.5\.1$", output, re.MULTILINE)
    assert re.search(r"^  redis +acme-kq-redis 2\.5\.1$", output, re.MULTILINE)
    assert re.search(r"^  kq-core +0\.0\.9$", output, re.MULTILINE)  # the first one on sys.path
    assert re.search(r"^  nats +kq-driver-nats 7\.0\.0$", output, re.MULTILINE)
    assert re.search(r"^  memory +kq-core 0\.0\.9$", output, re.MULTILINE)
    assert not re.search(r"^  kq +2\.2\.0", output, re.MULTILINE)
    assert (
        "warning: the distribution kq 2.2.0 is installed: it is not kq's (kq's are kq-core, kq-cli, "
        "kq-driver-*) and its kq/__init__.py hides the kq namespace; run `pip uninstall kq`\n"
    ) in output
    assert f"warning: the kq distributions come from different releases (0.0.9, {__version__})" in output


PROBE = """
import json, sys
from kq.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _loaded(tmp_path: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


def test_only_the_version_path_reads_distribution_metadata(tmp_path: Path) -> None:
    assert {"importlib.metadata", "kq.cli._report"} <= set(_loaded(tmp_path, "--version"))
    worker = _loaded(tmp_path, "consume", "demo", "-t", "0.2")
    assert "kq.core._loop" in worker
    assert "kq.cli._report" not in worker
    assert "importlib.metadata" not in worker


def test_the_report_as_json_has_the_same_facts() -> None:
    from kq.cli._report import collect

    report = collect()
    facts = json.loads(json.dumps(report.as_dict()))
    assert facts["kq"] == __version__
    assert {d["name"] for d in facts["distributions"]} >= set(REPOSITORY_PACKAGES)
    assert {d["name"]: d["distribution"] for d in facts["drivers"]}["sqs"] == "kq-driver-sqs"
    assert report.render().splitlines()[0] == f"kq, version {__version__}"
