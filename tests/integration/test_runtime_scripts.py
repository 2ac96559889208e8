"""The runtime running entry scripts: the seed's examples, init/run failures, readiness, CLI bad input."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from tests.integration.runtime_support import EXAMPLES, SCRIPTS, Runtime, http, start_runtime
from tests.support import PYTHON, REPO, Processes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sklearn_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ridge]:
    """A model dir with sklearn_regression_model.pkl (10 features), as the seed example expects."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 10))
    model = Ridge().fit(x, x @ np.arange(10.0))
    d = tmp_path_factory.mktemp("sklearn-model")
    joblib.dump(model, d / "sklearn_regression_model.pkl")
    return d, model


@pytest.fixture(scope="module")
def sklearn_rt(procs: Processes, sklearn_dir: tuple[Path, Ridge]) -> Runtime:
    """The sklearn + inference-schema example."""
    return start_runtime(
        procs,
        "--model-dir",
        str(sklearn_dir[0]),
        "--entry-script",
        "score.py",
        "--source-dir",
        str(EXAMPLES / "sklearn_schema"),
        "--grpc-port",
        "0",
        "--name",
        "sk",
    )


def test_sklearn_schema_example_scores(sklearn_rt: Runtime, sklearn_dir: tuple[Path, Ridge]) -> None:
    rows = [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    status, headers, body = http(
        "POST", sklearn_rt.url + "/score", json.dumps({"data": rows}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body), sklearn_dir[1].predict(np.array(rows)))
    assert float(headers["x-ms-run-fn-exec-ms"]) > 0


def test_sklearn_schema_validation(sklearn_rt: Runtime) -> None:
    for body, message in [
        (b'{"data": [["a", 1]]}', "expected integer"),
        (b'{"rows": [[1]]}', "unknown field"),
        (b'{"data": 5}', "expected array"),
        (b"[1, 2]", "JSON object"),
        (b"{oops", "not valid JSON"),
    ]:
        status, _, resp = http("POST", sklearn_rt.url + "/score", body)
        assert status == 400, (body, resp)
        assert message in json.loads(resp)["error"]


def test_sklearn_swagger_from_schema_samples(sklearn_rt: Runtime) -> None:
    doc = json.loads(http("GET", sklearn_rt.url + "/swagger.json")[2])
    assert doc["swagger"] == "2.0"
    service_input = doc["definitions"]["ServiceInput"]
    assert service_input["properties"]["data"]["items"]["items"]["type"] == "integer"
    assert service_input["example"] == {"data": [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]}
    assert doc["definitions"]["ServiceOutput"]["example"] == [3726.995]
    doc3 = json.loads(http("GET", sklearn_rt.url + "/openapi.json")[2])
    assert doc3["components"]["schemas"]["ServiceInput"]["example"]["data"][0][0] == 10
    status, _, resp = http("POST", sklearn_rt.url + "/v2/models/sk/infer", b'{"inputs": []}')
    assert status == 400 and b"entry script" in resp


def test_rawhttp_cors_example(procs: Processes, sklearn_dir: tuple[Path, Ridge]) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(sklearn_dir[0]),
        "--entry-script",
        str(EXAMPLES / "rawhttp_cors" / "score.py"),
        "--grpc-port",
        "0",
    )
    status, headers, body = http(
        "POST", rt.url + "/score", b"raw \x00 bytes", {"Content-Type": "application/octet-stream"}
    )
    assert (status, body) == (200, b"raw \x00 bytes")
    assert headers["access-control-allow-origin"] == "http://www.example.com"
    status, _, body = http("GET", rt.url + "/score?a=1&b=2")
    assert (status, body) == (200, b"/score?a=1&b=2")
    status, headers, _ = http("OPTIONS", rt.url + "/score")
    assert status == 200 and headers["access-control-allow-methods"] == "OPTIONS, GET, POST"
    assert http("DELETE", rt.url + "/score")[:1] == (500,)
    assert "This is init()" in rt.log


def test_plain_script_and_run_raising(procs: Processes, digits_model: Path) -> None:
    src = str(SCRIPTS)
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--entry-script",
        "plain_onnx.py",
        "--source-dir",
        src,
        "--grpc-port",
        "0",
    )
    status, _, body = http("POST", rt.url + "/score", json.dumps({"data": [[0.0] * 64]}).encode())
    assert status == 200 and isinstance(json.loads(body)[0], int)
    status, _, body = http("POST", rt.url + "/score", json.dumps({"data": [0.0] * 64}).encode())
    assert status == 500
    err = json.loads(body)["error"]
    assert err.startswith("run() failed: ValueError: expected rows of 64 pixels") and "Traceback" not in err
    assert http("POST", rt.url + "/score", json.dumps({"data": [[0.0] * 64]}).encode())[0] == 200
    rt2 = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--entry-script",
        "run_raises.py",
        "--source-dir",
        src,
        "--grpc-port",
        "0",
    )
    status, _, body = http("POST", rt2.url + "/score", b'{"data": "boom"}')
    assert status == 500 and json.loads(body)["error"] == "run() failed: ValueError: cannot score 'boom'"
    assert json.loads(http("POST", rt2.url + "/score", b'{"data": 1}')[2]) == {"ok": 1}
    assert "Traceback" in rt2.log  # the server log keeps the traceback for the author


