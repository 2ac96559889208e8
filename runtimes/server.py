"""Wires one runtime process: HTTP and gRPC fronts listen, the backend initializes, signals stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from runtimes.auth import Authenticator
from runtimes.backends import EntryScriptBackend, OnnxBackend
from runtimes.config import ServeConfig
from runtimes.dataplane import DataPlane
from runtimes.errors import InitFailed
from runtimes.http.app import HttpApp
from runtimes.http.protocol import Connections, HttpLimits, HttpProtocol
from runtimes.http.tls import TlsListener, server_context
from runtimes.metrics import Metrics
from runtimes.openapi import onnx_schemas, openapi3, swagger2
from runtimes.tuning import Concurrency, HardwareProfile, quantize_int8

log = logging.getLogger("runtimes")


def load_backend(config: ServeConfig, profile: HardwareProfile) -> OnnxBackend | EntryScriptBackend:
    """Build the backend the config asks for (runs on the model thread; InitFailed on any failure)."""
    if config.entry_script is not None:
        # --entry-script is relative to --source-dir; without one, the script's own folder is the source.
        budget = config.max_json_objects_bytes
        if config.source_dir is not None:
            return EntryScriptBackend(config.entry_script, config.source_dir, budget)
        return EntryScriptBackend(Path(config.entry_script.name), config.entry_script.parent, budget)
    assert config.onnx is not None
    path = config.model_dir / config.onnx
    if config.quantize_int8:
        if not path.is_file():
            raise InitFailed(f"ONNX model not found: {path}")
        try:
            path = quantize_int8(path)
        except Exception as exc:
            raise InitFailed(f"int8 quantization of {path} failed: {exc}") from None
        log.info("using int8 dynamically quantized variant %s", path)
    return OnnxBackend(
        path,
        profile,
        config.execution_providers or None,
        Concurrency.plan(profile, config.model_workers, config.intra_op_threads),
        config.strict_providers,
    )


def _documents(dp: DataPlane, auth: Authenticator) -> Any:
    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        backend = dp.backend
        ins: dict[str, Any] | None
        outs: dict[str, Any] | None
        if isinstance(backend, OnnxBackend):
            ins, outs = onnx_schemas(backend.inputs, backend.outputs)
        elif isinstance(backend, EntryScriptBackend):
            ins, outs = backend.input_schema, backend.output_schema
        else:
            ins = outs = None
        return swagger2(dp.name, ins, outs, auth.enabled), openapi3(dp.name, ins, outs, auth.enabled)

    return build


async def serve(config: ServeConfig, auth: Authenticator) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code (1 when init() or a bind fails)."""
    os.environ.setdefault("AZUREML_MODEL_DIR", str(config.model_dir.resolve()))
    profile = HardwareProfile.detect(config.cpus)
    log.info("hardware: %s", profile.describe())
    metrics = Metrics(config.name)
    dp = DataPlane(config, metrics)
    app = HttpApp(dp, auth, metrics, _documents(dp, auth))
    loop = asyncio.get_running_loop()
    limits = HttpLimits(config.max_body_bytes, config.header_timeout, config.idle_timeout, config.max_connections)
    connections = Connections(limits)
    metrics.connections = connections
    _raise_open_files_limit(config.max_connections)
    tls_context = None
    if config.tls_cert is not None and config.tls_key is not None:
        try:
            tls_context = server_context(config.tls_cert, config.tls_key)
        except ValueError as exc:
            log.error("%s", exc)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
    http_server: asyncio.Server | TlsListener
    try:
        if tls_context is not None:
            http_server = TlsListener.bind(
                config.host, config.port, tls_context, lambda: HttpProtocol(app.handle, connections), connections
            )
            http_server.start()
            connections.also_sweep.append(http_server.sweep)
        else:
            http_server = await loop.create_server(
                lambda: HttpProtocol(app.handle, connections),
                config.host,
                config.port,
                reuse_address=True,
                backlog=2048,
            )
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc.strerror or exc)
        return 1
    sweeper = asyncio.ensure_future(connections.sweep_forever())
    grpc_server = None
    if config.grpc_port:
        import grpc

        from runtimes.v2.grpc import GrpcInferenceService

        grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_body_bytes),
                ("grpc.max_send_message_length", 2**31 - 1),
                # the HTTP front's idle timeout, for gRPC: a connection without calls gets GOAWAY
                ("grpc.max_connection_idle_ms", int(config.idle_timeout * 1000)),
            ]
        )
        grpc_server.add_generic_rpc_handlers((GrpcInferenceService(dp, auth).handler(),))
        address = f"{config.host}:{config.grpc_port}"
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
            bound = grpc_server.add_secure_port(address, credentials)
        else:
            bound = grpc_server.add_insecure_port(address)
        if bound == 0:
            log.error("cannot listen on %s:%s for gRPC", config.host, config.grpc_port)
            http_server.close()
            return 1
        await grpc_server.start()
    log.info(
        "listening: %s://%s:%s (v1 /score, V2 REST)%s; auth %s; initializing model...",
        "https" if tls_context else "http",
        config.host,
        config.port,
        f", gRPC{' (TLS)' if tls_context else ''} {config.host}:{config.grpc_port}" if config.grpc_port else "",
        config.auth,
    )

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    init = loop.run_in_executor(dp.executor, load_backend, config, profile)
    waiter = asyncio.ensure_future(stop.wait())
    first: list[asyncio.Future[Any]] = [init, waiter]  # a Future[Backend] and a Task[bool]
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if init.done():
        try:
            backend = init.result()
        except InitFailed as exc:
            log.error("%s", exc)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            code = 1
        else:
            dp.set_backend(backend)
            _log_ready(dp, backend)
            await waiter
    log.info("stopping")
    sweeper.cancel()
    http_server.close()
    for conn in list(connections.open):
        conn._close()
    if grpc_server is not None:
        await grpc_server.stop(grace=0.5)  # short: the agent waits on our exit
    if isinstance(http_server, asyncio.Server):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http_server.wait_closed(), 2.0)
    dp.shutdown()
    return code


def _raise_open_files_limit(max_connections: int) -> None:
    """Lift the soft open-files limit so --max-connections (plus files and the gRPC port) fits."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max_connections + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning(
                    "open-files limit %d is below --max-connections %d + 256; connections may fail first",
                    new,
                    max_connections,
                )
    except (ImportError, ValueError, OSError) as exc:  # not POSIX, or not allowed
        log.warning("cannot raise the open-files limit: %s", exc)


def _log_ready(dp: DataPlane, backend: OnnxBackend | EntryScriptBackend) -> None:
    if isinstance(backend, OnnxBackend):
        log.info("%s", backend.choice.describe())
        mode = "inline on the event loop" if dp.inline else f"on worker threads: {backend.concurrency.describe()}"
        batching = (
            f"dynamic batching up to {dp.config.max_batch_size} rows / {dp.config.max_batch_delay_ms} ms"
            if dp.batcher
            else "no batching"
        )
        log.info(
            "model '%s' v%s ready: warm call %.3f ms, runs %s, %s",
            dp.name,
            dp.version,
            backend.cost_s * 1e3,
            mode,
            batching,
        )
    else:
        log.info("model '%s' v%s ready: entry script %s (%s)", dp.name, dp.version, backend.script.name, backend.style)
