"""Runs the shell and Python blocks of a Markdown page, in order, and checks the output the page shows.

The rules a page follows (used by tests/test_docs_examples.py on the docs pages that promise their
examples run):

- A fenced block in ``sh``, ``bash`` or ``shell`` runs in one ``bash`` process per page, so ``cd``,
  variables and background jobs (``kq consume demo &``, later ``kill %1``) carry over from block to
  block. Each block runs with ``set -e``: its first failing command fails the page. A fenced block in
  ``python`` runs as ``python -c`` would run it, by the interpreter running the tests, in the shell's
  current directory (which is first on ``sys.path``).
  Both have the workspace's ``kq`` first on ``PATH``.
- HTML comments on the lines just before a fence change what happens to it (they do not show on the
  rendered page):

  - ``<!-- not-run: reason -->``: the block is not run (it installs something, it runs forever...);
  - ``<!-- needs: BROKER -->``: the block needs a broker (``rabbitmq``): it runs only where the caller
    has one for it (``parse_page(path, brokers={"rabbitmq"})``, as integration/test_docs_pages.py does
    with the harness's broker), and counts as not run elsewhere;
  - ``<!-- file: NAME -->``: the block (any language) is written to ``NAME``, relative to the shell's
    current directory, instead of being run;
  - ``<!-- exit: N -->``: the block's last command must end with status ``N`` (the block runs without
    ``set -e``);
  - ``<!-- output -->``: the block (``text``) is the output of the block just before it, stdout and
    stderr together, which must match it (see :func:`output_matches`).

- ``<!-- run: COMMAND -->`` on a line of its own runs ``COMMAND`` in the page's shell at that point
  without showing it: for waiting until a background worker has done its part.
- ``<!-- time-limit: SECONDS -->`` anywhere changes the page's time limit.
- ``<!-- folder: PATH -->`` anywhere: the folder the page runs in is shown as ``PATH`` (``/srv/app``):
  output is compared with the folder's real path replaced by it.
- A ``console`` block cannot be run (commands and output mixed): on a page that is run, it must be
  split into ``sh`` and ``<!-- output -->`` blocks or be marked not-run.

At the end of the page (or at its first failure) every process the page started is stopped: the shell
runs in a process group of its own, which gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

#: Fence languages run by bash, and by Python.
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})
PYTHON_LANGUAGES = frozenset({"python", "py"})
#: Markers accepted on the lines before a fence.
BLOCK_MARKERS = frozenset({"not-run", "needs", "file", "exit", "output"})
DEFAULT_TIME_LIMIT = 60.0

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<key>[a-z][a-z-]*)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")
_MARKER_LIKE = re.compile(
    r"^\s*<!--\s*(not[ _-]?run|needs|output|file|exit|run|time[ _-]?limit|folder)\b", re.IGNORECASE
)


class DocsExampleError(AssertionError):
    """A block of a page failed, timed out, or printed other than the page shows."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing to do on a page: run a shell or Python block, write a file, or run a hidden command."""

    kind: str  # "sh", "python", "file", "hidden"
    line: int  # 1-based line of the opening fence (or of the comment)
    text: str
    file: str | None = None
    exit_status: int = 0
    expected_output: str | None = None
    output_line: int | None = None


@dataclasses.dataclass(frozen=True)
class Page:
    """A parsed page: its steps in order, the blocks left out with their reasons, its time limit."""

    path: Path
    steps: tuple[Step, ...]
    not_run: tuple[tuple[int, str], ...]
    time_limit: float
    shown_folder: str | None = None


