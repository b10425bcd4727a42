"""Numbers on the command line and in kq.toml: what is not a finite number in range is refused with one
line naming the option (usage error, exit 2) or the key and the file (configuration error, exit 78).

click's FLOAT reads "nan", "inf" and "1e309"; TOML has ``nan`` and ``inf`` literals.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_CONFIG, EXIT_USAGE, cli

NOT_FINITE = ["nan", "inf", "-inf", "1e309", "NaN", "1e300"]

#: (arguments before the option, the option as written, how click names it in the error)
FLOAT_OPTIONS = [
    (["queuecommand", "demo", "echoback"], "--ttl", "'--ttl'"),
    (["queuecommand", "demo", "echoback"], "--delay", "'--delay'"),
    (["queuemessage", "demo", "{}"], "--ttl", "'--ttl'"),
    (["queuemessage", "demo", "{}"], "--delay", "'--delay'"),
    (["queueservice", "demo", "mod:f", "run"], "--delay", "'--delay'"),
    (["queuehttp", "demo", "https://example.invalid/"], "--timeout", "'--timeout'"),
    (["queuehttp", "demo", "https://example.invalid/"], "--ttl", "'--ttl'"),
    (["consume", "demo"], "--timeout", "'-t' / '--timeout'"),
    (["consume", "demo"], "--memory-limit", "'-l' / '--memory-limit'"),
    (["consume", "demo"], "--grace", "'--grace'"),
    (["consume", "demo"], "--poll-interval", "'--poll-interval'"),
    (["failed", "show", "demo"], "--idle", "'--idle'"),
    (["failed", "remove", "demo", "--all"], "--idle", "'--idle'"),
    (["watchdog", "start"], "--wait", "'--wait'"),
    (["watchdog", "stop"], "--grace", "'--grace'"),
    (["watchdog", "run"], "--grace", "'--grace'"),
    (["watchdog", "run"], "--start-seconds", "'--start-seconds'"),
    (["watchdog", "run"], "--max-backoff", "'--max-backoff'"),
    (["watchdog", "run"], "--poll-interval", "'--poll-interval'"),
]


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize(
    ("command", "option", "named"), FLOAT_OPTIONS, ids=lambda v: v if isinstance(v, str) else " ".join(v[:2])
)
def test_float_options_must_be_finite_numbers_in_range(
    command: list[str], option: str, named: str, value: str
) -> None:
    result = kq(*command, f"{option}={value}")
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"Invalid value for {named}" in result.stderr
    # memory is a number; every other float option is a duration (seconds, or with a unit)
    assert "must be a finite number between" in result.stderr or "must be a duration between" in result.stderr
    assert not Path(".kq").exists()  # refused before any queue was touched


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
    ],
)
def test_durations_take_units(written: str, seconds: float) -> None:
    result = kq("queuecommand", "demo", "echoback", "--ttl", written, "--format", "json")
    assert result.exit_code == 0, result.output
    assert f'"ttl": {seconds}' in result.stdout


@pytest.mark.parametrize("written", ["5x", "m5", "-5s", "5 m s", "1h-30m", ""])
def test_a_duration_that_is_not_one_is_a_usage_error(written: str) -> None:
    result = kq("queuemessage", "demo", "{}", "--ttl", written)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "must be a duration between 0 (excluded) and 315576000 (seconds, or with a unit:" in result.stderr


def test_consume_takes_a_time_limit_with_a_unit() -> None:
    result = kq("consume", "demo", "-t", "300ms", "--poll-interval", "50ms")
    assert result.exit_code == 0, result.output
    assert "time limit of 0.3s reached" in result.stdout


def test_float_options_in_range_still_pass() -> None:
    result = kq("queuecommand", "demo", "echoback", "--ttl", "2.5", "--delay", "0", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"ttl": 2.5' in result.stdout


# (kq.toml, the key the error names)
CONFIGS = [
    pytest.param("[signing]\nmax_age = nan\n", "signing.max_age", id="max_age-nan"),
    pytest.param("[signing]\nmax_age = inf\n", "signing.max_age", id="max_age-inf"),
    pytest.param("[console]\ntimeout = inf\n", "console.timeout", id="console-timeout-inf"),
    pytest.param("[console]\ntimeout = -inf\n", "console.timeout", id="console-timeout-minus-inf"),
    pytest.param("[queues.demo.retry]\ndelay = nan\n", "queues.demo.retry.delay", id="retry-delay-nan"),
    pytest.param(
        '[drivers.default]\ntype = "sqlite"\nvisibility_timeout = nan\n',
        "drivers.default.visibility_timeout",
        id="visibility_timeout-nan",
    ),
    pytest.param(
        '[drivers.default]\ntype = "sqlite"\nvisibility_timeout = inf\n',
        "drivers.default.visibility_timeout",
        id="visibility_timeout-inf",
    ),
    pytest.param(
        "[queues.demo]\nvisibility_timeout = 1e309\n",
        "queues.demo.visibility_timeout",
        id="queue-option-1e309",
    ),
    pytest.param(
        "[workers.w]\noptions = { grace = nan }\n", "workers.w.options.grace", id="worker-option-nan"
    ),
]


@pytest.mark.parametrize(("content", "key"), CONFIGS)
def test_configuration_numbers_must_be_finite(workdir: Path, content: str, key: str) -> None:
    """``max_age = nan`` let a year-old message run and a replayed one run three times: the worker never
    starts with it."""
    path = workdir / "kq.toml"
    path.write_text(content, encoding="utf-8")
    result = kq("managequeue", "info", "demo")
    assert result.exit_code == EXIT_CONFIG, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kq: error: ")
    assert "must be a finite number between" in lines[0]
    assert f"key '{key}'" in lines[0]
    assert str(path) in lines[0]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("a = " + "[" * 50_000 + "]" * 50_000 + "\n", id="arrays"),
        pytest.param("a = " + "{b = " * 5_000 + "1" + "}" * 5_000 + "\n", id="inline-tables"),
        pytest.param("a = " + "[" * 50_000 + "\n", id="arrays-unclosed"),
    ],
)
def test_a_configuration_nested_too_deeply_is_a_configuration_error(workdir: Path, content: str) -> None:
    path = workdir / "kq.toml"
    path.write_text(content, encoding="utf-8")
    result = kq("managedriver", "list")
    assert result.exit_code == EXIT_CONFIG, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kq: error: ")
    assert "nested too deeply" in lines[0]
    assert str(path) in lines[0]
