"""The docs pages that promise their examples run: every shell and Python block, in order, in a fresh folder.

The rules a page follows are in tests/docs_runner.py. The pages need the workspace's ``kq`` next to the
interpreter running the tests (``nox -s tests``); elsewhere (``nox -s lint``) they skip, and only the
runner's own tests run.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.docs_runner import (
    DocsExampleError,
    _Shell,
    _ShellEndedError,
    output_matches,
    page_environment,
    parse_page,
    run_page,
)

ROOT = Path(__file__).resolve().parent.parent
#: The pages whose examples run, as the issue asks: a stale one fails the test suite.
PAGES = ["getting-started.md", "configuration.md", "cli.md", "cookbook.md"]
KQ = Path(sys.executable).parent / "kq"

#: What the pages' shown output assumes is installed (cli.md lists the RabbitMQ driver).
PAGE_DISTRIBUTIONS = ("kq-core", "kq-cli", "kq-driver-rabbitmq")


def _missing_distributions() -> list[str]:
    missing = []
    for name in PAGE_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


needs_kq = pytest.mark.skipif(
    not KQ.exists() or bool(_missing_distributions()),
    reason=f"the pages need the workspace's kq next to {sys.executable} and {', '.join(PAGE_DISTRIBUTIONS)}"
    " installed (nox -s tests)",
)


@needs_kq
@pytest.mark.parametrize("name", PAGES)
def test_page_examples_run(name: str, tmp_path: Path) -> None:
    page = parse_page(ROOT / "docs" / name)
    folder, scratch = tmp_path / "page", tmp_path / "scratch"
    folder.mkdir()
    scratch.mkdir()
    results = run_page(page, folder, scratch)
    assert results, f"{name} has no block that runs"


def test_the_cookbook_shows_the_files_of_examples_signups() -> None:
    """The producer, the handler, kq.toml and publish.py on the page are the tested files of examples/."""
    page = parse_page(ROOT / "docs" / "cookbook.md")
    shown = {step.file: step.text for step in page.steps if step.kind == "file"}
    example = ROOT / "examples" / "signups"
    names = ["signups/producer.py", "signups/handler.py", "kq.toml", "publish.py"]
    for name in names:
        assert shown.get(name) == (example / name).read_text(encoding="utf-8"), (
            f"{name} differs from examples/"
        )


# The runner itself: it must fail where a page is wrong, or the page tests above prove nothing.


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _run(tmp_path: Path, text: str) -> list[str]:
    page = parse_page(_page(tmp_path, text))
    folder, scratch = tmp_path / "folder", tmp_path / "scratch"
    folder.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    return [result.output for result in run_page(page, folder, scratch, env=page_environment())]


def test_blocks_share_the_shell_and_python_runs_in_its_folder(tmp_path: Path) -> None:
    outputs = _run(
        tmp_path,
        """
        ```sh
        mkdir sub && cd sub
        GREETING=hello
        ```

        ```bash
        echo "$GREETING from $(basename "$PWD")"
        ```

        <!-- output -->
        ```text
        hello from sub
        ```

        <!-- file: data.txt -->
        ```text
        some data
        ```

        ```python
        from pathlib import Path
        print(Path("data.txt").read_text().strip(), "in", Path.cwd().name)
        ```

        <!-- output -->
        ```text
        some data in sub
        ```
        """,
    )
    assert outputs == ["", "hello from sub\n", "", "some data in sub\n"]


def test_a_failing_command_fails_the_page(tmp_path: Path) -> None:
    with pytest.raises(DocsExampleError, match=r"(?s)page.md:6: sh block\n.*exit status 3"):
        _run(
            tmp_path,
            """
            ```sh
            echo one
            ```

            ```sh
            (exit 3)
            echo never
            ```
            """,
        )


def test_a_failing_python_block_fails_the_page(tmp_path: Path) -> None:
    with pytest.raises(DocsExampleError, match=r"(?s)exit status 1.*ZeroDivisionError"):
        _run(tmp_path, "```python\n1 / 0\n```\n")


def test_other_output_fails_the_page(tmp_path: Path) -> None:
    with pytest.raises(DocsExampleError, match="printed other than the page shows at line 5"):
        _run(tmp_path, "```sh\necho two\n```\n<!-- output -->\n```text\none\n```\n")


def test_an_expected_exit_status_is_checked(tmp_path: Path) -> None:
    text = (
        "<!-- exit: 2 -->\n```sh\necho refused >&2; (exit {status})\n```\n"
        "<!-- output -->\n```text\nrefused\n```\n"
    )
    assert _run(tmp_path, text.format(status=2)) == ["refused\n"]
    with pytest.raises(DocsExampleError, match="ended with exit status 0, not 2"):
        _run(tmp_path, text.format(status=0))


def test_not_run_blocks_are_left_out_and_need_a_reason(tmp_path: Path) -> None:
    page = parse_page(_page(tmp_path, "<!-- not-run: needs RabbitMQ -->\n```sh\nfalse\n```\n"))
    assert page.steps == ()
    assert page.not_run == ((2, "needs RabbitMQ"),)
    with pytest.raises(DocsExampleError, match="not-run needs a reason"):
        parse_page(_page(tmp_path, "<!-- not-run -->\n```sh\nfalse\n```\n"))


def test_blocks_that_need_a_broker_run_only_where_there_is_one(tmp_path: Path) -> None:
    """``needs: rabbitmq``: left out offline; run by integration/test_docs_pages.py, which has one."""
    text = "<!-- needs: rabbitmq -->\n```sh\nfalse\n```\n"
    offline = parse_page(_page(tmp_path, text))
    assert (offline.steps, offline.not_run) == ((), ((2, "needs rabbitmq"),))
    with_broker = parse_page(_page(tmp_path, text), brokers=frozenset({"rabbitmq"}))
    assert [step.text for step in with_broker.steps] == ["false\n"]
    assert with_broker.not_run == ()
    (tmp_path / "page").mkdir()
    (tmp_path / "scratch").mkdir()
    with pytest.raises(DocsExampleError, match="failed with exit status 1"):
        run_page(with_broker, tmp_path / "page", tmp_path / "scratch", env=page_environment())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```console\n$ kq --help\n```\n", "a console block cannot be run"),
        ("<!-- not run: typo -->\n```sh\nfalse\n```\n", "unknown marker"),
        ("<!-- not-run: x -->\n\nSome text.\n```sh\nfalse\n```\n", "must be just before a block"),
        ("Text.\n\n<!-- output -->\n```text\nx\n```\n", "must follow a block that runs"),
        ("```sh\nfalse\n", "never closed"),
    ],
)
def test_pages_that_cannot_be_run_as_written_are_errors(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(DocsExampleError, match=error):
        parse_page(_page(tmp_path, text))


def test_the_folder_is_shown_as_the_page_says(tmp_path: Path) -> None:
    outputs = _run(
        tmp_path, "<!-- folder: /srv/app -->\n```sh\npwd\n```\n<!-- output -->\n```text\n/srv/app\n```\n"
    )
    assert outputs == ["/srv/app\n"]


def test_a_background_job_is_stopped_at_the_end_of_the_page(tmp_path: Path) -> None:
    outputs = _run(
        tmp_path,
        """
        ```sh
        sleep 300 &
        echo $! > job.pid
        ```
        """,
    )
    assert outputs == [""]
    pid = int((tmp_path / "folder" / "job.pid").read_text())
    assert not _running(pid)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that init has not reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_hidden_command_runs_and_kill_reaches_a_job_of_an_earlier_block(tmp_path: Path) -> None:
    outputs = _run(
        tmp_path,
        """
        ```sh
        sleep 300 &
        ```
        <!-- run: echo done > marker -->
        ```sh
        cat marker
        kill "$!"
        wait "$!" || echo "stopped: $?"
        ```
        """,
    )
    assert outputs == ["", "", "done\nstopped: 143\n"]


def test_the_page_time_limit_stops_a_block(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DocsExampleError, match="time limit of 1s; output so far:\nwaiting"):
        _run(tmp_path, "<!-- time-limit: 1 -->\n```sh\necho waiting\nsleep 30\n```\n")
    assert time.monotonic() - started < 10


def test_a_failure_with_a_background_job_still_holding_the_output_is_reported(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DocsExampleError, match="exit status 1"):
        _run(tmp_path, "```sh\nsleep 300 &\nfalse\n```\n")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("shown", "printed", "matches"),
    [
        ("a\nb\n", "a\nb", True),
        ("a\nb\n", "a\nc\n", False),
        ("a\n...\nd\n", "a\nb\nc\nd\n", True),
        ("a\n...\nb\n", "a\nb\n", True),
        ("a ... d\n", "a b c d\n", True),
        ("a ... d\n", "a b c e\n", False),
        (
            "queued as message af680d21742a4d608d98758f7e9e6260",
            "queued as message 0123456789abcdef0123456789abcdef",
            True,
        ),
        ("queued as message af680d21742a4d608d98758f7e9e6260", "queued as message 42", False),
        (
            "It is 2026/11/27 - 21:20:45.052 and process with pid 9512 on host vm says: hi",
            "It is 2030/01/02 - 03:04:05.678 and process with pid 77 on host build-3 says: hi",
            True,
        ),
        (
            "It is 2026/11/27 - 21:20:45.052 and process with pid 9512 on host vm says: hi",
            "It is 2030/01/02 - 03:04:05.678 and process with pid 77 on host build-3 says: bye",
            False,
        ),
        (
            "2026-11-27 21:20:45,509 INFO kq.core._loop[9515]: x",
            "2030-01-01 00:00:00,000 INFO kq.core._loop[1]: x",
            True,
        ),
        ("a.b\n", "axb\n", False),  # the rest is literal text, not a pattern
    ],
)
def test_shown_output_matching(shown: str, printed: str, matches: bool) -> None:
    assert output_matches(shown, printed) is matches


def test_pages_are_parsed_without_errors() -> None:
    """Even where kq is not installed: a misplaced marker is found by the lint session too."""
    for name in PAGES:
        page = parse_page(ROOT / "docs" / name)
        assert page.steps, name
        assert all(reason for _, reason in page.not_run)


def test_bash_is_available() -> None:
    assert shutil.which("bash"), "the docs examples run in bash"


def test_a_shell_that_ended_before_the_next_line_is_reported_not_a_broken_pipe(tmp_path: Path) -> None:
    """A failing step under ``set -e`` may end the shell before the runner writes its next line: the
    page fails with the shell's status (it used to fail the run with BrokenPipeError, now and then)."""
    (tmp_path / "scratch").mkdir()
    shell = _Shell(tmp_path, page_environment(), tmp_path / "scratch")
    try:
        assert shell.run("true\n", None, time.monotonic() + 30)[0] == 0
        shell._send("exit 3\n")  # the shell is gone before the next step is written
        shell.process.wait(timeout=30)
        with pytest.raises(_ShellEndedError) as ended:
            shell.run("echo never\n", None, time.monotonic() + 30)
        assert ended.value.status == 3
    finally:
        shell.stop()
