"""jsonload: large numeric JSON arrays go straight into numpy, everything else is priced before orjson."""

from __future__ import annotations

import json
import re

import numpy as np
import orjson
import pytest

from runtimes import jsonload
from runtimes.errors import PayloadTooLarge


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise the fast path, and its slicing, on small documents."""
    monkeypatch.setattr(jsonload, "FAST_MIN_BODY", 256)
    monkeypatch.setattr(jsonload, "FAST_MIN_RUN", 64)
    monkeypatch.setattr(jsonload, "CHUNK_BYTES", 97)


RNG = np.random.default_rng(7)
ARRAYS = {
    "floats-2d": RNG.normal(size=(40, 16)),
    "floats-3d": RNG.normal(size=(4, 5, 6)) * 1e-30,
    "flat": RNG.normal(size=300),
    "ints": RNG.integers(-(2**62), 2**62, size=(30, 7)),
    "one-column": RNG.integers(0, 9, size=(200, 1)),
    "exponents": np.array([[1e300, -2.5e-300, 3.0], [0.0, -0.0, 1e-5]] * 30),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_numeric_arrays_match_orjson_exactly(name: str) -> None:
    arr = ARRAYS[name]
    doc = {"note": "[1, 2, 3] in a string stays a string", "data": arr.tolist(), "tail": [1, {"x": 2}]}
    body = json.dumps(doc).encode()
    got = jsonload.loads(body, 1 << 30)
    want = orjson.loads(body)
    assert isinstance(got["data"], np.ndarray)
    np.testing.assert_array_equal(got["data"], np.asarray(want["data"]))
    assert got["data"].dtype == np.asarray(want["data"]).dtype
    assert {k: v for k, v in got.items() if k != "data"} == {k: v for k, v in want.items() if k != "data"}


def test_v2_layout_and_float32_hint() -> None:
    x = RNG.normal(size=(50, 8)).astype(np.float32)
    body = json.dumps(
        {"inputs": [{"name": "a", "shape": [50, 8], "datatype": "FP32", "data": x.reshape(-1).tolist()}], "id": "7"}
    ).encode()
    got = jsonload.loads(bytearray(body), 1 << 30, float_dtype=np.dtype(np.float32))
    assert got["id"] == "7" and got["inputs"][0]["name"] == "a"
    data = got["inputs"][0]["data"]
    assert data.dtype == np.float32 and np.array_equal(data, x.reshape(-1))


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"data": [[1.5] * 20] * 10 + [[1.5] * 3]}).encode(),  # ragged
        json.dumps({"data": [[]] + [[1.5] * 20] * 10}).encode(),  # an empty row
        json.dumps({"s": "[" + "1," * 100 + "1]"}).encode(),  # inside a string
        json.dumps({"s": 'a\\"b', "data": [[1.5] * 20] * 10}).encode(),  # escapes: quote parity unknown
        json.dumps({"data": [2**63 + 5] * 40}).encode(),  # beyond int64
        json.dumps({"data": [True, False] * 40}).encode(),
    ],
    ids=["ragged", "empty-row", "in-string", "escapes", "uint64", "booleans"],
)
def test_everything_else_is_what_orjson_says(body: bytes) -> None:
    got = jsonload.loads(body, 1 << 30)
    assert got == orjson.loads(body)


@pytest.mark.parametrize("body", [b'{"data": [' + b"1.5," * 100 + b"+1]}", b'{"data": [' + b"1," * 100 + b"1,]}"])
def test_malformed_numbers_raise_orjson_errors(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        jsonload.loads(body, 1 << 30)


def test_object_heavy_json_is_refused_before_parsing() -> None:
    body = b'{"data": [' + b"[]," * 10_000 + b"[]]}"
    with pytest.raises(PayloadTooLarge, match=r"would take about \d+ MiB"):
        jsonload.loads(body, 100_000)
    assert jsonload.loads(body, 10_000_000)["data"][0] == []


def test_numeric_runs_found_across_slices() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        parts = []
        for _ in range(int(rng.integers(0, 20))):
            parts.append(bytes([b'"a{:'[int(rng.integers(0, 4))]]) * int(rng.integers(1, 30)))
            parts.append(b"1," * int(rng.integers(0, 150)))
        body = b"".join(parts)
        want = [m.span() for m in re.finditer(rb"[0-9+\-.eE \t\r\n,\[\]]+", body) if m.end() - m.start() >= 64]
        assert jsonload._numeric_runs(body) == want


def test_deeply_nested_document_around_an_array() -> None:
    body = b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b', "data": [' + b"1," * 100 + b"1]}"
    got = jsonload.loads(body, 1 << 30)
    assert got["data"].shape == (101,)
