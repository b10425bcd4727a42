"""Version of the kq-driver-rabbitmq distribution."""

__version__ = "0.1.0"
