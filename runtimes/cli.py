"""`python -m runtimes`: serve a model, list execution providers, mint a token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from runtimes import __version__

EPILOG = """\
Keys and secrets come from the environment, never the command line:
  EDGEPORT_PRIMARY_KEY, EDGEPORT_SECONDARY_KEY   for --auth key
  EDGEPORT_TOKEN_SECRET                          for --auth token
AZUREML_MODEL_DIR is set to --model-dir for entry scripts (Model.get_model_path resolves under it).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtimes", description="Edgeport scoring runtime.")
    p.add_argument("--version", action="version", version=f"edgeport-runtime {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="serve one model over HTTP (/score, V2 REST) and V2 gRPC",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--model-dir", required=True, type=Path, help="folder holding the model file(s)")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--entry-script", type=Path, help="score.py with init() and run(data), relative to --source-dir")
    what.add_argument("--onnx", type=Path, help="ONNX model to serve without code, relative to --model-dir")
    s.add_argument("--source-dir", type=Path, help="folder of the entry script and its modules")
    s.add_argument(
        "--name", help="service/model name used by V2 routes and tokens (default: ONNX file stem or 'model')"
    )
    s.add_argument("--model-version", default="1", help="model version reported on V2 (default 1)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5001, help="HTTP port (default 5001)")
    s.add_argument("--grpc-port", type=int, default=5002, help="V2 gRPC port; 0 disables gRPC (default 5002)")
    s.add_argument(
        "--auth", choices=["none", "key", "token"], default="none", help="auth for scoring routes (default none)"
    )
    s.add_argument("--max-batch-size", type=int, default=0, help="enable dynamic batching up to N rows per model call")
    s.add_argument("--max-batch-delay-ms", type=float, default=5.0, help="longest wait to fill a batch (default 5 ms)")
    s.add_argument("--cpus", type=float, help="CPU quota of the service (caps onnxruntime's intra-op threads)")
    s.add_argument(
        "--model-workers",
        type=int,
        help="ONNX calls that may run at once on the model's session (default: one per usable CPU, "
        "best throughput under concurrent load; 1: one call at a time on every CPU, lowest latency for a lone client)",
    )
    s.add_argument(
        "--intra-op-threads",
        type=int,
        help="onnxruntime intra-op threads, shared by concurrent calls (default: usable CPUs / --model-workers)",
    )
    s.add_argument(
        "--execution-providers",
        help="comma list, e.g. CUDAExecutionProvider,CPUExecutionProvider (default: best available)",
    )
    s.add_argument(
        "--strict-providers",
        action="store_true",
        help="with --execution-providers: exit 1 unless the session really runs on every one asked for "
        "(default: warn and serve on what onnxruntime could start, CPU at worst)",
    )
    s.add_argument(
        "--quantize-int8", action="store_true", help="serve an int8 dynamically quantized copy of the ONNX model"
    )
    s.add_argument(
        "--max-body-bytes",
        type=int,
        default=100 * 2**20,
        help="largest request body; larger gets 413 (default 100 MiB). Large JSON numeric arrays are read "
        "straight into numpy; other JSON is refused (413) when its Python objects would take more than "
        "twice this (at least 64 MiB)",
    )
    s.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        help="seconds a client has to send a request line and headers once it starts; then 408 and close (default 15)",
    )
    s.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="seconds a connection may send nothing, between requests or inside a body, before it is closed; "
        "a gRPC connection without calls gets GOAWAY (default 60)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open HTTP connections at most; past it a new one gets 503 and is closed (default 1024)",
    )
    s.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve HTTPS, and TLS on the gRPC port")
    s.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub.add_parser("providers", help="print the onnxruntime execution providers available here, as JSON")
    t = sub.add_parser("token", help="mint a token for --auth token (secret read from an environment variable)")
    t.add_argument("--service", required=True, help="the service's --name")
    t.add_argument("--secret-env", default="EDGEPORT_TOKEN_SECRET", help="variable holding the secret")
    t.add_argument("--ttl", type=float, default=3600.0, help="seconds the token stays valid (default 3600)")
    return p


