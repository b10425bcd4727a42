"""The exceptions kq-contrib-xmlrpc raises: all are :class:`~kq.core.KqError` subclasses."""

from __future__ import annotations

from kq.core import KqError


class XmlRpcError(KqError):
    """Base class of the XML-RPC contrib's errors."""


class ResponseRefusedError(XmlRpcError):
    """The server's answer was refused before it was fully parsed (too large, compressed, has a DTD)."""
