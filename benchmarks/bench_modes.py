"""The two console-command modes on the same messages: a process per message ("CGI") against a call
inside the worker ("MPM"), on the sqlite driver. Both run `kq echoback`, the tutorial's command.

Run: python benchmarks/bench_modes.py [--messages N]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from kq.core import App, Limits, parse_config


def rate(mode: str, count: int, folder: Path) -> float:
    config = parse_config(
        {
            "queues": {mode: {"consumer": mode}},
            "allow": {"commands": ["echoback"]},
        },
        source="benchmark",
        root=str(folder),
    )
    with App(config) as app:
        calls = [{"command": "echoback", "arguments": [f"message {i}"]} for i in range(count)]
        app.command_producer(mode).publish_batch(calls)
        loop = app.consume_loop(mode, limits=Limits(messages=count))
        started = time.perf_counter()
        loop.run()
        elapsed = time.perf_counter() - started
        if loop.stats.consumed != count:
            raise SystemExit(f"{mode}: only {loop.stats.consumed} of {count} consumed")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        subprocess_rate = rate("console_command", args.messages, Path(folder))
        inprocess_rate = rate("inprocess_console_command", args.messages * 10, Path(folder))
    print(f"console_command (a process per message): {subprocess_rate:8.1f} msg/s")
    print(f"inprocess_console_command (in the worker): {inprocess_rate:8.1f} msg/s")
    print(f"in-process / subprocess = {inprocess_rate / subprocess_rate:.0f}x")


if __name__ == "__main__":
    main()
