"""Micro-benchmark of the agents' gRPC channel per message: CPU per round trip on N sparse mutual-TLS streams.

    python benchmarks/grpc_messages.py --streams 1000 --rounds 10 --repeat 3

A bare grpc.aio server with the hub front's channel options (`hub.control.grpc_front.SERVER_OPTIONS`) and
one client process holding N channels with the agent link's options (`agent.link.grpc`), mutual TLS from a
throwaway CA made as the hub makes its own (`hub.pki`). Each stream sends a 200-byte message after a quiet
spell of 0.3-1.5 s and reads a 40-byte reply, ROUNDS times: agents report now and then, never in bulk. CPU
seconds of both processes are read from /proc over the rounds (connecting and one warm-up round excluded)
and given per round trip, for the options as shipped and for each variant that changes one of them, run
in turn so that a noisy machine hits them alike; medians over --repeat. JSON goes to
benchmarks/results/grpc_messages.json (--json).

Measured 2026-12-02 on 2 cores, 1,000 streams x 10 round trips, medians of three runs each: with BDP
probing (grpc's default) the server spent 539 us and the client 596 us of CPU per round trip; without it
(as shipped) 334 and 417 us, 38% and 30% less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grpc_streams import cpu_seconds, free_port, raise_fd_limit  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = REPO / "benchmarks" / "results"
PY = sys.executable
METHOD = "/edgeport.bench.Echo/Chat"
REQUEST, REPLY = b"s" * 200, b"a" * 40  # about a status report and an ack
QUIET_S = (0.3, 1.5)

# name -> (option, value) set on both ends on top of what ships; None: as shipped.
VARIANTS: dict[str, tuple[str, int] | None] = {
    "as shipped": None,
    "BDP probe on (grpc's default)": ("grpc.http2.bdp_probe", 1),
}


def _identity(data: bytes) -> bytes:
    return data


def _options(shipped: list[tuple[str, Any]], change: tuple[str, int] | None) -> list[tuple[str, Any]]:
    if change is None:
        return list(shipped)
    return [(k, v) for k, v in shipped if k != change[0]] + [change]


def make_pki(folder: Path) -> dict[str, str]:
    """Server and client key/certificate PEM files under `folder`, signed by a hub CA (hub.pki)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from hub.pki import CertificateAuthority

    ca = CertificateAuthority(folder / "ca")
    server_key, server_crt = ca.server_credentials()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-device")])
    ).sign(key, hashes.SHA256())
    client_crt = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), "bench-device").pem
    client_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {"ca": ca.ca_pem, "server_key": server_key, "server_crt": server_crt,
             "client_key": client_key, "client_crt": client_crt}
    paths = {}
    for name, pem in files.items():
        (folder / f"{name}.pem").write_bytes(pem)
        paths[name] = str(folder / f"{name}.pem")
    return paths


def _pem(pki: dict[str, str], name: str) -> bytes:
    return Path(pki[name]).read_bytes()


async def _serve(port: int, pki: dict[str, str], change: tuple[str, int] | None) -> None:
    import grpc
    from grpc import aio

    from hub.control.grpc_front import SERVER_OPTIONS

    async def chat(requests: Any, context: Any) -> Any:
        async for _ in requests:
            yield REPLY

    handler = grpc.method_handlers_generic_handler(
        "edgeport.bench.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(chat, _identity, _identity)}
    )
    server = aio.server(options=_options(SERVER_OPTIONS, change))
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(_pem(pki, "server_key"), _pem(pki, "server_crt"))], root_certificates=_pem(pki, "ca"),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print("UP", flush=True)
    await server.wait_for_termination()


async def _client(port: int, pki: dict[str, str], change: tuple[str, int] | None, streams: int, rounds: int) -> None:
    import grpc
    from grpc import aio

    from agent.link.grpc import _CHANNEL_OPTIONS

    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem(pki, "ca"), private_key=_pem(pki, "client_key"),
        certificate_chain=_pem(pki, "client_crt"),
    )
    options = _options(_CHANNEL_OPTIONS, change)
    channels = [aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) for _ in range(streams)]
    calls = [ch.stream_stream(METHOD, request_serializer=_identity, response_deserializer=_identity)()
             for ch in channels]
    await asyncio.gather(*(c.write(REQUEST) for c in calls))  # connect and warm up: not measured
    await asyncio.gather(*(c.read() for c in calls))
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def talk(call: Any) -> None:
        for _ in range(rounds):
            await asyncio.sleep(random.uniform(*QUIET_S))
            await call.write(REQUEST)
            await call.read()

    await asyncio.gather(*(talk(c) for c in calls))
    print("DONE", flush=True)
    for ch in channels:
        await ch.close()


