"""Micro-benchmark of the agents' gRPC channel: N mutual-TLS Connect streams to one real hub.

    python benchmarks/grpc_streams.py --streams 2000 --procs 2

Starts `python -m hub serve` on free loopback ports, enrolls N devices once (identities are
cached under benchmarks/results/grpc_streams_cache/ and reused by later runs, so repeated
runs measure connecting, not enrolling), then opens N real `agent.link.grpc.GrpcLink`
streams from --procs worker processes, all at once (a fleet starting together), retrying
with the agent daemon's backoff. Reports the seconds until every stream has its Welcome and
the hub's RSS before and after (total and per stream), prints the figures and writes JSON to
benchmarks/results/grpc_streams-<time>.json. Every process it starts is in its own session
and is killed (process group) on exit. --insecure measures the same without TLS; --bare sends
the streams to a bare grpc.aio server with the hub front's options and TLS setup instead (the floor).

Measured 2026-11-24 (2 cores shared with other benchmarks, load 2-8), 5,000 streams, 2 processes:
bare grpc.aio plain text 2.4 s, 25.6 KiB and 0.23 ms of server CPU per stream; bare grpc.aio
mutual TLS 9.4 s, 85.5 KiB, 0.76 ms; the hub (mutual TLS) 10.7 s, 92.5 KiB, 1.8 ms. 10,000 streams
from 4 processes: all up in 22 s with no retries, hub 1,016 MiB (94 KiB per stream). grpc core's
mutual TLS alone puts 10,000 streams past 600 MiB in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
PY = sys.executable


def free_port() -> int:
    """A free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def raise_fd_limit() -> None:
    """Soft open-files limit up to the hard one (each stream is a socket)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- enrollment (once per cache dir) ----


def _post_json(url: str, body: dict) -> dict:
    # The hub's admin token (main() reads it from the data dir once the hub is up).
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ.get('EDGEPORT_TOKEN', '')}"}
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return dict(json.loads(r.read()))


def enroll_missing(api: str, devices_dir: Path, count: int, workers: int = 8) -> int:
    """Enroll devices bench-00000.. that have no cached identity yet; returns how many were enrolled now."""
    from agent.link.enroll import enroll
    from protos.edgeport.v1 import agent_pb2

    hardware = agent_pb2.HardwareInventory()

    def one(i: int) -> int:
        name = f"bench-{i:05d}"
        folder = devices_dir / name
        if (folder / "identity.json").exists():
            return 0
        token = _post_json(f"http://{api}/api/v1/devices", {"name": name, "labels": {"bench": "grpc-streams"}})["token"]
        ident = enroll(api, token, folder, hardware)
        (folder / "identity.json").write_text(json.dumps({"device_id": ident.device_id, "hub": ident.hub}))
        return 1

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, range(count)))


# ---- worker: a slice of the streams in one process ----


async def _worker(grpc_address: str, folders: list[Path], hold_s: float, heartbeat_s: float, insecure: bool) -> None:
    from agent.daemon import RECONNECT_MAX_S
    from agent.link.base import LinkClosed
    from agent.link.grpc import GrpcLink
    from agent.state import Identity
    from hub.pki import certificate_sha256
    from protos.edgeport.v1 import agent_pb2

    raise_fd_limit()
    start = time.monotonic()
    up = 0
    attempts = 0
    links: list[GrpcLink] = []
    drains: list[asyncio.Task[None]] = []
    failures: dict[str, int] = {}  # why opens failed (first 80 characters of the reason), for the report

    async def drain(link: GrpcLink) -> None:
        """What a real agent does with its stream: ack each DesiredState (sequenced), heartbeat (seq 0)."""
        seq = 0

        async def beat() -> None:
            await asyncio.sleep(random.uniform(0, heartbeat_s))  # agents started together drift apart
            while True:
                await link.send(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(uptime_s=1)))
                await asyncio.sleep(heartbeat_s)

        beats = asyncio.create_task(beat()) if heartbeat_s > 0 else None
        with contextlib.suppress(LinkClosed):
            async for message in link.incoming():
                if message.WhichOneof("body") == "desired":
                    seq += 1
                    ack = agent_pb2.DesiredStateAck(revision=message.desired.revision)
                    await link.send(agent_pb2.AgentMessage(seq=seq, desired_ack=ack))
        if beats is not None:
            beats.cancel()

    async def connect(folder: Path) -> None:
        nonlocal up, attempts
        meta = json.loads((folder / "identity.json").read_text())
        credential = certificate_sha256((folder / "identity" / "device.crt").read_bytes()) if insecure else ""
        identity = Identity(meta["device_id"], hub=meta["hub"], grpc_address=grpc_address, credential=credential)
        delay = 1.0
        while True:
            attempts += 1
            link = GrpcLink(identity, folder / "identity", insecure=insecure)
            try:
                await link.open(agent_pb2.Hello(device_id=identity.device_id, agent_version="bench"))
            except LinkClosed as exc:
                if link.refused:
                    raise
                reason = str(exc).split(": ", 1)[-1][:80]
                failures[reason] = failures.get(reason, 0) + 1
                # The daemon's reconnect policy (agent/daemon.py _session_loop).
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            links.append(link)
            up += 1
            drains.append(asyncio.create_task(drain(link)))
            return

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            print(json.dumps({"up": up, "t": time.monotonic() - start, "attempts": attempts}), flush=True)

    reporter = asyncio.create_task(report())
    await asyncio.gather(*(connect(f) for f in folders))
    reporter.cancel()
    print(json.dumps({"done": up, "t": time.monotonic() - start, "attempts": attempts,
                      "rss": rss_bytes(os.getpid()), "failures": failures}), flush=True)  # fmt: skip
    await asyncio.sleep(hold_s)
    await asyncio.gather(*(link.close() for link in links))


# ---- bare server: grpc.aio with the hub front's options and TLS setup, and nothing else ----


async def _bare_server(port: int, pki: Path, insecure: bool) -> None:
    """What grpc.aio alone costs per stream: Hello in, Welcome out, then read until the agent goes."""
    import grpc
    from grpc import aio

    from hub.control.grpc_front import SERVER_OPTIONS
    from protos.edgeport.v1 import agent_pb2, agent_pb2_grpc

    class Bare(agent_pb2_grpc.AgentServiceServicer):
        async def Connect(self, requests, context):  # type: ignore[no-untyped-def]
            await anext(aiter(requests))
            yield agent_pb2.HubMessage(welcome=agent_pb2.Welcome())
            async for _ in requests:
                pass

    raise_fd_limit()
    server = aio.server(options=SERVER_OPTIONS)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(Bare(), server)
    if insecure:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        key, cert, ca = ((pki / n).read_bytes() for n in ("server.key", "server.crt", "ca.crt"))
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


# ---- parent ----


def _kill(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def run(args: argparse.Namespace) -> dict:
    cache = Path(args.cache)
    devices_dir = cache / "devices"
    devices_dir.mkdir(parents=True, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    log_path = cache / "hub.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child's output for its lifetime
    hub = subprocess.Popen(
        [PY, "-m", "hub", "serve", "--data-dir", str(cache / "hub"), "--port", str(port),
         "--grpc-port", str(grpc_port), *(["--insecure"] if args.insecure else [])],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    workers: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 60
        while "agents gRPC" not in log_path.read_text(errors="replace"):
            if time.monotonic() > deadline or hub.poll() is not None:
                raise RuntimeError(f"hub did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        os.environ["EDGEPORT_TOKEN"] = (cache / "hub" / "admin.token").read_text().strip()
        t0 = time.monotonic()
        enrolled = enroll_missing(f"127.0.0.1:{port}", devices_dir, args.streams)
        if enrolled:
            print(f"enrolled {enrolled} device(s) in {time.monotonic() - t0:.1f}s", flush=True)
        server = hub  # the process the agents' streams go to, measured
        if args.bare:
            grpc_port = free_port()
            server = subprocess.Popen(
                [PY, __file__, "--bare-server", str(grpc_port), "--pki", str(cache / "hub" / "pki"),
                 *(["--insecure"] if args.insecure else [])],
                stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
            )  # fmt: skip
            workers.append(server)  # killed with them
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the bare gRPC server did not start")
        time.sleep(1.0)
        rss_before = rss_bytes(server.pid)
        folders = [devices_dir / f"bench-{i:05d}" for i in range(args.streams)]
        slices = [folders[i :: args.procs] for i in range(args.procs)]
        start, cpu_start = time.monotonic(), cpu_seconds(server.pid)
        for part in slices:
            workers.append(subprocess.Popen(
                [PY, __file__, "--worker", f"127.0.0.1:{grpc_port}", "--hold", str(args.timeout + 60),
             "--heartbeat", str(args.heartbeat), *(["--insecure"] if args.insecure else []), *map(str, part)],
                stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
            ))  # fmt: skip
        done: dict[int, dict] = {}
        last: dict[int, dict] = {}
        peak = rss_before
        for w in workers:
            assert w.stdout is not None
            os.set_blocking(w.stdout.fileno(), False)
        while len(done) < len(slices) and time.monotonic() - start < args.timeout:
            time.sleep(0.2)
            peak = max(peak, rss_bytes(server.pid))
            for i, w in enumerate(workers):
                if w is server:
                    continue
                assert w.stdout is not None
                for line in w.stdout.readlines():
                    msg = json.loads(line)
                    last[i] = msg
                    if "done" in msg:
                        done[i] = msg
                if w.poll() is not None and i not in done:
                    raise RuntimeError(f"worker {i} exited with {w.returncode}")
        connect_s = time.monotonic() - start if len(done) == len(slices) else float("nan")
        hub_cpu_s = cpu_seconds(server.pid) - cpu_start
        up = sum(m.get("done", m.get("up", 0)) for m in {**last, **done}.values())
        time.sleep(args.settle)  # let the hub finish writing what the Hellos caused
        rss_after = rss_bytes(server.pid)
        peak = max(peak, rss_after)
        for w in workers:  # every agent goes away: what does the hub keep?
            if w is not server:
                _kill(w)
        time.sleep(5)
        rss_gone = rss_bytes(server.pid)
        result = {
            "streams": args.streams, "procs": args.procs, "up": up, "connect_s": round(connect_s, 2),
            "attempts": sum(m.get("attempts", 0) for m in {**last, **done}.values()),
            "hub_cpu_s": round(hub_cpu_s, 1), "hub_cpu_ms_per_stream": round(1000 * hub_cpu_s / max(up, 1), 2),
            "failures": [m.get("failures", {}) for m in done.values()],
            "hub_rss_before_mib": round(rss_before / 2**20, 1), "hub_rss_after_mib": round(rss_after / 2**20, 1),
            "hub_rss_peak_mib": round(peak / 2**20, 1), "hub_rss_disconnected_mib": round(rss_gone / 2**20, 1),
            "hub_kib_per_stream": round((rss_after - rss_before) / 1024 / max(up, 1), 1),
            "worker_kib_per_stream": round(sum(m.get("rss", 0) for m in done.values()) / 1024 / max(up, 1), 1),
            "tls": not args.insecure, "bare": args.bare, "label": args.label, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }  # fmt: skip
        return result
    finally:
        for w in workers:
            _kill(w)
        _kill(hub)
        log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2, help="worker processes opening the streams (default 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on connecting after this many seconds")
    ap.add_argument("--settle", type=float, default=12.0, help="seconds between all-connected and the RSS reading")
    ap.add_argument("--heartbeat", type=float, default=10.0, help="seconds between each stream's heartbeats (0: none)")
    ap.add_argument("--insecure", action="store_true", help="plain-text gRPC (to see what TLS costs)")
    ap.add_argument("--repeat", type=int, default=1, help="runs (the median is reported)")
    ap.add_argument("--label", default="", help="a note stored with the result")
    ap.add_argument("--cache", default=str(RESULTS / "grpc_streams_cache"), help="hub data + enrolled identities")
    ap.add_argument("--bare", action="store_true", help="streams to a bare grpc.aio server (same options), not the hub")
    ap.add_argument("--worker", metavar="GRPC_ADDRESS", help=argparse.SUPPRESS)
    ap.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    ap.add_argument("--hold", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("folders", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bare_server:
        asyncio.run(_bare_server(args.bare_server, Path(args.pki), args.insecure))
        return 0
    if args.worker:
        folders = [Path(f) for f in args.folders]
        asyncio.run(_worker(args.worker, folders, args.hold, args.heartbeat, args.insecure))
        return 0
    results = []
    for i in range(args.repeat):
        r = run(args)
        results.append(r)
        print(json.dumps(r), flush=True)
        if i + 1 < args.repeat:
            time.sleep(5)  # let TIME_WAIT sockets and the other runs' load settle a little
    keys = ("connect_s", "hub_rss_after_mib", "hub_kib_per_stream", "worker_kib_per_stream")
    median = {k: sorted(r[k] for r in results)[len(results) // 2] for k in keys}
    summary = {"runs": results, "median": median}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"grpc_streams-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"{args.streams} streams / {args.procs} procs: connect {median['connect_s']} s, hub RSS "
          f"{median['hub_rss_after_mib']} MiB ({median['hub_kib_per_stream']} KiB/stream), worker "
          f"{median['worker_kib_per_stream']} KiB/stream (median of {len(results)}) -> {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
