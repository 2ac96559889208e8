"""Every route of a real runtime answers hostile or oversized input with 4xx, never 500 or a traceback.

Deep JSON nesting (the V2 binary-header scan used to recurse), shapes numpy cannot build, BYTES
counts that would allocate before checking, and path parameters, URLs and headers of any length.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos.inference import SERVICE_NAME, message_class
from tests.integration.runtime_support import EXAMPLES, Runtime, http, start_runtime
from tests.support import Processes

pytestmark = pytest.mark.timeout(120)

DEEP = b"[" * 100_000 + b"]" * 100_000
OPEN_ONLY = b"[" * 100_000


@pytest.fixture(scope="module")
def digits(procs: Processes, digits_model: Path) -> Runtime:
    """The digits classifier (one FP32 input 'X' [-1, 64])."""
    return start_runtime(procs, "--model-dir", str(digits_model.parent), "--onnx", "model.onnx", "--name", "digits")


def _assert_clean_4xx(rt: Runtime, status: int, body: bytes, expected: int | None = None) -> str:
    assert 400 <= status < 500, (status, body[:300])
    if expected is not None:
        assert status == expected, (status, body[:300])
    message = json.loads(body)["error"]
    assert len(message) <= 1000
    assert "Traceback" not in rt.log and "RecursionError" not in rt.log
    assert http("GET", rt.url + "/")[0] == 200
    return message


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": ' + DEEP + b"}",
        b'{"inputs": ' + DEEP + b"}\x00\x01binary",  # JSON header then bytes: the header end is scanned for
        b'{"inputs": ' + DEEP,  # unterminated: not JSON, scanned too
        b'{"inputs": ' + OPEN_ONLY,
        b'{"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": ' + DEEP + b"}]}",
        b'{"inputs": [{"name": "X", "shape": [1, 64], "datatype": "BYTES", "data": ' + DEEP + b"}]}",
        b'{"id": ' + DEEP + b', "inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}',
        b'{"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [1]}], "outputs": ' + DEEP + b"}",
        DEEP,
    ],
    ids=["inputs", "inputs+binary", "unterminated", "open-only", "data", "bytes-data", "id", "outputs", "bare"],
)
def test_v2_infer_deep_nesting_is_400(digits: Runtime, body: bytes) -> None:
    status, _, resp = http("POST", digits.url + "/v2/models/digits/infer", body)
    _assert_clean_4xx(digits, status, resp, 400)


def test_v2_infer_deep_header_with_declared_length_is_400(digits: Runtime) -> None:
    head = b'{"inputs": ' + DEEP + b"}"
    status, _, resp = http(
        "POST",
        digits.url + "/v2/models/digits/infer",
        head + b"\x00" * 8,
        {"Inference-Header-Content-Length": str(len(head))},
    )
    _assert_clean_4xx(digits, status, resp, 400)


@pytest.mark.parametrize("body", [b'{"data": ' + DEEP + b"}", b'{"data": ' + OPEN_ONLY, DEEP, OPEN_ONLY])
def test_score_deep_nesting_is_400(digits: Runtime, body: bytes) -> None:
    status, _, resp = http("POST", digits.url + "/score", body)
    _assert_clean_4xx(digits, status, resp, 400)


def test_schema_script_deep_nesting_is_400(procs: Processes, tmp_path: Path) -> None:
    """inference-schema scripts: the runtime parses and checks the body before run()."""
    import joblib
    from sklearn.linear_model import Ridge

    x = np.random.default_rng(0).normal(size=(20, 10))
    joblib.dump(Ridge().fit(x, x.sum(axis=1)), tmp_path / "sklearn_regression_model.pkl")
    rt = start_runtime(
        procs,
        "--model-dir",
        str(tmp_path),
        "--entry-script",
        "score.py",
        "--source-dir",
        str(EXAMPLES / "sklearn_schema"),
        "--grpc-port",
        "0",
        "--name",
        "sk",
    )
    for body in (b'{"data": ' + DEEP + b"}", b'{"data": ' + OPEN_ONLY):
        status, _, resp = http("POST", rt.url + "/score", body)
        _assert_clean_4xx(rt, status, resp, 400)


@pytest.mark.parametrize(
    ("shape", "datatype", "payload", "message"),
    [
        ([1] * 65, "FP32", {"data": [1.0]}, "at most 64"),
        ([1] * 100, "FP32", {"parameters": {"binary_data_size": 4}}, "at most 64"),
        ([0, 2**50], "FP32", {"data": []}, "dimension over"),
        ([10**9], "BYTES", {"parameters": {"binary_data_size": 8}}, "ends inside element"),
    ],
    ids=["json-65-dims", "binary-100-dims", "huge-dim", "bytes-count"],
)
def test_v2_infer_impossible_shapes_are_400(
    digits: Runtime, shape: list[int], datatype: str, payload: dict[str, object], message: str
) -> None:
    head = json.dumps({"inputs": [{"name": "X", "shape": shape, "datatype": datatype, **payload}]}).encode()
    size = payload.get("parameters", {}).get("binary_data_size", 0)  # type: ignore[union-attr]
    headers = {"Inference-Header-Content-Length": str(len(head))} if size else {}
    status, _, resp = http("POST", digits.url + "/v2/models/digits/infer", head + b"\x00" * size, headers)
    assert message in _assert_clean_4xx(digits, status, resp, 400)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/" + "m" * 300 + "/infer", 400, "at most 256"),
        ("/v2/models/" + "m" * 300, 400, "at most 256"),
        ("/v2/models/" + "m" * 300 + "/ready", 400, "at most 256"),
        ("/v2/models/digits/versions/" + "9" * 300 + "/infer", 400, "at most 256"),
        ("/v2/models/digits/versions/" + "9" * 300 + "/ready", 400, "at most 256"),
        ("/v2/models/%ff%fe/infer", 400, "UTF-8"),
        ("/v2/models/dig%00its/ready", 400, "control characters"),
        ("/v2/models/a%2Fb/ready", 400, "'/'"),
        ("/v2/models/digits/versions/1/infer/extra/more", 404, "no such endpoint"),
        ("/v2/models/" + "m" * 10_000 + "/infer", 414, "URL"),
        ("/score?" + "q" * 10_000, 414, "URL"),
    ],
    ids=[
        "long-name-infer",
        "long-name-metadata",
        "long-name-ready",
        "long-version-infer",
        "long-version-ready",
        "bad-utf8",
        "control-char",
        "encoded-slash",
        "extra-segments",
        "url-10k",
        "query-10k",
    ],
)
def test_path_parameters_are_bounded(digits: Runtime, path: str, status: int, message: str) -> None:
    method = "POST" if path.endswith("/infer") or path.startswith("/score") else "GET"
    got, _, resp = http(method, digits.url + path, b"{}" if method == "POST" else None)
    assert message in _assert_clean_4xx(digits, got, resp, status)


def test_percent_encoded_name_is_decoded(digits: Runtime) -> None:
    status, _, body = http("GET", digits.url + "/v2/models/dig%69ts/ready")
    assert status == 200 and json.loads(body) == {"name": "digits", "ready": True}


def _raw(rt: Runtime, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as s:
        with contextlib.suppress(OSError):  # the runtime answered and closed before reading all of it
            s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def test_header_block_is_bounded(digits: Runtime) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    reply = _raw(digits, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431") and b"header fields" in reply
    # one huge header: httptools would buffer it whole; the runtime stops at its head limit
    reply = _raw(digits, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 200_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431") and b"headers are over" in reply
    assert http("GET", digits.url + "/")[0] == 200


def _grpc_infer(rt: Runtime, shape: list[int], contents: list[float] | None, raw: bytes | None) -> grpc.RpcError:
    req_cls, resp_cls = message_class("ModelInferRequest"), message_class("ModelInferResponse")
    req = req_cls(model_name="digits")
    tensor = req.inputs.add(name="X", datatype="FP32", shape=shape)
    if contents is not None:
        tensor.contents.fp32_contents.extend(contents)
    if raw is not None:
        req.raw_input_contents.append(raw)
    with grpc.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as channel:
        call = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            call(req, timeout=10)
    return info.value


def test_grpc_impossible_shapes_are_invalid_argument(digits: Runtime) -> None:
    err = _grpc_infer(digits, [1] * 100, [1.0], None)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 64" in (err.details() or "")
    err = _grpc_infer(digits, [0, 2**50], [], None)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimension over" in (err.details() or "")
    err = _grpc_infer(digits, [1] * 70, None, b"\x00" * 4)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in digits.log
