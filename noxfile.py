"""Development sessions: ``nox -s lint typecheck tests`` is what CI runs; ``nox -s demo`` is the quick start.

Each session installs the distributions under packages/ in editable mode into its own environment.
``nox -s integration`` runs the tests against real brokers (started on 127.0.0.1 unless
``KQ_TEST_RABBITMQ_URL``, ``KQ_TEST_SQS_ENDPOINT`` etc. name running ones); ``nox -s integration -- sqs``
selects one broker.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
#: Installed first, in this order (the others depend on them), so local packages win over anything on PyPI.
_BASE = ["kq-core", "kq-cli"]
#: Every distribution under packages/: a new one is picked up by every session without an edit here.
PACKAGES = [
    *_BASE,
    *sorted(p.parent.name for p in ROOT.glob("packages/*/pyproject.toml") if p.parent.name not in _BASE),
]
#: requests: the HTTP handler's tests and the brokers' probes (kq-core has it as its ``http`` extra).
TEST_REQUIREMENTS = [
    "pytest>=8",
    "hypothesis>=6",
    "hatchling>=1.18",
    "prometheus-client>=0.17",
    "requests>=2.28",
    "pytest-xdist>=3.5",
]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _install_packages(session: nox.Session, *extra: str) -> None:
    editable = []
    for name in PACKAGES:
        editable += ["-e", str(ROOT / "packages" / name)]
    session.install(*editable, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Every package's offline tests, the examples' and the docs pages' (pass pytest arguments after --)."""
    # The example driver installs as a third-party one would: its own distribution, its entry point.
    _install_packages(session, *TEST_REQUIREMENTS, "-e", str(ROOT / "examples" / "kq-driver-example"))
    paths = [str(ROOT / "packages" / name / "tests") for name in PACKAGES]
    paths += [str(ROOT / "examples" / name / "tests") for name in ("kq-driver-example", "signups")]
    paths.append(str(ROOT / "tests" / "test_docs_examples.py"))
    # Four test processes: most tests wait on child processes and timers, not on the CPU (a serial run
    # is 7 minutes of which 2.5 use the CPU; four processes take 3 on 2 cores).
    session.run("pytest", *(session.posargs or ["-n", "4", *paths]))


@nox.session(python=PYTHONS, default=False)
def tests_all(session: nox.Session) -> None:
    """The offline tests on every supported Python that is installed (3.10 to 3.13)."""
    tests(session)


#: Broker names accepted as positional arguments of the integration session (they are pytest markers).
BROKERS = ("rabbitmq", "sqs", "stomp")


#: What integration/ uses besides the packages: plain clients for the harness's own tests (boto3 talks to
#: the SQS emulators, PyYAML reads docker-compose.yml). The emulators themselves are not installed here:
#: the harness builds an environment of their own for each, once per machine (integration/brokers/venvs.py).
INTEGRATION_REQUIREMENTS = ["boto3>=1.34", "pyyaml>=6", "requests>=2.28"]


