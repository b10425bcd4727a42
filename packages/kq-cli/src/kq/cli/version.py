"""Version of the kq-cli distribution."""

__version__ = "0.1.0"
