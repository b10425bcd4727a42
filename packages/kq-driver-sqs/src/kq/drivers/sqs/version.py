"""Version of the kq-driver-sqs distribution."""

__version__ = "0.1.0"
