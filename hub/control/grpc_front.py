"""The gRPC front: `edgeport.v1.AgentService.Connect` on the hub's --grpc-port (grpc.aio).

Mutual TLS by default: the server certificate is signed by the hub CA, client
certificates must be too (`require_client_auth=True`), and the device is whoever the
certificate's CN names, checked against the revocation list on every Connect. With
--insecure: plain text, the device named in `x-edgeport-device` metadata and proven by
`x-edgeport-credential` (the hex sha256 of the device certificate issued at enrollment).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from hub.control.core import ControlCore, Session
from hub.errors import HubError
from hub.pki import CertificateAuthority
from protos.edgeport.v1 import agent_pb2

log = logging.getLogger("hub.control.grpc")

SERVICE = "edgeport.v1.AgentService"
DEVICE_HEADER = "x-edgeport-device"
CREDENTIAL_HEADER = "x-edgeport-credential"
MAX_PENDING_CALLS = 65_536  # Connect calls grpc core may hold before the servicer takes them (see below)
# Agents ping to keep NAT mappings open and notice dead links; let them. The hub pings too, to mark a device
# that vanished without a word offline (within ~50 s). Both wait grpc's default 20 s for the answer: with 10 s
# a fleet reconnecting at once, on a hub busy with its handshakes, had its established streams ended by ping
# timeouts, and each redid its handshake, which kept the hub busier still (2 of 3 starts of 10,000 agents on
# one slow 2-core machine stalled below 2,400 online, the hub at its open-file limit).
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # A fleet (re)connecting at once opens thousands of Connect calls faster than grpc.aio hands them to the
    # servicer. Past grpc core's default backlog (1,000 soft, 3,000 hard) it cancels new calls, and each
    # cancelled agent redoes its TLS handshake after a backoff (5,000 agents: ~7,500 attempts, 15-22 s
    # instead of 5,000 and ~8 s). A waiting call costs a few KiB; an agent gives up after 60 s on its own.
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
    # TLS records of at most 4 KiB instead of 16 KiB: grpc keeps a buffer of this size per connection, and
    # what the hub sends agents is small. Mutual TLS costs ~83 KiB per connection in grpc core even so
    # (plain text: ~26 KiB); this saves ~6 KiB of it (measured with bare grpc.aio, 2,000 streams).
    ("grpc.tsi.max_frame_size", 4096),
    # No BDP probing: after each quiet spell, the first data a connection reads makes grpc core send a PING to
    # estimate the link's bandwidth-delay product, and the peer answers it: two more TLS records, syscalls and
    # wake-ups per message for agents that send a few small messages now and then. It only ever sizes HTTP/2
    # windows for bulk transfers, and models travel over HTTP, not this channel. Without it the hub spends
    # ~38% less CPU per agent round trip (benchmarks/grpc_messages.py); the 64 KiB default windows remain.
    ("grpc.http2.bdp_probe", 0),
]

_CHECK = object()  # queue item: look at the core for new desired state / requests / revocation
_END = object()  # queue item: the agent closed its side
CHECK_CHUNK = 500  # devices whose desired state the registry reads in one go


@dataclass(frozen=True, slots=True)
class _Checked:
    """Queue item: the device's desired state, read for many devices at once (None: no longer active)."""

    desired: agent_pb2.SignedDesiredState | None


