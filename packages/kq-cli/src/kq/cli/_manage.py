"""``kq managedriver`` and ``kq managequeue``: inspect drivers and administer queues."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import click

from kq.cli._common import (
    State,
    confirm,
    emit,
    format_option,
    parse_pairs,
    pass_state,
    render_text,
    yes_option,
)

if TYPE_CHECKING:
    from kq.core import App
    from kq.core.driver import Driver, Option, QueueSpec


@click.group()
def managedriver() -> None:
    """Inspect the installed drivers and the configured driver instances."""


@managedriver.command("list")
@format_option
@pass_state
def list_drivers(state: State, output_format: str) -> None:
    """List driver types (kq.drivers entry points) and the configured driver instances, with their
    capabilities: each instance's own (its options decide), and the type's defaults for a type without
    an instance. A queue's may differ again: see 'kq managequeue info QUEUE'.

    A driver whose module or client library cannot be imported is listed with the error instead of
    breaking the listing.
    """
    from kq.core import KqError
    from kq.core.plugins import driver_entries

    types: list[dict[str, Any]] = []
    for entry in driver_entries():
        item: dict[str, Any] = {
            "type": entry.name,
            "distribution": entry.distribution,
            "entry_point": entry.value,
        }
        try:
            driver_class = entry.load()
        except KqError as exc:
            item["error"] = str(exc)
        else:
            item["description"] = driver_class.description
            item["capabilities"] = driver_class.capabilities.as_dict()
            item["options"] = _options(driver_class.driver_options)
            item["queue_options"] = _options(driver_class.queue_options)
        types.append(item)
    app = state.app
    config = app.config
    config.check_plugins()  # a configured type that is not installed is an error, not a listing
    instances = [
        {
            "name": spec.name,
            "type": spec.type,
            "default": spec.name == config.default_driver,
            **instance_capabilities(app, spec.name),
        }
        for spec in config.drivers.values()
    ]
    result = {"types": types, "instances": instances, "configuration": config.source}
    emit(result, output_format, _driver_lines)


def instance_capabilities(app: App, name: str) -> dict[str, Any]:
    """``{"capabilities": ...}`` of driver instance ``name`` (``Driver.capabilities_for()``), or
    ``{"error": ...}`` when the instance cannot be built (its type is missing or broken, or its options
    are wrong): one instance must not break the listing."""
    try:
        return {"capabilities": app.driver(name).capabilities_for().as_dict()}
    except Exception as exc:  # a third-party driver may fail in any way; the listing goes on
        return {"error": _error_text(exc)}


def queue_capabilities(driver: Driver, spec: QueueSpec) -> dict[str, Any]:
    """The capabilities of queue ``spec`` on ``driver`` (``Driver.capabilities_for(queue)``) and the
    warnings about them: why ``max_deliveries`` cannot protect the queue from poison messages, if so."""
    from kq.core.driver import poison_protection_problem

    capabilities = driver.capabilities_for(spec.name)
    problem = poison_protection_problem(spec.max_deliveries, capabilities.delivery_count)
    return {"capabilities": capabilities.as_dict(), "warnings": [problem] if problem else []}


def _configured_capabilities(app: App, queue: str, driver: str) -> dict[str, Any]:
    """``queue_capabilities`` of a configured queue, or ``{"error": ...}`` when its driver instance
    cannot be built (``list-configured`` works without the drivers' client libraries)."""
    try:
        return queue_capabilities(*app.queue(queue, driver))
    except Exception as exc:  # as in instance_capabilities: one queue must not break the listing
        return {"error": _error_text(exc)}


def _error_text(exc: Exception) -> str:
    from kq.core import KqError

    return str(exc) if isinstance(exc, KqError) else f"{type(exc).__name__}: {exc}"


def _options(schema: Mapping[str, Option]) -> dict[str, Any]:
    return {name: {"default": o.default, "help": o.help} for name, o in schema.items()}


def _driver_lines(result: dict[str, Any]) -> Iterable[str]:
    configured = {instance["type"] for instance in result["instances"]}
    yield "Driver types (kq.drivers entry points):"
    for item in result["types"]:
        yield f"  {item['type']:<10} from {item['distribution'] or '?'}"
        if "error" in item:
            yield f"             unavailable: {item['error']}"
            continue
        if item["description"]:
            yield f"             {item['description']}"
        if item["type"] not in configured:  # a configured type shows its instances' capabilities
            yield f"             capabilities (type defaults): {capabilities_text(item['capabilities'])}"
    yield f"Driver instances ({result['configuration'] or 'built-in defaults, no configuration file'}):"
    for instance in result["instances"]:
        default = "  (default)" if instance["default"] else ""
        yield f"  {instance['name']:<10} type {instance['type']}{default}"
        if "error" in instance:
            yield f"             unavailable: {instance['error']}"
        else:
            yield f"             capabilities: {capabilities_text(instance['capabilities'])}"


#: What a consumer's own routing key (``kq consume -r``) does, in the text output.
_CONSUMER_ROUTING = {"filter": "-r filters", "own-queue": "-r reads its own queue", "none": "no -r"}


def capabilities_text(caps: dict[str, Any]) -> str:
    """``Capabilities.as_dict()`` on one line: what is there, in a few words (see docs/drivers.md)."""
    routing = _CONSUMER_ROUTING.get(caps["consumer_routing"], f"-r {caps['consumer_routing']}")
    words = [f"routing keys {caps['routing_keys']} ({routing})", f"delivery count {caps['delivery_count']}"]
    for key, label in (
        ("delayed_delivery", "delays" + _delay_limits(caps)),
        ("message_ttl", "TTL"),
        ("priorities", "priorities"),
        ("native_dead_letter", "native dead-lettering"),
        ("batch_send", "batch send"),
        ("batch_receive", "batch receive"),
        ("lease_extension", "leases"),
        ("retry_in_place", "retries in place"),
    ):
        if caps.get(key):
            words.append(label)
    if not caps["cross_process"]:
        words.append("one process only")
    return ", ".join(words)


def _delay_limits(caps: dict[str, Any]) -> str:
    publish, requeue = caps["max_publish_delay"], caps["max_requeue_delay"]
    if publish is None and requeue is None:
        return ""
    if publish == requeue:
        return f" (max {_duration(publish)})"
    limits = [
        f"{what} max {_duration(limit)}"
        for what, limit in (("publish", publish), ("requeue", requeue))
        if limit is not None
    ]
    return f" ({', '.join(limits)})"


def _duration(seconds: float) -> str:
    """A delay limit, short (the JSON output has the seconds): ``900s``, ``12h``, ``49.7d``, ``10y``."""
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:g}s"


