"""The HTTP front: a bare asyncio protocol on httptools and the router over the DataPlane."""

from runtimes.http.app import HttpApp
from runtimes.http.protocol import Connections, HttpLimits, HttpProtocol, Request

__all__ = ["Connections", "HttpApp", "HttpLimits", "HttpProtocol", "Request"]
