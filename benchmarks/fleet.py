"""Fleet benchmark: N simulated agents over gRPC and over MQTT against one real hub and one real mosquitto.

For each fleet size (default 100, 1,000, 10,000) and transport it measures:
  * connect: fleet start -> every device online at the hub (the first transport also enrolls every device);
  * deploy -> all Healthy: `hub deploy` of a no-code ONNX model (digits) -> every device reports Healthy;
  * hub peak RSS and CPU (cores busy) over the phase, broker (mosquitto) RSS;
  * CPU seconds over the deploy of the hub, the broker, the fleet processes and their runtimes;
  * telemetry ingest: numbered sensor points (batched, `--batch` per message) stored per second.
and holds each 10,000-agent run against the fleet targets (`benchmarks/fleet_targets.py`): met or MISSED.

Agents are the real agent code (`simulators.fleet`), many per process on one event loop, with simulated
hardware (iot-edge profile). Starting one runtime process per agent cannot fit one machine at these
sizes, so the agents of a fleet process share one real runtime (one onnxruntime session) per service
generation (`--shared-runtime`; the output says so); every agent still pulls and verifies the model,
and reports its own status. The hub runs mutual TLS for gRPC (`--grpc-security plaintext` for the
development mode, devices named in metadata) and per-device broker accounts for MQTT.

    python benchmarks/fleet.py                       # 100, 1000, 10000 x grpc, mqtt
    python benchmarks/fleet.py --sizes 100,1000 --transports mqtt
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from fleet_targets import format_verdicts, verdicts  # (benchmarks/ is the script's folder)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.control.mqtt_broker import MosquittoBroker  # noqa: E402
from simulators.fleet import FILES_PER_AGENT, FILES_SPARE  # noqa: E402
from simulators.models import build_digits_onnx  # noqa: E402

PY = sys.executable
SHM = "/dev/shm"
PER_PROCESS = 2500  # agents per fleet process by default, either transport (see --per-process)


def _tmpfs(path: str = SHM, need_bytes: int = 4 * 2**30) -> bool:
    """Whether `path` is a tmpfs mount with room for a 10,000-device fleet's data dirs (~0.1 MiB each)."""
    try:
        with open("/proc/mounts") as mounts:
            if not any(line.split()[1:3] == [path, "tmpfs"] for line in mounts):
                return False
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize >= need_bytes
HEALTHY = 4  # edgeport.v1.Phase.HEALTHY, as the hub stores it


def free_port() -> int:
    """A free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sampler:
    """Samples a process's RSS (peak) and CPU time in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)

    def reset_peak(self) -> None:
        """Start a new peak window."""
        with contextlib.suppress(psutil.Error):
            self.peak = self.proc.memory_info().rss

    def cpu(self) -> float:
        """CPU seconds (user + system) so far."""
        t = self.proc.cpu_times()
        return t.user + t.system

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()


