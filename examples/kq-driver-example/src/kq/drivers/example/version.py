"""Version of the kq-driver-example distribution."""

__version__ = "0.1.0"
