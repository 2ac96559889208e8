"""The runtime serving ONNX models with no code: every endpoint, tritonclient http+grpc, bad input."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from simulators.models import digits_data
from tests.integration.runtime_support import Runtime, http, start_runtime
from tests.support import Processes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def digits(procs: Processes, digits_model: Path) -> Runtime:
    """The digits classifier served with default settings (max body lowered to test 413)."""
    return start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "digits",
        "--max-body-bytes",
        "200000",
    )


@pytest.fixture(scope="module")
def squeezenet(procs: Processes, squeezenet_model: Path) -> Runtime:
    """SqueezeNet (large tensors; runs off the event loop)."""
    return start_runtime(
        procs, "--model-dir", str(squeezenet_model.parent), "--onnx", "model.onnx", "--name", "squeezenet"
    )


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits rows and labels."""
    return digits_data()


def test_health_and_v2_health(digits: Runtime) -> None:
    status, headers, body = http("GET", digits.url + "/")
    assert (status, body) == (200, b"Healthy") and headers["content-type"].startswith("text/plain")
    status, headers, body = http("HEAD", digits.url + "/")
    assert (status, body, headers["content-length"]) == (200, b"", "7")
    assert http("GET", digits.url + "/v2/health/live")[0] == 200
    status, _, body = http("GET", digits.url + "/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, _, body = http("GET", digits.url + "/v2/models/digits/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    assert http("GET", digits.url + "/v2/models/digits/versions/1/ready")[0] == 200


def test_score_returns_predictions_and_run_time_header(digits: Runtime, rows: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = rows
    status, headers, body = http(
        "POST",
        digits.url + "/score",
        json.dumps({"data": x[:5].tolist()}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, body
    out = json.loads(body)
    assert out["label"] == y[:5].tolist()
    assert np.asarray(out["probabilities"]).shape == (5, 10)
    assert float(headers["x-ms-run-fn-exec-ms"]) >= 0
    # one row without the batch dimension is accepted too
    status, _, body = http("POST", digits.url + "/score", json.dumps({"data": x[0].tolist()}).encode())
    assert status == 200 and json.loads(body)["label"] == [int(y[0])]


def test_v2_metadata(digits: Runtime) -> None:
    status, _, body = http("GET", digits.url + "/v2")
    assert status == 200 and "binary_tensor_data" in json.loads(body)["extensions"]
    status, _, body = http("GET", digits.url + "/v2/models/digits")
    meta = json.loads(body)
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 64]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}


def test_v2_rest_json_infer(digits: Runtime, rows: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = rows
    req = {
        "id": "r1",
        "inputs": [{"name": "X", "shape": [2, 64], "datatype": "FP32", "data": x[:2].reshape(-1).tolist()}],
        "outputs": [{"name": "label"}],
    }
    for path in ("/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"):
        status, _, body = http("POST", digits.url + path, json.dumps(req).encode())
        assert status == 200, body
        out = json.loads(body)
        assert out["id"] == "r1" and out["model_name"] == "digits"
        assert out["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [2], "data": y[:2].tolist()}]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http(digits: Runtime, rows: tuple[np.ndarray, np.ndarray], binary: bool) -> None:
    x, y = rows
    client = thttp.InferenceServerClient(f"127.0.0.1:{digits.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert client.get_model_metadata("digits")["inputs"][0]["name"] == "X"
    inp = thttp.InferInput("X", [8, 64], "FP32")
    inp.set_data_from_numpy(x[:8], binary_data=binary)
    outs = [thttp.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = client.infer("digits", [inp], outputs=outs)
    assert result.as_numpy("label").tolist() == y[:8].tolist()
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [inp])


def test_tritonclient_grpc(digits: Runtime, rows: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = rows
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{digits.grpc_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert client.get_server_metadata().name == "edgeport-runtime"
    meta = client.get_model_metadata("digits")
    assert meta.inputs[0].name == "X" and list(meta.inputs[0].shape) == [-1, 64]
    inp = tgrpc.InferInput("X", [4, 64], "FP32")
    inp.set_data_from_numpy(x[:4])
    result = client.infer("digits", [inp])
    assert result.as_numpy("label").tolist() == y[:4].tolist()
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", [inp])
    bad = tgrpc.InferInput("X", [4, 63], "FP32")
    bad.set_data_from_numpy(x[:4, :63].copy())
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("digits", [bad])


def test_squeezenet_binary_json_and_grpc_agree(squeezenet: Runtime) -> None:
    img = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    hc = thttp.InferenceServerClient(f"127.0.0.1:{squeezenet.port}")
    gc = tgrpc.InferenceServerClient(f"127.0.0.1:{squeezenet.grpc_port}")
    results = []
    for binary in (True, False):
        inp = thttp.InferInput("data_0", list(img.shape), "FP32")
        inp.set_data_from_numpy(img, binary_data=binary)
        results.append(hc.infer("squeezenet", [inp]).as_numpy("softmaxout_1"))
    ginp = tgrpc.InferInput("data_0", list(img.shape), "FP32")
    ginp.set_data_from_numpy(img)
    results.append(gc.infer("squeezenet", [ginp]).as_numpy("softmaxout_1"))
    status, _, body = http(
        "POST", squeezenet.url + "/score", orjson.dumps({"data": img}, option=orjson.OPT_SERIALIZE_NUMPY)
    )
    assert status == 200
    results.append(np.asarray(json.loads(body)["softmaxout_1"], dtype=np.float32))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-5, atol=1e-7)
    assert results[0].shape == (1, 1000, 1, 1)


def test_openapi_documents(digits: Runtime) -> None:
    status, _, body = http("GET", digits.url + "/swagger.json")
    doc = json.loads(body)
    assert status == 200 and doc["swagger"] == "2.0"
    assert doc["paths"]["/score"]["post"]["operationId"] == "RunMLService"
    assert doc["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    status, _, body = http("GET", digits.url + "/openapi.json")
    doc3 = json.loads(body)
    assert doc3["openapi"].startswith("3.") and "/v2/models/{model}/infer" in doc3["paths"]
    assert "ServiceOutput" in doc3["components"]["schemas"]


def test_metrics_count_requests_errors_latency_and_batches(
    digits: Runtime, rows: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = rows
    http("POST", digits.url + "/score", json.dumps({"data": x[:3].tolist()}).encode())
    http("POST", digits.url + "/score", b"{not json")
    status, headers, body = http("GET", digits.url + "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'edgeport_requests_total{service="digits",endpoint="score",code="200"}' in text
    assert 'edgeport_request_errors_total{service="digits",endpoint="score"}' in text
    assert 'edgeport_request_duration_seconds_bucket{service="digits",endpoint="score",le="+Inf"}' in text
    assert "edgeport_model_duration_seconds_count" in text
    three = [ln for ln in text.splitlines() if ln.startswith('edgeport_batch_size_bucket{service="digits",le="4"}')]
    two = [ln for ln in text.splitlines() if ln.startswith('edgeport_batch_size_bucket{service="digits",le="2"}')]
    assert int(three[0].split()[-1]) > int(two[0].split()[-1])  # the 3-row request landed in the le=4 bucket


# -- bad input: each kind gets a clear 4xx and the server keeps serving -------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/score", b"{not json", 400, "not valid JSON"),
        ("/score", b'{"rows": [1]}', 400, '"data" field'),
        ("/score", json.dumps({"data": [[1.0] * 63]}).encode(), 400, "shape [1, 63]"),
        ("/score", json.dumps({"data": [["a"] * 64]}).encode(), 400, "cannot read"),
        ("/v2/models/digits/infer", b"[1,2]", 400, "'inputs'"),
        ("/v2/models/digits/infer", b'{"inputs": [{"name": "X", "datatype": "FP32", "data": [1]}]}', 400, "'shape'"),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP99", "data": []}]}',
            400,
            "unknown datatype",
        ),
        (
            "/v2/models/digits/infer",
            json.dumps({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 10}]}).encode(),
            400,
            "needs 64",
        ),
        (
            "/v2/models/digits/infer",
            json.dumps({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP64", "data": [1.0] * 64}]}).encode(),
            400,
            "must be FP32",
        ),
        (
            "/v2/models/digits/infer",
            json.dumps({"inputs": [{"name": "Y", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]}).encode(),
            400,
            "missing input 'X'",
        ),
        (
            "/v2/models/digits/infer",
            json.dumps(
                {
                    "inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}],
                    "outputs": [{"name": "zz"}],
                }
            ).encode(),
            400,
            "unknown output",
        ),
        ("/v2/models/nope/infer", b"{}", 404, "unknown model 'nope'"),
        ("/v2/models/digits/versions/7/infer", b"{}", 404, "no version '7'"),
        ("/nowhere", b"", 404, "no such endpoint"),
    ],
)
def test_bad_input_gets_clear_error(digits: Runtime, path: str, body: bytes, status: int, message: str) -> None:
    got, headers, resp = http("POST", digits.url + path, body, {"Content-Type": "application/json"})
    assert got == status, resp
    assert headers["content-type"] == "application/json"
    assert message in json.loads(resp)["error"]
    assert b"Traceback" not in resp
    assert http("GET", digits.url + "/")[0] == 200


def test_binary_extension_bad_lengths(digits: Runtime) -> None:
    head = json.dumps(
        {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]}
    ).encode()
    body = head + np.zeros(64, np.float32).tobytes()
    assert (
        http("POST", digits.url + "/v2/models/digits/infer", body, {"Inference-Header-Content-Length": str(len(head))})[
            0
        ]
        == 200
    )
    status, _, resp = http(
        "POST", digits.url + "/v2/models/digits/infer", body[:-4], {"Inference-Header-Content-Length": str(len(head))}
    )
    assert status == 400 and b"runs past" in resp
    status, _, resp = http(
        "POST", digits.url + "/v2/models/digits/infer", body, {"Inference-Header-Content-Length": str(len(body) + 5)}
    )
    assert status == 400 and b"outside" in resp


def test_wrong_method_is_405(digits: Runtime) -> None:
    assert http("GET", digits.url + "/score")[0] == 405
    assert http("POST", digits.url + "/metrics", b"")[0] == 405
    assert http("GET", digits.url + "/v2/models/digits/infer")[0] == 405


def test_oversized_body_413_without_reading_it(digits: Runtime) -> None:
    """A Content-Length over --max-body-bytes is refused before the body is sent."""
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413") and b"--max-body-bytes" in reply
    # chunked bodies are counted as they arrive
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(10):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:  # the server closed after answering 413
            pass
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    assert http("GET", digits.url + "/")[0] == 200


def test_malformed_http_and_pipelining(digits: Runtime, rows: tuple[np.ndarray, np.ndarray]) -> None:
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    body = json.dumps({"data": rows[0][:1].tolist()}).encode()
    req = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(req * 3 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 4:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.rstrip().endswith(b"Healthy")


def test_concurrent_clients(digits: Runtime, digits_model: Path, rows: tuple[np.ndarray, np.ndarray]) -> None:
    import onnxruntime as ort

    x, _ = rows
    expected = ort.InferenceSession(str(digits_model)).run(["label"], {"X": x[:64]})[0].tolist()

    def one(i: int) -> int:
        status, _, body = http("POST", digits.url + "/score", json.dumps({"data": x[i : i + 1].tolist()}).encode())
        assert status == 200
        return json.loads(body)["label"][0]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(64))) == expected
