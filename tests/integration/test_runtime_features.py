"""Runtime options end to end: key/token auth (HTTP and gRPC), dynamic batching, int8, provider choice."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from simulators.models import digits_data
from tests.integration.runtime_support import http, start_runtime
from tests.support import PYTHON, REPO, Processes, free_port

pytestmark = pytest.mark.timeout(120)
KEYS = {"EDGEPORT_PRIMARY_KEY": "primary-key-1", "EDGEPORT_SECONDARY_KEY": "secondary-key-2"}
SECRET = {"EDGEPORT_TOKEN_SECRET": "token-secret-xyz"}


def _score_body() -> bytes:
    return json.dumps({"data": digits_data()[0][:2].tolist()}).encode()


def test_key_auth(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "svc",
        "--auth",
        "key",
        env=KEYS,
    )
    body = _score_body()
    status, _, resp = http("POST", rt.url + "/score", body)
    assert status == 401 and "requires key auth" in json.loads(resp)["error"]
    assert http("POST", rt.url + "/score", body, {"Authorization": "Bearer wrong"})[0] == 401
    assert http("POST", rt.url + "/score", body, {"Authorization": "Basic primary-key-1"})[0] == 401
    for key in KEYS.values():  # either key works, so keys can be rotated one at a time
        assert http("POST", rt.url + "/score", body, {"Authorization": f"Bearer {key}"})[0] == 200
    v2 = json.dumps({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}).encode()
    assert http("POST", rt.url + "/v2/models/svc/infer", v2)[0] == 401
    assert http("POST", rt.url + "/v2/models/svc/infer", v2, {"Authorization": "Bearer primary-key-1"})[0] == 200
    # health, readiness and metrics stay open
    for path in ("/", "/v2/health/ready", "/v2/models/svc/ready", "/metrics", "/swagger.json"):
        assert http("GET", rt.url + path)[0] == 200, path
    assert "securityDefinitions" in json.loads(http("GET", rt.url + "/swagger.json")[2])
    # gRPC: same keys in the authorization metadata
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{rt.grpc_port}")
    inp = tgrpc.InferInput("X", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    with pytest.raises(InferenceServerException, match="requires key auth"):
        client.infer("svc", [inp])
    assert client.infer("svc", [inp], headers={"authorization": "Bearer secondary-key-2"}).as_numpy("label").shape == (
        1,
    )
    assert client.is_server_ready()


def test_token_auth(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "svc",
        "--auth",
        "token",
        env=SECRET,
    )

    def mint(service: str, ttl: str, secret: str = SECRET["EDGEPORT_TOKEN_SECRET"]) -> str:
        res = subprocess.run(
            [PYTHON, "-m", "runtimes", "token", "--service", service, "--ttl", ttl],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"EDGEPORT_TOKEN_SECRET": secret, "PATH": "/usr/bin"},
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    body = _score_body()
    assert http("POST", rt.url + "/score", body, {"Authorization": f"Bearer {mint('svc', '60')}"})[0] == 200
    for token, message in [
        (mint("svc", "-5"), "token expired"),
        (mint("other", "60"), "not 'svc'"),
        (mint("svc", "60", secret="another-secret"), "invalid token signature"),
        ("garbage", "invalid token signature"),
    ]:
        status, _, resp = http("POST", rt.url + "/score", body, {"Authorization": f"Bearer {token}"})
        assert status == 401 and message in json.loads(resp)["error"], resp


def test_dynamic_batching_merges_concurrent_requests(procs: Processes, digits_model: Path) -> None:
    import onnxruntime as ort

    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "digits",
        "--max-batch-size",
        "16",
        "--max-batch-delay-ms",
        "20",
    )
    assert "dynamic batching up to 16 rows / 20.0 ms" in rt.log
    x = digits_data()[0][:48]
    expected = ort.InferenceSession(str(digits_model)).run(["label"], {"X": x})[0].tolist()

    def one(i: int) -> int:
        status, _, body = http("POST", rt.url + "/score", json.dumps({"data": x[i : i + 1].tolist()}).encode())
        assert status == 200, body
        return json.loads(body)["label"][0]

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(48))) == expected  # each caller gets its own row back
    text = http("GET", rt.url + "/metrics")[2].decode()
    count = next(ln for ln in text.splitlines() if ln.startswith("edgeport_batch_size_count"))
    total = next(ln for ln in text.splitlines() if ln.startswith("edgeport_batch_size_sum"))
    assert float(total.split()[-1]) == 48
    assert int(count.split()[-1]) < 48  # fewer model calls than requests: batches formed
    # requests of different widths are not mixed into one batch (and bad ones still get 400)
    status, _, _ = http("POST", rt.url + "/score", json.dumps({"data": [[0.0] * 63]}).encode())
    assert status == 400


def test_int8_quantized_variant(procs: Processes, squeezenet_model: Path, tmp_path: Path) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(squeezenet_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "sq",
        "--quantize-int8",
        env={"EDGEPORT_RUNTIME_CACHE": str(tmp_path)},
    )
    assert "int8 dynamically quantized variant" in rt.log
    assert list(tmp_path.glob("*.int8.onnx"))
    assert list(squeezenet_model.parent.iterdir()) == [squeezenet_model]  # the model dir is never written
    img = np.random.default_rng(3).random((1, 3, 224, 224), dtype=np.float32)
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{rt.grpc_port}")
    inp = tgrpc.InferInput("data_0", list(img.shape), "FP32")
    inp.set_data_from_numpy(img)
    out = client.infer("sq", [inp]).as_numpy("softmaxout_1")
    assert out.shape == (1, 1000, 1, 1) and abs(float(out.sum()) - 1.0) < 1e-3


def test_execution_provider_and_cpus_logged(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--execution-providers",
        "CPUExecutionProvider",
        "--cpus",
        "1",
    )
    assert "providers CPUExecutionProvider" in rt.log and "intra-op threads 1" in rt.log
    assert "1 usable cpu(s)" in rt.log
    fallback = start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--execution-providers",
        "TensorrtExecutionProvider",
    )
    assert "not available here: TensorrtExecutionProvider" in fallback.log  # warned, then served on CPU
    assert "providers CPUExecutionProvider" in fallback.log


def test_concurrency_policy_logged_and_concurrent_calls_correct(procs: Processes, squeezenet_model: Path) -> None:
    import onnxruntime as ort

    args = ["--model-dir", str(squeezenet_model.parent), "--onnx", "model.onnx", "--name", "sq"]
    default = start_runtime(procs, *args)
    assert "model call(s) at once, 1 intra-op thread(s)" in default.log
    assert "(default: one call per usable cpu" in default.log
    one = start_runtime(procs, *args, "--model-workers", "1")
    assert "on worker threads: up to 1 model call(s) at once" in one.log and "(--model-workers 1)" in one.log
    bad = subprocess.run(
        [PYTHON, "-m", "runtimes", "serve", "--model-dir", str(squeezenet_model.parent), "--model-workers", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--model-workers must be positive" in bad.stderr

    # Several calls at once on one session (three workers): each answer belongs to its own request.
    rt = start_runtime(procs, *args, "--model-workers", "3", "--intra-op-threads", "2")
    assert "up to 3 model call(s) at once, 2 intra-op thread(s)" in rt.log
    ref = ort.InferenceSession(str(squeezenet_model))
    imgs = [np.random.default_rng(i).random((1, 3, 224, 224), dtype=np.float32) for i in range(6)]
    want = [ref.run(None, {"data_0": x})[0] for x in imgs]

    def one_call(i: int) -> np.ndarray:
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{rt.grpc_port}")
        inp = tgrpc.InferInput("data_0", list(imgs[i].shape), "FP32")
        inp.set_data_from_numpy(imgs[i])
        return client.infer("sq", [inp]).as_numpy("softmaxout_1")

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(one_call, [i % 6 for i in range(12)]))
    for i, out in enumerate(got):
        np.testing.assert_allclose(out, want[i % 6], rtol=1e-4, atol=1e-6)


def test_session_providers_reported_in_metrics_metadata_and_log(procs: Processes, digits_model: Path) -> None:
    rt = start_runtime(
        procs, "--model-dir", str(digits_model.parent), "--onnx", "model.onnx", "--name", "d", "--grpc-port", "0"
    )
    assert "(session.get_providers(), as asked;" in rt.log
    meta = json.loads(http("GET", rt.url + "/v2/models/d")[2])
    assert meta["execution_providers"] == ["CPUExecutionProvider"]
    metrics = http("GET", rt.url + "/metrics")[2].decode()
    assert 'edgeport_execution_provider{service="d",provider="CPUExecutionProvider",rank="0"} 1' in metrics


def test_strict_providers_refuses_to_fall_back(digits_model: Path) -> None:
    base = [PYTHON, "-m", "runtimes", "serve", "--model-dir", str(digits_model.parent), "--onnx", "model.onnx"]
    proc = subprocess.run(
        [*base, "--grpc-port", "0", "--port", str(free_port()), "--execution-providers", "TensorrtExecutionProvider",
         "--strict-providers"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "TensorrtExecutionProvider not in this onnxruntime" in proc.stderr and "does not fall back" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([*base, "--strict-providers"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--strict-providers needs --execution-providers" in proc.stderr
