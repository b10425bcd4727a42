"""What importing kq costs: wall time of a fresh interpreter running each statement, side by side with
``pass`` in the same run (interleaved, so that a busy machine slows all of them alike), and the cumulative
time ``python -X importtime`` gives for the package itself.

Issue 12 asks that ``import kq.core`` cost at most 3x ``python -c pass``.

Run: python benchmarks/bench_import.py [--runs N] [--statement CODE ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

DEFAULT_STATEMENTS = (
    "pass",
    "import kq.core",
    "import kq.core.driver",
    "from kq.core import App, Message",
    "import kq.cli",
)


def wall_time(code: str) -> float:
    """Seconds for a fresh interpreter to run ``code`` and exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def import_time(module: str) -> float:
    """Cumulative microseconds ``-X importtime`` reports for importing ``module``, in seconds."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        capture_output=True,
        text=True,
    )
    for line in result.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1e6
    raise RuntimeError(f"-X importtime did not report {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each statement (default 20)")
    parser.add_argument("--statement", action="append", help="code to time (repeatable)")
    args = parser.parse_args()
    statements = tuple(args.statement or DEFAULT_STATEMENTS)
    if "pass" not in statements:
        statements = ("pass", *statements)

    for code in statements:  # warm the file cache and the bytecode caches
        wall_time(code)
    samples: dict[str, list[float]] = {code: [] for code in statements}
    for _ in range(args.runs):
        for code in statements:
            samples[code].append(wall_time(code))
    baseline = statistics.median(samples["pass"])

    print(f"{sys.executable} ({sys.version.split()[0]}), {args.runs} runs each, median wall time")
    for code in statements:
        median = statistics.median(samples[code])
        print(f"  {code:40} {median * 1000:7.1f} ms  {median / baseline:5.1f}x pass")
    print("-X importtime, cumulative (median of 5)")
    for module in ("kq.core", "kq.core.driver"):
        cumulative = statistics.median(import_time(module) for _ in range(5))
        print(f"  import {module:33} {cumulative * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
