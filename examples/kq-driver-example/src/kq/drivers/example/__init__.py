"""kq-driver-example: durable queues as folders of files, one file per message.

An example of a third-party kq driver, written as docs/writing-a-driver.md says, small enough to read
in one sitting: copy it to start a driver of your own. Install it and use the type ``example``::

    [drivers.files]
    type = "example"
    path = "var/queues"          # relative to kq.toml (default: .kq/example-queues)
    visibility_timeout = 30      # seconds a message stays reserved for the worker that took it

Each queue is a folder; each message a file, claimed by renaming it (see ``_store``). Routing keys are
filtered by the consumer (``kq consume -r`` takes only matching messages and leaves the others), delays
and TTLs are honoured, deliveries are counted exactly, and a worker that dies leaves its messages to
come back when their lease lapses. ``kq managequeue`` offers ``info``, ``purge``, ``delete`` and
``list-available``.
"""

from __future__ import annotations

from kq.drivers.example._consumer import ExampleConsumer
from kq.drivers.example._driver import ExampleDriver
from kq.drivers.example._errors import ConfigError, FolderError, LeaseLostError
from kq.drivers.example._producer import ExampleProducer
from kq.drivers.example._queue_manager import ExampleQueueManager
from kq.drivers.example.version import __version__

__all__ = [
    "ExampleConsumer",
    "ExampleDriver",
    "ExampleProducer",
    "ExampleQueueManager",
    "ConfigError",
    "FolderError",
    "LeaseLostError",
    "__version__",
]