@nox.session(default=False)
def integration(session: nox.Session) -> None:
    """Conformance and end-to-end tests against real brokers: ``-- rabbitmq`` selects one.

    The run ends with a summary per broker (and per SQS emulator): tests run, skipped, and why.
    """
    _install_packages(session, *TEST_REQUIREMENTS, *INTEGRATION_REQUIREMENTS)
    brokers = [arg for arg in session.posargs if arg in BROKERS]
    others = [arg for arg in session.posargs if arg not in BROKERS]
    selection = ["-m", " or ".join(brokers)] if brokers else []
    session.run("pytest", str(ROOT / "integration"), *selection, *others)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and formatting) and the import-linter contracts of pyproject.toml (the layering)."""
    session.install("ruff>=0.6", "import-linter>=2.17", "pytest>=8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # import-linter reads the sources without importing them: the src folders on the path are enough
    # (kq is a namespace package spread over them), no install needed.
    sources = os.pathsep.join(str(ROOT / "packages" / name / "src") for name in PACKAGES)
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": sources})
    # ...and each contract does fail on a forbidden import.
    # (The docs pages' code blocks run in the tests session, where kq is installed.)
    session.run(
        "pytest",
        str(ROOT / "tests"),
        "-p",
        "no:cacheprovider",
        "--ignore",
        str(ROOT / "tests" / "test_docs_examples.py"),
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on every package's sources and tests, the benchmarks and this noxfile."""
    _install_packages(session, "mypy>=1.10", "types-psutil", "types-requests", *TEST_REQUIREMENTS, "nox")
    sources = [str(ROOT / "packages" / name / "src") for name in PACKAGES]
    session.run("mypy", *sources, "noxfile.py", "benchmarks", "integration", "tests")
    # Test folders have no __init__.py, so each is checked on its own: two packages may both have a
    # test_conformance.py without mypy seeing duplicate modules.
    for name in PACKAGES:
        session.run("mypy", str(ROOT / "packages" / name / "tests"))
    # The examples, as their users would check them: the example driver's package and tests, and the
    # signups application from its own folder.
    example_driver = ROOT / "examples" / "kq-driver-example"
    session.install("-e", str(example_driver))
    session.run("mypy", str(example_driver / "src"))
    session.run("mypy", str(example_driver / "tests"))
    with session.chdir(ROOT / "examples" / "signups"):
        session.run("mypy", "--config-file", str(ROOT / "pyproject.toml"), "signups", "publish.py", "tests")


@nox.session
def demo(session: nox.Session) -> None:
    """The quick start: the PHP library's tutorial on the embedded sqlite driver, in a temporary folder."""
    _install_packages(session)
    session.run("bash", str(ROOT / "scripts" / "demo.sh"), external=True)


#: What the docs site is built with: MkDocs and its Material theme, the API reference from docstrings
#: (mkdocstrings), the CLI reference from kq's click group (mkdocs-click).
DOCS_REQUIREMENTS = [
    "mkdocs>=1.6",
    "mkdocs-material>=9.5",
    "mkdocstrings[python]>=0.26",
    "mkdocs-click>=0.8",
    "ruff>=0.6",  # formats the signatures of the API reference
    "pytest>=8",
]


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """The docs site, built with warnings as errors into site/ (``-- --site-dir DIR`` to build elsewhere),
    after the tests that hold the configuration reference to the loader's keys and the API reference to
    the modules' ``__all__``.

    The packages are installed (editable) because the API and CLI references import them.
    """
    _install_packages(session, *DOCS_REQUIREMENTS)
    references = [str(ROOT / "tests" / f"test_docs_{name}_reference.py") for name in ("config", "api")]
    session.run("pytest", *references, "-p", "no:cacheprovider")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(ROOT / "mkdocs.yml"),
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # Material's notice about its successor, printed on every build
    )


@nox.session(default=False)
def wheels(session: nox.Session) -> None:
    """kq as a new user installs it: every distribution built (sdist, then the wheel from it) and the
    wheels installed, not editable, into fresh virtual environments on each installed Python 3.10-3.13,
    where ``kq --version``, ``kq managedriver list`` and the tutorial run (tests/test_wheels.py)."""
    session.install("pytest>=8", "uv>=0.4")
    session.run(
        "pytest",
        str(ROOT / "tests" / "test_wheels.py"),
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"KQ_TEST_WHEELS": "1"},
    )


#: The peers the benchmark compares kq with, on the same broker (benchmarks/scenarios/).
BENCH_REQUIREMENTS = [
    "pika>=1.3",
    "kombu>=5.3",
    "celery>=5.3",
    "dramatiq[rabbitmq]>=1.15",
    "huey>=2.5",
    "psutil>=5.9",
    "boto3>=1.34",
    "requests>=2.31",  # the SQS emulators' harness (integration/brokers/sqs.py)
]


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """kq against pika, Kombu, Celery, Dramatiq, Huey, stomp.py and boto3 on a private RabbitMQ and SQS
    emulator: writes the table of
    benchmarks/results/latest.md (``-- --quick`` checks that every scenario runs; ``-- --help``)."""
    _install_packages(session, *BENCH_REQUIREMENTS)
    session.run("python", "-m", "benchmarks.run", *session.posargs, env={"PYTHONPATH": str(ROOT)})
