"""The `hub serve --mqtt mqtt://HOST:PORT` component: broker credentials, ACL and the MQTT front, wired together.

On start it rebuilds the broker's password file and ACL from the fleet (every enrolled
device, nothing else), reloads the broker, connects the front and publishes every
device's desired state (retained). From then on: an enrollment adds the device's broker
user (its password travels in EnrollResponse.mqtt), a revocation removes it. File
writes are coalesced (at most one write + SIGHUP per `FLUSH_INTERVAL_S`, 1 s) so enrolling
thousands of devices does not make the broker re-read its files thousands of times.

With `--mqtt-run-broker` the hub also runs mosquitto itself (config in the --mqtt-dir).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hub.control.mqtt_auth import HUB_USERNAME, BrokerAuth, CredentialChange
from hub.control.mqtt_broker import BrokerError, MosquittoBroker
from hub.control.mqtt_front import MqttFront
from hub.control.mqtt_probe import broker_accepts
from hub.control.mqtt_tls import BrokerTls, broker_host_names, issue_broker_tls
from hub.errors import BadInput, HubError
from protos.edgeport.v1 import agent_pb2
from protos.mqtt import DEFAULT_PREFIX, Topics
from protos.mqtt.url import BrokerAddress, BrokerUrlError, client_tls_context, is_loopback, parse_broker_url

if TYPE_CHECKING:
    from hub.services import HubServices

log = logging.getLogger("hub.control.mqtt")
# mosquitto re-checks every connected client's password on each SIGHUP (~1 s of broker CPU with 10,000
# clients), so reloads are at most once a second; a device enrolled meanwhile retries its connect.
FLUSH_INTERVAL_S = 1.0
Probe = Callable[[str, str], bool | None]  # (username, password) -> broker accepts / refuses / no answer
SETTLE_S = 3.0  # quiet time after the last change before asking the broker whether it took it
MAX_SETTLE_S = 30.0  # the longest wait between reloads while the broker has not taken the change


def parse_mqtt_url(url: str, option: str = "--mqtt", *, insecure: bool = False) -> BrokerAddress:
    """The broker `mqtts://HOST[:PORT]` or `mqtt://HOST[:PORT]` names; BadInput naming the option when it is
    malformed, or plain MQTT to a broker off this machine without `insecure`."""
    try:
        if "://" not in url:
            raise BrokerUrlError(f"{url!r}: expected mqtts://HOST:PORT (e.g. mqtts://broker.example.net:8883) "
                                 "or mqtt://127.0.0.1:1883")  # fmt: skip
        return parse_broker_url(url, insecure=insecure)
    except BrokerUrlError as exc:
        raise BadInput(f"{option} {exc}") from None


class _CoalescedFlush:
    """Write the auth files and reload the broker soon after a change, in a worker thread (never in the
    caller: enrollment runs on the API's event loop): at once when idle, else once per interval (bursts).

    mosquitto clears its reload flag after a reload, so a SIGHUP that lands during a long reload (thousands
    of clients re-checked, on a busy machine many seconds) is lost, and the devices enrolled last would be
    refused until some later change. So once a burst is over, the broker is asked (`probe`: a CONNECT with
    the last added or removed device's credentials) whether it took the last change, and reloaded again,
    waiting longer each time, until it has.
    """

    def __init__(self, auth: BrokerAuth, probe: Probe, *, settle_s: float = SETTLE_S) -> None:
        self.auth = auth
        self.probe = probe
        self.settle_s = settle_s
        self._last = 0.0
        self._check: CredentialChange | None = None  # the last change written, until the broker shows it
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-auth-flush", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._pending.set()

    def _flush(self) -> None:
        self._last = time.monotonic()
        try:
            self._check = self.auth.write() or self._check
            self.auth.reload()
        except OSError:
            log.exception("writing the broker's password/ACL files failed")

    def _taken(self) -> bool:
        """Whether the broker shows the last change written (True when there is none to look for)."""
        check = self._check
        if check is None:
            return True
        answer = self.probe(check.username, check.password)
        if answer is check.present:
            self._check = None
            return True
        if answer is not None:
            log.info("the MQTT broker still %s %s: reloading it again",
                     "refuses" if check.present else "accepts", check.username)
        return False

    def _run(self) -> None:
        settling, wait = False, self.settle_s
        while not self._stop.is_set():
            if self._pending.wait(0.5):
                self._stop.wait(max(0.0, self._last + FLUSH_INTERVAL_S - time.monotonic()))
                self._pending.clear()
                self._flush()
                settling, wait = True, self.settle_s
            elif settling and time.monotonic() - self._last >= wait:
                if self._taken():
                    settling = False
                else:
                    self.auth.reload()
                    self._last, wait = time.monotonic(), min(wait * 2, MAX_SETTLE_S)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._pending.is_set():
            self._flush()


class MqttBridge:
    """`hub serve` component: keeps the broker's users/ACL in step with the fleet and runs the MQTT front."""

    def __init__(
        self,
        services: HubServices,
        url: str,
        *,
        directory: Path,
        prefix: str = DEFAULT_PREFIX,
        advertise: str | None = None,
        run_broker: bool = False,
        keepalive_s: int = 30,
        insecure: bool = False,
    ) -> None:
        """`url` is the broker as the hub dials it: `mqtts://` is checked against the hub CA, whose broker
        certificate (for the names of `url` and `advertise`) is written to `directory`; plain `mqtt://` only
        to a loopback broker unless `insecure`."""
        self.services = services
        address = parse_mqtt_url(url, insecure=insecure)
        self.host, self.port = address.host, address.port
        self.advertise = advertise or url
        advertised = parse_mqtt_url(self.advertise, "--mqtt-advertise", insecure=insecure)
        self.tls_files: BrokerTls | None = None
        self.tls: ssl.SSLContext | None = None
        if address.tls or advertised.tls:  # the broker serves TLS: its certificate comes from the hub CA
            ca = services.fleet.ca
            self.tls_files = issue_broker_tls(ca, directory, broker_host_names(address.host, advertised.host))
        if address.tls:
            self.tls = client_tls_context(services.fleet.ca.ca_pem)
        for plain in {a.url for a in (address, advertised) if not a.tls and not is_loopback(a.host)}:
            # parse_mqtt_url let it through for --insecure only: said at every start
            log.warning("--insecure: plain MQTT to %s, so broker passwords cross the network in the clear; use "
                        "mqtts:// outside development", plain)  # fmt: skip
        try:
            self.topics = Topics(prefix)
        except ValueError as exc:
            raise BadInput(f"--mqtt-prefix: {exc}") from None
        self.auth = BrokerAuth(directory, self.topics)
        self.broker = (
            MosquittoBroker(directory, self.port, host=self.host, tls=self.tls_files if address.tls else None)
            if run_broker else None
        )
        self.keepalive_s = keepalive_s
        self.front: MqttFront | None = None
        self._flush: _CoalescedFlush | None = None
        self.url = ""

    def _enrolled(self) -> dict[str, str]:
        """Every enrolled device and its credential seed (certificate fingerprint)."""
        store = self.services.fleet.store
        return {r["id"]: r.get("cert_sha256") or "" for r in store.list() if r["state"] == "enrolled"}

    def credentials(self, device_id: str) -> agent_pb2.MqttCredentials:
        """FleetService hook at enrollment: create the device's broker user, return what the device needs."""
        seed = self.services.fleet.get(device_id).get("cert_sha256") or ""
        password = self.auth.add_device(device_id, seed)
        if self._flush is not None:
            self._flush.request()
        return agent_pb2.MqttCredentials(
            url=self.advertise, username=device_id, password=password, topic_prefix=self.topics.prefix
        )

    def _revoked(self, device_id: str) -> None:
        if device_id in self.auth.devices():
            self.auth.remove_device(device_id)
            if self._flush is not None:
                self._flush.request()

    async def start(self) -> None:
        """Rebuild users/ACL from the fleet, (start the broker,) connect, publish every desired state."""
        self.auth.set_devices(self._enrolled())
        await asyncio.to_thread(self.auth.write)
        if self.broker is not None:
            try:
                await asyncio.to_thread(self.broker.start)
            except BrokerError as exc:
                raise HubError(str(exc)) from None
        else:
            self.auth.reload()
        fleet = self.services.fleet
        self.front = MqttFront(
            self.services.control, self.topics, host=self.host, port=self.port, username=HUB_USERNAME,
            password=self.auth.hub_password, is_active=fleet.is_active, on_revoked=self._revoked,
            keepalive_s=self.keepalive_s, tls=self.tls,
        )
        try:
            await asyncio.to_thread(self.front.start)
        except HubError:
            if self.broker is not None:
                self.broker.stop()
            raise
        self._flush = _CoalescedFlush(self.auth, functools.partial(broker_accepts, self.host, self.port, tls=self.tls))
        fleet.mqtt_credentials = self.credentials
        self.front.sync_all(list(self.auth.devices()))
        self.url = f"agents MQTT {self.advertise} (prefix {self.topics.prefix}, broker files {self.auth.dir})"

    async def stop(self) -> None:
        """Disconnect the front, flush pending credential changes, stop an owned broker."""
        self.services.fleet.mqtt_credentials = lambda device_id: None
        if self.front is not None:
            await asyncio.to_thread(self.front.stop)
        if self._flush is not None:
            await asyncio.to_thread(self._flush.close)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
