"""What one client can cost a real runtime: header and idle timeouts, the connection cap, memory per body."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.runtime_support import Runtime, http, start_runtime
from tests.support import Processes

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def strict(procs: Processes, digits_model: Path) -> Runtime:
    """Digits with short timeouts and a cap of 4 connections."""
    return start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "digits",
        "--grpc-port",
        "0",
        "--header-timeout",
        "1",
        "--idle-timeout",
        "2",
        "--max-connections",
        "4",
    )


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; (data, seconds it took)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def _get(sock: socket.socket) -> bytes:
    """One keep-alive `GET /` on an open connection."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"Healthy"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def test_slowloris_head_is_closed_after_header_timeout(strict: Runtime) -> None:
    """A head trickled a byte at a time never completes: 408 and close at --header-timeout."""
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = threading.Event()

        def trickle() -> None:
            while not closed.is_set() and time.monotonic() - started < 8:
                try:
                    s.sendall(b"X")  # well within the idle timeout each time: only the header timeout applies
                except OSError:
                    return
                time.sleep(0.2)

        sender = threading.Thread(target=trickle)
        sender.start()
        data, _ = _read_until_closed(s, 10)
        elapsed = time.monotonic() - started
        closed.set()
        sender.join()
    assert data.startswith(b"HTTP/1.1 408") and b"headers not received within 1 s" in data
    assert 0.9 < elapsed < 4.5, elapsed
    assert http("GET", strict.url + "/")[0] == 200


def test_partial_body_and_idle_connections_are_closed(strict: Runtime) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as s:
        s.sendall(b'POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"data"')
        data, took = _read_until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 408") and b"no request data for 2 s" in data
    assert 1.9 < took < 5.5, took
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as s:
        assert _get(s).startswith(b"HTTP/1.1 200")
        data, took = _read_until_closed(s, 10)  # keep-alive, then silence: closed without an answer
    assert data == b"" and 1.9 < took < 5.5, took
    _, _, metrics = http("GET", strict.url + "/metrics")
    timed_out = [ln for ln in metrics.decode().splitlines() if ln.startswith("edgeport_http_connections_timed_out")]
    assert timed_out and float(timed_out[0].split()[-1]) >= 2


def test_connections_past_the_cap_get_503_and_the_others_keep_working(strict: Runtime) -> None:
    held = [socket.create_connection(("127.0.0.1", strict.port), timeout=10) for _ in range(4)]
    try:
        for s in held:
            assert _get(s).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as extra:
            data, _ = _read_until_closed(extra, 5)
        assert data.startswith(b"HTTP/1.1 503") and b"too many connections" in data and b"at most 4" in data
        for s in held:  # still served, on the same connections
            assert _get(s).startswith(b"HTTP/1.1 200")
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is usable once the server has seen the close
            status = http("GET", strict.url + "/")[0]
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    _, _, metrics = http("GET", strict.url + "/metrics")
    refused = [ln for ln in metrics.decode().splitlines() if ln.startswith("edgeport_http_connections_refused")]
    assert refused and float(refused[0].split()[-1]) >= 1


def _peak_rss_during(pid: int, send: threading.Thread) -> tuple[int, int]:
    """(RSS before, highest RSS seen) of `pid` while `send` runs, sampled with psutil every 5 ms."""
    proc = psutil.Process(pid)
    before = proc.memory_info().rss
    peak = before
    send.start()
    while send.is_alive():
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.005)
    send.join()
    return before, max(peak, proc.memory_info().rss)


def test_large_json_body_peak_rss_stays_a_small_multiple_of_the_body(procs: Processes, digits_model: Path) -> None:
    """60 MB of short numbers: orjson alone made ~32 bytes of objects per 4 bytes of JSON (~17x)."""
    rt = start_runtime(
        procs, "--model-dir", str(digits_model.parent), "--onnx", "model.onnx", "--name", "digits", "--grpc-port", "0"
    )
    rows = 60_000_000 // (64 * 4)
    row = b"[" + b",".join([b"0.5"] * 64) + b"]"
    body = b'{"data": [' + b",".join([row] * rows) + b"]}"
    result: dict[str, object] = {}

    def send() -> None:
        status, _, resp = http("POST", rt.url + "/score", body, {"Content-Type": "application/json"})
        result["status"], result["labels"] = status, len(json.loads(resp)["label"]) if status == 200 else resp[:200]

    before, peak = _peak_rss_during(rt.proc.pid, threading.Thread(target=send))
    assert result == {"status": 200, "labels": rows}
    growth = peak - before
    mb = f"{len(body) / 1e6:.0f} MB JSON body: RSS {before / 1e6:.0f} -> peak {peak / 1e6:.0f} MB"
    print(f"\n{mb} ({growth / len(body):.1f}x the body)")
    assert growth < 5 * len(body), (before, peak, len(body))


def test_json_that_would_need_too_many_objects_is_413(procs: Processes, digits_model: Path) -> None:
    """Ragged or object-heavy JSON cannot take the numpy path: refused before orjson builds it."""
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "digits",
        "--grpc-port",
        "0",
        "--max-body-bytes",
        "33554432",
    )
    body = b'{"data": [' + b"[]," * 8_000_000 + b"[]]}"  # 24 MB: 8 M empty lists, ~700 MB as objects
    result: dict[str, object] = {}

    def send() -> None:
        status, _, resp = http("POST", rt.url + "/v2/models/digits/infer", body)
        result["status"], result["body"] = status, resp

    before, peak = _peak_rss_during(rt.proc.pid, threading.Thread(target=send))
    assert result["status"] == 413, result
    assert b"would take about" in result["body"] and b"--max-body-bytes" in result["body"]  # type: ignore[operator]
    print(f"\n{len(body) / 1e6:.0f} MB refused JSON body: RSS {before / 1e6:.0f} -> peak {peak / 1e6:.0f} MB")
    assert peak - before < 5 * len(body), (before, peak)
    assert http("GET", rt.url + "/")[0] == 200


def test_idle_grpc_connection_gets_goaway(procs: Processes, digits_model: Path) -> None:
    """The gRPC port applies --idle-timeout too: a channel without calls is sent GOAWAY and goes idle."""
    import grpc

    from protos.inference import SERVICE_NAME, message_class

    rt = start_runtime(
        procs, "--model-dir", str(digits_model.parent), "--onnx", "model.onnx", "--name", "d", "--idle-timeout", "1"
    )
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as channel:
        req_cls, resp_cls = message_class("ServerLiveRequest"), message_class("ServerLiveResponse")
        live = channel.unary_unary(
            f"/{SERVICE_NAME}/ServerLive",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        assert live(req_cls(), timeout=10).live
        channel.subscribe(states.append, try_to_connect=False)
        deadline = time.monotonic() + 8
        while grpc.ChannelConnectivity.IDLE not in states[1:] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert grpc.ChannelConnectivity.IDLE in states[1:], states  # READY first, then IDLE after GOAWAY
        assert live(req_cls(), timeout=10).live  # and it reconnects on the next call
