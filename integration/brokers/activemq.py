"""A private, throw-away ActiveMQ Classic broker for the integration tests, as a local process (no Docker).

ActiveMQ comes from Debian's ``activemq`` package, with ``libxstream-java`` and ``libjettison-java``
(``install-brokers.sh``). :class:`ActiveMQ` runs a broker of its own out of a work folder that it writes
(``reference/brokers.md`` §2, "Option B") and touches nothing under /etc or /var: no init script, no
``instances-enabled`` link, no ``activemq`` user. The folder holds::

    conf/activemq.xml       the broker (written on every start, so a changed port applies on restart)
    conf/log4j.properties   log4j 1.2 to the console, i.e. into activemq.log
    lib/                    xstream.jar and jettison.jar, linked from /usr/share/java
    data/kahadb/            the persistent store: durable messages survive restart()
    data/localhost/         the scheduler's store (AMQ_SCHEDULED_DELAY) and temporary storage
    tmp/                    the JVM's java.io.tmpdir
    activemq.log            everything the JVM prints

Decisions, and the traps behind them (checked on Debian 12, ActiveMQ 5.17.2, OpenJDK 17, as root):

* **How it runs.** ``java -jar /usr/share/activemq/bin/activemq.jar start xbean:file:<conf>/activemq.xml``
  with ``activemq.home`` the package and ``activemq.base``/``conf``/``data`` the work folder, and a small
  heap (``-Xmx256M``; Debian's init script gives 512 MB). The JVM is our child, in a session of its own.
* **Logging.** slf4j in Debian's build binds to log4j 1.2, which ignores the package's
  ``log4j2.properties``: without ``-Dlog4j.configuration`` a broker that fails says nothing at all. The
  work folder has a log4j 1.2 console configuration, so the broker's own errors reach ``activemq.log``.
* **The statistics plugin** answers destination-stats requests with ``transformation: jms-map-json``,
  which needs xstream and jettison. They are not on ActiveMQ's classpath in the package, but
  ``${activemq.base}/lib`` is: the work folder's ``lib/`` links them (without them the broker drops the
  asking connection with ``NoClassDefFoundError``).
* **Broker settings**: persistent (KahaDB in the folder), ``schedulerSupport="true"`` (otherwise
  ``AMQ_SCHEDULED_DELAY`` is silently ignored), the statistics plugin, and a shared dead-letter strategy
  with ``processExpired="false"``: by default ActiveMQ copies every expired persistent message into
  ``ActiveMQ.DLQ``, which would fill up with kq's TTL-expired messages. JMX's connector is off (no port),
  and there is neither a web console nor Jolokia in the package.
* **Connectors**: OpenWire on ``openwire_port`` (61616; nothing of kq uses it, but a broker without one
  is not what users run) and STOMP on ``stomp_port`` (61614: RabbitMQ's STOMP plugin has 61613), both on
  127.0.0.1. ``transport.closeAsync=false`` closes an ended STOMP connection's socket at once, in the thread
  that ends it, instead of handing it to a pool (ActiveMQ's advice for STOMP's many short connections).
* **Environment.** ``ACTIVEMQ_*``, ``CLASSPATH`` and the JVM's option variables (``JAVA_TOOL_OPTIONS``,
  ``JDK_JAVA_OPTIONS``, ``_JAVA_OPTIONS``) are dropped: one left in a developer's shell would change the
  broker silently.
* **Readiness.** The STOMP port accepting a connection is not enough: the wait loop sends a STOMP
  ``CONNECT`` and waits for ``CONNECTED``, and fails fast, with the tail of the log, if the JVM exits
  meanwhile (a configuration mistake makes it exit during start). The reason then starts with the
  first errors the broker logged in this start, as they are buried under stack traces further down.
* **Stop.** SIGTERM runs the JVM's shutdown hook, which stops the broker and closes the stores (0.1 to
  0.4 s here); after ``stop_grace`` seconds the process group is killed.

If the Python process is killed hard (SIGKILL), the JVM keeps running; the next start then refuses with
:class:`~integration.brokers.PortInUseError` naming the port.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from integration.brokers import (
    LOOPBACK,
    POLL_INTERVAL,
    BrokerStartError,
    check_ports,
    check_ports_free,
    spawn,
    stop_process_group,
    tail,
)

__all__ = [
    "ACTIVEMQ_HOME",
    "EXTENSION_JARS",
    "ActiveMQ",
    "ensure_activemq_installed",
    "java_executable",
    "stomp_answers",
]

logger = logging.getLogger(__name__)

#: Where Debian's ``activemq`` package puts the broker (``bin/activemq.jar``, ``lib/``).
ACTIVEMQ_HOME = Path("/usr/share/activemq")
#: The jars the statistics plugin's JSON replies need, from ``libxstream-java`` and ``libjettison-java``.
EXTENSION_JARS = {
    "libxstream-java": Path("/usr/share/java/xstream.jar"),
    "libjettison-java": Path("/usr/share/java/jettison.jar"),
}
_INSTALL_HINT = (
    "run integration/install-brokers.sh (apt-get install -y activemq libxstream-java libjettison-java)"
)
#: Environment variables that would change the JVM or the broker behind our back.
_DROPPED_ENV_PREFIXES = ("ACTIVEMQ_", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "CLASSPATH")


def java_executable() -> str | None:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def ensure_activemq_installed() -> str | None:
    """None when an ActiveMQ broker can be started here, else the reason why not (nothing is installed)."""
    jar = ACTIVEMQ_HOME / "bin" / "activemq.jar"
    if not jar.is_file():
        return f"ActiveMQ is not installed ({jar} is missing); {_INSTALL_HINT}"
    missing = [package for package, path in EXTENSION_JARS.items() if not path.is_file()]
    if missing:
        return f"{', '.join(missing)} not installed (the statistics plugin needs them); {_INSTALL_HINT}"
    if java_executable() is None:
        return (
            "no java found (neither $JAVA_HOME/bin/java nor java on PATH); "
            "apt-get install -y default-jre-headless (the activemq package normally pulls it in)"
        )
    return None


def stomp_answers(port: int, host: str = LOOPBACK, timeout: float = 2.0) -> bool:
    """True once a STOMP ``CONNECT`` on ``host:port`` is answered with ``CONNECTED``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
            reply = b""
            while b"\x00" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            if reply.startswith(b"CONNECTED"):
                # Say goodbye, so that the broker does not log a connection reset on every probe.
                sock.sendall(b"DISCONNECT\n\n\x00")
                return True
    except OSError:
        pass
    return False


