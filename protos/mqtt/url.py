"""Broker URLs, the one reading both the hub's bridge and the agent's link use.

    mqtt://HOST[:PORT]    plain MQTT (port 1883 by default): only to a loopback broker, or when told `insecure`
    mqtts://HOST[:PORT]   MQTT over TLS (port 8883 by default), the broker's certificate checked against the hub CA

`tcp://` and `ssl://` (the names paho and mosquitto also accept) mean the same as `mqtt://` and `mqtts://`.
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass

PLAIN_PORT, TLS_PORT = 1883, 8883
_PLAIN_SCHEMES, _TLS_SCHEMES = ("mqtt", "tcp"), ("mqtts", "ssl")


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used (the message says why, naming the URL)."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens and whether the connection is TLS."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """The address as a URL (`mqtts://host:port` or `mqtt://host:port`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost): traffic there never leaves it."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_broker_url(url: str, *, insecure: bool = False) -> BrokerAddress:
    """The broker address `url` names; BrokerUrlError when it is malformed, or plain MQTT to a broker off this
    machine without `insecure` (a device's broker password would cross the network in the clear)."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"mqtt://{url}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    if scheme not in _PLAIN_SCHEMES + _TLS_SCHEMES or not parts.hostname or port == -1 or port == 0:
        raise BrokerUrlError(f"{url!r}: expected mqtts://HOST[:PORT] (TLS, port {TLS_PORT} by default) "
                             f"or mqtt://HOST[:PORT] (plain, port {PLAIN_PORT} by default)")  # fmt: skip
    tls = scheme in _TLS_SCHEMES
    address = BrokerAddress(parts.hostname, port or (TLS_PORT if tls else PLAIN_PORT), tls)
    if not tls and not insecure and not is_loopback(address.host):
        raise BrokerUrlError(
            f"{url!r}: plain MQTT to a broker on another machine sends the broker password in the clear; "
            f"use mqtts://{address.host}:{TLS_PORT}, or --insecure to allow it (development only)"
        )
    return address


def client_tls_context(ca_pem: bytes) -> ssl.SSLContext:
    """A TLS client context that trusts only the hub CA `ca_pem` and checks the broker's host name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
