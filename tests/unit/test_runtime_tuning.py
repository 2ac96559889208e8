"""HardwareProfile, provider preference, session options, int8 quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtimes.tuning import (
    Concurrency,
    HardwareProfile,
    available_providers,
    choose_providers,
    create_session,
    quantize_int8,
)
from runtimes.tuning.hardware import _cgroup_cpu_quota


def test_provider_preference_order(caplog: pytest.LogCaptureFixture) -> None:
    avail = ["CPUExecutionProvider", "OpenVINOExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers(avail) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(avail, ["CUDAExecutionProvider"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], ["TensorrtExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "not available here: TensorrtExecutionProvider" in caplog.text


def test_available_providers_match_onnxruntime() -> None:
    assert available_providers() == ort.get_available_providers()


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _cgroup_cpu_quota(v1) == 0.5


def test_profile_respects_cpus_limit() -> None:
    full = HardwareProfile.detect()
    assert full.cpus >= 1 and full.memory_bytes > 0 and full.arch
    assert HardwareProfile.detect(cpus_limit=0.5).cpus == 1
    assert HardwareProfile.detect(cpus_limit=1).cpus == 1
    assert "usable cpu" in full.describe()


def test_session_gets_threads_from_profile(digits_model: Path) -> None:
    profile = HardwareProfile(cpus=1, logical_cpus=2, memory_bytes=2**30, arch="x86_64")
    sess, choice = create_session(digits_model, profile)
    assert choice.actual == sess.get_providers() and choice.actual[-1] == "CPUExecutionProvider"
    assert choice.intra_op_threads == 1
    assert "intra-op threads 1" in choice.describe()
    assert sess.run(["label"], {"X": np.zeros((1, 64), np.float32)})[0].shape == (1,)


def test_concurrency_plan_defaults_and_overrides(digits_model: Path) -> None:
    four = HardwareProfile(cpus=4, logical_cpus=4, memory_bytes=2**30, arch="x86_64")
    default = Concurrency.plan(four)
    assert (default.workers, default.intra_op_threads) == (4, 1)  # one single-threaded call per cpu
    assert "default: one call per usable cpu (4)" in default.describe()
    one = Concurrency.plan(four, 1)  # one call at a time on every cpu
    assert (one.workers, one.intra_op_threads) == (1, 4) and "--model-workers 1" in one.describe()
    assert (Concurrency.plan(four, 2).workers, Concurrency.plan(four, 2).intra_op_threads) == (2, 2)
    assert Concurrency.plan(four, 8).intra_op_threads == 1  # more calls than cpus: still one thread each
    shared = Concurrency.plan(four, intra_op_threads=4)
    assert (shared.workers, shared.intra_op_threads) == (4, 4) and "--intra-op-threads 4" in shared.describe()
    _, choice = create_session(digits_model, four, concurrency=Concurrency.plan(four, 2))
    assert choice.intra_op_threads == 2 and choice.concurrency is not None and choice.concurrency.workers == 2


def test_int8_quantization_is_cached_and_equivalent(squeezenet_model: Path, tmp_path: Path) -> None:
    out = quantize_int8(squeezenet_model, tmp_path)
    assert out.parent == tmp_path and out.name.endswith(".int8.onnx")
    mtime = out.stat().st_mtime_ns
    assert quantize_int8(squeezenet_model, tmp_path) == out and out.stat().st_mtime_ns == mtime
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    ref = ort.InferenceSession(str(squeezenet_model)).run(None, {"data_0": x})[0]
    q_sess = ort.InferenceSession(str(out))
    assert "ConvInteger" in {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    np.testing.assert_allclose(q_sess.run(None, {"data_0": x})[0], ref, atol=0.05)


def test_int8_leaves_models_without_quantizable_ops(digits_model: Path, tmp_path: Path) -> None:
    assert quantize_int8(digits_model, tmp_path) == digits_model


def test_strict_choice_refuses_missing_providers() -> None:
    with pytest.raises(ValueError, match="CUDAExecutionProvider not in this onnxruntime"):
        choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"], strict=True)
    assert choose_providers(["CPUExecutionProvider"], ["CPUExecutionProvider"], strict=True) == ["CPUExecutionProvider"]


class _SessionThatDropsTheFirstProvider(ort.InferenceSession):
    """A real session that reports what a GPU session reports when CUDA cannot start: its first
    provider missing from get_providers() (the one thing a CPU-only machine cannot make happen)."""

    def get_providers(self) -> list[str]:
        return super().get_providers()[1:]


def test_session_fallback_is_detected_from_the_running_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from simulators.models import build_digits_onnx

    model = build_digits_onnx(tmp_path / "m.onnx")
    profile = HardwareProfile.detect()
    monkeypatch.setattr(ort, "InferenceSession", _SessionThatDropsTheFirstProvider)
    asked = ["AzureExecutionProvider", "CPUExecutionProvider"]  # compiled into this onnxruntime, as CUDA would be
    _, choice = create_session(model, profile, asked)
    assert choice.actual == ["CPUExecutionProvider"] and choice.missing == ["AzureExecutionProvider"]
    assert "did not take AzureExecutionProvider" in caplog.text and "NOT AzureExecutionProvider" in choice.describe()
    with pytest.raises(ValueError, match="does not fall back"):
        create_session(model, profile, asked, strict=True)
