"""``kq managedriver`` and ``kq managequeue``: inspect drivers and administer queues."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import click

from kq.cli._common import State, emit, format_option, parse_pairs, pass_state

if TYPE_CHECKING:
    from kq.core import Option


@click.group()
def managedriver() -> None:
    """Inspect the installed drivers and the configured driver instances."""


@managedriver.command("list")
@format_option
@pass_state
def list_drivers(state: State, output_format: str) -> None:
    """List driver types (kq.drivers entry points) with their capabilities, and configured instances.

    A driver whose module or client library cannot be imported is listed with the error instead of
    breaking the listing.
    """
    from kq.core import KqError, driver_entries

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
    config = state.app.config
    instances = [
        {"name": spec.name, "type": spec.type, "default": spec.name == config.default_driver}
        for spec in config.drivers.values()
    ]
    result = {"types": types, "instances": instances, "configuration": config.source}
    emit(result, output_format, _driver_lines)


def _options(schema: Mapping[str, Option]) -> dict[str, Any]:
    return {name: {"default": o.default, "help": o.help} for name, o in schema.items()}


def _driver_lines(result: dict[str, Any]) -> Iterable[str]:
    yield "Driver types (kq.drivers entry points):"
    for item in result["types"]:
        yield f"  {item['type']:<10} from {item['distribution'] or '?'}"
        if "error" in item:
            yield f"             unavailable: {item['error']}"
            continue
        if item["description"]:
            yield f"             {item['description']}"
        yield f"             capabilities: {_capabilities(item['capabilities'])}"
    yield f"Driver instances ({result['configuration'] or 'built-in defaults, no configuration file'}):"
    for instance in result["instances"]:
        default = "  (default)" if instance["default"] else ""
        yield f"  {instance['name']:<10} type {instance['type']}{default}"


def _capabilities(caps: dict[str, Any]) -> str:
    words = [f"routing keys {caps['routing_keys']}"]
    for key, label in (
        ("delayed_delivery", "delays"),
        ("message_ttl", "TTL"),
        ("priorities", "priorities"),
        ("native_dead_letter", "native dead-lettering"),
        ("batch_send", "batch send"),
        ("batch_receive", "batch receive"),
        ("lease_extension", "leases"),
    ):
        if caps[key]:
            words.append(
                label
                + (
                    f" (max {caps['max_delay']:g}s)"
                    if key == "delayed_delivery" and caps["max_delay"]
                    else ""
                )
            )
    if not caps["cross_process"]:
        words.append("one process only")
    return ", ".join(words)


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
@format_option
@pass_state
def managequeue(
    state: State,
    action: str,
    queue: str | None,
    driver: str | None,
    arguments: tuple[str, ...],
    output_format: str,
) -> None:
    """Run ACTION on a driver's queues: list-configured, list-available, info, purge, delete, help.

    Drivers may add actions of their own (RabbitMQ: setup); 'help' lists them.

    \b
      kq managequeue list-configured           queues in the configuration, with their driver and consumer
      kq managequeue list-available [-i D]     queues that exist on the broker
      kq managequeue info QUEUE                message counts ('messages' = waiting to be delivered)
      kq managequeue purge QUEUE               delete the waiting messages
      kq managequeue delete QUEUE              delete the queue
      kq managequeue help [-i D]               the actions this driver supports
    """
    app = state.app
    if action == "list-configured" and driver is None and queue is None:
        configured = [
            {
                "queue": spec.name,
                "driver": spec.driver,
                "consumer": spec.consumer,
                "routing_keys": list(spec.routing_keys),
                "dead_letter_queue": spec.failed_queue,
            }
            for spec in app.config.queues.values()
        ]
        emit(configured, output_format, _configured_lines)
        return
    instance = app.queue(queue, driver)[0] if queue else app.driver(driver)
    manager = instance.queue_manager()
    if action == "help":
        emit(
            {"driver": instance.name, "actions": list(manager.actions)},
            output_format,
            lambda r: [f"Actions of driver {r['driver']}: {', '.join(r['actions'])}"],
        )
        return
    pairs = {k: v or "" for k, v in parse_pairs(arguments, "-a/--argument", allow_flags=False).items()}
    result = manager.execute(action, queue, pairs)
    if output_format == "json":
        emit(_json_result(action, queue, result), output_format)
    elif action == "purge":
        count = "all waiting" if result is None else str(result)
        click.echo(f"Purged {count} message(s) from queue {queue}")
    elif action == "delete":
        click.echo(f"Deleted queue {queue}")
    elif action == "list-configured":
        emit(result, output_format, _configured_lines)
    else:
        emit(result, output_format)


def _json_result(action: str, queue: str | None, result: Any) -> Any:
    if action == "purge":
        return {"queue": queue, "purged": result}
    if action == "delete":
        return {"queue": queue, "deleted": True}
    return result


def _configured_lines(queues: list[dict[str, Any]]) -> Iterable[str]:
    if not queues:
        yield "No queue is configured (any name works on the default driver)."
    for item in queues:
        keys = ", ".join(item["routing_keys"]) or "#"
        yield (
            f"{item['queue']}: driver {item['driver']}, consumer {item['consumer']}, routing keys {keys}, "
            f"dead letters to {item['dead_letter_queue']}"
        )