#: The questions asked on a terminal before a destructive action.
_DESTRUCTIVE = {
    "purge": "Delete every waiting message of queue {queue} (driver {driver})?",
    "delete": "Delete queue {queue} and all its messages (driver {driver})?",
}


@click.command()
@click.argument("action")
@click.argument("queue", required=False)
@click.option(
    "-i", "--driver", help="Driver instance (default: the queue's configured driver, else default_driver)."
)
@click.option(
    "-a",
    "--argument",
    "arguments",
    multiple=True,
    metavar="NAME=VALUE",
    help="An argument for the action, repeatable (driver-specific).",
)
@yes_option
@format_option
@pass_state
def managequeue(
    state: State,
    action: str,
    queue: str | None,
    driver: str | None,
    arguments: tuple[str, ...],
    yes: bool,
    output_format: str,
) -> None:
    """Run ACTION on a driver's queues: list-configured, list-available, info, purge, delete, help.

    Drivers may add actions of their own (RabbitMQ: setup); 'help' lists them.

    \b
      kq managequeue list-configured           queues in the configuration: driver, consumer, capabilities
      kq managequeue list-available [-i D]     queues that exist on the broker
      kq managequeue info QUEUE                message counts ('messages' = waiting to be delivered) and
                                               the queue's capabilities, with warnings
      kq managequeue purge QUEUE               delete the waiting messages
      kq managequeue delete QUEUE              delete the queue ({"deleted": false} if there was none)
      kq managequeue help [-i D]               the actions this driver supports

    purge and delete ask for confirmation when run on a terminal, unless -y/--yes.
    """
    app = state.app
    if action == "list-configured" and driver is None and queue is None:
        app.config.check_plugins()  # a handler or driver type that is not installed is an error here
        configured = [
            {
                "queue": spec.name,
                "driver": spec.driver,
                "consumer": spec.consumer,
                "routing_keys": list(spec.routing_keys),
                "dead_letter_queue": spec.dead_letter_queue,
                **_configured_capabilities(app, spec.name, spec.driver),
            }
            for spec in app.config.queues.values()
        ]
        emit(configured, output_format, _configured_lines)
        return
    spec = None
    if queue:
        instance, spec = app.queue(queue, driver)
    else:
        instance = app.driver(driver)
    manager = instance.queue_manager()
    if action == "help":
        emit(
            {"driver": instance.name, "actions": list(manager.actions)},
            output_format,
            lambda r: [f"Actions of driver {r['driver']}: {', '.join(r['actions'])}"],
        )
        return
    pairs = {k: v or "" for k, v in parse_pairs(arguments, "-a/--argument", allow_flags=False).items()}
    if action in _DESTRUCTIVE and action in manager.actions:
        confirm(_DESTRUCTIVE[action].format(queue=queue, driver=instance.name), yes)
    result = manager.execute(action, queue, pairs)
    if action == "info" and spec is not None and isinstance(result, dict):
        result = {**result, **queue_capabilities(instance, spec)}
    elif action == "list-configured" and isinstance(result, list):
        result = [
            {**item, **_configured_capabilities(app, item["queue"], instance.name)}
            if isinstance(item, dict) and isinstance(item.get("queue"), str)
            else item
            for item in result
        ]
    if output_format == "json":
        emit(_json_result(action, queue, result), output_format)
    elif action == "purge":
        count = "all waiting" if result is None else str(result)
        click.echo(f"Purged {count} message(s) from queue {queue}")
    elif action == "delete":
        if result is False:
            click.echo(f"Queue {queue} does not exist on driver {instance.name}; nothing was deleted")
        else:
            click.echo(f"Deleted queue {queue}")
    elif action == "list-configured":
        emit(result, output_format, _configured_lines)
    elif action == "info" and isinstance(result, dict) and spec is not None:
        emit(result, output_format, _info_lines)
    else:
        emit(result, output_format)


