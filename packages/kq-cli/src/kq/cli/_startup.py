"""A command's start-up runs with the garbage collector paused.

The ``kq`` script and ``python -m kq.cli`` (``_kq_launcher.run``) pause the collector before the first
import. A worker's start creates some forty thousand objects the collector tracks, nearly all of them
living as long as the process: kq's, click's and the driver's modules and classes, the configuration,
the worker's handler and loop. The collector's
passes while they are created free nothing, and every later full pass would walk them again.

:func:`startup_done` ends the pause: everything created so far moves to the collector's permanent
generation (``gc.freeze``), which its passes skip, and the collector runs again. It is called just
before a command's function runs, or, for the commands that build something long-lived first
(``kq consume``: its loop, its driver's client library, its handlers), by the command once that is
built (:data:`ENDS_STARTUP_ITSELF`). A worker's start, spawn to its first message handled on
RabbitMQ, took 6 % less than with the collector paused for the import of the command line only, and
its later full passes walk a few hundred objects instead of some twelve thousand.

The cost: reference cycles that became garbage during the start (an ``ImportError`` caught with its
traceback, say) are frozen with the rest and never freed, a one-off of a few kilobytes.
"""

from __future__ import annotations

import gc

#: The attribute of a click command that calls :func:`startup_done` itself, later than the start of
#: its function.
ENDS_STARTUP_ITSELF = "kq_ends_startup_itself"


def startup_done() -> None:
    """Freeze what the start created and restart the collector, if the launcher paused it.

    Does nothing when the collector runs (kq's commands called without the launcher, as tests and
    ``click.testing`` do, or a second call).
    """
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()