class StreamRegistry:
    """The front's open streams by device, and its one core listener that wakes just the changed devices' streams.

    One listener for the whole front, not one per stream: `core.notify` calls every listener for every
    device change, so per-stream listeners made a deploy to 10,000 connected devices 10^8 calls. Changes
    are collected and their desired states read in chunks in a worker thread (`desired_states`), rather
    than each stream reading its own device's rows on the event loop: a rollout changes thousands at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        desired_states: Callable[[list[str]], dict[str, agent_pb2.SignedDesiredState]],
    ) -> None:
        self.loop = loop
        self.desired_states = desired_states
        # device -> the queues of its open streams (almost always one; two while a reconnect replaces one)
        self._queues: dict[str, list[asyncio.Queue[object]]] = {}
        self._lock = threading.Lock()
        self._changed: set[str] = set()  # devices changed since the last read (any thread adds)
        self._reading = False  # a _read_changed task runs (event-loop thread)

    def add(self, device: str, queue: asyncio.Queue[object]) -> Callable[[], None]:
        """Route the device's notifications to `queue` (event-loop thread); returns the removal."""
        self._queues.setdefault(device, []).append(queue)

        def remove() -> None:
            queues = self._queues.get(device)
            if queues is not None and queue in queues:
                queues.remove(queue)
                if not queues:
                    del self._queues[device]

        return remove

    def changed(self, device_id: str) -> None:
        """The core listener (any thread): wake the device's streams, if it has any here."""
        # A dict read is atomic under the GIL; a stream added after it still looks at the core once on start.
        if device_id not in self._queues:
            return
        with self._lock:
            first = not self._changed
            self._changed.add(device_id)
        if first:  # one wake-up of the loop per burst of changes, not one per device
            self.loop.call_soon_threadsafe(self._start_reading)

    def _wake(self, device_id: str, item: object = _CHECK) -> None:
        for queue in self._queues.get(device_id, ()):
            queue.put_nowait(item)

    def _start_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self.loop.create_task(self._read_changed())

    async def _read_changed(self) -> None:
        try:
            while True:
                with self._lock:
                    devices, self._changed = sorted(self._changed), set()
                if not devices:
                    return
                for i in range(0, len(devices), CHECK_CHUNK):
                    chunk = devices[i : i + CHECK_CHUNK]
                    try:
                        desired = await self.loop.run_in_executor(None, self.desired_states, chunk)
                    except Exception:  # the streams look for themselves instead
                        log.exception("reading the desired state of %d device(s) failed", len(chunk))
                        for device in chunk:
                            self._wake(device)
                        continue
                    for device in chunk:
                        self._wake(device, _Checked(desired.get(device)))
        finally:
            self._reading = False

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())


class AckRelay:
    """Hands acks from the group-commit writer to the streams' queues, one loop wake-up per burst.

    A commit acks up to a few hundred sessions; a thread-safe call per ack was a self-pipe write
    and a GIL hand-over each.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue[object], agent_pb2.HubMessage]] = []

    def post(self, queue: asyncio.Queue[object], ack: agent_pb2.HubMessage) -> None:
        """Queue `ack` for `queue` (any thread)."""
        with self._lock:
            first = not self._pending
            self._pending.append((queue, ack))
        if first and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for queue, ack in pending:
            queue.put_nowait(ack)


class AgentServicer:
    """One Connect stream per agent, driven by the transport-independent core.

    The stream's requests arrive serialized (no request deserializer): the group-commit writer
    parses them when it stores them, so what waits in its queue is wire bytes (see GroupCommit).
    """

    def __init__(self, core: ControlCore, streams: StreamRegistry, acks: AckRelay, *, insecure: bool) -> None:
        self.core = core
        self.streams = streams
        self.acks = acks
        self.insecure = insecure
        self.flowing = asyncio.Event()  # cleared while the core is congested; readers wait on it
        self.flowing.set()

    async def _device(self, context: aio.ServicerContext) -> str:
        try:
            if self.insecure:
                meta = {k: v for k, v in (context.invocation_metadata() or ())}
                device = str(meta.get(DEVICE_HEADER, ""))
                if not device:
                    raise _Refused(f"missing {DEVICE_HEADER} metadata (hub runs with --insecure)")
                return self.core.authenticate_credential(device, str(meta.get(CREDENTIAL_HEADER, "")))
            certs = context.auth_context().get("x509_pem_cert") or []
            if not certs:
                raise _Refused("no client certificate (the hub requires mutual TLS; enroll the device first)")
            return self.core.authenticate_certificate(certs[0])
        except (HubError, _Refused) as exc:
            message = exc.message if isinstance(exc, HubError) else str(exc)
            log.warning("refused agent connection from %s: %s", context.peer(), message)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            raise AssertionError("unreachable") from None

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """`edgeport.v1.AgentService`'s methods: Connect, taking its requests as bytes."""
        connect = grpc.stream_stream_rpc_method_handler(
            self.Connect, request_deserializer=None, response_serializer=agent_pb2.HubMessage.SerializeToString
        )
        return {"Connect": connect}

    async def Connect(
        self, request_iterator: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.HubMessage]:
        """Authenticate, take the Hello, then stream Welcome/DesiredState/Acks while reading agent messages."""
        device = await self._device(context)
        try:
            first = agent_pb2.AgentMessage.FromString(await anext(aiter(request_iterator)))
        except StopAsyncIteration:
            return
        except DecodeError:
            first = agent_pb2.AgentMessage()
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message on a stream must be a Hello")
        session, welcome = self.core.open_session(device, first.hello, transport="grpc")
        del first  # the Hello (inventory, service reports) would otherwise live as long as the stream
        log.info("device %s connected (%s)", device, context.peer())
        queue: asyncio.Queue[object] = asyncio.Queue()
        unsubscribe = self.streams.add(device, queue)
        reader = asyncio.create_task(self._read(session, request_iterator, queue))
        try:
            yield agent_pb2.HubMessage(welcome=welcome)
            queue.put_nowait(_CHECK)
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if item is _CHECK or isinstance(item, _Checked):
                    if isinstance(item, _Checked):
                        allowed, desired = item.desired is not None, item.desired
                    else:  # the stream's own look: at its start, or when a batch read failed
                        allowed, desired = self.core.is_allowed(session), None
                    if not allowed:
                        log.info("device %s is revoked: closing its stream", device)
                        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"device {device} is revoked")
                    for message in self.core.outgoing(session, desired):
                        yield message
                elif isinstance(item, agent_pb2.HubMessage):
                    yield item
        finally:
            reader.cancel()
            unsubscribe()
            self.core.close_session(session)
            log.info("device %s disconnected", device)

    async def _read(
        self, session: Session, request_iterator: AsyncIterator[bytes], queue: asyncio.Queue[object]
    ) -> None:
        post = self.acks.post

        def send_ack(ack: agent_pb2.HubMessage) -> None:  # group-commit writer thread, after the commit
            post(queue, ack)

        try:
            async for message in request_iterator:
                # Stored by group commit (the ack follows the commit); while the hub is behind, stop
                # reading so gRPC flow control slows the agent instead of the backlog growing.
                self.core.submit(session, message, send_ack)
                # The message mark only: each drain wakes every paused stream, so pauses should be rare;
                # the finer points mark (for the MQTT hub's memory) would pause them far more often.
                while self.core.congested(points=False):
                    # One event for every stream, set when the backlog has drained (and by the front's
                    # watchdog, should a wake-up be missed): no timer or poll per stream, since
                    # thousands of streams waiting with their own timeouts kept the event loop busy.
                    self.flowing.clear()
                    await self.flowing.wait()
        except (aio.AioRpcError, aio.AbortError, asyncio.CancelledError):
            pass  # the stream ended (by the agent, or by the hub aborting it, e.g. on revocation): said elsewhere
        except Exception:  # never let one agent's stream error go unnoticed
            log.exception("reading from device %s failed", session.device_id)
        finally:
            queue.put_nowait(_END)


