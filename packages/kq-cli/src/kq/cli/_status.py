"""``kq status``: every queue's message counts and the watchdog's workers at a glance (``rq info``)."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from kq.cli._common import EXIT_FAILURE, FiniteFloat, State, exit_code_for, format_option, pass_state

if TYPE_CHECKING:
    from kq.core import App

logger = logging.getLogger("kq.cli")


@click.command()
@click.option(
    "--all",
    "all_queues",
    is_flag=True,
    help="Also the queues the drivers list (managequeue list-available), not only the configured ones.",
)
@click.option(
    "--watch",
    type=FiniteFloat(exclusive_minimum=True, duration=True),
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl-C: on a terminal the screen is redrawn, otherwise one block "
    "(one JSON line with --format json) is printed per refresh.",
)
@format_option
@pass_state
def status(state: State, all_queues: bool, watch: float | None, output_format: str) -> None:
    """Show every configured queue with its ready, in-flight, delayed and failed (dead-letter) message
    counts, and the worker processes of [workers.<name>] with their state.

    Without configured queues (zero-config), the queues the drivers list are shown, as with --all. A
    queue whose driver cannot be reached, or cannot count messages, shows the error on its row; the
    exit status is 69 (or 1) only when no row could be read.
    """
    app = state.app
    if watch is None:
        report = collect(app, all_queues)
        emit_report(report, output_format, compact=False)
        code = failure_code(report)
        if code is not None:
            raise click.exceptions.Exit(code)
        return
    redraw = sys.stdout.isatty() and output_format == "text"
    try:
        while True:
            report = collect(app, all_queues)
            if redraw:
                click.clear()
            if output_format == "text":
                stamp = datetime.datetime.now().strftime("%H:%M:%S")
                click.echo(f"kq status at {stamp}, every {watch:g}s (Ctrl-C to stop)")
            emit_report(report, output_format, compact=True)
            if not redraw and output_format == "text":
                click.echo("")
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        return


def collect(app: App, all_queues: bool) -> dict[str, Any]:
    """The status document: ``time``, ``configuration``, ``queues`` (one row each) and ``workers``."""
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "configuration": app.config.source,
        "queues": _QueueCounts(app).rows(all_queues or not app.config.queues),
        **_workers(app),
    }


def failure_code(report: dict[str, Any]) -> int | None:
    """The exit status when not one queue row could be read (``None`` otherwise)."""
    rows = report["queues"]
    if not rows or any(row["error"] is None for row in rows):
        return None
    return int(rows[0]["exit_status"])


def emit_report(report: dict[str, Any], output_format: str, *, compact: bool) -> None:
    """Print ``report`` as tables, or as JSON (on one line when ``compact``, for ``--watch``)."""
    if output_format == "json":
        public = {**report, "queues": [_public(row) for row in report["queues"]]}
        click.echo(json.dumps(public, default=str, indent=None if compact else 2))
        return
    for line in _lines(report):
        click.echo(line)


class _QueueCounts:
    """Reads the counts of each queue, and remembers a driver that cannot be reached (its broker is
    not asked again for each of its queues)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.failed_drivers: dict[str, tuple[str, int]] = {}

    def rows(self, listed_too: bool) -> list[dict[str, Any]]:
        targets = [(spec.name, spec.driver) for spec in self.app.config.queues.values()]
        failed_listings = self._add_listed(targets) if listed_too else []
        dead_letter_queues = {(self._dead_letter_queue(queue, driver), driver) for queue, driver in targets}
        rows = [
            self._row(queue, driver) for queue, driver in targets if (queue, driver) not in dead_letter_queues
        ]
        return rows + failed_listings

    def _add_listed(self, targets: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Add the queues each driver instance lists to ``targets``; the rows of drivers that failed."""
        failures = []
        for driver in self.app.config.drivers:
            try:
                listed = self.app.driver(driver).queue_manager().execute("list-available")
            except Exception as exc:
                # Not remembered for the queue rows: listing may use another way in (an HTTP API).
                failures.append(_error_row(None, driver, *_describe(exc)))
                continue
            targets += [(queue, driver) for queue in listed if (queue, driver) not in targets]
        return failures

    def _dead_letter_queue(self, queue: str, driver: str) -> str | None:
        try:
            return self.app.queue(queue, driver)[1].dead_letter_queue
        except Exception:
            return None  # its row says why

    def _row(self, queue: str, driver: str) -> dict[str, Any]:
        if driver in self.failed_drivers:
            return _error_row(queue, driver, *self.failed_drivers[driver])
        try:
            instance, spec = self.app.queue(queue, driver)
            manager = instance.queue_manager()
            info = manager.execute("info", queue)
            dead_letters = None
            if spec.dead_letter_queue:
                dead_letters = manager.execute("info", spec.dead_letter_queue).get("messages")
        except Exception as exc:
            message, code = _describe(exc)
            if code != EXIT_FAILURE:  # unreachable or broken: the same for its other queues
                self.failed_drivers[driver] = (message, code)
            return _error_row(queue, driver, message, code)
        return {
            "queue": queue,
            "driver": driver,
            "exists": info.get("exists"),
            "ready": info.get("messages"),
            "in_flight": info.get("in_flight"),
            "delayed": info.get("delayed"),
            "dead_letter_queue": spec.dead_letter_queue,
            "dead_letters": dead_letters,
            "error": None,
        }


def _describe(exc: Exception) -> tuple[str, int]:
    code = exit_code_for(exc)
    if code is None:
        # Not one of kq's errors: a bug or a broker client's surprise; the traceback is for -v.
        logger.debug("unexpected error while reading the status", exc_info=exc)
        return f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE
    return str(exc), code


def _error_row(queue: str | None, driver: str, message: str, code: int) -> dict[str, Any]:
    return {
        "queue": queue,
        "driver": driver,
        "exists": None,
        "ready": None,
        "in_flight": None,
        "delayed": None,
        "dead_letter_queue": None,
        "dead_letters": None,
        "error": message,
        "exit_status": code,
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "exit_status"}


def _workers(app: App) -> dict[str, Any]:
    """``workers``: the rows of ``kq watchdog check`` (``workers_error`` when they cannot be read)."""
    try:
        from kq.core.watchdog import Watchdog

        return {"workers": Watchdog(app.config, app.dispatcher).check(), "workers_error": None}
    except Exception as exc:
        return {"workers": None, "workers_error": _describe(exc)[0]}


def _lines(report: dict[str, Any]) -> Iterable[str]:
    rows = report["queues"]
    if not rows:
        yield "No queue configured, and the drivers list none."
    else:
        table = [["QUEUE", "DRIVER", "READY", "IN FLIGHT", "DELAYED", "FAILED"]]
        for row in rows:
            name = "*" if row["queue"] is None else row["queue"]
            if row["error"] is not None:
                table.append([name, row["driver"], f"error: {row['error']}"])
                continue
            cells = [_count(row[key]) for key in ("ready", "in_flight", "delayed", "dead_letters")]
            table.append([name, row["driver"], *cells])
        yield from _table(table)
    yield ""
    workers = report["workers"]
    if workers is None:
        yield f"Workers: error: {report['workers_error']}"
    elif not workers:
        yield "No workers configured ([workers.<name>] in the configuration file)."
    else:
        from kq.cli._watchdog import duration

        table = [["WORKER", "STATE", "PID", "UPTIME", "QUEUE"]]
        for worker in workers:
            pid, uptime = worker["pid"], worker["uptime"]
            table.append(
                [
                    worker["label"],
                    worker["state"],
                    "-" if pid is None else str(pid),
                    "-" if uptime is None else duration(uptime),
                    worker["queue"],
                ]
            )
        yield from _table(table)


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(table: list[list[str]]) -> Iterable[str]:
    """Columns padded to their widest cell; a short row (an error) ends with its last cell, which
    spills over the columns after it and does not widen its own."""
    widths = [
        max(len(row[column]) for row in table if len(row) > column + 1 or len(row) == len(table[0]))
        for column in range(len(table[0]))
    ]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        yield "  ".join(cells).rstrip()
