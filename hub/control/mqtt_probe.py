"""Ask the broker whether it takes a username and password now: one MQTT 5 CONNECT, answered or not.

The hub tells mosquitto about new and revoked devices with SIGHUP, which mosquitto loses when it lands
during a reload already under way. A CONNECT with a changed device's credentials is how the hub finds
out whether the broker has taken the change (`hub.control.mqtt_bridge`).
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time

import paho.mqtt.client as mqtt

# Starts with '_' like the hub's own user, so it can never be a device's client id and take over its session.
PROBE_CLIENT_PREFIX = "_edgeport-probe-"


def broker_accepts(
    host: str, port: int, username: str, password: str, *, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> bool | None:
    """True when the broker accepts these credentials, False when it refuses them, None when it gave no
    answer within `timeout` (unreachable, or too busy to say). `tls`: connect over TLS, checked by that context."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=PROBE_CLIENT_PREFIX + secrets.token_hex(6), protocol=mqtt.MQTTv5
    )
    client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)
    answer: list[bool] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        answer.append(not reason.is_failure)

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30, clean_start=True)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    try:
        while not answer and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break  # the broker closed the connection (after its refusal, if it sent one)
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(timeout=0.1)  # sends the DISCONNECT and closes the socket
        sock = client.socket()
        if sock is not None:
            sock.close()
    return answer[0] if answer else None
