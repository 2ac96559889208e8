"""Signed desired state over gRPC, with a real `hub serve` and a real `agent run`: someone who holds the hub's
TLS server key (and so passes for the hub on its gRPC port) sends a forged, a tampered, another device's and
a replayed desired state. The agent applies none of them, its model keeps answering, and once the real hub
is back `hub service show` says what was refused."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc

from protos.edgeport.v1 import agent_pb2, agent_pb2_grpc
from tests.integration.control_support import start_control_hub
from tests.integration.registry_support import hub_cli
from tests.integration.signed_support import attacks, score_digits
from tests.support import PYTHON, REPO, Processes, wait_for


class ImpostorHub(agent_pb2_grpc.AgentServiceServicer):
    """An AgentService on the hub's port with the hub's stolen TLS key: welcomes the agent, then sends what it
    is given. It never acks, so what the agent reports stays in its outbox for the real hub."""

    def __init__(self) -> None:
        self.outgoing: queue.Queue[agent_pb2.HubMessage] = queue.Queue()
        self.received: list[agent_pb2.AgentMessage] = []
        self.connected = threading.Event()

    def Connect(  # the gRPC method's name
        self, request_iterator: Iterator[agent_pb2.AgentMessage], context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.HubMessage]:
        hello = next(request_iterator)

        def read() -> None:
            with contextlib.suppress(grpc.RpcError):  # the stream ends when the server stops
                self.received.extend(request_iterator)

        threading.Thread(target=read, daemon=True).start()
        yield agent_pb2.HubMessage(welcome=agent_pb2.Welcome(device_id=hello.hello.device_id, heartbeat_interval_s=60))
        self.connected.set()
        while context.is_active():
            try:
                yield self.outgoing.get(timeout=0.2)
            except queue.Empty:
                continue


def test_forged_tampered_foreign_and_replayed_states_are_refused_over_grpc(
    processes: Processes, tmp_path: Path, digits_model: Path
) -> None:
    hub = start_control_hub(processes, tmp_path / "hub")
    token = hub_cli(hub.url, "device", "enroll", "cam-s", "--output", "json").json()["token"]
    agent = processes.start([PYTHON, "-m", "agent", "run", "--hub", hub.url.removeprefix("http://"), "--data-dir",
                             str(tmp_path / "agent"), "--token", token, "--heartbeat-s", "2"], name="agent", cwd=REPO)
    wait_for(lambda: "connected to hub as device cam-s" in processes.log(agent), timeout=30, what="agent connected")
    assert hub_cli(hub.url, "model", "register", "-n", "digits", "-p", str(digits_model)).code == 0
    deployed = hub_cli(hub.url, "deploy", "-n", "digits", "-m", "digits:1", "--target", "cam-s", "--timeout", "90")
    assert deployed.code == 0 and "Healthy" in deployed.out, deployed.out + deployed.err + processes.log(agent)
    [before] = hub_cli(hub.url, "service", "show", "digits", "--output", "json").json()["devices"]
    assert score_digits(before["scoring_uri"]) >= 0.8
    applied = wait_for(lambda: hub_cli(hub.url, "device", "show", "cam-s", "--output", "json").json()
                       ["applied_revision"], timeout=10, what="the deploy's revision applied")  # fmt: skip
    assert isinstance(applied, int) and applied >= 2
    applied_lines = processes.log(agent).count("desired state revision")

    hub.hub.proc.terminate()
    hub.hub.proc.wait(15)
    impostor = ImpostorHub()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(impostor, server)
    pki = tmp_path / "hub" / "pki"
    stolen = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes())])
    server.add_secure_port(f"127.0.0.1:{hub.grpc_port}", stolen)
    server.start()
    try:
        assert impostor.connected.wait(60), "the agent did not connect to the impostor:\n" + processes.log(agent)
        for attack in attacks(pki, tmp_path, "cam-s", applied):
            impostor.outgoing.put(agent_pb2.HubMessage(desired=attack.signed))
            line = f"refused desired state revision {attack.revision}: {attack.reason}"
            wait_for(lambda line=line: line in processes.log(agent), timeout=15, what=f"{attack.name} refused")
            assert score_digits(before["scoring_uri"]) >= 0.8, f"the model stopped answering after {attack.name}"
        # Nothing was applied: no new "desired state revision N: ..." line, only refusals.
        assert processes.log(agent).count("desired state revision") - applied_lines == 4
        refusals = [m.desired_refused for m in impostor.received if m.HasField("desired_refused")]
        assert [r.revision for r in refusals] == [applied + 10, applied + 10, applied + 11, applied - 1]
        assert all(r.applied_revision == applied for r in refusals)
    finally:
        server.stop(0)

    # The real hub returns: the agent's outbox delivers the refusals, and the service view says what happened.
    hub = start_control_hub(processes, tmp_path / "hub", port=hub.hub.port, grpc_port=hub.grpc_port)
    shown = wait_for(
        lambda: (d := hub_cli(hub.url, "service", "show", "digits", "--output", "json").json()["devices"][0])
        ["refused"] and d, timeout=30, what="the refusal in the service view",
    )  # fmt: skip
    assert isinstance(shown, dict)
    assert shown["refused"]["revision"] == applied - 1 and shown["refused"]["reason"].startswith("replay")
    assert shown["message"].startswith(f"refused desired state revision {applied - 1}: replay")
    assert shown["phase"] == "Healthy" and shown["serving_generation"] == 1
    assert shown["scoring_uri"] == before["scoring_uri"] and score_digits(shown["scoring_uri"]) >= 0.8
    table = hub_cli(hub.url, "service", "show", "digits")
    assert f"refused desired state revision {applied - 1}" in table.out, table.out
    device = json.loads(hub_cli(hub.url, "device", "show", "cam-s", "--output", "json").out)
    assert device["applied_revision"] == applied
