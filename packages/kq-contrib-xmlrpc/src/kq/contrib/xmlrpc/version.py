"""Version of the kq-contrib-xmlrpc distribution."""

__version__ = "0.1.0"