def _markers(comments: list[tuple[int, str]], path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line, text in comments:
        match = _COMMENT.match(text)
        if match is None or match["key"] not in BLOCK_MARKERS:
            raise DocsExampleError(f"{path}:{line}: unknown marker before a block: {text.strip()}")
        found[match["key"]] = match["value"] or ""
    return found


def _fenced(lines: list[str], start: int, indent: str, fence: str, path: Path) -> tuple[str, int]:
    """The text of the block opened at ``start`` (0-based) and the index of its closing fence."""
    body: list[str] = []
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
            return "".join(body), index
        line = lines[index]
        body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
    raise DocsExampleError(f"{path}:{start + 1}: the block is never closed")


def parse_page(path: Path, brokers: frozenset[str] = frozenset()) -> Page:
    """The steps of ``path``, with every marker checked (a misspelt one is an error, not ignored);
    blocks marked ``needs: B`` run only for a broker ``B`` in ``brokers``."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    steps: list[Step] = []
    not_run: list[tuple[int, str]] = []
    comments: list[tuple[int, str]] = []
    time_limit = DEFAULT_TIME_LIMIT
    shown_folder = None
    last_was_block = False
    index = 0
    while index < len(lines):
        text = lines[index]
        comment = _COMMENT.match(text)
        if comment is not None and comment["key"] == "run":
            steps.append(Step("hidden", index + 1, (comment["value"] or "") + "\n"))
            last_was_block = False
        elif comment is not None and comment["key"] == "time-limit":
            time_limit = float(comment["value"] or "")
        elif comment is not None and comment["key"] == "folder":
            shown_folder = comment["value"] or None
        elif _MARKER_LIKE.match(text):
            comments.append((index + 1, text))
        elif (fence := _FENCE.match(text)) is not None:
            body, end = _fenced(lines, index, fence["indent"], fence["fence"], path)
            words = fence["info"].split()
            language = words[0].lower() if words else ""
            markers = _markers(comments, path)
            line = index + 1
            if "output" in markers:
                if not last_was_block or not steps:
                    raise DocsExampleError(f"{path}:{line}: an output block must follow a block that runs")
                previous = steps[-1]
                steps[-1] = dataclasses.replace(previous, expected_output=body, output_line=line)
                last_was_block = False
            elif "not-run" in markers:
                if not markers["not-run"]:
                    raise DocsExampleError(f"{path}:{line}: not-run needs a reason")
                not_run.append((line, markers["not-run"]))
                last_was_block = False
            elif "needs" in markers and markers["needs"] not in brokers:
                if not markers["needs"]:
                    raise DocsExampleError(f"{path}:{line}: needs names a broker")
                not_run.append((line, f"needs {markers['needs']}"))
                last_was_block = False
            elif "file" in markers:
                if not markers["file"]:
                    raise DocsExampleError(f"{path}:{line}: file needs a name")
                steps.append(Step("file", line, body, file=markers["file"]))
                last_was_block = False
            elif language in SHELL_LANGUAGES or language in PYTHON_LANGUAGES:
                kind = "sh" if language in SHELL_LANGUAGES else "python"
                status = int(markers.get("exit", "0") or "0")
                steps.append(Step(kind, line, body, exit_status=status))
                last_was_block = True
            elif language == "console":
                raise DocsExampleError(
                    f"{path}:{line}: a console block cannot be run: split it into sh and <!-- output --> "
                    "blocks, or mark it <!-- not-run: reason -->"
                )
            else:
                if markers:
                    raise DocsExampleError(
                        f"{path}:{line}: markers {sorted(markers)} on a {language!r} block"
                    )
                last_was_block = False
            comments = []
            index = end
        elif text.strip():
            if comments:
                raise DocsExampleError(f"{path}:{comments[0][0]}: a marker must be just before a block")
            last_was_block = False
        index += 1
    if comments:
        raise DocsExampleError(f"{path}:{comments[0][0]}: a marker must be just before a block")
    return Page(path, tuple(steps), tuple(not_run), time_limit, shown_folder)


#: What differs from run to run and is matched loosely when found in shown output, with what matches it.
_VOLATILE = [
    (r"[0-9a-f]{32}", r"[0-9a-f]{32}"),  # message ids
    (r"\d{4}[/-]\d{2}[/-]\d{2}", r"\d{4}[/-]\d{2}[/-]\d{2}"),  # dates
    (r"\d{2}:\d{2}:\d{2}(?:[.,]\d+)?", r"\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"),  # times
    (r"pid \d+", r"pid \d+"),
    (r"\[\d+\]", r"\[\d+\]"),  # the process id in log lines
    (r"on host \S+", r"on host \S+"),
]
_VOLATILE_RE = re.compile("|".join(f"(?:{pattern})" for pattern, _ in _VOLATILE))


def _line_pattern(line: str) -> str:
    parts = []
    for piece in line.split("..."):
        pattern, position = [], 0
        for match in _VOLATILE_RE.finditer(piece):
            pattern.append(re.escape(piece[position : match.start()]))
            pattern.append(next(r for p, r in _VOLATILE if re.fullmatch(p, match.group())))
            position = match.end()
        pattern.append(re.escape(piece[position:]))
        parts.append("".join(pattern))
    return ".*?".join(parts)


def _normalized(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is what ``expected`` shows.

    Lines are compared without trailing spaces, and blank lines at either end are ignored. ``...`` on a
    line of its own stands for any number of lines (none included), and within a line for any text.
    Message ids (32 hex digits), dates, times, ``pid N``, ``[N]`` and ``on host NAME`` are shown as
    one run printed them and match any other value of the same form.
    """
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == "..." else _line_pattern(line) + r"\n" for line in _normalized(expected)
    )
    actual_lines = _normalized(actual)
    subject = "".join(line + "\n" for line in actual_lines)
    return re.fullmatch(pattern, subject) is not None


