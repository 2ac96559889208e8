"""Azure ML compatibility modules, inference-schema checks, metrics text, OpenAPI documents."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtimes.backends.entry_script import COMPAT_DIR, check_schema, to_json
from runtimes.errors import BadRequest
from runtimes.metrics import Metrics
from runtimes.openapi import onnx_schemas, openapi3, swagger2
from runtimes.v2.types import TensorSpec


@pytest.fixture
def compat(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compat folder on sys.path, as inside the runtime process."""
    monkeypatch.syspath_prepend(str(COMPAT_DIR))
    for name in [m for m in sys.modules if m.startswith("azureml")]:
        monkeypatch.delitem(sys.modules, name)


def test_get_model_path_one_and_several_models(compat: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azureml.core.model import Model

    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "model.pkl").write_bytes(b"x")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "one"))
    assert Model.get_model_path("model.pkl") == str(tmp_path / "one" / "model.pkl")
    assert Model.get_model_path("anything") == str(tmp_path / "one")
    many = tmp_path / "many"
    for v in ("1", "2", "11"):
        (many / "clf" / v).mkdir(parents=True)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(many))
    assert Model.get_model_path("clf") == str(many / "clf" / "11")
    assert Model.get_model_path("clf", version=2) == str(many / "clf" / "2")
    with pytest.raises(FileNotFoundError, match="version 9"):
        Model.get_model_path("clf", version=9)


def test_aml_request_and_response(compat: None) -> None:
    from azureml.contrib.services.aml_request import AMLRequest, rawhttp
    from azureml.contrib.services.aml_response import AMLResponse

    req = AMLRequest("POST", "/score", "a=1", {"Content-Type": "application/json"}, b'{"x": 1}')
    assert req.full_path == "/score?a=1" and req.args == {"a": "1"}
    assert req.headers["content-type"] == "application/json" and "CONTENT-TYPE" in req.headers
    assert req.get_data() == b'{"x": 1}' and req.get_data(as_text=True) == '{"x": 1}' and req.json == {"x": 1}
    resp = AMLResponse({"a": 1}, 201, json_str=True)
    assert resp.status_code == 201 and resp.data == b'{"a": 1}' and resp.headers["Content-Type"] == "application/json"
    assert rawhttp(lambda r: r).__aml_rawhttp__ is True


def test_check_schema_messages() -> None:
    schema = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
    }
    check_schema({"data": [[1, 2.5]]}, schema, "body")
    with pytest.raises(BadRequest, match=r"body.data\[0\]\[1\]: expected number, got str"):
        check_schema({"data": [[1, "x"]]}, schema, "body")
    with pytest.raises(BadRequest, match="missing field 'data'"):
        check_schema({}, schema, "body")
    with pytest.raises(BadRequest, match="expected number, got bool"):
        check_schema({"data": [[True]]}, schema, "body")


def test_to_json_handles_numpy_and_refuses_objects() -> None:
    import numpy as np

    assert to_json({"a": np.arange(3), "b": np.float32(1.5), "c": (1, 2)}) == b'{"a":[0,1,2],"b":1.5,"c":[1,2]}'
    with pytest.raises(TypeError, match="object"):
        to_json(object())


def test_metrics_text() -> None:
    m = Metrics("svc")
    m.request("score", 200, 0.0003)
    m.request("score", 500, 0.02)
    m.batch_size.observe(3)
    text = m.render().decode()
    assert 'edgeport_requests_total{service="svc",endpoint="score",code="200"} 1' in text
    assert 'edgeport_request_errors_total{service="svc",endpoint="score"} 1' in text
    assert 'edgeport_request_duration_seconds_bucket{service="svc",endpoint="score",le="0.0005"} 1' in text
    assert 'edgeport_request_duration_seconds_count{service="svc",endpoint="score"} 2' in text
    assert 'edgeport_batch_size_bucket{service="svc",le="2"} 0' in text
    assert 'edgeport_batch_size_bucket{service="svc",le="4"} 1' in text


def test_openapi_documents_from_onnx_specs() -> None:
    ins, outs = onnx_schemas([TensorSpec("X", "FP32", [-1, 64])], [TensorSpec("label", "INT64", [-1])])
    assert ins["properties"]["data"]["items"]["items"]["type"] == "number"
    v2 = swagger2("svc", ins, outs, auth=True)
    assert v2["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]
    v3 = openapi3("svc", ins, outs, auth=False)
    assert v3["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/ServiceInput"
    )
    assert "securitySchemes" not in v3["components"]
