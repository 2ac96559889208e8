"""The one core every front (HTTP v1, V2 REST, V2 gRPC) calls: readiness, metadata, score, infer.

Fast path: a model whose warm call costs less than `inline_max_ms` runs inline on the event loop
(a thread hop costs more than the model); larger ONNX models run on a pool of
`backend.concurrency.workers` threads (default one per CPU, each call single-threaded: see
tuning.Concurrency) so the loop keeps answering health checks and concurrent requests use every
core; entry scripts always run on one thread of their own (like Azure ML's single worker, scripts
need not be thread-safe). With batching on, tensor requests go through the Batcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from runtimes import __version__
from runtimes.backends.base import V1Request, V1Response
from runtimes.backends.entry_script import EntryScriptBackend
from runtimes.backends.onnx import OnnxBackend
from runtimes.batching import Batcher
from runtimes.config import ServeConfig
from runtimes.errors import BadRequest, NotFound, NotReady
from runtimes.metrics import Metrics
from runtimes.v2.types import InferRequest, InferResponse

EXTENSIONS = ["binary_tensor_data", "model_metadata", "health"]


class DataPlane:
    """Holds the backend once init() finished and answers every protocol-independent question."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.name = config.name
        self.version = config.model_version
        self.backend: OnnxBackend | EntryScriptBackend | None = None
        self.inline = False
        self.batcher: Batcher | None = None
        # One thread for init() and entry scripts: scripts are not assumed thread-safe.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # ONNX calls (session.run is thread-safe): sized in set_backend from the session's plan.
        self.model_executor = self.executor

    # -- lifecycle -------------------------------------------------------------------------------
    def set_backend(self, backend: OnnxBackend | EntryScriptBackend) -> None:
        """Called once init() succeeded: from now on the service is ready."""
        if isinstance(backend, OnnxBackend):
            self.metrics.execution_providers = list(backend.choice.actual)
            self.inline = backend.cost_s * 1e3 < self.config.inline_max_ms and not self.config.max_batch_size
            if not self.inline and backend.concurrency.workers > 1:
                self.model_executor = ThreadPoolExecutor(
                    max_workers=backend.concurrency.workers, thread_name_prefix="onnx"
                )
            if self.config.max_batch_size:
                self.batcher = Batcher(
                    backend,
                    self.config.max_batch_size,
                    self.config.max_batch_delay_ms / 1e3,
                    self.model_executor,
                    self.metrics,
                )
        self.backend = backend

    def shutdown(self) -> None:
        """Stop the worker threads without waiting for queued calls (the process is exiting)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.model_executor is not self.executor:
            self.model_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        """True once init() has finished."""
        return self.backend is not None

    def _require_ready(self) -> OnnxBackend | EntryScriptBackend:
        backend = self.backend
        if backend is None:
            raise NotReady("the model is still loading (init() has not finished)")
        return backend

    # -- metadata --------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        """V2 server metadata."""
        return {"name": "edgeport-runtime", "version": __version__, "extensions": EXTENSIONS}

    def find_model(self, name: str, version: str | None) -> OnnxBackend | EntryScriptBackend:
        """The backend for (name, version) or NotFound/NotReady."""
        if name != self.name:
            raise NotFound(f"unknown model '{name}'; this runtime serves '{self.name}'")
        if version not in (None, "", self.version):
            raise NotFound(f"model '{name}' has no version '{version}'; it serves version '{self.version}'")
        return self._require_ready()

    def tensor_model(self, name: str, version: str | None) -> OnnxBackend:
        """The ONNX backend for V2 inference; BadRequest when the service runs an entry script."""
        backend = self.find_model(name, version)
        if not isinstance(backend, OnnxBackend):
            raise BadRequest(f"model '{name}' runs an entry script; V2 infer needs an ONNX model (use POST /score)")
        return backend

    def model_ready(self, name: str, version: str | None) -> bool:
        """V2 model readiness (NotFound for an unknown model)."""
        if name != self.name or version not in (None, "", self.version):
            raise NotFound(
                f"unknown model '{name}' version '{version}'; "
                f"this runtime serves '{self.name}' version '{self.version}'"
            )
        return self.ready

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """V2 model metadata."""
        backend = self.find_model(name, version)
        meta: dict[str, Any] = {"name": self.name, "versions": [self.version], "platform": backend.platform}
        if isinstance(backend, OnnxBackend):
            meta["inputs"] = [s.as_json() for s in backend.inputs]
            meta["outputs"] = [s.as_json() for s in backend.outputs]
            # an extension field (REST only): what the session really runs on, best first
            meta["execution_providers"] = list(backend.choice.actual)
        else:
            meta["inputs"], meta["outputs"] = [], []
        return meta

    # -- inference -------------------------------------------------------------------------------
    def infer(self, name: str, version: str | None, req: InferRequest) -> InferResponse | Awaitable[InferResponse]:
        """V2 inference: the response now when the model runs inline, else an awaitable."""
        backend = self.tensor_model(name, version)
        backend.check(req.inputs, req.outputs)
        if self.inline:
            started = time.perf_counter()
            outputs = backend.predict(req.inputs, req.outputs)
            self.metrics.model_time.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(_rows(req.inputs))
            return InferResponse(self.name, self.version, outputs, req.id)
        return self._infer_async(backend, req)

    async def _infer_async(self, backend: OnnxBackend, req: InferRequest) -> InferResponse:
        if self.batcher is not None:
            outputs = await self.batcher.submit(req.inputs, req.outputs)
        else:
            started = time.perf_counter()
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.model_executor, backend.predict, req.inputs, req.outputs
            )
            self.metrics.model_time.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(_rows(req.inputs))
        return InferResponse(self.name, self.version, outputs, req.id)

    def score(self, req: V1Request) -> V1Response | Awaitable[V1Response]:
        """`POST /score` (and other methods for rawhttp scripts)."""
        backend = self._require_ready()
        if isinstance(backend, EntryScriptBackend):
            return self._score_script(backend, req)
        if req.method != "POST":
            raise BadRequest('use POST /score with a JSON body {"data": ...}')
        inputs = backend.v1_inputs(req.body, self.config.max_json_objects_bytes)
        backend.check(inputs)
        if self.inline:
            started = time.perf_counter()
            outputs = backend.predict(inputs)
            spent = time.perf_counter() - started
            self.metrics.model_time.observe(spent)
            self.metrics.batch_size.observe(_rows(inputs))
            return V1Response(200, orjson.dumps(outputs, option=orjson.OPT_SERIALIZE_NUMPY), run_ms=spent * 1e3)
        return self._score_async(backend, inputs)

    async def _score_async(self, backend: OnnxBackend, inputs: dict[str, Any]) -> V1Response:
        started = time.perf_counter()
        resp = await self._infer_async(backend, InferRequest(inputs))
        spent = time.perf_counter() - started
        return V1Response(200, orjson.dumps(resp.outputs, option=orjson.OPT_SERIALIZE_NUMPY), run_ms=spent * 1e3)

    async def _score_script(self, backend: EntryScriptBackend, req: V1Request) -> V1Response:
        resp = await asyncio.get_running_loop().run_in_executor(self.executor, backend.score, req)
        self.metrics.model_time.observe(resp.run_ms / 1e3)
        return resp


def _rows(inputs: dict[str, Any]) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1
