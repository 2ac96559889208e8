"""Broker password hashes (mosquitto's $7$ format), the ACL file, and the topic layout."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from hub.control.mqtt_auth import HUB_USERNAME, BrokerAuth, hash_password
from hub.control.mqtt_bridge import parse_mqtt_url
from hub.errors import BadInput
from protos.mqtt import Topics


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_hash_matches_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "dev", "s3cret"], check=True, capture_output=True)
    _, hashed = path.read_text().strip().split(":", 1)
    _, seven, iterations, salt, _ = hashed.split("$")
    assert seven == "7"
    assert hash_password("s3cret", salt=base64.b64decode(salt), iterations=int(iterations)) == hashed
    assert hash_password("other", salt=base64.b64decode(salt), iterations=int(iterations)) != hashed


def test_passwords_are_derived_stable_and_change_with_reenrollment(tmp_path: Path) -> None:
    auth = BrokerAuth(tmp_path, Topics())
    p1 = auth.add_device("cam-1", "cert-a")
    assert BrokerAuth(tmp_path, Topics()).device_password("cam-1", "cert-a") == p1  # same key file, same password
    assert auth.device_password("cam-1", "cert-b") != p1  # a new certificate, a new password
    assert auth.device_password("cam-2", "cert-a") != p1


def test_files_list_exactly_the_devices_with_their_own_topics(tmp_path: Path) -> None:
    auth = BrokerAuth(tmp_path, Topics("site7"))
    auth.set_devices({"cam-1": "a", "cam-2": "b", HUB_USERNAME: "x"})  # a device can never take the hub's name
    auth.remove_device("cam-2")
    auth.write()
    users = [line.split(":")[0] for line in (tmp_path / "passwords").read_text().splitlines()]
    assert users == [HUB_USERNAME, "cam-1"]
    acl = (tmp_path / "acl").read_text()
    assert "user cam-1\ntopic read site7/cam-1/desired\ntopic read site7/cam-1/inbox\n" \
           "topic write site7/cam-1/reported\ntopic write site7/cam-1/online\n" in acl
    assert "cam-2" not in acl and "topic readwrite site7/#" in acl
    assert not (tmp_path / "passwords.tmp").exists()
    assert auth.reload() is False  # no broker pid file here: nothing to signal


def test_topics_name_and_parse_a_device_topic() -> None:
    t = Topics("edgeport")
    assert (t.desired("cam-1"), t.inbox("cam-1"), t.reported("cam-1"), t.online("cam-1")) == (
        "edgeport/cam-1/desired", "edgeport/cam-1/inbox", "edgeport/cam-1/reported", "edgeport/cam-1/online")
    assert t.all("reported") == "edgeport/+/reported"
    assert t.parse("edgeport/cam-1/reported") == ("cam-1", "reported")
    assert t.parse("other/cam-1/reported") is None and t.parse("edgeport/a/b/c") is None


@pytest.mark.parametrize("prefix", ["", "a/+", "x/#", "/lead", "trail/"])
def test_a_bad_topic_prefix_is_named(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid MQTT topic prefix"):
        Topics(prefix)


@pytest.mark.parametrize("url", ["127.0.0.1:1883", "http://h:1", "mqtt://", "mqtt://h:notaport", "mqtt://h:70000"])
def test_a_bad_broker_url_is_named(url: str) -> None:
    with pytest.raises(BadInput, match="--mqtt"):
        parse_mqtt_url(url)
    assert (parse_mqtt_url("mqtt://localhost").host, parse_mqtt_url("mqtt://localhost").port) == ("localhost", 1883)