def _bad(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    from runtimes.auth import Authenticator
    from runtimes.config import ServeConfig

    model_dir: Path = args.model_dir
    if not model_dir.is_dir():
        return _bad(f"--model-dir {model_dir} is not a directory")
    onnx = args.onnx
    if args.entry_script is None and onnx is None:
        candidates = sorted(model_dir.glob("*.onnx"))
        if len(candidates) != 1:
            return _bad(
                "give --entry-script SCRIPT or --onnx FILE (the model dir does not hold exactly one .onnx file)"
            )
        onnx = Path(candidates[0].name)
    if args.entry_script is not None:
        script = (args.source_dir / args.entry_script) if args.source_dir else args.entry_script
        if not script.is_file():
            return _bad(f"--entry-script {script} does not exist")
    elif onnx.is_absolute() or not (model_dir / onnx).is_file():
        return _bad(f"--onnx {onnx} is not a file under --model-dir {model_dir}")
    if args.max_batch_size < 0 or args.max_batch_delay_ms < 0:
        return _bad("--max-batch-size and --max-batch-delay-ms must not be negative")
    if args.max_body_bytes <= 0:
        return _bad("--max-body-bytes must be positive")
    for flag, seconds in (("--header-timeout", args.header_timeout), ("--idle-timeout", args.idle_timeout)):
        if not seconds > 0 or seconds == float("inf"):
            return _bad(f"{flag} must be a positive, finite number of seconds, got {seconds}")
    if args.max_connections <= 0:
        return _bad("--max-connections must be positive")
    if (args.tls_cert is None) != (args.tls_key is None):
        return _bad("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        from runtimes.http.tls import server_context

        try:
            server_context(args.tls_cert, args.tls_key)  # a bad file is bad input: say so before starting
        except ValueError as exc:
            return _bad(str(exc))
    if args.cpus is not None and args.cpus <= 0:
        return _bad("--cpus must be positive")
    for flag, value in (("--model-workers", args.model_workers), ("--intra-op-threads", args.intra_op_threads)):
        if value is not None and value <= 0:
            return _bad(f"{flag} must be positive")
    for flag, port in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if not 0 <= port <= 65535 or (flag == "--port" and port == 0):
            return _bad(f"{flag} {port} is not a valid port")
    if args.quantize_int8 and args.entry_script is not None:
        return _bad("--quantize-int8 applies to --onnx models only")
    if args.strict_providers and not args.execution_providers:
        return _bad("--strict-providers needs --execution-providers")
    name = args.name or (onnx.stem if onnx is not None else "model")
    try:
        auth = Authenticator(
            args.auth,
            name,
            keys=[os.environ.get("EDGEPORT_PRIMARY_KEY", ""), os.environ.get("EDGEPORT_SECONDARY_KEY", "")],
            secret=os.environ.get("EDGEPORT_TOKEN_SECRET"),
        )
    except ValueError as exc:
        return _bad(str(exc))
    providers = (
        [p.strip() for p in args.execution_providers.split(",") if p.strip()] if args.execution_providers else []
    )
    config = ServeConfig(
        model_dir=model_dir,
        entry_script=args.entry_script,
        source_dir=args.source_dir,
        onnx=onnx if args.entry_script is None else None,
        name=name,
        model_version=args.model_version,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port or None,
        auth=args.auth,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        cpus=args.cpus,
        execution_providers=providers,
        strict_providers=args.strict_providers,
        quantize_int8=args.quantize_int8,
        max_body_bytes=args.max_body_bytes,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        model_workers=args.model_workers,
        intra_op_threads=args.intra_op_threads,
    )
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from runtimes.server import serve

    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # plain asyncio still works, slower
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(config, auth))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 bad input, 1 failure)."""
    args = _parser().parse_args(argv)
    if args.command == "providers":
        from runtimes.tuning import available_providers

        print(json.dumps(available_providers()))
        return 0
    if args.command == "token":
        from runtimes.auth import mint_token

        secret = os.environ.get(args.secret_env)
        if not secret:
            return _bad(f"environment variable {args.secret_env} is not set")
        print(mint_token(secret, args.service, args.ttl))
        return 0
    return _serve(args)
