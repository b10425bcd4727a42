"""Version of the kq-core distribution."""

__version__ = "0.1.0"
