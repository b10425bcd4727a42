"""kq-core: one small API over message queues, and workers that run what messages ask for.

Publishing::

    from kq.core import App

    with App.from_config() as app:          # kq.toml, [tool.kq] in pyproject.toml, or zero-config defaults
        app.command_producer("demo").publish("echoback", ["hello"], {"f": "out.txt"})

Consuming (what ``kq consume demo`` does)::

    with App.from_config() as app:
        app.consume_loop("demo", limits=Limits(messages=10)).run()

The pieces, from the bottom up:

- :class:`Message` / :class:`Delivery`: what is sent and what is received.
- :class:`Driver`, :class:`Producer`, :class:`Consumer`, :class:`QueueManager`: the driver contract,
  with :class:`Capabilities`; drivers are found through the ``kq.drivers`` entry-point group
  (:func:`driver_entries`, :func:`load_driver_class`). kq-core ships ``memory`` and ``sqlite``.
- :class:`ConsoleCommandProducer`, :class:`GenericMessageProducer`: application-level producers.
- :class:`Handler` and the built-in :class:`ConsoleCommandHandler` and :class:`NoopHandler`.
- :class:`ConsumeLoop` with :class:`Limits`: receive, decode, events, handle, acknowledge.
- :class:`EventDispatcher` and the event classes.
- :func:`load_config` / :class:`Config`; :class:`App` ties them together.
- :func:`topic_matches`: AMQP topic routing for brokers without it.

Driver authors test their driver with the conformance classes in :mod:`kq.core.testing`.
"""

from kq.core._allow import AllowList, AllowMap
from kq.core._app import App
from kq.core._codecs import decode_body, encode_json, media_type
from kq.core._command import CommandCall, make_command, parse_command
from kq.core._config import (
    AllowSettings,
    Config,
    ConsoleSettings,
    ListenerSpec,
    SigningSettings,
    WorkerSpec,
    find_config_file,
    load_config,
    parse_config,
)
from kq.core._console import CommandResult, ConsoleCommandHandler, run_command
from kq.core._consumers import (
    CallableHandler,
    Handler,
    HandlerContext,
    NoopHandler,
    build_handler,
)
from kq.core._driver import STANDARD_ACTIONS, Capabilities, Consumer, Driver, Producer, QueueManager
from kq.core._errors import (
    BrokerUnavailableError,
    ClosedError,
    ConfigError,
    DeliveryStateError,
    ExecutionFailedError,
    KqError,
    LeaseLostError,
    MessageFormatError,
    MissingExtraError,
    NotAllowedError,
    PluginLoadError,
    PublishError,
    SignatureError,
    UnknownPluginError,
    UnknownQueueError,
    UnsupportedOperationError,
)
from kq.core._events import (
    Event,
    EventDispatcher,
    MessageConsumed,
    MessageConsumptionFailed,
    MessageReceived,
    MessageSent,
    ProcessStarted,
    ProcessStopped,
)
from kq.core._failures import attempt_of
from kq.core._http import (
    HttpHandler,
    HttpProducer,
    HttpRequest,
    HttpResult,
    make_http_request,
    parse_http_request,
)
from kq.core._imports import import_object, load_check
from kq.core._inprocess import InProcessConsoleCommandHandler
from kq.core._loop import ConsumeLoop, Limits, LoopStats
from kq.core._message import (
    ATTEMPT,
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_FOREIGN_HEADERS,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON,
    DEAD_LETTER_TIME,
    DRIVER_REDELIVERY,
    DRIVER_ROUTING_KEY,
    JSON,
    KQ_HEADER_PREFIX,
    TRANSIT_HEADERS,
    Delivery,
    Message,
    new_message_id,
)
from kq.core._options import Option
from kq.core._producers import ConsoleCommandProducer, GenericMessageProducer, MessageProducer
from kq.core._redrive import RedriveResult, remove_dead_letters, retry_dead_letters, show_dead_letters
from kq.core._registry import (
    CONSUMER_GROUP,
    DRIVER_GROUP,
    LISTENER_GROUP,
    DriverEntry,
    PluginEntry,
    driver_entries,
    driver_names,
    handler_names,
    load_driver_class,
    load_plugin,
    plugin_entries,
)
from kq.core._retry import RetryPolicy
from kq.core._routing import (
    check_routing_key,
    command_routing_key,
    matches_any,
    topic_matches,
    url_routing_key,
)
from kq.core._service import (
    ServiceCall,
    ServiceHandler,
    ServiceProducer,
    make_service_call,
    parse_service_call,
)
from kq.core._signing import Signer, Verifier, new_key
from kq.core._spec import DriverSpec, QueueSpec
from kq.core._watchdog import Watchdog
from kq.core._watchdog_model import StartOutcome, StopOutcome, WatchdogError, WorkerInstance
from kq.core.version import __version__

