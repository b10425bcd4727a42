"""``nox -s bench``: kq against the libraries users would pick instead, in one run, as one Markdown table.

Starts a private RabbitMQ node (as the integration harness does) unless ``--amqp-url`` names one, and an
SQS emulator (LocalStack, or moto where no Python >= 3.12 is found) unless ``--sqs-endpoint`` names one
or ``--sqs none`` leaves SQS out, runs
every scenario of the modules in :data:`MODULES` in alternating rounds (see ``harness.py``), and writes
the table of medians, ranges and ``kq / peer`` ratios to ``benchmarks/results/`` (``--out``)::

    nox -s bench                                  # everything, about 15 minutes on 2 cores
    nox -s bench -- --only rabbitmq-publish       # scenarios whose key starts with that
    nox -s bench -- --quick                       # small counts, one round: checks that it all runs

Each module exposes ``scenarios(context) -> list[Scenario]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import harness

ROOT = Path(__file__).resolve().parent.parent

#: The scenario modules, in the order of the table.
MODULES = (
    "benchmarks.scenarios.publish",
    "benchmarks.scenarios.consume",
    "benchmarks.scenarios.sqs",
    "benchmarks.scenarios.peers",
    "benchmarks.scenarios.commands",
    "benchmarks.scenarios.sqlite",
    "benchmarks.scenarios.startup",
    "benchmarks.scenarios.latency",
)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a scenario module needs to build its scenarios.

    Attributes:
        amqp_url: The RabbitMQ node every broker scenario uses.
        management_url: Its management API (``http://guest:guest@127.0.0.1:port``).
        workdir: A scratch folder for this run (sqlite files, configs, apps); removed at the end.
        quick: Small counts and one round: a check that every scenario runs, not a measurement.
        python: The interpreter of the bench environment (for subprocesses).
        env: Extra environment for subprocesses (``PYTHONPATH`` with the repository root).
        stomp_url: The node's STOMP listener (``stomp://127.0.0.1:port``); empty when unknown (a node
            given by ``--amqp-url`` without ``--stomp-url``): the STOMP scenarios are then left out.
        sqs_endpoint: The SQS endpoint the SQS scenarios use; empty with ``--sqs none`` (or when no
            scenario selected needs it): they are then left out.
        sqs_emulator: What serves it, for the titles: ``LocalStack``, ``moto`` or ``your endpoint``.
    """

    amqp_url: str
    management_url: str
    workdir: Path
    quick: bool
    python: str = sys.executable
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    stomp_url: str = ""
    sqs_endpoint: str = ""
    sqs_emulator: str = ""

    def count(self, full: int, quick: int = 50) -> int:
        """A message count: ``full`` in a real run, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def environ(self, **extra: str) -> dict[str, str]:
        """``os.environ`` for a subprocess, with the context's and ``extra`` variables, without
        ``PYTHONDONTWRITEBYTECODE`` (start-up times must not include compiling every module)."""
        environ = {**os.environ, **self.env, **extra}
        environ.pop("PYTHONDONTWRITEBYTECODE", None)
        return environ


@contextlib.contextmanager
def _rabbitmq(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, str, str]]:
    """The node's AMQP, management and STOMP URLs: the one given, or a private node started here."""
    if args.amqp_url:
        yield args.amqp_url, args.management_url or "", args.stomp_url or ""
        return
    from integration.brokers.rabbitmq import RabbitMQ

    node = RabbitMQ(
        workdir=workdir / "rabbitmq",
        amqp_port=args.amqp_port,
        management_port=args.amqp_port + 10000,
        stomp_port=args.amqp_port + 56000,
        dist_port=args.amqp_port + 20000,
        epmd_port=args.amqp_port - 1300,
    )
    logging.getLogger(__name__).info("starting RabbitMQ on 127.0.0.1:%d", args.amqp_port)
    node.start()
    try:
        yield node.amqp_url, node.management_url, node.stomp_url
    finally:
        node.stop()


#: The scenario keys that need an SQS endpoint start with these.
SQS_KEYS = ("sqs-", "latency-sqs-")


def _needs_sqs(only: list[str]) -> bool:
    """Whether a scenario selected by ``--only`` prefixes (none: every scenario) may be an SQS one."""
    return not only or any(key.startswith(p) or p.startswith(key) for p in only for key in SQS_KEYS)