@dataclass
class Result:
    """One (size, transport) run."""

    size: int
    transport: str
    connect_s: float = math.nan
    enrolled: bool = False
    register_s: float = math.nan  # `hub model register` of the deploy's model, before the deploy clock starts
    deploy_s: float = math.nan
    healthy: int = 0
    hub_peak_mib: float = math.nan
    hub_cores: float = math.nan
    broker_mib: float = math.nan
    msgs_per_s: float = math.nan
    points_per_s: float = math.nan
    offered_points_per_s: float = math.nan
    # CPU seconds spent from "all online" to "all Healthy": hub, broker, fleet processes, their runtimes
    deploy_cpu_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def descendants(pids: list[int]) -> list[int]:
    """Every process started (directly or not) by these ones, as far as they still run."""
    found: list[int] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (those gone count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


class Bench:
    """One hub + broker for one fleet size; runs each transport's phases against it."""

    def __init__(self, size: int, work: Path, devices: Path, args: argparse.Namespace) -> None:
        self.size, self.work, self.devices, self.args = size, work, devices, args
        self.port, self.grpc_port = free_port(), free_port()
        self.broker = MosquittoBroker(work / "broker", free_port())
        self.hub_proc: subprocess.Popen[bytes] | None = None
        self.sampler: Sampler | None = None
        self.fleets: list[subprocess.Popen[bytes]] = []
        self.per_process = args.per_process  # None: PER_PROCESS
        self.hub_args: list[str] = []  # more `hub serve` options (benchmarks/reconnect.py's settings)
        self.label = f"bench=s{size}"
        self.phases = 0  # deploys so far: each gets a model of its own (fresh_model)
        # What runs a fleet process (benchmarks/mqtt_clients.py swaps in another MQTT client this way).
        self.fleet_command: list[str] = [PY, "-m", "simulators", "fleet"]

    # ---- processes ----

    def fresh_model(self, tag: str) -> str:
        """A model no device holds yet, registered: the digits network with `tag` in its doc string (other
        bytes, another digest). Every phase's agents then pull it, as in a first deploy; with one model for
        all phases, the second transport's devices found it in their caches and skipped the pull."""
        import onnx

        model = onnx.load(str(self.work / "digits" / "model.onnx"))
        model.doc_string = f"fleet benchmark, phase {tag}"
        folder = self.work / f"digits-{tag}"
        folder.mkdir()
        onnx.save(model, str(folder / "model.onnx"))
        self.hub("model", "register", "-n", f"digits-{tag}", "-p", str(folder))
        return f"digits-{tag}:1"

    def agents_per_process(self, transport: str) -> int:
        return self.per_process or PER_PROCESS

    def start(self) -> None:
        self.broker.start()
        self.start_hub()
        build_digits_onnx(self.work / "digits" / "model.onnx")  # each deploy registers its variant (fresh_model)

    def start_hub(self) -> None:
        log = open(self.work / "hub.log", "ab")  # noqa: SIM115 - the child's stdout for its lifetime
        before = log.tell()  # a restarted hub appends: only what it writes says it is up
        self.hub_proc = subprocess.Popen(
            [PY, "-m", "hub", "serve", "--data-dir", str(self.work / "hub"), "--port", str(self.port),
             "--grpc-port", str(self.grpc_port), "--telemetry-interval", str(self.args.telemetry_interval),
             "--mqtt", self.broker.url, "--mqtt-dir", str(self.broker.dir),
             *(["--insecure"] if self.args.grpc_security == "plaintext" else []), *self.hub_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "agents MQTT" not in (self.work / "hub.log").read_bytes()[before:].decode(errors="replace"):
            if time.monotonic() > deadline or self.hub_proc.poll() is not None:
                raise RuntimeError(f"hub did not start: {(self.work / 'hub.log').read_text()[-2000:]}")
            time.sleep(0.1)
        # The hub's first admin token: the `hub` CLI and the fleets (enrollment) run by this process send it.
        os.environ["EDGEPORT_TOKEN"] = (self.work / "hub" / "admin.token").read_text().strip()
        self.sampler = Sampler(self.hub_proc.pid)

    def stop_hub(self) -> None:
        if self.hub_proc is not None:
            if self.sampler is not None:  # None when the hub never came up
                self.sampler.close()
            self.hub_proc.send_signal(signal.SIGTERM)
            try:
                self.hub_proc.wait(60)
            except subprocess.TimeoutExpired:
                self.hub_proc.kill()
                self.hub_proc.wait(10)
            self.hub_proc, self.sampler = None, None

    def hub(self, *args: str) -> str:
        done = subprocess.run([PY, "-m", "hub", "--hub", f"http://127.0.0.1:{self.port}", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"hub {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def db(self, sql: str, params: tuple = ()) -> int:
        """A read-only count from the hub database (measurement only; the hub writes it)."""
        conn = sqlite3.connect(f"file:{self.work / 'hub' / 'hub.db'}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute(sql, params).fetchone()[0])
        finally:
            conn.close()

    def start_fleets(self, transport: str, rate: float, batch: int) -> None:
        processes = max(1, math.ceil(self.size / self.agents_per_process(transport)))
        base, extra = divmod(self.size, processes)
        self.fleets = []
        for i in range(processes):
            count = base + (1 if i < extra else 0)
            log = open(self.work / f"fleet-{transport}-{i}.log", "ab")  # noqa: SIM115
            self.fleets.append(subprocess.Popen(
                [*self.fleet_command, "--count", str(count), "--hub", f"127.0.0.1:{self.port}",
                 "--transport", transport, "--data-dir", str(self.devices / f"p{i}"), "--name-prefix",
                 f"p{i}", "--label", self.label, "--profile", "iot-edge", "--shared-runtime", "--quiet",
                 "--telemetry-rate", str(rate), "--telemetry-batch", str(batch), "--telemetry-paused",
                 "--heartbeat-s", str(self.args.heartbeat_s),
                 *(["--insecure"] if self.args.grpc_security == "plaintext" and transport == "grpc" else [])],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            ))  # fmt: skip

    def signal_fleets(self, sig: int) -> None:
        for p in self.fleets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)

    def stop_fleets(self) -> None:
        self.signal_fleets(signal.SIGTERM)
        for p in self.fleets:
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.fleets = []

    def stop(self) -> None:
        self.stop_fleets()
        self.stop_hub()
        self.broker.stop()

    # ---- one transport ----

    def wait(self, what: str, check, timeout: float) -> float:  # type: ignore[no-untyped-def]
        start = time.monotonic()
        last = -1.0
        while True:
            value = check()
            if value is True:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what}: not done after {timeout:.0f}s ({value})")
            if time.monotonic() - last > 10:
                print(f"    ... {what}: {value}", flush=True)
                last = time.monotonic()
            time.sleep(0.25)

    def run(self, transport: str, first: bool) -> Result:
        r = Result(self.size, transport, enrolled=first)
        self.partial = r  # what was measured before a failure still gets printed
        n = self.size
        rate = self.args.points_per_s / n  # offered points/s spread over the fleet
        # Agents batch their points (one message per device every batch/rate seconds): the figure is points
        # stored per second, and a message per point is not how a device sends telemetry.
        batch = max(1, self.args.batch)
        r.offered_points_per_s = rate * n
        self.sampler.reset_peak()
        cpu0, t0 = self.sampler.cpu(), time.monotonic()
        print(f"  {transport}: starting {n} agents in {math.ceil(n / self.agents_per_process(transport))} "
              "process(es)", flush=True)
        self.start_fleets(transport, rate, batch)
        online = "SELECT count(*) FROM devices WHERE online = 1 AND transport = ?"
        r.connect_s = self.wait(f"{transport} online", lambda: self.db(online, (transport,)) >= n or
                                f"{self.db(online, (transport,))}/{n} online", self.args.timeout)
        print(f"  {transport}: {n} online after {r.connect_s:.1f}s{' (incl. enrollment)' if first else ''}",
              flush=True)
        service = f"bench-{transport}"
        fleet_pids = [p.pid for p in self.fleets]
        broker_pid = self.broker.process.pid if self.broker.process else 0
        # The model is registered first, as a user would: the clock runs from deploy to all Healthy.
        registering = time.monotonic()
        model = self.fresh_model(f"{transport}{self.phases}")
        self.phases += 1
        r.register_s = time.monotonic() - registering
        cpu_before = {"hub": self.sampler.cpu(), "broker": cpu_seconds([broker_pid]),
                      "fleets": cpu_seconds(fleet_pids)}
        start = time.monotonic()
        self.hub("deploy", "-n", service, "-m", model, "--target", self.label, "--no-wait")

        # Counted read-only in the hub database: polling GET /services/NAME (a view of every device) would
        # load the hub we are measuring. The API's view is checked once at the end.
        # The generation this deploy made: generations only grow, also across a delete and re-create (a
        # transport measured twice, `--transports mqtt,mqtt`, deploys the same service name again).
        healthy_sql = ("SELECT count(*) FROM service_status WHERE service = ? AND phase = ? AND generation = "
                       "(SELECT generation FROM services WHERE name = ?)")

        def healthy() -> bool | str:
            r.healthy = self.db(healthy_sql, (service, HEALTHY, service))
            return r.healthy >= n or f"{r.healthy}/{n} Healthy"

        self.wait(f"{transport} deploy", healthy, self.args.timeout)
        r.deploy_s = time.monotonic() - start  # includes the `hub deploy` call itself
        runtimes = descendants(fleet_pids)  # started by this deploy
        r.deploy_cpu_s = {"hub": self.sampler.cpu() - cpu_before["hub"],
                          "broker": cpu_seconds([broker_pid]) - cpu_before["broker"],
                          "fleets": cpu_seconds(fleet_pids) - cpu_before["fleets"], "runtimes": cpu_seconds(runtimes)}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1/services/{service}",
                                         headers={"Authorization": f"Bearer {os.environ['EDGEPORT_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=120) as f:
            api = sum(1 for d in json.loads(f.read())["devices"] if d["phase"] == "Healthy")
        if api != n:
            r.notes.append(f"the API shows {api}/{n} Healthy")
        print(f"  {transport}: deploy -> {n} Healthy in {r.deploy_s:.1f}s (CPU s over it: "
              + ", ".join(f"{k} {v:.1f}" for k, v in r.deploy_cpu_s.items())
              + f"; its model registered in {r.register_s:.1f}s before)", flush=True)
        # Telemetry: sensors on for a window; stored points (and messages) counted at the hub.
        count = "SELECT count(*) FROM telemetry_points WHERE metric = 'sim.load'"
        self.signal_fleets(signal.SIGUSR1)
        time.sleep(3)  # reach a steady state
        p0, w0 = self.db(count), time.monotonic()
        time.sleep(self.args.window)
        p1, w1 = self.db(count), time.monotonic()
        self.signal_fleets(signal.SIGUSR1)
        r.points_per_s = (p1 - p0) / (w1 - w0)
        r.msgs_per_s = r.points_per_s / batch
        r.hub_cores = (self.sampler.cpu() - cpu0) / (time.monotonic() - t0)
        r.hub_peak_mib = self.sampler.peak / 2**20
        r.broker_mib = self.broker.rss_bytes() / 2**20
        print(f"  {transport}: telemetry {r.points_per_s:,.0f} points/s stored ({r.msgs_per_s:,.0f} messages/s, "
              f"offered {r.offered_points_per_s:,.0f} points/s); hub peak {r.hub_peak_mib:.0f} MiB, "
              f"{r.hub_cores:.2f} cores; broker {r.broker_mib:.0f} MiB", flush=True)
        with contextlib.suppress(RuntimeError):
            self.hub("service", "delete", service)
        self.stop_fleets()
        self.db_wait_offline(transport)
        return r

    def db_wait_offline(self, transport: str) -> None:
        with contextlib.suppress(TimeoutError):
            self.wait("devices offline", lambda: self.db(
                "SELECT count(*) FROM devices WHERE online = 1") == 0 or "some still online", 60)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000", help="fleet sizes (default 100,1000,10000)")
    ap.add_argument("--transports", default="grpc,mqtt", help="transports (default grpc,mqtt)")
    ap.add_argument("--per-process", type=int, help=f"agents per fleet process (default {PER_PROCESS}). Fewer "
                    "processes spend less of a small machine on contention and start fewer shared runtimes: at "
                    "10,000 agents on 2 cores 2,500 per process deployed in 12.3-14.2 s against 13.3-17.1 s with "
                    "1,000 over MQTT, and in 16.5 s against 19.8-20.2 s over gRPC. A fleet process may hold ~3,900 "
                    "agents under a 20,000 file limit")
    ap.add_argument("--points-per-s", type=float, default=100_000, help="telemetry points/s offered by the whole "
                    "fleet (default 100000)")
    ap.add_argument("--batch", type=int, default=50, help="points per telemetry message; each device sends one "
                    "every batch/rate seconds (default 50)")
    ap.add_argument("--heartbeat-s", type=int, default=30, help="agents' heartbeat interval, s (default 30)")
    ap.add_argument("--telemetry-interval", type=int, default=60, help="the agents' own telemetry (system and "
                    "runtime figures) every this many seconds, as the hub tells them (default 60, the hub's "
                    "default). It runs through the deploy too: at 15 s, 10,000 agents send 667 messages/s")
    ap.add_argument("--window", type=float, default=10.0, help="telemetry measuring window, s (default 10)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-phase timeout, s (default 600)")
    ap.add_argument("--device-disk", choices=["tmpfs", "work"], default="tmpfs" if _tmpfs() else "work",
                    help="where the simulated devices' data dirs go: tmpfs (the default where /dev/shm is one) "
                    "or the work folder. On one shared filesystem, 10,000 devices' files (SQLite, blobs, "
                    "folders per generation) contend in one kernel journal, which real devices, each with its "
                    "own disk, do not; the hub's and the broker's data stay in the work folder either way")
    ap.add_argument("--grpc-security", choices=["mtls", "plaintext"], default="mtls",
                    help="the agents' gRPC channel: mutual TLS (default, what a fleet runs) or plain text (the "
                    "hub's --insecure development mode). grpc core keeps ~83 KiB per mutual-TLS connection "
                    "against ~26 KiB in plain text, so the hub's RSS differs by ~0.55 GiB at 10,000 agents")
    ap.add_argument("--work", type=Path, help="work folder, kept afterwards (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"error: --sizes {args.sizes!r}: expected numbers like 100,1000", file=sys.stderr)
        return 2
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not sizes or any(s < 1 for s in sizes) or not transports or set(transports) - {"grpc", "mqtt"}:
        print("error: --sizes must be positive numbers and --transports grpc and/or mqtt", file=sys.stderr)
        return 2
    if not 1 <= args.telemetry_interval <= 3600:
        print(f"error: --telemetry-interval {args.telemetry_interval}: must be 1-3600 seconds", file=sys.stderr)
        return 2
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    most = (hard_limit - FILES_SPARE) // FILES_PER_AGENT
    if args.per_process is not None and not 1 <= args.per_process <= most:
        print(f"error: --per-process {args.per_process}: must be 1-{most:,} (each agent holds {FILES_PER_AGENT} open "
              f"files; a process may open {hard_limit:,})", file=sys.stderr)
        return 2
    results: list[Result] = []
    print("fleet benchmark: real hub + mosquitto + real agents (iot-edge profile, many per process); agents of a "
          "fleet process share ONE runtime process (one onnxruntime session) per service generation", flush=True)
    for size in sizes:
        with contextlib.ExitStack() as stack:
            if args.work:  # kept for a look at the logs afterwards
                tmp = str(args.work / f"size-{size}")
                Path(tmp).mkdir(parents=True, exist_ok=False)
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"fleet-bench-{size}-"))
            devices = Path(tmp) / "fleet"
            if args.device_disk == "tmpfs":
                devices = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"fleet-{size}-", dir=SHM)))
            bench = Bench(size, Path(tmp), devices, args)
            print(f"size {size}: hub {bench.port}, broker {bench.broker.port}, work {tmp}", flush=True)
            try:
                bench.start()
                for i, transport in enumerate(transports):
                    if i > 0:  # a fresh hub process (same data) so RSS peaks are per transport
                        bench.stop_hub()
                        bench.start_hub()
                    try:
                        results.append(bench.run(transport, first=i == 0))
                    except (TimeoutError, RuntimeError) as exc:
                        print(f"  {transport}: FAILED: {exc}", flush=True)
                        r = bench.partial
                        r.hub_peak_mib = bench.sampler.peak / 2**20
                        r.broker_mib = bench.broker.rss_bytes() / 2**20
                        r.notes.append(str(exc)[:200])
                        results.append(r)
                        bench.stop_fleets()
            finally:
                bench.stop()
    print("\n  size  transport  connect s  deploy->Healthy s  healthy  hub peak MiB  hub cores  broker MiB"
          "  telemetry msg/s  points/s (offered)")
    for r in results:
        print(f"{r.size:>6}  {r.transport:<9}  {r.connect_s:>7.1f}{'*' if r.enrolled else ' '}  {r.deploy_s:>17.1f}"
              f"  {r.healthy:>7}  {r.hub_peak_mib:>12.0f}  {r.hub_cores:>9.2f}  {r.broker_mib:>10.0f}"
              f"  {r.msgs_per_s:>15,.0f}  {r.points_per_s:>8,.0f} ({r.offered_points_per_s:,.0f})"
              + (f"  FAILED: {r.notes[0]}" if r.notes else ""))
    print("* connect time includes enrolling every device (first transport of a size)")
    where = f"tmpfs ({SHM})" if args.device_disk == "tmpfs" else "the work folder"
    print(f"agents: heartbeat every {args.heartbeat_s} s, own telemetry every {args.telemetry_interval} s; "
          f"{args.per_process or PER_PROCESS} per fleet process")
    print(f"device disks: the simulated devices' data dirs were on {where}; the hub's and the broker's on disk")
    if "grpc" in transports:
        print(f"gRPC channel: {'mutual TLS' if args.grpc_security == 'mtls' else 'PLAIN TEXT (hub --insecure)'}")
    print("runtime: the agents of each fleet process share one runtime process per service generation "
          "(one onnxruntime session); their scoring URIs name ports nobody serves")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    setup = {"per_process": args.per_process or PER_PROCESS,
             "offered_points_per_s": args.points_per_s, "batch": args.batch,
             "heartbeat_s": args.heartbeat_s, "telemetry_interval_s": args.telemetry_interval,
             "window_s": args.window, "cpus": os.cpu_count(),
             "runtime": "agents of a fleet process share one runtime process per service generation",
             "device_disk": args.device_disk, "grpc_security": args.grpc_security}
    runs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()} for r in results]
    targets = verdicts(runs)
    for line in format_verdicts(targets):
        print(line)
    (out / "fleet.json").write_text(json.dumps({"benchmark": "benchmarks/fleet.py", "setup": setup, "runs": runs,
                                                "targets": targets}, indent=2) + "\n")
    print(f"wrote {out / 'fleet.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
