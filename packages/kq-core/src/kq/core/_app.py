"""The :class:`App`: configuration, drivers, listeners and producers/consume loops in one object.

This is what the ``kq`` command uses, and what applications use to publish::

    from kq.core import App

    app = App.from_config()                       # kq.toml, [tool.kq] or the zero-config defaults
    app.command_producer("demo").publish("echoback", ["hello"], {"f": "out.txt"})
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from kq.core._config import Config, ListenerSpec, load_config
from kq.core._driver import Driver
from kq.core._errors import ConfigError, KqError, UnknownPluginError, UnknownQueueError
from kq.core._events import EventDispatcher
from kq.core._imports import import_object
from kq.core._limits import Limits
from kq.core._loop import ConsumeLoop
from kq.core._registry import LISTENER_GROUP, load_driver_class, plugin_entries
from kq.core._signing import Signer, Verifier, local_key, read_key
from kq.core._spec import QueueSpec
from kq.core.handlers._base import Handler, HandlerContext, build_handler

if TYPE_CHECKING:
    # Imported where used: a worker on one queue needs neither.
    from kq.core._priority import PriorityLoop
    from kq.core.handlers._console import ConsoleCommandProducer
    from kq.core.handlers._http import HttpProducer
    from kq.core.handlers._producer import GenericMessageProducer, MessageProducer
    from kq.core.handlers._service import ServiceProducer

logger = logging.getLogger(__name__.replace("._", "."))

#: Key id of the key made in ``.kq/signing.key`` when ``[signing] keys`` is empty.
LOCAL_KEY_ID = "local"

P = TypeVar("P", bound="MessageProducer")


class App:
    """A kq application: one configuration and the driver instances built from it.

    Args:
        config: The configuration (default: the zero-configuration defaults).
    """

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self._dispatcher: EventDispatcher | None = None
        self._signer: Signer | None = None
        self._verifier: Verifier | None = None
        self._drivers: dict[str, Driver] = {}

    @property
    def signer(self) -> Signer:
        """Signs what this app's producers publish (``[signing] sign_with``, or the local key)."""
        if self._signer is None:
            keys, sign_with = self._signing_keys()
            self._signer = Signer(key_id=sign_with, key=keys[sign_with])
        return self._signer

    @property
    def verifier(self) -> Verifier:
        """Checks signatures with every configured key (or the local one)."""
        if self._verifier is None:
            keys, _ = self._signing_keys()
            self._verifier = Verifier(keys, self.config.signing.max_age)
        return self._verifier

    def _signing_keys(self) -> tuple[dict[str, bytes], str]:
        settings = self.config.signing
        if not settings.keys:
            # No keys configured: one local key next to the embedded queues, made on first use, so that
            # producers and workers sharing this folder sign and verify with no setup at all.
            folder = Path(self.config.root) if self.config.root else Path.cwd()
            return {LOCAL_KEY_ID: local_key(folder / ".kq")}, LOCAL_KEY_ID
        keys = {
            key_id: read_key(
                value, key=f"signing.keys.{key_id}", source=self.config.source, root=self.config.root
            )
            for key_id, value in settings.keys.items()
        }
        # The configuration checks that sign_with names a key (it defaults to the only one).
        return keys, settings.sign_with or next(iter(keys))

    @property
    def dispatcher(self) -> EventDispatcher:
        """The event dispatcher, with the configured listeners and the ``kq.listeners`` plugins.

        They are imported on first use, so that a broken listener does not break commands that
        neither publish nor consume.
        """
        if self._dispatcher is None:
            dispatcher = EventDispatcher()
            for index, spec in enumerate(self.config.listeners):
                _add_listener(dispatcher, spec, f"listeners[{index}]", self.config.source)
            for entry in plugin_entries(LISTENER_GROUP):
                try:
                    entry.load()(dispatcher)
                except Exception:
                    logger.exception(
                        "listener plugin %s (%s, from %s) failed to register; continuing without it",
                        entry.name,
                        entry.value,
                        entry.distribution,
                    )
            self._dispatcher = dispatcher
        return self._dispatcher

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> App:
        """Load the configuration (explicit path, ``$KQ_CONFIG``, ``./kq.toml``, ``pyproject.toml``)."""
        return cls(load_config(path))

    def driver(self, name: str | None = None) -> Driver:
        """Return driver instance ``name`` (default: the configured default), built on first use.

        Raises:
            UnknownPluginError: ``name`` is not a configured driver instance.
        """
        name = name or self.config.default_driver
        driver = self._drivers.get(name)
        if driver is not None and not driver.closed:
            return driver
        spec = self.config.drivers.get(name)
        if spec is None:
            raise UnknownPluginError(name, self.config.drivers, what="driver")
        try:
            driver_class = load_driver_class(spec.type)
        except UnknownPluginError as exc:
            raise ConfigError(str(exc), key=f"drivers.{name}.type", source=spec.source) from None
        driver = driver_class(spec, self.config.queues_of(name))
        self._drivers[name] = driver
        return driver

    def queue(self, queue: str, driver: str | None = None) -> tuple[Driver, QueueSpec]:
        """Return the driver holding logical ``queue`` and the queue's settings.

        A configured queue uses its driver. An unconfigured one is accepted on the given or default
        driver when that driver creates queues on demand and either no queue is configured at all (the
        zero-configuration case) or it is the dead-letter queue of a configured one.

        Raises:
            UnknownQueueError: the queue is not configured (the message lists the configured ones).
        """
        spec = self.config.queues.get(queue)
        if spec is not None:
            if driver is not None and driver != spec.driver:
                raise UnknownQueueError(
                    f"queue '{queue}' is configured on driver '{spec.driver}', not '{driver}'"
                )
            instance = self.driver(spec.driver)
            return instance, instance.queue(queue)
        dead_letter_of = [q for q in self.config.queues.values() if q.dead_letter_queue == queue]
        if dead_letter_of and driver is None:
            driver = dead_letter_of[0].driver
        instance = self.driver(driver)
        if self.config.queues and not dead_letter_of and driver is None:
            known = ", ".join(sorted(self.config.queues))
            raise UnknownQueueError(
                f"queue '{queue}' is not configured in {self.config.source} (configured: {known}); "
                f"name a driver with -i to use an unconfigured queue"
            )
        spec = instance.queue(queue)
        origin = dead_letter_of[0] if dead_letter_of else self._unconfigured_origin(instance, queue)
        if origin is not None:
            # Consuming a dead-letter queue re-runs its messages: with the original queue's consumer,
            # under the same signature requirement.
            spec = dataclasses.replace(
                spec,
                consumer=origin.consumer,
                require_signature=origin.require_signature,
                handler_timeout=origin.handler_timeout,
            )
        return instance, spec

    def dead_letter_origins(self, queue: str, driver: str | None = None) -> list[QueueSpec]:
        """The queues whose dead-letter queue ``queue`` is (configured ones, or the unconfigured queue
        ``demo`` for ``demo.failed`` where unconfigured queues are accepted)."""
        origins = [q for q in self.config.queues.values() if q.dead_letter_queue == queue]
        if origins or queue in self.config.queues:
            return origins
        instance, _ = self.queue(queue, driver)
        origin = self._unconfigured_origin(instance, queue)
        return [origin] if origin is not None else []

    def signed_for(self, queue: str, driver: str | None = None) -> set[str]:
        """The queues whose signatures a worker of ``queue`` accepts: itself, the queues the broker
        routes into it, and, for a dead-letter queue, those of the queues it holds the failures of."""
        instance, spec = self.queue(queue, driver)
        sources = instance.sources(spec.name)
        for origin in self.dead_letter_origins(spec.name, instance.name):
            sources |= {origin.name} | instance.sources(origin.name)
        return sources

    def _unconfigured_origin(self, instance: Driver, queue: str) -> QueueSpec | None:
        base, dot, suffix = queue.rpartition(".")
        if not (dot and base and suffix == "failed") or base in self.config.queues:
            return None
        try:
            origin = instance.queue(base)
        except KqError:
            return None
        return origin if origin.dead_letter_queue == queue else None

    def producer(self, queue: str, driver: str | None = None) -> GenericMessageProducer:
        """A producer of raw bodies for ``queue``."""
        from kq.core.handlers._producer import GenericMessageProducer

        return self.producer_of(GenericMessageProducer, queue, driver)

    # Shortcuts for the built-in execution types, each importing its type's module only when called.
    def command_producer(self, queue: str, driver: str | None = None) -> ConsoleCommandProducer:
        """A console-command producer for ``queue``: ``producer_of(ConsoleCommandProducer, queue)``."""
        from kq.core.handlers._console import ConsoleCommandProducer

        return self.producer_of(ConsoleCommandProducer, queue, driver)

    def service_producer(self, queue: str, driver: str | None = None) -> ServiceProducer:
        """A producer of Python service calls for ``queue``: ``producer_of(ServiceProducer, queue)``."""
        from kq.core.handlers._service import ServiceProducer

        return self.producer_of(ServiceProducer, queue, driver)

    def http_producer(self, queue: str, driver: str | None = None) -> HttpProducer:
        """A producer of HTTP requests for ``queue``: ``producer_of(HttpProducer, queue)``."""
        from kq.core.handlers._http import HttpProducer

        return self.producer_of(HttpProducer, queue, driver)

    def producer_of(self, kind: type[P], queue: str, driver: str | None = None) -> P:
        """A producer of class ``kind`` for ``queue``: the one way to get any execution type's producer.

        Args:
            kind: A :class:`MessageProducer` subclass, kq-core's or another distribution's.
            queue: The logical queue.
            driver: The driver instance, for an unconfigured queue (default: the queue's own).
        """
        instance, spec = self.queue(queue, driver)
        return kind(instance, spec.name, dispatcher=self.dispatcher, signer=self.signer)

    def handler(self, queue: str, driver: str | None = None, *, label: str | None = None) -> Handler:
        """The message consumer configured for ``queue``."""
        _, spec = self.queue(queue, driver)
        return build_handler(HandlerContext(config=self.config, queue=spec, label=label))

    def consume_loop(
        self,
        queue: str,
        *,
        driver: str | None = None,
        routing_key: str | None = None,
        limits: Limits | None = None,
        label: str | None = None,
        handler: Handler | None = None,
        poll_interval: float = 1.0,
        prefetch: int | None = None,
        max_backoff: float = 30.0,
        handle_signals: bool = True,
        grace: float = 0.0,
        summary_interval: float = 10.0,
        burst: bool = False,
        handler_timeout: float = 0.0,
    ) -> ConsumeLoop:
        """A consume loop for ``queue`` with its configured handler (or ``handler``).

        The other arguments are :class:`ConsumeLoop`'s; the signature rule, the verifier, the signer and
        the dispatcher come from the configuration. ``handler_timeout`` (0: not given) overrides the
        queue's ``handler_timeout``, which overrides the handler's own limit. ``prefetch`` (``None``: not
        given) defaults to the handler's :attr:`~kq.core.Handler.prefetch`: 1 for console commands and
        HTTP calls, 16 for in-process callables, services and ``noop``.

        Raises:
            ConfigError: the configured handler reads an ``[allow]`` section that is empty: it could
                execute nothing, and every message would be dead-lettered as ``not-allowed``.
        """
        instance, spec = self.queue(queue, driver)
        if handler is None:
            handler = build_handler(HandlerContext(config=self.config, queue=spec, label=label))
            self._check_executable(spec, handler)
        required = self.config.signature_required(spec)
        sources = self.signed_for(spec.name, instance.name)
        return ConsumeLoop(
            instance,
            spec.name,
            handler,
            dispatcher=self.dispatcher,
            routing_key=routing_key,
            limits=limits,
            verifier=self.verifier if required else None,
            signed_for=sorted(sources),
            signer=self.signer,
            poll_interval=poll_interval,
            prefetch=handler.prefetch if prefetch is None else prefetch,
            max_backoff=max_backoff,
            handle_signals=handle_signals,
            grace=grace,
            summary_interval=summary_interval,
            burst=burst,
            handler_timeout=handler_timeout or spec.handler_timeout or 0.0,
        )

    def priority_loop(
        self,
        queues: Sequence[str],
        *,
        driver: str | None = None,
        limits: Limits | None = None,
        label: str | None = None,
        poll_interval: float = 1.0,
        prefetch: int | None = None,
        max_backoff: float = 30.0,
        handle_signals: bool = True,
        grace: float = 0.0,
        summary_interval: float = 10.0,
        burst: bool = False,
        handler_timeout: float = 0.0,
    ) -> PriorityLoop:
        """A loop consuming ``queues`` in priority order (:mod:`kq.core._priority`), each with its own
        driver instance, handler, signature rule and failure policy, as :meth:`consume_loop` builds them.

        ``driver`` names the driver of unconfigured queues; ``prefetch`` applies to the first queue only
        (the others take one message at a time); ``limits`` count across the queues.

        Raises:
            ValueError: fewer than two queues, or one given twice.
            ConfigError: as :meth:`consume_loop`, for any of the queues.
        """
        if len(queues) < 2 or len(set(queues)) != len(queues):
            raise ValueError(f"a priority loop needs two queues or more, each once (got {list(queues)})")
        loops: list[ConsumeLoop] = []
        try:
            for index, queue in enumerate(queues):
                loop = self.consume_loop(
                    queue,
                    driver=driver,
                    label=label,
                    poll_interval=poll_interval,
                    prefetch=prefetch if index == 0 else 1,
                    max_backoff=max_backoff,
                    handle_signals=False,
                    summary_interval=summary_interval,
                    handler_timeout=handler_timeout,
                )
                loops.append(loop)
        except BaseException:
            for built in loops:
                built.close()
            raise
        from kq.core._priority import PriorityLoop

        return PriorityLoop(
            loops,
            limits=limits,
            poll_interval=poll_interval,
            handle_signals=handle_signals,
            grace=grace,
            burst=burst,
        )

    def _check_executable(self, spec: QueueSpec, handler: Handler) -> None:
        """Refuse a handler that could execute nothing: its ``[allow]`` section is empty or absent."""
        section = handler.allow_section
        if section is None or self.config.allow.sections.get(section):
            return
        raise ConfigError(
            f"queue {spec.name!r} cannot execute anything: its consumer {spec.consumer!r} runs only what "
            f"[allow] {section} lists, and that is empty, so every message would be dead-lettered as "
            f"not-allowed; add entries to [allow] {section}",
            key=f"allow.{section}",
            source=self.config.source,
        )

    def close(self) -> None:
        """Close every driver instance this app built."""
        drivers, self._drivers = list(self._drivers.values()), {}
        for driver in drivers:
            try:
                driver.close()
            except Exception:
                logger.warning("closing driver %s failed", driver.name, exc_info=True)

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _add_listener(dispatcher: EventDispatcher, spec: ListenerSpec, key: str, source: str | None) -> None:
    target = import_object(spec.handler, what="listener", key=f"{key}.handler", source=source)
    events = spec.events or tuple(getattr(target, "events", ()))
    if not events:
        raise ConfigError(f"say which events {spec.handler!r} listens to", key=f"{key}.event", source=source)
    if isinstance(target, type):
        try:
            target = target(**spec.options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"cannot create listener {spec.handler!r}: {exc}", key=f"{key}.options", source=source
            ) from None
    elif spec.options:
        raise ConfigError(
            f"{spec.handler!r} is not a class: it takes no options", key=f"{key}.options", source=source
        )
    if not callable(target):
        raise ConfigError(f"listener {spec.handler!r} is not callable", key=f"{key}.handler", source=source)
    for event in events:
        dispatcher.add_listener(event, target, priority=spec.priority, queue=spec.queue)