def _json_result(action: str, queue: str | None, result: Any) -> Any:
    if action == "purge":
        return {"queue": queue, "purged": result}
    if action == "delete":
        # A driver written before delete() said whether the queue existed returns None: it deleted.
        return {"queue": queue, "deleted": result is not False}
    return result


def _info_lines(result: dict[str, Any]) -> Iterable[str]:
    """The driver's ``info`` keys as usual, then the queue's capabilities on one line, and warnings."""
    yield from render_text({k: v for k, v in result.items() if k not in ("capabilities", "warnings")})
    yield from _capability_lines({"capabilities": result["capabilities"], "warnings": result["warnings"]}, "")


def _capability_lines(item: dict[str, Any], indent: str) -> Iterable[str]:
    if "error" in item:
        yield f"{indent}capabilities unknown: {item['error']}"
        return
    if item.get("capabilities"):
        yield f"{indent}capabilities: {capabilities_text(item['capabilities'])}"
    for warning in item.get("warnings", ()):
        yield f"{indent}warning: {warning}"


def _configured_lines(queues: list[dict[str, Any]]) -> Iterable[str]:
    if not queues:
        yield "No queue is configured (any name works on the default driver)."
    for item in queues:
        keys = ", ".join(item["routing_keys"]) or "#"
        yield (
            f"{item['queue']}: driver {item['driver']}, consumer {item['consumer']}, routing keys {keys}, "
            f"dead letters to {item['dead_letter_queue']}"
        )
        yield from _capability_lines(item, "  ")
