"""Revoking a connected device, seen from the hub's log: one clear line, no traceback."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from protos.edgeport.v1 import agent_pb2
from tests.integration.control_support import enroll, start_control_hub, tls_session
from tests.integration.registry_support import hub_cli
from tests.support import Processes


def test_revoking_a_connected_device_logs_one_line_and_no_traceback(processes: Processes, tmp_path: Path) -> None:
    hub = start_control_hub(processes, tmp_path / "hub")
    token = hub_cli(hub.url, "device", "enroll", "cam-9", "--output", "json").json()["token"]
    identity = enroll(hub.url, token)
    session = tls_session(identity)
    try:
        session.send(agent_pb2.AgentMessage(hello=agent_pb2.Hello(device_id="cam-9", agent_version="t", next_seq=1)))
        assert session.next("welcome").welcome.device_id == "cam-9"
        assert hub_cli(hub.url, "device", "revoke", "cam-9").code == 0
        with pytest.raises(grpc.RpcError) as err:
            for _ in range(10):  # the desired state sent at connect may still be waiting to be read
                session.next(timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        session.close()
    log = ""
    for _ in range(50):  # the hub logs the disconnect just after the stream ends
        log = processes.log(hub.hub.proc)
        if "device cam-9 disconnected" in log:
            break
        time.sleep(0.1)
    assert "device cam-9 disconnected" in log, log
    assert log.count("device cam-9 is revoked: closing its stream") == 1, log
    assert "Traceback" not in log and "AbortError" not in log and "ERROR" not in log, log
