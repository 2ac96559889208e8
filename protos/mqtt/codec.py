"""MQTT 5 packets, the subset Edgeport's clients speak, encoded and decoded (OASIS MQTT 5.0, chapters 2 and 3).

An agent (or the hub's bridge) connects (with a Last Will), subscribes, publishes and acknowledges at QoS 0 or 1,
pings and disconnects. It never uses QoS 2, topic aliases or AUTH, so those are refused as
protocol errors rather than half supported. `PacketReader` cuts a byte stream into packets
without copying more than once; the `parse_*` functions read the packets a broker sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
MAX_REMAINING_LENGTH = 268_435_455  # the largest a four-byte variable byte integer holds
PINGREQ_PACKET = b"\xc0\x00"

REASONS = {
    0x00: "Success",
    0x04: "Disconnect with Will Message",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid",
    0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid",
    0x95: "Packet too large",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9F: "Connection rate exceeded",
}

# Property identifier -> how its value is encoded (MQTT 5.0, 2.2.2.2).
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT, 0x11: _U32, 0x12: _STR,
    0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE, 0x1A: _STR, 0x1C: _STR,
    0x1F: _STR, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _U32,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
SESSION_EXPIRY_INTERVAL, SERVER_KEEP_ALIVE, REASON_STRING, RECEIVE_MAXIMUM = 0x11, 0x13, 0x1F, 0x21


class ProtocolError(Exception):
    """Bytes from the broker that are not a packet this client understands (the connection must close)."""


def reason_name(code: int) -> str:
    """`code` as the spec names it, e.g. 'Not authorized (135)'."""
    return f"{REASONS.get(code, 'reason')} ({code})"


# ---- encoding ----


def encode_varint(n: int) -> bytes:
    """A variable byte integer (1 to 4 bytes, 7 bits each, low first)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{n} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    return _binary(text.encode())


def _binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"{len(data)} bytes do not fit an MQTT string or binary field (65,535 at most)")
    return struct.pack("!H", len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for us if the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Connect:
    """What a CONNECT says: who we are, how often we ping, our Will and whether the session persists."""

    client_id: str
    keepalive_s: int
    username: str = ""
    password: str = ""
    will: Will | None = None
    clean_start: bool = False
    session_expiry_s: int = 0  # how long the broker keeps our session after we go (0: not at all)


def connect(c: Connect) -> bytes:
    """A CONNECT packet (protocol level 5)."""
    flags = 0x02 if c.clean_start else 0
    if c.will is not None:
        flags |= 0x04 | (c.will.qos << 3) | (0x20 if c.will.retain else 0)
    if c.username:
        flags |= 0x80
    if c.password:
        flags |= 0x40
    expiry = c.session_expiry_s
    props = bytes((SESSION_EXPIRY_INTERVAL,)) + struct.pack("!I", expiry) if expiry else b""
    body = [_string("MQTT"), bytes((5, flags)), struct.pack("!H", c.keepalive_s), encode_varint(len(props)), props]
    body.append(_string(c.client_id))
    if c.will is not None:
        body += [b"\x00", _string(c.will.topic), _binary(c.will.payload)]  # no will properties
    if c.username:
        body.append(_string(c.username))
    if c.password:
        body.append(_binary(c.password.encode()))
    return _packet(CONNECT << 4, b"".join(body))


def subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """A SUBSCRIBE packet: each (topic filter, maximum QoS); retained messages are sent on subscribe."""
    payload = b"".join(_string(f) + bytes((qos,)) for f, qos in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, struct.pack("!H", packet_id) + b"\x00" + payload)


def publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 0) -> bytes:
    """A PUBLISH packet (no properties); `packet_id` is required at QoS 1."""
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos}: this client publishes at QoS 0 or 1")
    head = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + b"\x00"
    return _packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), head + payload)


def puback(packet_id: int) -> bytes:
    """A PUBACK with reason Success (the short form: packet id only)."""
    return b"\x40\x02" + struct.pack("!H", packet_id)


def disconnect(reason: int = 0) -> bytes:
    """A DISCONNECT; reason 0 (normal) tells the broker not to publish the Will."""
    return b"\xe0\x00" if reason == 0 else b"\xe0\x01" + bytes((reason,))


# ---- decoding ----


def decode_varint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when `data` ends inside it; ProtocolError past four bytes."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(data) - pos >= 4:
        raise ProtocolError("malformed variable byte integer (more than four bytes)")
    return None


class PacketReader:
    """Cuts a byte stream into (packet type, flags, body) as the bytes arrive, whatever their split."""

    def __init__(self, max_packet_bytes: int = 64 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self.max_packet_bytes = max_packet_bytes

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, bytes]]:
        """Every packet completed by `data`, in order; ProtocolError on bytes that cannot be a packet."""
        buf = self._buffer
        buf += data
        packets = []
        pos = 0
        while len(buf) - pos >= 2:
            length = decode_varint(buf, pos + 1)
            if length is None:
                break
            size, start = length
            if size > self.max_packet_bytes:
                raise ProtocolError(f"a {size}-byte packet is over this client's limit of {self.max_packet_bytes}")
            if len(buf) < start + size:
                break
            first = buf[pos]
            packets.append((first >> 4, first & 0x0F, bytes(buf[start : start + size])))
            pos = start + size
        if pos:
            del buf[:pos]
        return packets