class _Refused(Exception):
    """Authentication failed before any HubError was involved."""


class GrpcFront:
    """The AgentService server: start on (host, port), stop gracefully."""

    def __init__(
        self,
        core: ControlCore,
        ca: CertificateAuthority,
        *,
        host: str = "127.0.0.1",
        port: int = 7071,
        insecure: bool = False,
    ) -> None:
        self.core = core
        self.ca = ca
        self.host = host
        self.port = port
        self.insecure = insecure
        self._server: aio.Server | None = None
        self.streams: StreamRegistry | None = None
        self._unlisten: Callable[[], None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; return the bound port (useful with port 0)."""
        server = aio.server(options=SERVER_OPTIONS)
        loop = asyncio.get_running_loop()
        self.streams = StreamRegistry(loop, self.core.desired_states)
        servicer = AgentServicer(self.core, self.streams, AckRelay(loop), insecure=self.insecure)

        def drained() -> None:  # group-commit writer thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(servicer.flowing.set)

        self.core.on_drained(drained)
        handlers = servicer.handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        address = f"{self.host}:{self.port}"
        if self.insecure:
            bound = server.add_insecure_port(address)
        else:
            key, cert = self.ca.server_credentials([self.host])
            creds = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=self.ca.ca_pem, require_client_auth=True
            )
            bound = server.add_secure_port(address, creds)
        if not bound:
            raise OSError(f"cannot listen on {address} for the agents' gRPC channel (port in use?)")
        await server.start()
        self._unlisten = self.core.add_listener(self.streams.changed)
        self._watchdog = asyncio.create_task(self._keep_flowing(servicer))
        self._server = server
        self.port = bound
        log.info("agent channel (gRPC, %s) on %s:%d", "insecure" if self.insecure else "mutual TLS", self.host, bound)
        return bound

    async def _keep_flowing(self, servicer: AgentServicer) -> None:
        """Wake readers paused for congestion once it is over, in case the drain callback was missed."""
        while True:
            await asyncio.sleep(0.5)
            if not servicer.flowing.is_set() and not self.core.congested(points=False):
                servicer.flowing.set()

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, give streams `grace` seconds, then close."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
