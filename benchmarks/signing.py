"""What signed desired state costs: per manifest in process, and a fleet's deploy -> all Healthy.

1. In process, on a desired state like a deploy's (one service, a model of a few files): the hub's
   serialize + Ed25519 sign (hub/signing.py) and the agent's verify + parse (agent/trust.py, OpenSSL
   through agent/ed25519.py), in microseconds (median of rounds).
2. A fleet of N real agents (simulators.fleet, in this process, one event loop, gRPC with mutual TLS)
   against a real `hub serve`: rounds of `hub deploy` (each a new generation with a model no device holds)
   timed until every device reports Healthy, alternating between the product as it is (every agent
   verifies every state) and the same run with the agents' verification replaced, in this process only,
   by a plain parse: what the deploy would cost without signatures on the agent side. The hub signs in
   both (its share, N signatures per deploy, is part 1's figure times N). Rounds alternate so that a
   noisy machine weighs on both alike; medians are quoted, of the wall time and of the CPU seconds the
   fleet (this process) and the hub spent on each deploy, which a busy machine disturbs less.

    python benchmarks/signing.py                       # 1,000 agents, 3 rounds each way
    python benchmarks/signing.py --agents 200 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent import trust  # noqa: E402
from agent.state import AgentState  # noqa: E402
from hub.pki import CertificateAuthority  # noqa: E402
from hub.signing import ManifestSigner  # noqa: E402
from protos.edgeport.v1 import agent_pb2  # noqa: E402
from simulators.models import build_digits_onnx  # noqa: E402

PY = sys.executable
HEALTHY = 4  # edgeport.v1.Phase.HEALTHY, as the hub stores it
T = TypeVar("T")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 1. per manifest, in process ----


def _deploy_like_state(device: str, revision: int) -> agent_pb2.DesiredState:
    """A DesiredState shaped like a deploy's: one service, a model of 3 files, auth keys, a registry."""
    manifest = agent_pb2.ServiceManifest(name="digits", generation=revision, port=0, health_timeout_s=60,
                                         registry="http://127.0.0.1:7070")  # fmt: skip
    model = manifest.models.add(name="digits", version=3, repository="models/digits", reference="3",
                                manifest_digest="sha256:" + "1f" * 32)  # fmt: skip
    for i, name in enumerate(("model.onnx", "labels.json", "README.md")):
        model.files.add(path=name, digest="sha256:" + f"{i:02x}" * 32, size=10_000 * (i + 1))
    manifest.runtime.onnx_file = "model.onnx"
    manifest.auth.mode, manifest.auth.primary_key, manifest.auth.secondary_key = "key", "p" * 43, "s" * 43
    manifest.environment.digest = "sha256:" + "ee" * 32
    return agent_pb2.DesiredState(revision=revision, device_id=device, services=[manifest])


def per_manifest(work: Path, rounds: int = 7, per_round: int = 1000) -> dict[str, Any]:
    """Median microseconds per manifest: hub sign (incl. serialize), agent verify (incl. parse), plain parse."""
    signer = ManifestSigner(CertificateAuthority(work / "pki"))
    state = AgentState(work / "agent")
    (work / "ca.crt").write_bytes(signer.ca.ca_pem)
    checker = trust.DesiredStateTrust(state, "dev-1", work / "ca.crt")
    desired = _deploy_like_state("dev-1", 5)
    signed = signer.sign(desired)
    checker.verify(signed, 0)  # takes up the key (one X.509 check), as enrollment would
    sign_us, verify_us, parse_us = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            signer.sign(desired)
        sign_us.append((time.perf_counter() - t) / per_round * 1e6)
        t = time.perf_counter()
        for _ in range(per_round):
            checker.verify(signed, 0)
        verify_us.append((time.perf_counter() - t) / per_round * 1e6)
        t = time.perf_counter()
        for _ in range(per_round):
            agent_pb2.DesiredState.FromString(signed.desired_state)
        parse_us.append((time.perf_counter() - t) / per_round * 1e6)
    state.close()
    return {
        "payload_bytes": len(signed.desired_state),
        "envelope_bytes": len(signed.SerializeToString()),
        "hub_sign_us": statistics.median(sign_us),
        "agent_verify_us": statistics.median(verify_us),
        "agent_parse_only_us": statistics.median(parse_us),
    }


# ---- 2. a fleet's deploys ----


def _unchecked_verify(
    self: trust.DesiredStateTrust, signed: agent_pb2.SignedDesiredState, applied_revision: int
) -> agent_pb2.DesiredState:
    """The comparison's stand-in for verification: parse only (this benchmark's process, never the product)."""
    return agent_pb2.DesiredState.FromString(signed.desired_state)


