"""The watchdog: keeps the ``[workers.<name>]`` consumer processes of a configuration running.

Two ways to use it, as in the PHP library and beyond it:

- from cron, every minute: :meth:`Watchdog.start` starts every worker instance that is not running and
  returns; :meth:`Watchdog.stop` stops them all (SIGTERM, then SIGKILL after a grace period);
  :meth:`Watchdog.check` reports on them;
- as a foreground supervisor under systemd or in a container: :meth:`Watchdog.run` restarts workers as
  soon as they exit, backs off from a worker that keeps exiting at once and finally gives up on it
  (supervisord's BACKOFF and FATAL states, tuned by a :class:`RestartPolicy`).

From Python::

    from kq.core import App
    from kq.core.watchdog import Watchdog

    with App.from_config("/srv/app/kq.toml") as app:
        watchdog = Watchdog(app.config, app.dispatcher)
        for outcome in watchdog.start():    # StartOutcome(worker, label, outcome, pid, log, error)
            print(outcome.label, outcome.outcome)
        watchdog.stop(grace=30)             # [StopOutcome(worker, label, pid, killed, supervisor)]

Each instance of a worker is one process labelled ``<name>-<n>`` running
``<this python> -m kq.cli --config <file> consume <queue> --label <name>-<n> [options]``; the watchdog
finds it again by that label and by the configuration file on its command line, so workers started by
cron and by a supervisor are interchangeable.

**The workers need kq-cli.** ``kq consume`` is a command of the kq-cli distribution: kq-core alone can
start, stop and check nothing but kq-cli workers. Install ``kq-cli`` in the same environment as the
watchdog; without it, starting a worker raises :class:`WatchdogError` naming the distribution to
install, before any process is spawned.

``kq watchdog start|stop|check|run`` (kq-cli) is the command-line face of this package; the watchdog
page of the documentation describes the configuration, the states and the files it keeps in
``.kq/watchdog/``. Everything is logged on the ``kq.watchdog`` logger.
"""

from kq.core._errors import WatchdogError
from kq.core.watchdog._model import RestartPolicy, StartOutcome, StopOutcome, WorkerInstance
from kq.core.watchdog._watchdog import DEFAULT_LOG, Watchdog

__all__ = [
    # the watchdog
    "DEFAULT_LOG",
    "RestartPolicy",
    "Watchdog",
    # what it reports
    "StartOutcome",
    "StopOutcome",
    "WorkerInstance",
    # errors
    "WatchdogError",
]