@dataclasses.dataclass
class StepResult:
    """What one step did: its exit status and output, and the shell's directory after it."""

    step: Step
    status: int
    output: str
    seconds: float


class _Shell:
    """A bash process of the page's own, fed one step at a time (see the module's docstring)."""

    def __init__(self, folder: Path, env: Mapping[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.cwd = folder
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],  # noqa: S607 - bash from PATH, as a reader's shell
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=dict(env),
            start_new_session=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._stdin = self.process.stdin
        self._fd = self.process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._pending = b""
        self._send("set -e\n")

    def _send(self, text: str) -> None:
        # A step that failed under ``set -e`` ends the shell, possibly before the next line is written:
        # the read that follows finds the shell ended and reports its status.
        with contextlib.suppress(BrokenPipeError):
            self._stdin.write(text.encode())
            self._stdin.flush()

    def run(self, script: str, expect_status: int | None, deadline: float) -> tuple[int, str]:
        """Run ``script`` (stdin /dev/null); its status (None: the shell ended) and its output."""
        path = self.scratch / f"step-{uuid.uuid4().hex}.sh"
        path.write_text(script, encoding="utf-8")
        token = uuid.uuid4().hex
        if expect_status is None:
            self._send(f". {_quote(path)} </dev/null\n__kq_status=$?\n")
        else:
            self._send(f"set +e\n. {_quote(path)} </dev/null\n__kq_status=$?\nset -e\n")
        self._send(f'printf \'\\n__kq_end_{token} %d %s\\n\' "$__kq_status" "$PWD"\n')
        sentinel = re.compile(rb"\n__kq_end_" + token.encode() + rb" (\d+) ([^\n]*)\n")
        while True:
            match = sentinel.search(self._pending)
            if match is not None:
                output = self._pending[: match.start()]
                self._pending = self._pending[match.end() :]
                self.cwd = Path(match.group(2).decode())
                return int(match.group(1)), output.decode(errors="replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(self._pending.decode(errors="replace"))
            ready = self._selector.select(min(remaining, 0.5))
            chunk = os.read(self._fd, 65536) if ready else None
            if chunk:
                self._pending += chunk
                continue
            # EOF, or quiet: the shell may have ended (set -e stopped it at a failing command) while a
            # background job it started still holds the pipe open.
            if chunk == b"" or self.process.poll() is not None:
                status = self.process.wait()
                time.sleep(0.05)
                with contextlib.suppress(BlockingIOError):
                    self._pending += os.read(self._fd, 65536)
                output, self._pending = self._pending, b""
                raise _ShellEndedError(status, output.decode(errors="replace"))

    def stop(self) -> None:
        """SIGTERM to everything the page started, then SIGKILL to what is left after 5 seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._selector.close()
        with contextlib.suppress(BrokenPipeError):  # what is still buffered has no reader any more
            self._stdin.close()
        assert self.process.stdout is not None
        self.process.stdout.close()


class _ShellEndedError(Exception):
    def __init__(self, status: int, output: str) -> None:
        super().__init__(status, output)
        self.status = status
        self.output = output


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies waiting for init to reap them do not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\"'\"'") + "'"


def page_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a page's shell: the test interpreter's folder (with the workspace's ``kq``)
    first on PATH, no ``KQ_*`` variable of the caller's."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("KQ_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def _describe(page: Page, step: Step) -> str:
    shown = step.text if len(step.text) < 2000 else step.text[:2000] + "...\n"
    return f"{page.path}:{step.line}: {step.kind} block\n{shown}"


def run_page(
    page: Page, folder: Path, scratch: Path, env: Mapping[str, str] | None = None
) -> list[StepResult]:
    """Run the steps of ``page`` in ``folder`` (scripts kept in ``scratch``); raise DocsExampleError at the
    first step that fails, runs past the page's time limit, or prints other than the page shows."""
    deadline = time.monotonic() + page.time_limit
    shell = _Shell(folder, page_environment() if env is None else env, scratch)
    shown = (
        {str(folder.resolve()): page.shown_folder, str(folder): page.shown_folder}
        if page.shown_folder
        else {}
    )
    results: list[StepResult] = []
    try:
        for step in page.steps:
            results.append(_run_step(page, step, shell, deadline, shown))
    finally:
        shell.stop()
    return results


def _run_step(page: Page, step: Step, shell: _Shell, deadline: float, shown: Mapping[str, str]) -> StepResult:
    started = time.monotonic()
    if step.kind == "file":
        assert step.file is not None
        target = shell.cwd / step.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(step.text, encoding="utf-8")
        return StepResult(step, 0, "", 0.0)
    if step.kind == "python":
        script_path = shell.scratch / f"block-{step.line}.py"
        script_path.write_text(step.text, encoding="utf-8")
        # As ``python -c``: the current folder first on sys.path, as for a reader's ``python`` session.
        source = str(script_path)
        run = f"exec(compile(open({source!r}).read(), {source!r}, 'exec'), {{'__name__': '__main__'}})"
        script = f"{_quote(Path(sys.executable))} -c {_quote(Path(run))}\n"
    else:
        script = step.text
    expect = None if step.exit_status == 0 else step.exit_status
    try:
        status, output = shell.run(script, expect, deadline)
    except TimeoutError as exc:
        raise DocsExampleError(
            f"{_describe(page, step)}still running after the page's time limit of {page.time_limit:g}s; "
            f"output so far:\n{exc.args[0]}"
        ) from None
    except _ShellEndedError as ended:
        raise DocsExampleError(
            f"{_describe(page, step)}failed with exit status {ended.status}; output:\n{ended.output}"
        ) from None
    if status != step.exit_status:
        raise DocsExampleError(
            f"{_describe(page, step)}ended with exit status {status}, not {step.exit_status};"
            f" output:\n{output}"
        )
    for real, display in shown.items():
        output = output.replace(real, display)
    if step.expected_output is not None and not output_matches(step.expected_output, output):
        raise DocsExampleError(
            f"{_describe(page, step)}printed other than the page shows at line {step.output_line}.\n"
            f"--- shown:\n{step.expected_output}--- printed:\n{output}"
        )
    return StepResult(step, status, output, time.monotonic() - started)


def iter_blocks(page: Page) -> Iterator[Step]:
    """The steps that run code (not files, not hidden commands)."""
    return (step for step in page.steps if step.kind in ("sh", "python"))
