"""Hub ingest benchmark: how fast the control core stores agent messages, with no network in the way.

A real hub data dir (SQLite, group commit) with N enrolled devices, each with an open session
(as if connected), then, timed:
  * deploy: create a service targeting all N (revisions bumped in one transaction, fronts notified);
  * desired state: every session's outgoing DesiredState;
  * statuses: 3 DeploymentStatus messages per device through group commit (until stored and acked);
  * telemetry: 3 TelemetryBatch messages of --points points per device.
Devices are enrolled in process through the fleet service and the CA (untimed for the phases above).

    python benchmarks/ingest.py                 # 10,000 devices
    python benchmarks/ingest.py --devices 1000 --points 50
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from hub.services import HubServices  # noqa: E402
from protos.edgeport.v1 import agent_pb2  # noqa: E402
from simulators.models import build_digits_onnx  # noqa: E402


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def main(argv: list[str] | None = None) -> int:
    """Run the phases, print a line each, write benchmarks/results/ingest.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000, help="simulated connected devices (default 10000)")
    ap.add_argument("--points", type=int, default=10, help="points per telemetry message (default 10)")
    args = ap.parse_args(argv)
    if args.devices < 1 or args.points < 1:
        print("error: --devices and --points must be positive", file=sys.stderr)
        return 2
    n = args.devices
    results: dict[str, float] = {"devices": n, "points_per_message": args.points}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        hub = HubServices.open(Path(tmp) / "hub")
        try:
            t = time.perf_counter()
            csr = _csr()  # one key for every device: the CA still signs a certificate per device
            for i in range(n):
                token = hub.fleet.create_token(f"d{i:05d}", ["fleet=bench"])["token"]
                _, token_id, secret, _ = token.split(".")
                proof = hmac.new(secret.encode(), csr, hashlib.sha256).digest()
                hub.fleet.enroll(agent_pb2.EnrollRequest(token_id=token_id, csr_pem=csr, proof=proof))
            results["enrollments_per_s"] = n / (time.perf_counter() - t)
            model = build_digits_onnx(Path(tmp) / "model" / "model.onnx")
            digest = hub.blobs.put_file(model)
            hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": model.stat().st_size}])
            core = hub.control
            t = time.perf_counter()
            sessions = [core.open_session(f"d{i:05d}", agent_pb2.Hello(), transport="bench")[0] for i in range(n)]
            results["open_sessions_per_s"] = n / (time.perf_counter() - t)

            t = time.perf_counter()
            hub.deployments.create({"name": "bench", "models": ["digits:1"], "target": "fleet=bench"})
            results["deploy_s"] = time.perf_counter() - t
            t = time.perf_counter()
            sent = sum(len(core.outgoing(s)) for s in sessions)
            results["desired_states_per_s"] = sent / (time.perf_counter() - t)

            acks = [0]

            def reply(message: agent_pb2.HubMessage) -> None:
                acks[0] += 1

            t = time.perf_counter()
            for seq, phase in enumerate((agent_pb2.PULLING, agent_pb2.STARTING, agent_pb2.HEALTHY), start=1):
                for s in sessions:
                    status = agent_pb2.DeploymentStatus(service="bench", generation=1, phase=phase)
                    core.submit(s, agent_pb2.AgentMessage(seq=seq, status=status), reply)
            core.ingest.wait_idle(600)
            results["status_messages_per_s"] = 3 * n / (time.perf_counter() - t)

            at = int(time.time() * 1000)
            points = [
                agent_pb2.TelemetryPoint(at_ms=at, metric="sim.load", value=i, labels={"simulated": "true"})
                for i in range(args.points)
            ]
            t = time.perf_counter()
            for seq in (4, 5, 6):
                for s in sessions:
                    core.submit(
                        s, agent_pb2.AgentMessage(seq=seq, telemetry=agent_pb2.TelemetryBatch(points=points)), reply
                    )
            core.ingest.wait_idle(600)
            elapsed = time.perf_counter() - t
            results["telemetry_messages_per_s"] = 3 * n / elapsed
            results["telemetry_points_per_s"] = 3 * n * args.points / elapsed
            with hub.db.read() as db:
                healthy = db.execute(
                    "SELECT count(*) FROM service_status WHERE phase = ?", [agent_pb2.HEALTHY]
                ).fetchone()[0]
                stored = db.execute("SELECT count(*) FROM telemetry_points WHERE metric = 'sim.load'").fetchone()[0]
            if healthy != n or stored != 3 * n * args.points:
                print(f"error: stored {healthy}/{n} Healthy and {stored}/{3 * n * args.points} points", file=sys.stderr)
                return 1
            results["batches"] = core.ingest.stats["batches"]
        finally:
            hub.close()
    print(
        f"{n:,} devices: enrolled {results['enrollments_per_s']:,.0f}/s;"
        f" open sessions {results['open_sessions_per_s']:,.0f}/s; deploy (revisions + notify) "
        f"{results['deploy_s']:.2f} s; desired states {results['desired_states_per_s']:,.0f}/s; statuses "
        f"{results['status_messages_per_s']:,.0f} messages/s; telemetry {results['telemetry_messages_per_s']:,.0f} "
        f"messages/s = {results['telemetry_points_per_s']:,.0f} points/s ({args.points} per message); "
        f"{results['batches']:.0f} group commits"
    )
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({"benchmark": "benchmarks/ingest.py", **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
