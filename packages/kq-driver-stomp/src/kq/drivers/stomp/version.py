"""Version of the kq-driver-stomp distribution."""

__version__ = "0.1.0"
