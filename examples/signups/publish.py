"""Publish two sign-ups with the application's own producer class."""

from signups.producer import SignupProducer

from kq.core import App

with App.from_config() as app:
    signups = app.producer_of(SignupProducer, "signups")
    for email, plan in [("alice@example.com", "pro"), ("bob@example.com", "free")]:
        sent = signups.publish(email, plan)
        print(f"queued {sent.routing_key} as message {sent.message_id}")