def test_init_raising_exits_nonzero_with_message(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--entry-script",
        "init_raises.py",
        "--source-dir",
        str(SCRIPTS),
        "--grpc-port",
        "0",
        ready=False,
    )
    assert rt.proc.wait(30) == 1
    assert "init() failed in init_raises.py: RuntimeError: model file corrupted: checksum 1234 does not match" in rt.log


def test_503_until_init_finishes(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--entry-script",
        "slow_init.py",
        "--source-dir",
        str(SCRIPTS),
        "--grpc-port",
        "0",
        ready=False,
        env={"SLOW_INIT_S": "3"},
    )
    deadline = time.monotonic() + 20
    seen: list[int] = []
    while time.monotonic() < deadline:
        try:
            status = http("GET", rt.url + "/")[0]
        except OSError:
            time.sleep(0.05)
            continue
        seen.append(status)
        if status == 200:
            break
        assert http("POST", rt.url + "/score", b'{"data": 1}')[0] == 503
        assert http("GET", rt.url + "/v2/health/ready")[0] == 503
        time.sleep(0.1)
    assert seen[0] == 503 and seen[-1] == 200
    assert json.loads(http("POST", rt.url + "/score", b'{"data": 1}')[2]) == {"echo": '{"data": 1}'}


def test_get_model_path_with_several_models(procs: Processes, tmp_path: Path, sklearn_dir: tuple[Path, Ridge]) -> None:
    """AZUREML_MODEL_DIR/<name>/<version>/: the sklearn example finds its model by name, latest version."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(
        "from azureml.core.model import Model\n"
        "def init():\n    global p1, p2\n"
        "    p1 = Model.get_model_path('digits')\n    p2 = Model.get_model_path('digits', version=1)\n"
        "def run(raw):\n    return {'latest': p1, 'v1': p2}\n"
    )
    for v in ("1", "2", "10"):
        (tmp_path / "models" / "digits" / v).mkdir(parents=True)
    rt = start_runtime(
        procs,
        "--model-dir",
        str(tmp_path / "models"),
        "--entry-script",
        "score.py",
        "--source-dir",
        str(tmp_path / "src"),
        "--grpc-port",
        "0",
    )
    got = json.loads(http("POST", rt.url + "/score", b"{}")[2])
    assert got == {
        "latest": str(tmp_path / "models" / "digits" / "10"),
        "v1": str(tmp_path / "models" / "digits" / "1"),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-dir", "/nonexistent"], "is not a directory"),
        (["--model-dir", "{tmp}", "--onnx", "missing.onnx"], "is not a file under --model-dir"),
        (["--model-dir", "{tmp}", "--entry-script", "nope.py", "--source-dir", "{tmp}"], "does not exist"),
        (["--model-dir", "{tmp}/empty"], "give --entry-script"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--auth", "key"], "EDGEPORT_PRIMARY_KEY"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--auth", "token"], "EDGEPORT_TOKEN_SECRET"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--max-body-bytes", "0"], "must be positive"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--port", "70000"], "not a valid port"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--header-timeout", "0"], "--header-timeout must be a positive"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--idle-timeout", "nan"], "--idle-timeout must be a positive"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--idle-timeout", "inf"], "--idle-timeout must be a positive"),
        (["--model-dir", "{tmp}", "--onnx", "m.onnx", "--max-connections", "0"], "--max-connections must be positive"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run(
        [PYTHON, "-m", "runtimes", "serve", *argv], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and message in res.stderr and "Traceback" not in res.stderr


def test_corrupt_onnx_exits_1_with_message(procs: Processes, tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"this is not a model")
    rt = start_runtime(procs, "--model-dir", str(tmp_path), "--onnx", "m.onnx", "--grpc-port", "0", ready=False)
    assert rt.proc.wait(30) == 1
    assert "cannot load ONNX model" in rt.log and "Traceback" not in rt.log


def test_providers_command_prints_json() -> None:
    res = subprocess.run([PYTHON, "-m", "runtimes", "providers"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0 and "CPUExecutionProvider" in json.loads(res.stdout)


def test_busy_port_exits_1_and_sigterm_exits_0(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(procs, "--model-dir", str(digits_model.parent), "--onnx", "model.onnx", "--grpc-port", "0")
    res = subprocess.run(
        [
            PYTHON,
            "-m",
            "runtimes",
            "serve",
            "--model-dir",
            str(digits_model.parent),
            "--onnx",
            "model.onnx",
            "--port",
            str(rt.port),
            "--grpc-port",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 1 and f"cannot listen on 127.0.0.1:{rt.port}" in res.stderr
    assert procs.stop(rt.proc) == 0  # SIGTERM: clean stop
    assert "stopping" in rt.log
