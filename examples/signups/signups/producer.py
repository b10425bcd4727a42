"""The producer of sign-up events: the application calls ``publish(email, plan)``."""

from __future__ import annotations

from kq.core import Message, MessageProducer


class SignupProducer(MessageProducer):
    """Publishes ``{"email": ..., "plan": ...}`` with the routing key ``user.signup.<plan>``."""

    def build(self, email: str, plan: str = "free", *, delay: float = 0.0) -> Message:
        """One sign-up message, checked but not sent (``publish_batch`` builds several)."""
        if "@" not in email:
            raise ValueError(f"not an email address: {email!r}")
        return self.json_message({"email": email, "plan": plan}, f"user.signup.{plan}", delay=delay)

    def publish(self, email: str, plan: str = "free", *, delay: float = 0.0) -> Message:
        """Send one sign-up; returns the message sent (its ``message_id`` names it in kq's logs)."""
        return super().publish(email, plan, delay=delay)
