"""A sign-up flow on kq: a producer class with its own ``publish``, and a handler bound to a queue in
``kq.toml`` (the PHP library's "Sending a message" and "Receiving a message", the Python way)."""
