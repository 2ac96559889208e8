"""Registry benchmark: registrations/s and download MB/s for 1 KB, 1 MB and 100 MB models, and hub peak RSS.

Starts its own `hub serve` on a free loopback port with a temporary data dir, drives
it with the same `HubClient` the CLI uses (every registration uploads new content,
so nothing is skipped by deduplication), and samples the hub process's RSS every
10 ms while the 100 MB folders are registered (the upload must stream: RSS stays
flat). Prints medians and writes benchmarks/results/registry.json.

    python benchmarks/registry.py [--repeats-100mb 3] [--keep-data]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from hub.client import HubClient

RESULTS = Path(__file__).resolve().parent / "results" / "registry.json"
MB = 1024 * 1024


@dataclass
class SizeResult:
    """Figures for one model size."""

    label: str
    bytes: int
    registrations: int
    register_s_median: float
    registrations_per_s: float
    download_s_median: float
    download_mb_per_s: float


class RssSampler:
    """Peak RSS of a process, sampled on a thread."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hub(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m hub serve` and wait until it answers."""
    port = free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--grpc-port",
                "0",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"hub exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("hub did not start within 30 s")


def make_model(root: Path, index: int, size: int) -> Path:
    """A folder with one weights file of `size` random bytes (distinct per index) and a small config."""
    folder = root / f"m{size}-{index}"
    folder.mkdir(parents=True)
    with open(folder / "weights.bin", "wb") as fh:
        left = size
        while left:
            n = min(left, 8 * MB)
            fh.write(os.urandom(n))
            left -= n
    (folder / "config.json").write_text(json.dumps({"index": index, "size": size}))
    return folder


def bench_size(
    client: HubClient, work: Path, label: str, size: int, repeats: int, hub_pid: int | None = None
) -> tuple[SizeResult, dict[str, int]]:
    """Register `repeats` distinct models of `size` bytes, then download each; medians.

    With `hub_pid`, also the hub's peak RSS during the registrations and during the downloads.
    """
    peaks: dict[str, int] = {}
    name = f"bench-{label.replace(' ', '')}"
    register_times: list[float] = []
    download_times: list[float] = []
    versions: list[int] = []
    folders = [make_model(work, i, size) for i in range(repeats)]  # made first: not inside the RSS window
    with RssSampler(hub_pid) if hub_pid else contextlib.nullcontext() as sampler:
        for folder in folders:
            t0 = time.perf_counter()
            versions.append(client.register_model(name, folder)["version"])
            register_times.append(time.perf_counter() - t0)
    if sampler:
        peaks["register"] = sampler.peak
    for folder in folders:
        shutil.rmtree(folder)
    with RssSampler(hub_pid) if hub_pid else contextlib.nullcontext() as sampler:
        for v in versions:
            target = work / f"dl-{label.replace(' ', '')}-{v}"
            t0 = time.perf_counter()
            client.download_model(name, v, target)
            download_times.append(time.perf_counter() - t0)
            shutil.rmtree(target)
    if sampler:
        peaks["download"] = sampler.peak
    reg = statistics.median(register_times)
    dl = statistics.median(download_times)
    return SizeResult(label, size, repeats, reg, 1 / reg, dl, size / MB / dl), peaks


def main() -> int:
    """Run the benchmark; print figures; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats-small", type=int, default=50, help="registrations of the 1 KB model")
    parser.add_argument("--repeats-1mb", type=int, default=20, help="registrations of the 1 MB model")
    parser.add_argument("--repeats-100mb", type=int, default=3, help="registrations of the 100 MB model")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeport-bench-registry-"))
    proc, url = start_hub(work / "data", work / "hub.log")
    print(f"hub {url} (pid {proc.pid}), data {work / 'data'}", flush=True)
    results: list[SizeResult] = []
    try:
        token = (work / "data" / "admin.token").read_text().strip()  # the new hub's first admin token
        with HubClient(url, token=token, timeout=300) as client:
            hub_proc = psutil.Process(proc.pid)
            baseline_rss = hub_proc.memory_info().rss
            for label, size, repeats in (
                ("1 KB", 1024, args.repeats_small),
                ("1 MB", MB, args.repeats_1mb),
            ):
                print(f"{label}: {repeats} registrations + downloads ...", flush=True)
                results.append(bench_size(client, work, label, size, repeats)[0])
            print(f"100 MB: {args.repeats_100mb} registrations + downloads (sampling hub RSS) ...", flush=True)
            before_rss = hub_proc.memory_info().rss
            result, peaks = bench_size(client, work, "100 MB", 100 * MB, args.repeats_100mb, proc.pid)
            results.append(result)
    finally:
        proc.terminate()
        proc.wait(15)
        if not args.keep_data:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'model':>7}  {'n':>3}  {'register (median)':>18}  {'registrations/s':>15}  {'download (median)':>18}  MB/s"
    )
    for r in results:
        print(
            f"{r.label:>7}  {r.registrations:>3}  {r.register_s_median * 1000:>15.1f} ms"
            f"  {r.registrations_per_s:>15.1f}  {r.download_s_median * 1000:>15.1f} ms  {r.download_mb_per_s:.1f}"
        )
    reg_peak, dl_peak = peaks["register"], peaks["download"]
    print(
        f"hub RSS: {baseline_rss / MB:.0f} MB at start, {before_rss / MB:.0f} MB before the 100 MB runs; peak "
        f"{reg_peak / MB:.0f} MB during the 100 MB registers (+{(reg_peak - before_rss) / MB:.1f} MB),"
        f" {dl_peak / MB:.0f} MB during the downloads (+{(dl_peak - before_rss) / MB:.1f} MB)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "hub": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "sizes": [asdict(r) for r in results],
                "rss_bytes": {
                    "start": baseline_rss,
                    "before_100mb": before_rss,
                    "peak_during_100mb_register": peaks["register"],
                    "peak_during_100mb_download": peaks["download"],
                },
                "method": "medians per registration/download via HubClient against a local hub serve subprocess; "
                "each registration uploads new random content; RSS sampled every 10 ms with psutil",
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