def _expect(proc: subprocess.Popen[str], word: str, timeout: float) -> None:
    """Wait for `word` on a line of the process's output (each process prints one line at a time)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {word.lower()} line never came: the process exited with {proc.wait()}")
        if line.strip() == word:
            return
    raise RuntimeError(f"no {word} within {timeout:.0f}s")


def run_once(variant: str, args: argparse.Namespace, pki: dict[str, str]) -> dict[str, Any]:
    """One measured run of one variant: server and client processes, CPU per round trip."""
    port = free_port()
    change = json.dumps(VARIANTS[variant])
    common = ["--pki", json.dumps(pki), "--change", change, "--port", str(port)]
    procs: list[subprocess.Popen[str]] = []
    try:
        server = subprocess.Popen([PY, __file__, "--role", "server", *common], stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)
        procs.append(server)
        _expect(server, "UP", 60)
        client = subprocess.Popen([PY, __file__, "--role", "client", *common, "--streams", str(args.streams),
                                   "--rounds", str(args.rounds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, start_new_session=True)
        procs.append(client)
        _expect(client, "READY", 300)
        before = cpu_seconds(server.pid), cpu_seconds(client.pid)
        start = time.monotonic()
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        _expect(client, "DONE", 120 + args.rounds * QUIET_S[1] * 4)
        wall = time.monotonic() - start
        after = cpu_seconds(server.pid), cpu_seconds(client.pid)
        trips = args.streams * args.rounds
        return {"variant": variant, "streams": args.streams, "rounds": args.rounds, "wall_s": round(wall, 2),
                "server_us_per_round_trip": round((after[0] - before[0]) / trips * 1e6, 1),
                "client_us_per_round_trip": round((after[1] - before[1]) / trips * 1e6, 1)}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000, help="concurrent streams, one channel each (default 1000)")
    ap.add_argument("--rounds", type=int, default=10, help="round trips per stream (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each variant, in turn (default 3)")
    ap.add_argument("--json", type=Path, default=RESULTS / "grpc_messages.json", help="where the figures go "
                    "(default benchmarks/results/grpc_messages.json)")
    ap.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    ap.add_argument("--change", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        pki, change = json.loads(args.pki), json.loads(args.change)
        change = tuple(change) if change else None
        raise_fd_limit()
        if args.role == "server":
            asyncio.run(_serve(args.port, pki, change))
        else:
            asyncio.run(_client(args.port, pki, change, args.streams, args.rounds))
        return 0
    for name in ("streams", "rounds", "repeat"):
        if getattr(args, name) < 1:
            print(f"error: --{name} {getattr(args, name)}: must be at least 1", file=sys.stderr)
            return 2
    raise_fd_limit()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.streams + 100 > limit:
        print(f"error: --streams {args.streams}: one socket each, and a process may open {limit:,} files",
              file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="grpc-messages-") as tmp:
        pki = make_pki(Path(tmp))
        for i in range(args.repeat):
            for variant in VARIANTS:
                r = run_once(variant, args, pki)
                runs.append(r)
                print(f"run {i + 1}, {variant}: server {r['server_us_per_round_trip']:.0f} us, client "
                      f"{r['client_us_per_round_trip']:.0f} us of CPU per round trip ({r['wall_s']:.1f}s)", flush=True)
    print(f"\nmedians over {args.repeat} run(s), {args.streams:,} streams x {args.rounds} round trips, mutual TLS:")
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        server = statistics.median(r["server_us_per_round_trip"] for r in mine)
        client = statistics.median(r["client_us_per_round_trip"] for r in mine)
        summary[variant] = {"server_us_per_round_trip": server, "client_us_per_round_trip": client}
        print(f"  {variant:<32} server {server:6.0f} us   client {client:6.0f} us")
    out = args.json
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "benchmarks/grpc_messages.py", "medians": summary, "runs": runs},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
