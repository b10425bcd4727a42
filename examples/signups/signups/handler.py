"""The handler of the ``signups`` queue; kq.toml binds it: ``consumer = "signups.handler:WelcomeMail"``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kq.core import Delivery, Handler, MessageFormatError

logger = logging.getLogger(__name__)


class WelcomeMail(Handler):
    """Writes a welcome mail for each sign-up to ``outbox.txt`` (a real one would send it)."""

    kind = "welcome mail"

    def __init__(self, outbox: Path = Path("outbox.txt")) -> None:
        self.outbox = outbox

    def consume(self, body: Any, delivery: Delivery) -> str:
        """Raise MessageFormatError for a body that can never work (dead-lettered at once); any other
        exception is a failure the queue's retry policy may try again."""
        if not isinstance(body, dict) or not isinstance(body.get("email"), str):
            raise MessageFormatError("a sign-up is {'email': ..., 'plan': ...}")
        line = f"Welcome {body['email']}, enjoy the {body.get('plan', 'free')} plan!"
        with self.outbox.open("a", encoding="utf-8") as outbox:
            outbox.write(line + "\n")
        logger.info(
            "queue %s message %s: welcome mail to %s", delivery.queue, delivery.message_id, body["email"]
        )
        return line
