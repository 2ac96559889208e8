"""Helpers for the control-plane tests: a hub with its gRPC channel, enrollment and a raw gRPC agent session."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protos.edgeport.v1 import agent_pb2, agent_pb2_grpc
from tests.integration.registry_support import RunningHub, remember_hub
from tests.support import PYTHON, REPO, Processes, free_port, wait_for


@dataclass
class ControlHub:
    """A running hub and its agents' gRPC port."""

    hub: RunningHub
    grpc_port: int

    @property
    def url(self) -> str:
        """The hub API base URL."""
        return self.hub.url


def start_control_hub(
    processes: Processes, data_dir: Path, *, insecure: bool = False, port: int = 0, grpc_port: int = 0,
    extra: list[str] | None = None,
) -> ControlHub:
    """`hub serve` with `--grpc-port` (and `--insecure` when asked) on free ports (or the given ones)."""
    port, grpc_port = port or free_port(), grpc_port or free_port()
    args = [PYTHON, "-m", "hub", "serve", "--data-dir", str(data_dir), "--port", str(port),
            "--grpc-port", str(grpc_port), *(["--insecure"] if insecure else []), *(extra or [])]
    proc = processes.start(args, name="hub", cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"hub exited early:\n{processes.log(proc)}"
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as r:
            return r.status == 200 and f"{grpc_port}" in processes.log(proc)

    wait_for(ready, timeout=30, what=f"hub on {url}")
    remember_hub(url, data_dir)
    return ControlHub(RunningHub(url, port, data_dir, proc, processes), grpc_port)


@dataclass
class Identity:
    """What an enrolled device holds."""

    device_id: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    grpc_address: str


def make_csr() -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM) for a fresh EC key."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    ).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def enroll_raw(url: str, token: str) -> tuple[int, bytes]:
    """POST /api/v1/enroll as an agent would; (HTTP status, body)."""
    _, token_id, secret, _ = token.split(".")
    _, csr = make_csr()
    return _post_enroll(url, token_id, secret, csr)[:2]


def _post_enroll(url: str, token_id: str, secret: str, csr: bytes) -> tuple[int, bytes, bytes]:
    request = agent_pb2.EnrollRequest(
        token_id=token_id, csr_pem=csr, proof=hmac.new(secret.encode(), csr, hashlib.sha256).digest()
    )
    req = urllib.request.Request(f"{url}/api/v1/enroll", data=request.SerializeToString(), method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), csr
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), csr


def enroll(url: str, token: str) -> Identity:
    """Enroll with a fresh key; check the CA pin like the agent does."""
    _, token_id, secret, pin = token.split(".")
    key_pem, csr = make_csr()
    status, body, _ = _post_enroll(url, token_id, secret, csr)
    assert status == 200, body
    response = agent_pb2.EnrollResponse.FromString(body)
    ca = x509.load_pem_x509_certificate(response.ca_pem)
    assert hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest() == pin
    return Identity(response.device_id, key_pem, response.certificate_pem, response.ca_pem, response.grpc_address)


class AgentSession:
    """A bare gRPC Connect stream (in a thread), to watch what the hub sends."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None,
                 metadata: list[tuple[str, str]] | None = None) -> None:
        self.channel = (grpc.secure_channel(address, credentials) if credentials is not None
                        else grpc.insecure_channel(address))
        self.outbox: queue.Queue[agent_pb2.AgentMessage | None] = queue.Queue()
        self.inbox: queue.Queue[agent_pb2.HubMessage | grpc.RpcError | None] = queue.Queue()
        stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.call = stub.Connect(self._requests(), metadata=metadata)
        threading.Thread(target=self._pump, daemon=True).start()

    def _requests(self) -> Iterator[agent_pb2.AgentMessage]:
        while (m := self.outbox.get()) is not None:
            yield m

    def _pump(self) -> None:
        try:
            for message in self.call:
                self.inbox.put(message)
            self.inbox.put(None)
        except grpc.RpcError as exc:
            self.inbox.put(exc)

    def send(self, message: agent_pb2.AgentMessage) -> None:
        """Queue one message to the hub."""
        self.outbox.put(message)

    def next(self, kind: str | None = None, timeout: float = 10.0) -> agent_pb2.HubMessage:
        """The next HubMessage (of `kind`, skipping others); raises the RpcError if the stream failed."""
        while True:
            item = self.inbox.get(timeout=timeout)
            if isinstance(item, grpc.RpcError):
                raise item
            assert item is not None, "stream ended"
            if kind is None or item.WhichOneof("body") == kind:
                return item

    def close(self) -> None:
        """End the stream and the channel."""
        self.outbox.put(None)
        self.call.cancel()
        self.channel.close()


def tls_session(identity: Identity, ca_pem: bytes | None = None) -> AgentSession:
    """A mutual-TLS session with the device's certificate."""
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem or identity.ca_pem,
                                         private_key=identity.key_pem, certificate_chain=identity.cert_pem)
    return AgentSession(identity.grpc_address, creds)


class ThrottledProxy:
    """A loopback TCP proxy (own thread) that slows hub→agent bytes to `rate` bytes/s, so a pull can be caught
    mid-download; counts the bytes it forwarded downstream."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.bytes_down = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, throttle: bool) -> None:
            try:
                while data := await src.read(16 * 1024):
                    dst.write(data)
                    await dst.drain()
                    if throttle:
                        self.bytes_down += len(data)
                        await asyncio.sleep(len(data) / self.rate)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def close(self) -> None:
        """Stop serving."""
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