@contextlib.contextmanager
def _sqs(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, str]]:
    """The SQS endpoint and what serves it: the one given, an emulator started here, or none."""
    if args.sqs_endpoint:
        yield args.sqs_endpoint, "your endpoint"
        return
    if args.sqs == "none" or not _needs_sqs(args.only):
        yield "", ""
        return
    from integration.brokers.sqs import LocalStack, MotoServer, SqsEmulator, find_localstack_python

    log = logging.getLogger(__name__)
    kind = args.sqs
    if kind == "localstack" and find_localstack_python() is None:
        log.warning("no Python >= 3.12 for LocalStack here: the SQS scenarios run on moto, which is slower")
        kind = "moto"
    emulator: SqsEmulator = (LocalStack if kind == "localstack" else MotoServer)(
        workdir=workdir / kind, port=args.sqs_port
    )
    log.info("starting %s on 127.0.0.1:%d", kind, args.sqs_port)
    emulator.start()
    try:
        yield emulator.endpoint_url, "LocalStack" if kind == "localstack" else "moto"
    finally:
        emulator.stop()


def _header(args: argparse.Namespace, started: float) -> list[str]:
    from importlib import metadata

    versions = []
    for dist in ("kq-core", "pika", "kombu", "celery", "dramatiq", "huey", "stomp.py", "boto3"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    when = time.gmtime(time.time() - (time.monotonic() - started))  # started is a monotonic clock reading
    return [
        "# kq against its peers",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', when)} on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform(terse=True)}), "
        f"{'one quick round' if args.quick else f'{args.rounds} alternating rounds'}, "
        f"in {time.monotonic() - started:.0f} s.",
        "",
        "Versions: " + ", ".join(versions) + ".",
        "",
        "Ratios are kq / peer: the median, over the rounds, of kq's value divided by the value of the "
        "peer's round just before it (pairs next to each other in time, so that a slow spell of the "
        "machine weighs on both sides of a pair alike). Above 1 is better for a rate, below 1 for a time "
        "or a size. Run it yourself with `nox -s bench` (docs/performance.md).",
        "",
    ]


def _compile_bytecode() -> None:
    """Write the byte-code of every installed module once (uv installs without it, and
    ``PYTHONDONTWRITEBYTECODE`` may be set): otherwise each subprocess's start-up, kq's and the peers'
    alike, would include compiling what it imports."""
    import sysconfig

    folders = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *sorted(folders)],
        check=False,
        stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="scenario key prefix (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--amqp-url", help="use this RabbitMQ instead of starting one")
    parser.add_argument("--management-url", help="its management API, with --amqp-url")
    parser.add_argument("--stomp-url", help="its STOMP listener (stomp://127.0.0.1:61613), with --amqp-url")
    parser.add_argument("--amqp-port", type=int, default=5702, help="port of the node started (5702)")
    parser.add_argument(
        "--sqs",
        choices=("localstack", "moto", "none"),
        default="localstack",
        help="the SQS emulator to start (localstack; moto where no Python >= 3.12 is found; none)",
    )
    parser.add_argument("--sqs-endpoint", help="use this SQS endpoint instead of starting an emulator")
    parser.add_argument("--sqs-port", type=int, default=5766, help="port of the emulator started (5766)")
    parser.add_argument("--out", type=Path, help="the Markdown file (default benchmarks/results/...)")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a side of a scenario failed")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)  # its INFO lines drown the runner's with -v
    _compile_bytecode()
    rounds = 1 if args.quick else args.rounds
    started = time.monotonic()
    results: list[harness.ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix="kq-bench-") as folder:
        workdir = Path(folder)
        with (
            _rabbitmq(args, workdir) as (amqp_url, management_url, stomp_url),
            _sqs(args, workdir) as (sqs_endpoint, sqs_emulator),
        ):
            context = Context(
                amqp_url=amqp_url,
                management_url=management_url,
                workdir=workdir,
                quick=args.quick,
                stomp_url=stomp_url,
                sqs_endpoint=sqs_endpoint,
                sqs_emulator=sqs_emulator,
                env={"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            )
            for name in MODULES:
                module: Any = importlib.import_module(name)
                for scenario in module.scenarios(context):
                    if args.only and not any(scenario.key.startswith(prefix) for prefix in args.only):
                        continue
                    print(f"{scenario.key}: {scenario.title} ...", file=sys.stderr, flush=True)
                    result = harness.measure(scenario, rounds)
                    results.append(result)
                    print(harness.markdown([result]), file=sys.stderr, flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / ("quick.md" if args.quick else "latest.md")
    harness.write(results, out, _header(args, started))
    print(f"wrote {out}", file=sys.stderr)
    failed = [
        f"{result.scenario.key} ({side.name}: {side.error})"
        for result in results
        for side in result.sides.values()
        if side.error is not None
    ]
    if failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