class FleetLoop:
    """A SimulatedFleet on its own event loop in a thread; this thread runs the hub CLI and reads counts."""

    def __init__(self, options: Any) -> None:
        from simulators.fleet import SimulatedFleet

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet", daemon=True)
        self.thread.start()
        self.fleet = SimulatedFleet(options)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.fleet.stop(), timeout=300)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class Bench:
    """One hub, one fleet, rounds of deploys."""

    def __init__(self, work: Path, agents: int, timeout: float) -> None:
        self.work, self.agents, self.timeout = work, agents, timeout
        self.port = _free_port()
        self.hub_proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ)
        self.label = "bench=signing"

    def start_hub(self) -> None:
        log = open(self.work / "hub.log", "ab")  # noqa: SIM115 - the child's output for its lifetime
        self.hub_proc = subprocess.Popen(
            [PY, "-m", "hub", "serve", "--data-dir", str(self.work / "hub"), "--port", str(self.port),
             "--grpc-port", str(_free_port())],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        self._wait("hub up", lambda: self._up() or "starting", 60)
        token_file = self.work / "hub" / "admin.token"  # a hub with API tokens writes its first admin token here
        if token_file.exists():
            self.env["EDGEPORT_TOKEN"] = os.environ["EDGEPORT_TOKEN"] = token_file.read_text().strip()

    def _up(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=2):
                return True
        except OSError as exc:
            return getattr(exc, "code", 0) in (401, 404)  # answering: up (a route we may not read is fine)

    def hub(self, *args: str) -> str:
        done = subprocess.run([PY, "-m", "hub", "--hub", f"http://127.0.0.1:{self.port}", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=600, env=self.env)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"hub {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def db(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """A read-only count from the hub database (measurement only; polling the API would load the hub)."""
        conn = sqlite3.connect(f"file:{self.work / 'hub' / 'hub.db'}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute(sql, params).fetchone()[0])
        finally:
            conn.close()

    def _wait(self, what: str, check: Callable[[], object], timeout: float) -> float:
        start, last = time.monotonic(), 0.0
        while True:
            value = check()
            if value is True:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what}: not done after {timeout:.0f}s ({value})")
            if time.monotonic() - last > 15:
                print(f"    ... {what}: {value}", flush=True)
                last = time.monotonic()
            time.sleep(0.25)

    def model(self, tag: str) -> str:
        """A digits variant no device holds yet (other bytes, another digest), registered."""
        import onnx

        model = onnx.load(str(self.work / "digits" / "model.onnx"))
        model.doc_string = f"signing benchmark, round {tag}"
        folder = self.work / f"digits-{tag}"
        folder.mkdir()
        onnx.save(model, str(folder / "model.onnx"))
        self.hub("model", "register", "-n", "digits", "-p", str(folder))
        return "digits"

    def hub_cpu(self) -> float:
        """CPU seconds the hub process has used so far."""
        assert self.hub_proc is not None
        with open(f"/proc/{self.hub_proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def deploy(self, round_no: int, version: int) -> tuple[float, float, float]:
        """Deploy (round 0) or update the service to model version `version`: (seconds until all Healthy,
        CPU seconds of this process (the fleet), CPU seconds of the hub) over it."""
        self.model(str(round_no))
        fleet_cpu, hub_cpu = time.process_time(), self.hub_cpu()
        start = time.monotonic()
        if round_no == 0:
            self.hub("deploy", "-n", "signed", "-m", f"digits:{version}", "--target", self.label, "--no-wait")
        else:
            self.hub("service", "update", "-n", "signed", "-m", f"digits:{version}", "--no-wait")
        sql = ("SELECT count(*) FROM service_status WHERE service = 'signed' AND phase = ? AND generation = "
               "(SELECT generation FROM services WHERE name = 'signed')")  # fmt: skip

        def healthy() -> bool | str:
            n = self.db(sql, (HEALTHY,))
            return n >= self.agents or f"{n}/{self.agents} Healthy"

        self._wait(f"round {round_no}", healthy, self.timeout)
        return time.monotonic() - start, time.process_time() - fleet_cpu, self.hub_cpu() - hub_cpu


def fleet_rounds(work: Path, agents: int, rounds: int, timeout: float) -> dict[str, Any]:
    """Alternating signed / verification-stubbed deploy rounds; seconds to all Healthy per round."""
    bench = Bench(work, agents, timeout)
    build_digits_onnx(work / "digits" / "model.onnx")
    bench.start_hub()
    from simulators.fleet import FleetOptions

    options = FleetOptions(hub=f"127.0.0.1:{bench.port}", count=agents, root=work / "devices", profile="iot-edge",
                           transport="grpc", labels={"bench": "signing"}, shared_runtime=True, quiet=True,
                           heartbeat_s=30)  # fmt: skip
    fleet = FleetLoop(options)
    real_verify = trust.DesiredStateTrust.verify
    times: dict[str, list[float]] = {"signed": [], "unchecked": []}
    fleet_cpu: dict[str, list[float]] = {"signed": [], "unchecked": []}
    hub_cpu: dict[str, list[float]] = {"signed": [], "unchecked": []}
    try:
        print(f"  starting {agents} agents (enrolling each)...", flush=True)
        t = time.monotonic()
        fleet.call(fleet.fleet.start(), timeout=timeout)
        online = "SELECT count(*) FROM devices WHERE online = 1"
        bench._wait("online", lambda: bench.db(online) >= agents or f"{bench.db(online)}/{agents} online", timeout)
        print(f"  {agents} online after {time.monotonic() - t:.1f}s", flush=True)
        # Round 0 brings the service (the first pull of the runtime's environment); it is not counted.
        warmup, _, _ = bench.deploy(0, 1)
        print(f"  warm-up deploy: {warmup:.1f}s to {agents} Healthy (not counted)", flush=True)
        for i in range(2 * rounds):
            mode = "signed" if i % 2 == 0 else "unchecked"
            # Swapped between rounds, while no desired state is in flight; the loop reads the attribute per call.
            trust.DesiredStateTrust.verify = real_verify if mode == "signed" else _unchecked_verify  # type: ignore[method-assign]
            seconds, fleet_s, hub_s = bench.deploy(i + 1, i + 2)
            times[mode].append(seconds)
            fleet_cpu[mode].append(fleet_s)
            hub_cpu[mode].append(hub_s)
            print(f"  round {i + 1} ({mode}): deploy -> {agents} Healthy in {seconds:.2f}s; CPU s: fleet "
                  f"{fleet_s:.2f}, hub {hub_s:.2f}", flush=True)  # fmt: skip
    finally:
        trust.DesiredStateTrust.verify = real_verify  # type: ignore[method-assign]
        fleet.close()
        if bench.hub_proc is not None:
            bench.hub_proc.terminate()
            bench.hub_proc.wait(60)
    med = statistics.median
    return {
        "agents": agents,
        "rounds": times,
        "fleet_cpu_s": fleet_cpu,
        "hub_cpu_s": hub_cpu,
        "signed_median_s": med(times["signed"]),
        "unchecked_median_s": med(times["unchecked"]),
        "overhead_pct": (med(times["signed"]) / med(times["unchecked"]) - 1) * 100,
        "fleet_cpu_median_s": {k: med(v) for k, v in fleet_cpu.items()},
        "hub_cpu_median_s": {k: med(v) for k, v in hub_cpu.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Run both parts and print (and, with --json, write) the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="deploy rounds each way (default 3)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per-phase timeout, s (default 900)")
    ap.add_argument("--skip-fleet", action="store_true", help="only the in-process figures")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.agents < 1 or args.rounds < 1:
        print("error: --agents and --rounds must be at least 1", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(
        prefix="edgeport-signing-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
    ) as tmp:
        work = Path(tmp)
        (work / "inproc").mkdir()
        results["per_manifest"] = m = per_manifest(work / "inproc")
        print(
            f"per manifest ({m['payload_bytes']} B state, {m['envelope_bytes']} B signed envelope): hub sign "
            f"{m['hub_sign_us']:.0f} us, agent verify {m['agent_verify_us']:.0f} us (parse alone "
            f"{m['agent_parse_only_us']:.0f} us)",
            flush=True,
        )
        if not args.skip_fleet:
            (work / "fleet").mkdir()
            results["fleet"] = f = fleet_rounds(work / "fleet", args.agents, args.rounds, args.timeout)
            hub_ms = m["hub_sign_us"] * args.agents / 1000
            print(f"fleet of {args.agents}: deploy -> all Healthy, median of {args.rounds} rounds each: signed "
                  f"{f['signed_median_s']:.2f}s, verification stubbed {f['unchecked_median_s']:.2f}s "
                  f"({f['overhead_pct']:+.1f} %); CPU s per deploy, signed vs stubbed: fleet "
                  f"{f['fleet_cpu_median_s']['signed']:.2f} vs {f['fleet_cpu_median_s']['unchecked']:.2f}, hub "
                  f"{f['hub_cpu_median_s']['signed']:.2f} vs {f['hub_cpu_median_s']['unchecked']:.2f}; the hub's "
                  f"signatures for one deploy: {hub_ms:.0f} ms of CPU",
                  flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
