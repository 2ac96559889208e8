"""The agent's optional /metrics: Prometheus text that parses, from a small responder that answers nothing else."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import AgentError
from agent.metrics import AgentFigures, MetricsServer, serve_agent_metrics
from tests.support import PYTHON, REPO

FIGURES = AgentFigures(device='cam-"01"', transport="mqtt", version="0.1.0", uptime_s=12.5, desired_revision=3,
                       outbox_pending=7, seconds_since_sent=1.25, runtimes={"scorer": True, "old": False},
                       rss_bytes=50_000_000)  # fmt: skip


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["content-type"], err.read().decode()


async def _serve_and_get(paths: list[str]) -> list[tuple[int, str, str]]:
    server = MetricsServer(lambda: FIGURES)
    port = await server.start("127.0.0.1", 0)
    try:
        return [await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{p}") for p in paths]
    finally:
        await server.close()


def test_agent_metrics_parse_as_prometheus_text() -> None:
    (status, ctype, text), (missing, _, _) = asyncio.run(_serve_and_get(["/metrics", "/"]))
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert samples[("edgeport_agent_info", (("device", 'cam-"01"'), ("transport", "mqtt"), ("version", "0.1.0")))] == 1
    assert samples[("edgeport_agent_outbox_pending_messages", ())] == 7
    assert samples[("edgeport_agent_desired_revision", ())] == 3
    assert samples[("edgeport_agent_runtimes", ())] == 2
    assert samples[("edgeport_agent_runtime_up", (("service", "scorer"),))] == 1
    assert samples[("edgeport_agent_runtime_up", (("service", "old"),))] == 0
    assert samples[("edgeport_agent_cpu_seconds_total", ())] > 0
    assert missing == 404


@pytest.mark.parametrize("request_bytes", [b"GARBAGE\r\n\r\n", b"POST /metrics HTTP/1.1\r\n\r\n", b"x" * 20_000])
def test_anything_but_a_get_of_metrics_is_answered_briefly_or_dropped(request_bytes: bytes) -> None:
    async def run() -> bytes:
        server = MetricsServer(lambda: FIGURES)
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answer
        finally:
            await server.close()

    answer = asyncio.run(run())
    assert answer == b"" or answer.startswith((b"HTTP/1.1 404", b"HTTP/1.1 405")), answer[:80]


@pytest.mark.parametrize(("port", "message"), [("70000", "is not a TCP port"), ("0", "must be greater than 0"),
                                               ("http", "is not a whole number")])  # fmt: skip
def test_a_bad_metrics_port_exits_2_naming_it(tmp_path: Path, port: str, message: str) -> None:
    done = subprocess.run([PYTHON, "-m", "agent", "run", "--hub", "127.0.0.1:1", "--data-dir", str(tmp_path),
                           "--metrics-port", port], cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--metrics-port" in done.stderr and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_metrics_port_in_use_is_an_agent_error_with_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The agent's parts are only read at scrape time: nothing is scraped when the port cannot be had.
        with pytest.raises(AgentError) as refused:
            asyncio.run(serve_agent_metrics(
                device="d", transport="grpc", started=0.0, state=cast(Any, None), outbox=cast(Any, None),
                reconciler=cast(Any, None), session=cast(Any, None), host="127.0.0.1", port=port, say=print,
            ))  # fmt: skip
    assert refused.value.exit_code == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in str(refused.value)
