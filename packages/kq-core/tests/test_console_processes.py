"""run_command against processes that misbehave: background processes holding the output pipes open,
daemons in their own session, and output far larger than what a result keeps."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kq.core import AllowList, CommandResult, Delivery, ExecutionFailedError, InProcessConsoleCommandHandler
from kq.core._config import ConsoleSettings
from kq.core.handlers import run_command
from kq.core.handlers._process import MAX_OUTPUT

pytestmark = pytest.mark.slow

# Leaves a process running that inherits the command's stdout and stderr (in the command's own process
# group, or in a session of its own with "own-session"), records its pid, writes a little and then exits
# at once (or, with "then-sleep", keeps running itself).
LEAVES_A_BACKGROUND_PROCESS = """
import subprocess, sys, time
path, where, then = sys.argv[1:4]
background = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=where == "own-session"
)
with open(path, "w") as out:
    out.write(str(background.pid))
print("written before exit", flush=True)
print("and to stderr", file=sys.stderr, flush=True)
if then == "then-sleep":
    time.sleep(60)
"""

# Writes ``lines`` numbered 16-byte lines and "end" to stdout, and ``err_lines`` lines to stderr
# interleaved with them, so both pipes fill up while the command runs.
WRITES_A_LOT = """
import sys
lines, err_lines = int(sys.argv[1]), int(sys.argv[2])
out, err = sys.stdout.buffer, sys.stderr.buffer
batch, err_batch = 65536, 4096
for n, start in enumerate(range(0, lines, batch)):
    out.write("".join(f"{k:015d}\\n" for k in range(start, min(start + batch, lines))).encode())
    err_start = n * err_batch
    if err_start < err_lines:
        stop = min(err_start + err_batch, err_lines)
        err.write("".join(f"e{k:014d}\\n" for k in range(err_start, stop)).encode())
out.write(b"end")
"""

LINE = 16


@pytest.fixture
def background_pid(tmp_path: Path) -> Iterator[Path]:
    """A file where the command records its background process, which is killed after the test."""
    path = tmp_path / "background.pid"
    yield path
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(path.read_text()), signal.SIGKILL)


def _leaves_a_background_process(pid_file: Path, where: str, then: str = "then-exit") -> tuple[str, ...]:
    return (sys.executable, "-c", LEAVES_A_BACKGROUND_PROCESS, str(pid_file), where, then)


@pytest.mark.parametrize("where", ["same-group", "own-session"])
def test_the_exit_decides_even_if_a_background_process_holds_the_output(
    background_pid: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to wait for end-of-file on the pipes: "timed out" after the whole timeout, and, with a
    daemon in its own session, blocked until the daemon exited."""
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kq.core.handlers.process"):
        result = run_command(_leaves_a_background_process(background_pid, where), timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"run_command waited {elapsed:.1f}s for a background process"
    assert result.exit_code == 0
    assert result.stdout == "written before exit\n"
    assert result.stderr == "and to stderr\n"
    assert result.duration <= elapsed
    [record] = caplog.records
    assert "exited with status 0, but a process it left running still holds" in record.getMessage()
    assert "did not wait for that process" in record.getMessage()
    zombies = [child for child in psutil.Process().children() if child.status() == psutil.STATUS_ZOMBIE]
    assert zombies == [], "the command was not reaped"


def test_a_timeout_does_not_wait_for_a_daemon_that_holds_the_output(
    background_pid: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After killing the group it used to read the pipes until the daemon, out of reach, exited."""
    argv = _leaves_a_background_process(background_pid, "own-session", "then-sleep")
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="kq.core.handlers.process"),
        pytest.raises(ExecutionFailedError, match=r"timed out after 2s and was killed") as caught,
    ):
        run_command(argv, timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 3, f"run_command took {elapsed:.1f}s against a 2s timeout"
    result = caught.value.result
    assert isinstance(result, CommandResult)
    assert result.exit_code == -signal.SIGKILL
    assert result.stdout == "written before exit\n"
    [record] = caplog.records
    assert "ran past its 2s timeout and its process group was killed" in record.getMessage()


def test_output_is_kept_as_a_bounded_tail_while_it_is_read() -> None:
    """50 MiB of stdout used to be buffered whole (and the worker's memory grew with it) although only
    the last MAX_OUTPUT bytes are kept."""
    lines, err_lines = 50 * 1024 * 1024 // LINE, 160_000
    argv = (sys.executable, "-c", WRITES_A_LOT, str(lines), str(err_lines))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run_command(argv, timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    kept = MAX_OUTPUT // LINE + 2
    expected_out = "".join(f"{k:015d}\n" for k in range(lines - kept, lines)) + "end"
    expected_err = "".join(f"e{k:014d}\n" for k in range(err_lines - kept, err_lines))
    assert result.stdout == expected_out[-MAX_OUTPUT:]
    assert result.stderr == expected_err[-MAX_OUTPUT:]
    assert peak < 6 * 1024 * 1024, f"run_command allocated up to {peak / 2**20:.1f} MiB"


def test_a_short_output_is_kept_whole_and_decoded_with_replacement() -> None:
    code = "import sys; sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff'); sys.stderr.write('x' * 10)"
    result = run_command((sys.executable, "-c", code), timeout=30)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "café \ufffd", "x" * 10)


def test_a_truncated_tail_does_not_start_with_half_a_character() -> None:
    """The cut may fall inside a UTF-8 sequence; the partial character is dropped, not shown as U+FFFD."""
    code = "import sys; sys.stdout.buffer.write('é'.encode() * (1024 * 1024) + b'x')"
    result = run_command((sys.executable, "-c", code), timeout=30)
    assert result.stdout == "é" * ((MAX_OUTPUT - 1) // 2) + "x"


INPROCESS_APP = """
import sys

def main(argv):
    for _ in range(int(argv[1])):
        sys.stdout.write("o" * 1023 + "\\n")
        sys.stderr.write("e" * 1023 + "\\n")
    sys.stdout.write("end")
"""


def test_inprocess_output_is_cut_to_max_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process mode used to keep everything the command printed."""
    (tmp_path / "kqtest_bigoutput.py").write_text(INPROCESS_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kqtest_bigoutput", raising=False)
    consumer = InProcessConsoleCommandHandler(
        ConsoleSettings(callable="kqtest_bigoutput:main"), AllowList(["lines"])
    )
    body = {"command": "lines", "arguments": [str(4 * 1024)]}
    delivery = Delivery(json.dumps(body).encode(), "application/json", {}, "", "m-1", "jobs")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = consumer.consume(body, delivery)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    monkeypatch.delitem(sys.modules, "kqtest_bigoutput", raising=False)
    assert result.exit_code == 0
    assert result.stdout == (("o" * 1023 + "\n") * 1025 + "end")[-MAX_OUTPUT:]
    assert result.stderr == ("e" * 1023 + "\n") * 1024
    assert peak < 6 * 1024 * 1024, f"the in-process mode allocated up to {peak / 2**20:.1f} MiB"


def test_an_interrupted_run_kills_the_group_reaps_the_child_and_re_raises(tmp_path: Path) -> None:
    """KeyboardInterrupt (or a forced stop) while reading: the command must not run on unsupervised."""
    pid_file = tmp_path / "pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(30)"

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 2.0)  # well after the child has started and written its pid
        with pytest.raises(KeyboardInterrupt):
            run_command((sys.executable, "-c", code, str(pid_file)), timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid), "the interrupted command is still running (or was not reaped)"
