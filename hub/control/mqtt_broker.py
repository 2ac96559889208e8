"""A mosquitto broker for the hub's MQTT bridge: its config, and running it (tests, benchmarks, small sites).

`write_config(dir, port)` writes `dir/mosquitto.conf` for one listener (MQTT over TLS with the
hub-issued certificate when given `tls`, see `mqtt_tls`) with no
anonymous access, the hub-kept `passwords` and `acl` files (see `mqtt_auth`), unlimited
connections and on-disk persistence (retained desired states and queued QoS 1 messages
survive a broker restart). `MosquittoBroker` runs it as a child process; the hub's
`BrokerAuth` finds it through `dir/mosquitto.pid` to send SIGHUP after a credential change.

    # foreground, TLS with a certificate from the hub's CA for the name devices dial:
    python -m hub.control.mqtt_broker --dir /var/lib/edgeport/mqtt --port 8883 --host 0.0.0.0
        --tls-from-hub /var/lib/edgeport/hub --tls-name broker.example.net
    hub serve --mqtt mqtts://broker.example.net:8883 --mqtt-dir /var/lib/edgeport/mqtt
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hub.control.mqtt_auth import ACL_FILE, HUB_USERNAME, PASSWORD_FILE, PID_FILE
from hub.control.mqtt_tls import BrokerTls

CONFIG_FILE = "mosquitto.conf"


class BrokerError(Exception):
    """mosquitto is missing, or did not start (message says why)."""


def write_config(
    directory: Path, port: int, *, host: str = "127.0.0.1", verbose: bool = False, tls: BrokerTls | None = None
) -> Path:
    """Write `directory/mosquitto.conf` (plus empty password/ACL files if absent); return its path.

    With `tls` the listener speaks only MQTT over TLS (1.2 or newer) with that certificate."""
    d = Path(directory).resolve()
    (d / "data").mkdir(parents=True, exist_ok=True)
    for name, text in ((PASSWORD_FILE, ""), (ACL_FILE, f"user {HUB_USERNAME}\ntopic readwrite #\n")):
        if not (d / name).exists():  # the hub fills them in; mosquitto refuses to start without them
            (d / name).write_text(text)
    lines = [
        "# written by Edgeport (hub/control/mqtt_broker.py)",
        "per_listener_settings false",
        f"listener {port} {host}",
        # mosquitto reads these per listener: they must follow the listener line.
        *([f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}", "tls_version tlsv1.2"] if tls else []),
        "allow_anonymous false",
        f"password_file {d / PASSWORD_FILE}",
        f"acl_file {d / ACL_FILE}",
        "max_connections -1",  # 10,000 simulated devices on one broker
        "persistence true",
        f"persistence_location {d / 'data'}/",
        "autosave_interval 30",
        "persistent_client_expiration 14d",
        # QoS 1 messages queued per offline client (a hub restart queues the whole fleet's reports)
        "max_queued_messages 200000",
        # Also the Receive Maximum the broker announces (MQTT 5): the hub keeps up to this many desired states
        # of a rollout unacknowledged (hub/control/mqtt_front.py), agents up to 500 reports.
        "max_inflight_messages 1000",
        "set_tcp_nodelay true",
        f"pid_file {d / PID_FILE}",
        f"user {getpass.getuser()}",  # stay who started it: it must read the hub-written files
        "connection_messages " + ("true" if verbose else "false"),
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "",
    ]
    path = d / CONFIG_FILE
    path.write_text("\n".join(lines))
    return path


def mosquitto_binary() -> str:
    """Path of the mosquitto executable; BrokerError when it is not installed."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
    return found


def wait_listening(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> bool:
    """True once something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


class MosquittoBroker:
    """One mosquitto child process with a generated config in `directory`."""

    def __init__(self, directory: Path, port: int, *, host: str = "127.0.0.1", tls: BrokerTls | None = None) -> None:
        self.dir = Path(directory)
        self.port = port
        self.host = host
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`mqtts://host:port` with TLS, else `mqtt://host:port`."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start mosquitto, and wait until it listens; BrokerError with its log if not."""
        config = write_config(self.dir, self.port, host=self.host, tls=self.tls)
        log = open(self.dir / "mosquitto.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        if not wait_listening(self.port, timeout, self.host) or self.process.poll() is not None:
            self.stop()
            tail = (self.dir / "mosquitto.log").read_text(errors="replace")[-2000:]
            raise BrokerError(f"mosquitto did not start on {self.host}:{self.port}:\n{tail}")

    def rss_bytes(self) -> int:
        """Resident memory of the broker process (0 when unknown)."""
        if self.process is None:
            return 0
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then SIGKILL if it lingers."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    """`python -m hub.control.mqtt_broker --dir DIR --port PORT`: write the config and run mosquitto."""
    ap = argparse.ArgumentParser(
        prog="python -m hub.control.mqtt_broker",
        description="Write a mosquitto config for the Edgeport hub's MQTT bridge and run mosquitto in the "
        "foreground. Give the hub the same folder: hub serve --mqtt mqtt://HOST:PORT --mqtt-dir DIR.",
    )
    ap.add_argument("--dir", type=Path, required=True, help="folder for config, passwords, ACL and persistence")
    ap.add_argument("--port", type=int, default=1883, help="listener port (default 1883)")
    ap.add_argument("--host", default="127.0.0.1", help="listener address (default 127.0.0.1)")
    ap.add_argument("--verbose", action="store_true", help="log every client connection")
    ap.add_argument("--tls-from-hub", type=Path, metavar="HUB_DATA_DIR",
                    help="serve MQTT over TLS with a certificate from the CA of the hub in HUB_DATA_DIR "
                    "(the hub then connects with mqtts://)")  # fmt: skip
    ap.add_argument("--tls-name", action="append", default=[], metavar="NAME",
                    help="a host name or address devices dial the broker by (repeatable; with --tls-from-hub)")
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    tls = None
    if args.tls_from_hub is not None:
        from hub.control.mqtt_tls import broker_host_names, issue_broker_tls
        from hub.pki import CertificateAuthority

        if not (args.tls_from_hub / "pki" / "ca.crt").is_file():
            print(f"error: --tls-from-hub {args.tls_from_hub}: no hub CA there (pki/ca.crt); start "
                  "`hub serve --data-dir` there once first", file=sys.stderr)  # fmt: skip
            return 2
        ca = CertificateAuthority(args.tls_from_hub / "pki")
        tls = issue_broker_tls(ca, args.dir, broker_host_names(args.host, *args.tls_name))
    elif args.tls_name:
        print("error: --tls-name needs --tls-from-hub", file=sys.stderr)
        return 2
    try:
        config = write_config(args.dir, args.port, host=args.host, verbose=args.verbose, tls=tls)
        binary = mosquitto_binary()
    except (BrokerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.execv(binary, [binary, "-c", str(config)])


if __name__ == "__main__":
    sys.exit(main())