def _u16(body: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(body):
        raise ProtocolError(f"{what}: packet ends early")
    return (body[pos] << 8) | body[pos + 1]


def _text(body: bytes, pos: int, what: str) -> tuple[str, int]:
    n = _u16(body, pos, what)
    end = pos + 2 + n
    if end > len(body):
        raise ProtocolError(f"{what}: string runs past the packet")
    try:
        return body[pos + 2 : end].decode(), end
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: string is not UTF-8") from None


def _skip_properties(body: bytes, pos: int, what: str) -> int:
    length = decode_varint(body, pos)
    if length is None or length[1] + length[0] > len(body):
        raise ProtocolError(f"{what}: properties run past the packet")
    return length[1] + length[0]


def parse_properties(body: bytes, pos: int, what: str) -> tuple[dict[int, object], int]:
    """The property block at `pos` as {identifier: value} (User Property: a list of pairs) and where it ends."""
    end = _skip_properties(body, pos, what)
    pos = decode_varint(body, pos)[1]  # type: ignore[index]  # checked by _skip_properties
    props: dict[int, object] = {}
    try:
        pos = _read_properties(body, pos, end, what, props)
    except (IndexError, struct.error):
        raise ProtocolError(f"{what}: properties run past the packet") from None
    if pos != end:
        raise ProtocolError(f"{what}: properties run past their length")
    return props, end


def _read_properties(body: bytes, pos: int, end: int, what: str, props: dict[int, object]) -> int:
    while pos < end:
        ident = body[pos]
        kind = _PROPERTY_TYPES.get(ident)
        pos += 1
        if kind is None:
            raise ProtocolError(f"{what}: unknown property 0x{ident:02x}")
        value: object
        if kind == _BYTE:
            value, pos = body[pos], pos + 1
        elif kind == _U16:
            value, pos = _u16(body, pos, what), pos + 2
        elif kind == _U32:
            if pos + 4 > end:
                raise ProtocolError(f"{what}: property 0x{ident:02x} runs past the properties")
            value, pos = struct.unpack_from("!I", body, pos)[0], pos + 4
        elif kind == _VARINT:
            decoded = decode_varint(body, pos)
            if decoded is None:
                raise ProtocolError(f"{what}: property 0x{ident:02x} runs past the packet")
            value, pos = decoded
        elif kind == _STR:
            value, pos = _text(body, pos, what)
        elif kind == _BIN:
            n = _u16(body, pos, what)
            value, pos = body[pos + 2 : pos + 2 + n], pos + 2 + n
        else:
            key, pos = _text(body, pos, what)
            val, pos = _text(body, pos, what)
            pairs = props.setdefault(ident, [])
            assert isinstance(pairs, list)
            pairs.append((key, val))
            continue
        props[ident] = value
    return pos


@dataclass(frozen=True)
class Connack:
    """What the broker answered to CONNECT."""

    reason: int
    session_present: bool
    properties: dict[int, object] = field(default_factory=dict)


def parse_connack(body: bytes) -> Connack:
    """A CONNACK body."""
    if len(body) < 2:
        raise ProtocolError("CONNACK: packet ends early")
    props = parse_properties(body, 2, "CONNACK")[0] if len(body) > 2 else {}
    return Connack(reason=body[1], session_present=bool(body[0] & 1), properties=props)


@dataclass(frozen=True)
class Message:
    """A PUBLISH received."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    retain: bool


def parse_publish(flags: int, body: bytes) -> Message:
    """A PUBLISH body (its properties are skipped: the client asked for none it would use)."""
    qos = (flags >> 1) & 3
    if qos > 1:
        raise ProtocolError(f"PUBLISH at QoS {qos}: this client subscribes at QoS 1 at most")
    topic, pos = _text(body, 0, "PUBLISH")
    packet_id = 0
    if qos:
        packet_id = _u16(body, pos, "PUBLISH")
        pos += 2
    if not topic:
        raise ProtocolError("PUBLISH with an empty topic (this client allows no topic aliases)")
    pos = _skip_properties(body, pos, "PUBLISH")
    return Message(topic=topic, payload=body[pos:], qos=qos, packet_id=packet_id, retain=bool(flags & 1))


def parse_ack(kind: str, body: bytes) -> tuple[int, list[int]]:
    """A PUBACK or SUBACK body: (packet id, reason codes); a PUBACK without a reason code means Success."""
    packet_id = _u16(body, 0, kind)
    if len(body) == 2:
        return packet_id, [0]
    if kind == "PUBACK":
        return packet_id, [body[2]]
    pos = _skip_properties(body, 2, kind)
    return packet_id, list(body[pos:])


def parse_disconnect(body: bytes) -> tuple[int, str]:
    """A DISCONNECT from the broker: (reason code, the broker's reason string if it gave one)."""
    if not body:
        return 0, ""
    reason = body[0]
    props = parse_properties(body, 1, "DISCONNECT")[0] if len(body) > 1 else {}
    return reason, str(props.get(REASON_STRING, ""))