@dataclass
class ActiveMQ:
    """An ActiveMQ Classic broker run from ``workdir``; see the module docstring for how and why."""

    workdir: Path
    stomp_port: int = 61614
    openwire_port: int = 61616
    #: Seconds from spawning the JVM to STOMP answering (3-5 s here, on two busy cores).
    timeout: float = 60.0
    #: Seconds a graceful stop may take before the JVM is killed (a clean stop takes well under 1 s).
    stop_grace: float = 30.0
    #: The JVM's maximum heap (``-Xmx``).
    heap: str = "256M"
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    #: Where the log stood when the JVM was last spawned: errors before it belong to earlier runs.
    _log_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        # Absolute, because the paths end up in the JVM's system properties and the config.
        self.workdir = Path(self.workdir).resolve()
        check_ports("ActiveMQ", self._ports())

    # -- what clients need ---------------------------------------------------------------------------

    @property
    def stomp_url(self) -> str:
        return f"stomp://{LOOPBACK}:{self.stomp_port}"

    @property
    def openwire_url(self) -> str:
        return f"tcp://{LOOPBACK}:{self.openwire_port}"

    @property
    def log_file(self) -> Path:
        """Where the JVM's output goes (appended to across restarts)."""
        return self.workdir / "activemq.log"

    @property
    def config_file(self) -> Path:
        return self.workdir / "conf" / "activemq.xml"

    @property
    def running(self) -> bool:
        """True while the broker's JVM runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The JVM's PID while it runs, else None."""
        return self._proc.pid if self._proc is not None and self.running else None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker (a no-op if it runs) and wait until STOMP answers a CONNECT."""
        if self.running:
            return
        self.stop()  # reap a JVM that died on its own
        reason = ensure_activemq_installed()
        if reason is not None:
            raise BrokerStartError(reason)
        check_ports_free(self._ports(), lambda role: f" (KQ_TEST_ACTIVEMQ_{role.upper()}_PORT)")
        self._write_files()
        started = time.monotonic()
        logger.info("starting ActiveMQ on %s in %s", self.stomp_url, self.workdir)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        try:
            self._proc = spawn(self.command(), self.log_file, self._environment(), cwd=self.workdir)
            self._wait_until_ready(started + self.timeout)
        except BaseException:
            # Also on KeyboardInterrupt: a half-started JVM would keep the ports for the next run.
            self.stop()
            raise
        logger.info("ActiveMQ ready on %s in %.1f s", self.stomp_url, time.monotonic() - started)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait until the JVM has exited; safe to repeat."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        started = time.monotonic()
        stop_process_group(proc, self.stop_grace, f"ActiveMQ on port {self.stomp_port}")
        logger.info(
            "ActiveMQ on %s stopped in %.1f s (exit code %s)",
            self.stomp_url,
            time.monotonic() - started,
            proc.returncode,
        )

    def restart(self) -> None:
        """Stop and start again on the same data: persistent messages and scheduled ones survive."""
        self.stop()
        self.start()

    def log_tails(self) -> str:
        """The errors of the last start and the end of the JVM's log (the broker's own messages)."""
        # The errors too: a config mistake is logged once at the top, then buried under stack traces.
        return "\n".join(part for part in (self._first_errors(), tail(self.log_file)) if part)

    def __enter__(self) -> ActiveMQ:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- files, command line and environment ----------------------------------------------------------

    def config(self) -> str:
        """The broker's ``activemq.xml`` (see the module docstring for what is in it and why)."""
        return f"""\
<!-- Written by integration/brokers/activemq.py on every start; edits are overwritten. -->
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans
         http://www.springframework.org/schema/beans/spring-beans.xsd
         http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="localhost"
          useJmx="true" persistent="true" schedulerSupport="true" dataDirectory="${{activemq.data}}">
    <destinationPolicy>
      <policyMap>
        <policyEntries>
          <policyEntry queue=">">
            <deadLetterStrategy>
              <!-- NACKed persistent messages still go to ActiveMQ.DLQ; expired ones are dropped. -->
              <sharedDeadLetterStrategy processExpired="false"/>
            </deadLetterStrategy>
          </policyEntry>
        </policyEntries>
      </policyMap>
    </destinationPolicy>
    <plugins>
      <statisticsBrokerPlugin/>
    </plugins>
    <persistenceAdapter>
      <kahaDB directory="${{activemq.data}}/kahadb"/>
    </persistenceAdapter>
    <managementContext>
      <managementContext createConnector="false"/>
    </managementContext>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://{LOOPBACK}:{self.openwire_port}"/>
      <transportConnector name="stomp" uri="stomp://{LOOPBACK}:{self.stomp_port}?transport.closeAsync=false"/>
    </transportConnectors>
  </broker>
</beans>
"""

    def command(self) -> list[str]:
        """The JVM's command line (``reference/brokers.md`` §2, Option B)."""
        java = java_executable()
        if java is None:
            raise BrokerStartError("no java found; apt-get install -y default-jre-headless")
        conf = self.workdir / "conf"
        return [
            java,
            "-Xms64M",
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.workdir / 'tmp'}",
            # What the package's own start script passes on Java >= 9 (XBean and KahaDB use reflection).
            "--add-reads=java.xml=java.logging",
            "--add-opens=java.base/java.lang=ALL-UNNAMED",
            "--add-opens=java.base/java.util=ALL-UNNAMED",
            "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
            f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
            f"-Dactivemq.classpath={conf}",
            f"-Dactivemq.home={ACTIVEMQ_HOME}",
            f"-Dactivemq.base={self.workdir}",
            f"-Dactivemq.conf={conf}",
            f"-Dactivemq.data={self.workdir / 'data'}",
            "-jar",
            str(ACTIVEMQ_HOME / "bin" / "activemq.jar"),
            "start",
            f"xbean:file:{self.config_file}",
        ]

    def _ports(self) -> dict[str, int]:
        return {"stomp": self.stomp_port, "openwire": self.openwire_port}

    def _write_files(self) -> None:
        for folder in ("conf", "data", "tmp", "lib"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        (self.workdir / "conf" / "log4j.properties").write_text(_LOG4J_PROPERTIES)
        for jar in EXTENSION_JARS.values():
            link = self.workdir / "lib" / jar.name
            if not link.is_symlink():
                link.symlink_to(jar)

    def _environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}

    def _first_errors(self, lines: int = 8) -> str:
        """The first error lines (and their causes) the broker logged since the last spawn."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        errors = [
            line if len(line) <= 400 else line[:397] + "..."
            for line in text.splitlines()
            if " ERROR " in line or line.startswith(("ERROR:", "Caused by:"))
        ][:lines]
        return f"--- first errors in {self.log_file} ---\n" + "\n".join(errors) if errors else ""

    def _wait_until_ready(self, deadline: float) -> None:
        while not stomp_answers(self.stomp_port):
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise BrokerStartError(
                    f"ActiveMQ exited with code {code} while starting.\n{self.log_tails()}"
                )
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"ActiveMQ did not answer STOMP on {self.stomp_url} within {self.timeout:.0f} s.\n"
                    f"{self.log_tails()}"
                )
            time.sleep(POLL_INTERVAL)


#: log4j 1.2 to stdout, which spawn() sends to activemq.log; Spring's and XBean's chatter kept to warnings.
_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, console
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c - %m%n
"""
