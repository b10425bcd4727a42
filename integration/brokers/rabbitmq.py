"""A private, throw-away RabbitMQ node for the integration tests, started as a local process (no Docker).

RabbitMQ comes from the Debian package (``apt-get install rabbitmq-server``, see ``install-brokers.sh``).
:func:`start_rabbitmq` runs a node of its own out of a work folder and touches nothing under /etc or
/var: config, enabled-plugins file, Erlang cookie, mnesia, logs and pid file all live in that folder,
every listener is on 127.0.0.1, and the node name and ports are its own. Nothing global is registered
(no atexit hook, no signal handler): whoever starts a node calls :meth:`RabbitMQ.stop`.

Decisions, and the traps behind them (checked on Debian 12, rabbitmq-server 3.10.8, Erlang 25, as root):

* **Which script, which user.** ``/usr/sbin/rabbitmq-server`` is a wrapper that, for root, ``su``'s to the
  ``rabbitmq`` user, ``cd``'s to /var/lib/rabbitmq and sends the output to /var/log/rabbitmq. We run the
  real script, ``/usr/lib/rabbitmq/bin/rabbitmq-server``, directly as the current user instead. RabbitMQ
  does not refuse to run as root, so the work folder only has to belong to whoever runs the tests (root
  here, any user elsewhere) and nothing is chown'ed.
* **Erlang cookie.** Erlang reads ``$HOME/.erlang.cookie`` and creates it when it is missing, which for
  root would be /root/.erlang.cookie. The node gets ``HOME=<workdir>`` and we write a random cookie
  (mode 0400) there first, so nothing outside the work folder is written and no ``-setcookie`` shows in
  ``ps``. The CLI tools find the same cookie through the same environment: :meth:`RabbitMQ.ctl`, or by
  hand ``HOME=<workdir> ERL_EPMD_PORT=<epmd_port> rabbitmqctl -n <node> status``.
* **epmd.** Erlang normally spawns ``epmd -daemon``, which outlives the node and keeps port 4369. We run
  our own epmd as a child on ``127.0.0.1:<epmd_port>`` and start the node with ``-start_epmd false``,
  so :meth:`RabbitMQ.stop` can end it by PID and leaves nothing behind.
* **Environment.** Every inherited ``RABBITMQ_*`` and ``ERL_*`` variable is dropped: one left over in a
  developer's shell (``ERL_AFLAGS``, ``RABBITMQ_ENABLED_PLUGINS``...) would silently change the node.
  ``RABBITMQ_CONF_ENV_FILE`` and ``RABBITMQ_ADVANCED_CONFIG_FILE`` point into the work folder, otherwise
  the node would read /etc/rabbitmq/rabbitmq-env.conf and /etc/rabbitmq/advanced.config.
* **Stop.** SIGTERM to the start script, which forwards it to beam; RabbitMQ >= 3.8 treats SIGTERM as a
  graceful shutdown that flushes the message stores (about 6 s here). After a grace period the whole
  process group is killed. :meth:`RabbitMQ.restart` keeps the work folder and node name, so durable
  queues and persistent messages survive it.
* **Readiness.** ``rabbitmq-diagnostics ping`` answers before the broker accepts clients, so we wait for
  a real AMQP connection (pika) and a 200 from the management API, and fail fast, with the tail of the
  node's log, if the process dies meanwhile.

If the Python process is killed hard (SIGKILL), the node and its epmd keep running; the next start
then refuses with :class:`PortInUseError` naming the port (and the stale PID when it is known).
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from integration.brokers import (
    LOOPBACK,
    POLL_INTERVAL,
    BrokerError,
    BrokerStartError,
    PortInUseError,
    check_ports,
    check_ports_free,
    first_errors,
    kill_and_wait,
    read_pid,
    spawn,
    tail,
    terminate,
    wait_for_port,
)
from integration.brokers._rabbitmq_probes import (
    GUEST,
    amqp_answers,
    epmd_executable,
    is_beam_of,
    management_answers,
    stop_server,
)

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "PortInUseError",
    "RabbitMQ",
    "start_rabbitmq",
    "ensure_rabbitmq_installed",
]

logger = logging.getLogger(__name__)

RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def ensure_rabbitmq_installed() -> str | None:
    """None when a RabbitMQ node can be started here, else the reason why not (nothing is installed)."""
    script = RABBITMQ_SCRIPTS / "rabbitmq-server"
    if not script.is_file() or not os.access(script, os.X_OK):
        return (
            f"rabbitmq-server is not installed ({script} is missing); "
            "run integration/install-brokers.sh (apt-get install -y rabbitmq-server)"
        )
    if epmd_executable() is None:
        return "epmd (Erlang) was not found; reinstall rabbitmq-server and its erlang-base dependency"
    return None


def start_rabbitmq(
    workdir: Path,
    *,
    amqp_port: int = 5672,
    management_port: int = 15672,
    stomp_port: int = 61613,
    dist_port: int = 25672,
    epmd_port: int = 4369,
    timeout: float = 60.0,
) -> RabbitMQ:
    """Start a private RabbitMQ node that keeps its state in ``workdir``; return once it serves clients.

    Raises :class:`PortInUseError` if a port is taken and :class:`BrokerStartError` if the node dies or
    is not ready within ``timeout`` seconds (nothing is left running in either case).
    """
    broker = RabbitMQ(
        workdir=workdir,
        amqp_port=amqp_port,
        management_port=management_port,
        stomp_port=stomp_port,
        dist_port=dist_port,
        epmd_port=epmd_port,
        timeout=timeout,
    )
    broker.start()
    return broker


@dataclass
class RabbitMQ:
    """A RabbitMQ node run from ``workdir``; see the module docstring for how and why."""

    workdir: Path
    amqp_port: int = 5672
    management_port: int = 15672
    stomp_port: int = 61613
    dist_port: int = 25672
    epmd_port: int = 4369
    timeout: float = 60.0
    #: Seconds a graceful stop may take before the node is killed (a clean stop takes about 6 s).
    stop_grace: float = 30.0
    _server: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _epmd: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Absolute, because the paths end up in the node's environment and config.
        self.workdir = Path(self.workdir).resolve()
        check_ports("RabbitMQ", self._ports())

    # -- what clients need ---------------------------------------------------------------------------

    @property
    def amqp_url(self) -> str:
        return f"amqp://{GUEST[0]}:{GUEST[1]}@{LOOPBACK}:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://{LOOPBACK}:{self.management_port}"

    @property
    def stomp_url(self) -> str:
        return f"stomp://{LOOPBACK}:{self.stomp_port}"

    @property
    def node_name(self) -> str:
        # Derived from the AMQP port: unique among the nodes running here, stable across restarts
        # (the mnesia folder is named after it, so a new name would mean an empty broker).
        return f"kq-test-{self.amqp_port}@localhost"

    @property
    def log_file(self) -> Path:
        return self._log_dir / f"{self.node_name}.log"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the node (a no-op if it runs) and wait until AMQP and the management API answer."""
        if self.running:
            return
        # Reap what is left of a node that died on its own: its epmd would hold the port we check next.
        self.stop()
        started = time.monotonic()
        self._check_ports_free()
        self._write_files()
        try:
            self._epmd = self._spawn_epmd()
            self._server = self._spawn_server()
            self._wait_until_ready(started + self.timeout)
        except BaseException:
            # Also on KeyboardInterrupt: a half-started node would keep the ports for the next run.
            self.stop()
            raise
        logger.info(
            "RabbitMQ %s ready in %.1f s (%s)", self.node_name, time.monotonic() - started, self.workdir
        )

    def stop(self) -> None:
        """Stop the node and its epmd, waiting until they have exited. Safe to call more than once."""
        server, self._server = self._server, None
        epmd, self._epmd = self._epmd, None
        if server is None and epmd is None:
            return
        started = time.monotonic()
        if server is not None:
            stop_server(server, self.stop_grace)
        self._kill_leftover_beam()
        if epmd is not None:
            terminate(epmd, grace=5.0)
        logger.info("RabbitMQ %s stopped in %.1f s", self.node_name, time.monotonic() - started)

    def restart(self) -> None:
        """Stop and start again on the same data: durable queues and persistent messages survive."""
        self.stop()
        self.start()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl`` against this node (same cookie and epmd) and return its output."""
        result = subprocess.run(
            [str(RABBITMQ_SCRIPTS / "rabbitmqctl"), "-n", self.node_name, *args],
            env=self._environment(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def __enter__(self) -> RabbitMQ:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- files and environment -----------------------------------------------------------------------

    @property
    def _log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def _pid_file(self) -> Path:
        return self.workdir / "rabbit.pid"

    def _ports(self) -> dict[str, int]:
        return {
            "amqp": self.amqp_port,
            "management": self.management_port,
            "stomp": self.stomp_port,
            "dist": self.dist_port,
            "epmd": self.epmd_port,
        }

    def _write_files(self) -> None:
        """Write config, plugins and env files (every start, so a changed port applies on restart)."""
        for folder in (self.workdir, self._log_dir, self.workdir / "mnesia"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rabbitmq.conf").write_text(self._config())
        # The management UI and STOMP; their dependencies (management_agent, web_dispatch) come along.
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_stomp].\n")
        # Exists so that /etc/rabbitmq/rabbitmq-env.conf is not read instead.
        (self.workdir / "rabbitmq-env.conf").write_text(
            "# kq integration tests: everything is in the environment\n"
        )
        self._write_cookie()

    def _config(self) -> str:
        return "\n".join(
            [
                f"listeners.tcp.1 = {LOOPBACK}:{self.amqp_port}",
                f"management.tcp.ip = {LOOPBACK}",
                f"management.tcp.port = {self.management_port}",
                f"stomp.listeners.tcp.1 = {LOOPBACK}:{self.stomp_port}",
                # Queue depths in the management API lag about 5 s by default; tests want them sooner.
                # Both settings are needed: queues emit their stats every collect_statistics_interval,
                # and the management agent collects them at the smallest sample-retention bucket
                # (5 s by default). With 1 s buckets, a publish shows in /api/queues within ~1 s.
                "collect_statistics_interval = 500",
                "management.sample_retention_policies.global.minute = 1",
                "management.sample_retention_policies.global.hour = 60",
                "management.sample_retention_policies.basic.minute = 1",
                "management.sample_retention_policies.basic.hour = 60",
                "management.sample_retention_policies.detailed.10 = 1",
                "log.file.level = info",
                "",
            ]
        )

    def _write_cookie(self) -> None:
        cookie = self.workdir / ".erlang.cookie"
        if cookie.exists():
            return  # keep it: a running CLI session or an old node may still use it
        # Erlang refuses a cookie file that others can read, hence 0400 from the start.
        fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(20).upper())

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                "HOME": str(self.workdir),  # where Erlang and the CLI tools look for .erlang.cookie
                "ERL_EPMD_ADDRESS": LOOPBACK,
                "ERL_EPMD_PORT": str(self.epmd_port),
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
                # Never created: the point is that /etc/rabbitmq/advanced.config is not read.
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self._log_dir),
                "RABBITMQ_PID_FILE": str(self._pid_file),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                # Distribution on loopback only; epmd is ours (see the module docstring).
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
                ),
            }
        )
        return env

    # -- processes -----------------------------------------------------------------------------------

    def _check_ports_free(self) -> None:
        check_ports_free(self._ports(), lambda _role: self._stale_node_hint())

    def _stale_node_hint(self) -> str:
        pid = read_pid(self._pid_file)
        if pid is not None and is_beam_of(pid, self.node_name):
            return f"; a node from an earlier run of this work folder still runs as PID {pid}"
        return ""

    def _spawn_epmd(self) -> subprocess.Popen[bytes]:
        epmd = epmd_executable()
        if epmd is None:
            raise BrokerStartError("epmd not found: is rabbitmq-server (erlang-base) installed?")
        log = self._log_dir / "epmd.log"
        proc = spawn([epmd, "-address", LOOPBACK, "-port", str(self.epmd_port)], log, self._environment())
        # The node registers with epmd as soon as it boots: it must be listening first.
        wait_for_port(self.epmd_port, proc, timeout=10.0, what="epmd", log=log)
        return proc

    def _spawn_server(self) -> subprocess.Popen[bytes]:
        # Foreground mode (no -detached): the script stays our child and forwards SIGTERM to beam.
        command = [str(RABBITMQ_SCRIPTS / "rabbitmq-server")]
        logger.info("starting RabbitMQ %s in %s", self.node_name, self.workdir)
        return spawn(command, self._log_dir / "startup.log", self._environment(), cwd=self.workdir)

    def _wait_until_ready(self, deadline: float) -> None:
        amqp_ready = False
        while True:
            self._raise_if_died()
            amqp_ready = amqp_ready or amqp_answers(self.amqp_port)
            if amqp_ready and management_answers(self.management_url):
                return
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"RabbitMQ {self.node_name} was not ready after {self.timeout:.0f} s "
                    f"(AMQP {'up' if amqp_ready else 'down'}, management down).\n{self.log_tails()}"
                )
            time.sleep(POLL_INTERVAL)

    def _raise_if_died(self) -> None:
        for name, proc in (("rabbitmq-server", self._server), ("epmd", self._epmd)):
            if proc is not None and proc.poll() is not None:
                raise BrokerStartError(
                    f"{name} of RabbitMQ {self.node_name} exited with code {proc.returncode} "
                    f"while starting.\n{self.log_tails()}"
                )

    def log_tails(self) -> str:
        """The first errors and last lines of the startup log, and the end of the node's log."""
        # The first errors too: a config mistake is reported at the top, then buried under a crash report.
        startup = self._log_dir / "startup.log"
        return "\n".join([first_errors(startup), tail(startup), tail(self.log_file)])

    def _kill_leftover_beam(self) -> None:
        """Kill beam if it outlived its start script (the script killed from outside, say)."""
        pid = read_pid(self._pid_file)
        if pid is None or not is_beam_of(pid, self.node_name):
            return
        logger.warning(
            "RabbitMQ %s: beam (PID %d) outlived its start script; killing it", self.node_name, pid
        )
        kill_and_wait(pid)
