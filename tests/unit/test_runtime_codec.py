"""V2 codecs: JSON tensors, binary extension and gRPC messages, for every datatype onnxruntime runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protos.inference import message_class
from runtimes.errors import BadRequest
from runtimes.v2 import codec
from runtimes.v2.grpc import decode_infer_request, encode_infer_response
from runtimes.v2.types import DTYPES, InferRequest, InferResponse

SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**63]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-3, 0, 3]], np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**62), 0, 2**62]], np.int64),
    "FP16": np.array([[0.5, -1.25, 2.0]], np.float16),
    "FP32": np.array([[0.5, -1.25, 3.1415927]], np.float32),
    "FP64": np.array([[0.1, -1e300, 3.141592653589793]], np.float64),
    "BYTES": np.array([[b"a", b"", "héllo".encode()]], np.object_),
}


def _json_value(arr: np.ndarray) -> list:
    flat = arr.reshape(-1)
    if arr.dtype == np.object_:
        return [b.decode() for b in flat]
    return flat.tolist()


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_json_roundtrip_every_datatype(datatype: str) -> None:
    arr = SAMPLES[datatype]
    body = json.dumps({"inputs": [{"name": "t", "shape": [1, 3], "datatype": datatype, "data": _json_value(arr)}]})
    req = codec.decode_request(body.encode(), None)
    got = req.inputs["t"]
    assert got.shape == (1, 3) and got.dtype == DTYPES[datatype]
    assert got.tolist() == arr.tolist()
    out, header_len = codec.encode_response(InferResponse("m", "1", {"t": got}), req)
    assert header_len is None
    doc = json.loads(out)["outputs"][0]
    assert doc["datatype"] == datatype and doc["shape"] == [1, 3]
    if datatype in ("FP16", "FP32"):  # shortest float32 text, compared as float32
        np.testing.assert_array_equal(np.asarray(doc["data"], np.float32), arr.reshape(-1).astype(np.float32))
    else:
        assert doc["data"] == _json_value(arr)


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_binary_roundtrip_every_datatype(datatype: str) -> None:
    arr = SAMPLES[datatype]
    raw = codec.array_to_raw(arr)
    head = json.dumps(
        {
            "inputs": [
                {"name": "t", "shape": [1, 3], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "t", "parameters": {"binary_data": True}}],
        }
    ).encode()
    req = codec.decode_request(head + raw, len(head))
    assert req.inputs["t"].tolist() == arr.tolist()
    body, header_len = codec.encode_response(InferResponse("m", "1", {"t": req.inputs["t"]}), req)
    assert header_len is not None
    doc = json.loads(body[:header_len])
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    assert body[header_len:] == raw and size == len(raw)


def test_binary_data_output_request_parameter_makes_all_outputs_binary() -> None:
    req = codec.decode_request(
        json.dumps(
            {
                "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
                "parameters": {"binary_data_output": True},
            }
        ).encode(),
        None,
    )
    body, header_len = codec.encode_response(InferResponse("m", "1", {"y": np.ones(2, np.float32)}, "x"), req)
    assert header_len is not None and len(body) == header_len + 8


@pytest.mark.parametrize(
    ("body", "header_len", "message"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (b'{"inputs": [5]}', None, "must be an object"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', None, "missing 'name'"),
        (b'{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}]}', None, "non-negative"),
        (b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1]}]}', None, "needs 2"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": ["x"]}]}', None, "not a list of FP32"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [1000]}]}', None, "INT8"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}', None, "neither 'data'"),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": 3}',
            None,
            "'outputs'",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}XXXX',
            100,
            "runs past",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}XXXX',
            100,
            "expected 8",
        ),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}XXXX', 74, "not claimed"),
        (b"{}", 99, "outside"),
    ],
)
def test_decode_rejects_bad_requests(body: bytes, header_len: int | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        codec.decode_request(body, header_len)


def test_bytes_wire_format_errors() -> None:
    with pytest.raises(BadRequest, match="ends inside element"):
        codec.bytes_from_wire(b"\x05\x00", 1, "t")
    with pytest.raises(BadRequest, match="claims 5 bytes"):
        codec.bytes_from_wire(b"\x05\x00\x00\x00ab", 1, "t")
    with pytest.raises(BadRequest, match="left over"):
        codec.bytes_from_wire(b"\x01\x00\x00\x00ab", 1, "t")


def test_grpc_raw_and_typed_contents() -> None:
    req_cls = message_class("ModelInferRequest")
    msg = req_cls(model_name="m")
    t = msg.inputs.add(name="a", datatype="FP32", shape=[2, 2])
    msg.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    assert decode_infer_request(msg).inputs["a"].tolist() == [[0, 1], [2, 3]]
    typed = req_cls(model_name="m")
    t = typed.inputs.add(name="b", datatype="INT64", shape=[3])
    t.contents.int64_contents.extend([1, 2, 3])
    s = typed.inputs.add(name="s", datatype="BYTES", shape=[2])
    s.contents.bytes_contents.extend([b"x", b"yz"])
    got = decode_infer_request(typed).inputs
    assert got["b"].dtype == np.int64 and got["b"].tolist() == [1, 2, 3]
    assert got["s"].tolist() == [b"x", b"yz"]
    t.contents.int64_contents.append(4)
    with pytest.raises(BadRequest, match="4 values"):
        decode_infer_request(typed)
    half = req_cls(model_name="m")
    half.inputs.add(name="h", datatype="FP16", shape=[1])
    with pytest.raises(BadRequest, match="raw_input_contents"):
        decode_infer_request(half)
    empty = req_cls(model_name="m")
    with pytest.raises(BadRequest, match="no inputs"):
        decode_infer_request(empty)


def test_grpc_response_raw_outputs() -> None:
    resp = encode_infer_response(
        InferResponse("m", "1", {"y": np.array([[1.5, 2.5]], np.float32), "s": np.array([b"ab"], np.object_)}, "id1"),
        message_class("ModelInferResponse"),
    )
    assert [o.name for o in resp.outputs] == ["y", "s"] and resp.id == "id1"
    assert np.frombuffer(resp.raw_output_contents[0], np.float32).tolist() == [1.5, 2.5]
    assert resp.raw_output_contents[1] == b"\x02\x00\x00\x00ab"


def test_infer_request_defaults() -> None:
    req = InferRequest({"a": np.zeros(1)})
    assert req.outputs is None and not req.binary_default


def test_binary_body_without_header_length() -> None:
    """curl/wrk cannot compute Inference-Header-Content-Length: the JSON object's end marks it."""
    raw = b"\x20\x20\x20\x20" + np.array([32.0, -2.5], np.float32).tobytes()  # data starting with "spaces"
    head = json.dumps(
        {"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}
    ).encode()
    got = codec.decode_request(head + raw, None).inputs["a"]
    assert got[1:].tolist() == [32.0, -2.5]
    with pytest.raises(BadRequest, match="not valid JSON"):
        codec.decode_request(b'{"inputs": ' + raw, None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\x00binary",
        b'{"inputs": ' + b"[" * 100_000,
        b'{"a": "' + b'\\"' * 50_000,  # an unterminated string of escaped quotes: scanned once, not per quote
    ],
    ids=["deep-then-binary", "deep-unterminated", "unterminated-string"],
)
def test_deep_or_unterminated_json_is_bad_request_not_recursion(body: bytes) -> None:
    with pytest.raises(BadRequest):
        codec.decode_request(body, None)


def test_json_header_end_found_by_scan_with_strings_holding_brackets() -> None:
    tensor = {"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}
    head = json.dumps({"id": 'a}"]{[', "inputs": [tensor]}).encode()
    req = codec.decode_request(head + np.array([1, 2], "<i4").tobytes(), None)
    assert req.id == 'a}"]{[' and req.inputs["x"].tolist() == [1, 2]


def test_bytes_count_checked_before_allocating() -> None:
    with pytest.raises(BadRequest, match="ends inside element"):
        codec.raw_to_array(b"\x00" * 8, "BYTES", [10**12], "inputs[0]")
    with pytest.raises(BadRequest, match="at most 64"):
        codec.raw_to_array(b"\x00" * 4, "FP32", [1] * 65, "inputs[0]")
