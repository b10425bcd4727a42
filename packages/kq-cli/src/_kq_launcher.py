"""The target of the ``kq`` console script: checks that ``kq`` is kq's namespace package, then runs
:func:`kq.cli.main`.

kq-core, kq-cli and the drivers share ``kq`` as a PEP 420 namespace package (no ``kq/__init__.py``).
A regular ``kq`` package anywhere on the path hides every part of it: PyPI's unrelated ``kq``
distribution (a Kafka job queue) installs one, and ``import kq.cli`` would then end in a traceback. This
module lives outside ``kq`` so that it can be imported in that case, find the package that is in the
way without running its code, and say in one line what to uninstall (exit code 1).

``python -m kq.cli`` runs :func:`run` only: with the namespace hidden, it fails as Python does.
"""

from __future__ import annotations

import sys

#: The exit code when kq cannot start (kq.cli's EXIT_FAILURE, which cannot be imported then).
EXIT_FAILURE = 1
#: What to tell whoever installed the wrong distribution.
OURS = "kq's distributions are kq-core, kq-cli and kq-driver-*, never kq"


def main() -> None:
    """Run the ``kq`` command, or say what hides the ``kq`` namespace and exit 1."""
    problem = namespace_problem()
    if problem is not None:
        sys.stderr.write(f"kq: error: {problem}\n")
        raise SystemExit(EXIT_FAILURE)
    run()


def run() -> None:
    """Run kq's command line with the garbage collector paused until the command's start-up is over.

    The collector is paused before the first import and restarted by ``kq.cli._startup.startup_done``:
    just before the command's function runs, or, for ``kq consume``, once its loop is built. What the
    start created is frozen then, out of the collector's way for the rest of the process. On a small
    machine pausing it for the import of the command line alone took about 10 ms (some 7 %) off the
    start of a worker; pausing it until the loop is built took 6 % more (257 to 242 ms, medians of 40
    alternating starts of ``kq consume`` on RabbitMQ).
    """
    import gc

    gc.disable()
    try:
        from kq.cli._main import main as cli_main
        from kq.cli._startup import startup_done
    except BaseException:
        gc.enable()
        raise
    try:
        cli_main()
    finally:
        startup_done()  # when no command function ran: --help, --version, a usage error


def namespace_problem() -> str | None:
    """What makes ``import kq.cli`` impossible, in one sentence, or ``None`` when ``kq`` is a namespace
    package (or cannot be judged: the import then fails or succeeds as it would have)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("kq")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "namespace"):
        return None  # no kq at all (the import says so) or the namespace package
    path = spec.origin
    owner = _owner()
    if owner is None:
        return (
            f"{path} is a regular 'kq' package that hides the 'kq' namespace of kq-core and kq-cli: "
            "remove it from the Python path, or run `pip uninstall kq` if PyPI's unrelated 'kq' installed "
            f"it ({OURS})"
        )
    name, version = owner
    return (
        f"the distribution {name} {version} ({path}) hides the 'kq' namespace of kq-core and kq-cli: "
        f"run `pip uninstall {name}` ({OURS})"
    )


def _owner() -> tuple[str, str] | None:
    """The installed distribution, other than ours, that provides a top-level ``kq``: (name, version)."""
    import importlib.metadata

    try:
        names = importlib.metadata.packages_distributions().get("kq", [])
    except Exception:  # metadata of some other distribution is broken: no name to give
        return None
    for name in names:
        if not name.lower().replace("_", "-").startswith("kq-"):
            try:
                return name, importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return name, "(version unknown)"
    return None
