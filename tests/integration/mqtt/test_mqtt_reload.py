"""A broker reload that is lost does not lock devices out (or keep revoked ones in): the hub asks a real mosquitto
whether it took the last credential change, and reloads it again until it has."""

from __future__ import annotations

import functools
from pathlib import Path

from hub.control.mqtt_auth import BrokerAuth
from hub.control.mqtt_bridge import _CoalescedFlush
from hub.control.mqtt_broker import MosquittoBroker
from hub.control.mqtt_probe import broker_accepts
from protos.mqtt.topics import Topics
from tests.integration.mqtt.conftest import broker_auth
from tests.support import free_port, wait_for

TOPICS = Topics("edgeport")


class LosesReloads(BrokerAuth):
    """The first `lose` SIGHUPs never reach the broker, as when they land during a reload already under way
    (mosquitto clears its reload flag when that reload ends)."""

    def __init__(self, directory: Path, lose: int) -> None:
        super().__init__(directory, TOPICS)
        self.lose, self.lost, self.sent = lose, 0, 0

    def reload(self) -> bool:
        if self.lost < self.lose:
            self.lost += 1
            return True
        self.sent += 1
        return super().reload()


def _flush(auth: BrokerAuth, broker: MosquittoBroker) -> _CoalescedFlush:
    return _CoalescedFlush(auth, functools.partial(broker_accepts, "127.0.0.1", broker.port), settle_s=0.3)


def test_the_probe_tells_accepted_refused_and_no_answer(mosquitto: MosquittoBroker) -> None:
    auth = broker_auth(mosquitto, TOPICS, "cam-01")
    password = auth.device_password("cam-01", "cert-of-cam-01")
    assert broker_accepts("127.0.0.1", mosquitto.port, "cam-01", password) is True
    assert broker_accepts("127.0.0.1", mosquitto.port, "cam-01", "not-its-password") is False
    assert broker_accepts("127.0.0.1", mosquitto.port, "cam-99", password) is False
    assert broker_accepts("127.0.0.1", free_port(), "cam-01", password, timeout=1) is None


def test_a_device_enrolled_while_its_reloads_were_lost_is_let_in(mosquitto: MosquittoBroker) -> None:
    broker_auth(mosquitto, TOPICS, "cam-01")
    auth = LosesReloads(mosquitto.dir, lose=2)  # the flush's reload and the first one after asking
    auth.set_devices({"cam-01": "cert-of-cam-01"})
    flush = _flush(auth, mosquitto)
    try:
        password = auth.add_device("cam-02", "cert-of-cam-02")
        flush.request()
        wait_for(lambda: auth.lost == 2, timeout=10, what="both reloads lost")
        assert broker_accepts("127.0.0.1", mosquitto.port, "cam-02", password) is False  # as the broker stands
        wait_for(lambda: broker_accepts("127.0.0.1", mosquitto.port, "cam-02", password), timeout=20,
                 what="the broker taking cam-02")
        assert auth.sent >= 1
        wait_for(lambda: flush._check is None, timeout=10, what="the flush seeing the change taken")
    finally:
        flush.close()


def test_a_device_revoked_while_its_reload_was_lost_is_shut_out(mosquitto: MosquittoBroker) -> None:
    broker_auth(mosquitto, TOPICS, "cam-01", "cam-02")
    auth = LosesReloads(mosquitto.dir, lose=2)
    auth.set_devices({"cam-01": "cert-of-cam-01", "cam-02": "cert-of-cam-02"})
    password = auth.device_password("cam-02", "cert-of-cam-02")
    flush = _flush(auth, mosquitto)
    try:
        auth.remove_device("cam-02")
        flush.request()
        wait_for(lambda: broker_accepts("127.0.0.1", mosquitto.port, "cam-02", password) is False, timeout=20,
                 what="the broker refusing cam-02")
        assert auth.lost == 2 and auth.sent >= 1
        assert broker_accepts("127.0.0.1", mosquitto.port, "cam-01", auth.device_password("cam-01", "cert-of-cam-01"))
    finally:
        flush.close()