__all__ = [
    # messages and routing
    "JSON",
    "KQ_HEADER_PREFIX",
    "TRANSIT_HEADERS",
    "Delivery",
    "Message",
    "check_routing_key",
    "command_routing_key",
    "matches_any",
    "new_message_id",
    "topic_matches",
    "url_routing_key",
    # driver contract and discovery
    "Capabilities",
    "Consumer",
    "Driver",
    "DriverEntry",
    "DriverSpec",
    "Option",
    "Producer",
    "QueueManager",
    "QueueSpec",
    "STANDARD_ACTIONS",
    "driver_entries",
    "driver_names",
    "load_driver_class",
    # plugins (drivers, consumers, listeners)
    "CONSUMER_GROUP",
    "DRIVER_GROUP",
    "LISTENER_GROUP",
    "PluginEntry",
    "handler_names",
    "load_plugin",
    "plugin_entries",
    # configuration and application
    "AllowList",
    "AllowMap",
    "AllowSettings",
    "App",
    "Config",
    "ConsoleSettings",
    "ListenerSpec",
    "SigningSettings",
    "WorkerSpec",
    "find_config_file",
    "load_config",
    "parse_config",
    # producing
    "CommandCall",
    "ConsoleCommandProducer",
    "GenericMessageProducer",
    "HttpProducer",
    "MessageProducer",
    "ServiceProducer",
    "encode_json",
    "make_command",
    # consuming
    "ATTEMPT",
    "CallableHandler",
    "CommandResult",
    "ConsoleCommandHandler",
    "ConsumeLoop",
    "HandlerContext",
    "Limits",
    "LoopStats",
    "RetryPolicy",
    # dead letters
    "DEAD_LETTER_DELIVERIES",
    "DEAD_LETTER_ERROR",
    "DEAD_LETTER_FOREIGN_HEADERS",
    "DEAD_LETTER_QUEUE",
    "DEAD_LETTER_REASON",
    "DEAD_LETTER_TIME",
    "DRIVER_REDELIVERY",
    "DRIVER_ROUTING_KEY",
    "RedriveResult",
    "remove_dead_letters",
    "retry_dead_letters",
    "show_dead_letters",
    "Handler",
    "NoopHandler",
    "attempt_of",
    "build_handler",
    "import_object",
    "load_check",
    "decode_body",
    "media_type",
    "parse_command",
    "run_command",
    # execution types
    "HttpHandler",
    "HttpRequest",
    "HttpResult",
    "InProcessConsoleCommandHandler",
    "ServiceCall",
    "ServiceHandler",
    "make_http_request",
    "make_service_call",
    "parse_http_request",
    "parse_service_call",
    # events
    "Event",
    "EventDispatcher",
    "MessageConsumed",
    "MessageConsumptionFailed",
    "MessageReceived",
    "MessageSent",
    "ProcessStarted",
    "ProcessStopped",
    # signing
    "SignatureError",
    "Signer",
    "Verifier",
    "new_key",
    # watchdog
    "StartOutcome",
    "StopOutcome",
    "Watchdog",
    "WatchdogError",
    "WorkerInstance",
    # errors
    "BrokerUnavailableError",
    "ConfigError",
    "ClosedError",
    "DeliveryStateError",
    "LeaseLostError",
    "PublishError",
    "MissingExtraError",
    "PluginLoadError",
    "ExecutionFailedError",
    "KqError",
    "MessageFormatError",
    "NotAllowedError",
    "UnknownPluginError",
    "UnknownQueueError",
    "UnsupportedOperationError",
    # version
    "__version__",
]
