"""`kq --help` must stay fast: the CLI imports kq-core, and drivers import their modules, only when used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from kq.cli import cli
try:
    cli(sys.argv[1:], prog_name="kq")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("kq."))), file=sys.stderr)
"""


def _modules(tmp_path: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


def test_help_does_not_import_kq_core(tmp_path: Path) -> None:
    loaded = _modules(tmp_path, "--help")
    assert not [m for m in loaded if m.startswith("kq.core")], loaded


def test_listing_drivers_does_not_build_consumers(tmp_path: Path) -> None:
    loaded = _modules(tmp_path, "managedriver", "list")
    assert "kq.drivers.sqlite" in loaded
    assert "kq.drivers.sqlite._consumer" not in loaded
    assert "kq.core.testing" not in loaded


PROBE_ALL = PROBE.replace('if m.startswith("kq.")', "")


def test_a_plain_worker_loads_neither_http_nor_watchdog_nor_redrive(tmp_path: Path) -> None:
    """What a worker's start pays for: no HTTP client, no watchdog, no re-drive, no metrics server, no
    importlib.metadata, no difflib (a driver's options are not misspelt keys of kq's)."""
    (tmp_path / "kq.toml").write_text(
        'default_driver = "local"\n[drivers.local]\ntype = "sqlite"\npath = "queues.sqlite3"\n'
        '[allow]\ncommands = ["echoback"]\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        # --timeout rather than -t: click imports difflib for any short option
        [sys.executable, "-c", PROBE_ALL, "consume", "demo", "--timeout", "0.2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    unwanted = [
        m
        for m in loaded
        if m.split(".")[0] in ("requests", "urllib3", "prometheus_client", "psutil", "xmlrpc", "email")
        # importlib.metadata: 40-60 ms, entry points are read without it; difflib: for misspelt keys only
        or m in {"importlib.metadata", "difflib"}
        or m.startswith(("kq.core.watchdog", "kq.core._redrive", "kq.core.handlers._http", "kq.core.metrics"))
    ]
    assert unwanted == [], unwanted
    assert "kq.core._loop" in loaded  # it did start a worker


def test_a_worker_imports_only_the_command_it_runs(tmp_path: Path) -> None:
    """``kq consume`` builds its own command only: the other subcommands' modules stay unimported."""
    loaded = _modules(tmp_path, "consume", "demo", "-t", "0.2")
    assert "kq.cli._consume" in loaded
    others = [
        m
        for m in loaded
        if m
        in (
            "kq.cli._produce",
            "kq.cli._produce_calls",
            "kq.cli._manage",
            "kq.cli._failed",
            "kq.cli._echoback",
            "kq.cli._signing",
            "kq.cli._status",
            "kq.cli._watchdog",
        )
    ]
    assert others == [], others


def test_the_package_exports_resolve_on_first_use() -> None:
    """``kq.cli`` imports its command line on first use (so that ``python -m kq.cli`` imports it in
    ``__main__``, collector paused): every public name still resolves, and an unknown one is an
    AttributeError."""
    code = (
        "import json, sys, kq.cli as m\n"
        "before = sorted(x for x in sys.modules if x.startswith('kq.cli.'))\n"
        "values = {n: repr(getattr(m, n)) for n in m.__all__}\n"
        "print(json.dumps([before, sorted(set(m.__all__) - set(dir(m))), values['EXIT_OK']]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, missing, exit_ok = json.loads(done.stdout)
    assert before == ["kq.cli.version"]
    assert missing == []
    assert exit_ok == "0"
    import kq.cli

    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        getattr(kq.cli, "nosuch")  # noqa: B009 - a literal name on purpose


def test_python_m_kq_cli_runs_the_command_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "kq.cli", "--version"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "kq" in done.stdout
