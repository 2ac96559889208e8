"""The agent's MQTT 5 codec: packets as the spec lays them out, streams cut at any byte, malformed input refused."""

from __future__ import annotations

import struct

import pytest

from protos.mqtt import codec
from protos.mqtt.codec import Connect, PacketReader, ProtocolError, Will


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
     (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f")],
)  # fmt: skip
def test_variable_byte_integers_match_the_spec_table(value: int, encoded: bytes) -> None:
    assert codec.encode_varint(value) == encoded
    assert codec.decode_varint(encoded, 0) == (value, len(encoded))


def test_varint_out_of_range_or_five_bytes_long_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode_varint(268_435_456)
    with pytest.raises(ProtocolError, match="more than four bytes"):
        codec.decode_varint(b"\xff\xff\xff\xff\x01", 0)
    assert codec.decode_varint(b"\xff\xff", 0) is None  # not all there yet


def test_connect_carries_will_credentials_keepalive_and_session_expiry() -> None:
    packet = codec.connect(
        Connect("dev-1", keepalive_s=30, username="dev-1", password="s3cret",
                will=Will("edgeport/dev-1/online", b"offline"), clean_start=False, session_expiry_s=3600)
    )  # fmt: skip
    [(kind, flags, body)] = PacketReader().feed(packet)
    assert (kind, flags) == (codec.CONNECT, 0)
    assert body[:7] == b"\x00\x04MQTT\x05"
    # username, password, will retain, will QoS 1, will flag; clean start off
    assert body[7] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04
    assert struct.unpack_from("!H", body, 8)[0] == 30
    assert body[10:16] == b"\x05\x11" + struct.pack("!I", 3600)  # properties: session expiry interval
    rest = body[16:]
    assert rest.startswith(b"\x00\x05dev-1\x00\x00\x15edgeport/dev-1/online\x00\x07offline")
    assert rest.endswith(b"\x00\x05dev-1\x00\x06s3cret")


def test_publish_and_puback_round_trip() -> None:
    packet = codec.publish("a/b", b"payload", qos=1, retain=True, packet_id=7)
    [(kind, flags, body)] = PacketReader().feed(packet)
    message = codec.parse_publish(flags, body)
    assert (kind, message.topic, message.payload, message.qos, message.packet_id, message.retain) == (
        codec.PUBLISH, "a/b", b"payload", 1, 7, True)  # fmt: skip
    [(kind, _, body)] = PacketReader().feed(codec.puback(7))
    assert kind == codec.PUBACK and codec.parse_ack("PUBACK", body) == (7, [0])
    assert codec.parse_ack("PUBACK", b"\x00\x07\x87\x00") == (7, [0x87])  # refused: Not authorized
    with pytest.raises(ValueError, match="QoS 2"):
        codec.publish("a", b"", qos=2)


def test_publish_properties_are_skipped_and_qos0_has_no_packet_id() -> None:
    props = b"\x01\x01" + b"\x03\x00\x04text"  # payload format indicator, content type
    body = b"\x00\x01t" + codec.encode_varint(len(props)) + props + b"data"
    message = codec.parse_publish(0, body)
    assert (message.topic, message.payload, message.qos, message.packet_id) == ("t", b"data", 0, 0)


def test_a_stream_cut_at_every_byte_gives_the_same_packets() -> None:
    big = b"x" * 300  # a two-byte remaining length
    stream = codec.publish("t/1", b"one", qos=1, packet_id=1) + codec.publish("t/2", big) + b"\xd0\x00"
    whole = PacketReader().feed(stream)
    assert [k for k, _, _ in whole] == [codec.PUBLISH, codec.PUBLISH, codec.PINGRESP]
    for cut in range(1, len(stream)):
        reader = PacketReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == whole
    reader = PacketReader()
    assert [p for b in stream for p in reader.feed(bytes((b,)))] == whole


def test_connack_suback_and_disconnect_are_read_with_their_properties() -> None:
    props = b"\x21\x00\x14" + b"\x13\x00\x3c" + b"\x26\x00\x01k\x00\x01v"  # receive max 20, keep-alive 60, user
    connack = codec.parse_connack(b"\x01\x00" + codec.encode_varint(len(props)) + props)
    assert connack.session_present and connack.reason == 0
    assert connack.properties[codec.RECEIVE_MAXIMUM] == 20
    assert connack.properties[codec.SERVER_KEEP_ALIVE] == 60
    assert connack.properties[0x26] == [("k", "v")]
    assert codec.parse_ack("SUBACK", b"\x00\x03\x00\x01\x87") == (3, [1, 0x87])
    reason = b"\x1f\x00\x05taken"
    assert codec.parse_disconnect(b"\x8e" + codec.encode_varint(len(reason)) + reason) == (0x8E, "taken")
    assert codec.parse_disconnect(b"") == (0, "")
    assert codec.reason_name(0x87) == "Not authorized (135)"


@pytest.mark.parametrize(
    ("what", "parse"),
    [
        ("string runs past", lambda: codec.parse_publish(0, b"\x00\x09ab")),
        ("not UTF-8", lambda: codec.parse_publish(0, b"\x00\x02\xff\xfe\x00")),
        ("QoS 2", lambda: codec.parse_publish(0b0100, b"\x00\x01t\x00\x01\x00")),
        ("empty topic", lambda: codec.parse_publish(0, b"\x00\x00\x00")),
        ("properties run past", lambda: codec.parse_publish(0, b"\x00\x01t\x05\x01")),
        ("unknown property", lambda: codec.parse_connack(b"\x00\x00\x02\x7f\x00")),
        ("properties run past", lambda: codec.parse_connack(b"\x00\x00\x03\x21\x00")),
        ("ends early", lambda: codec.parse_connack(b"\x00")),
        ("ends early", lambda: codec.parse_ack("PUBACK", b"\x01")),
    ],
)
def test_malformed_packets_are_refused_with_what_is_wrong(what: str, parse) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=what):
        parse()


def test_a_packet_over_the_size_limit_is_refused_before_it_is_buffered() -> None:
    reader = PacketReader(max_packet_bytes=1024)
    with pytest.raises(ProtocolError, match="over this client's limit"):
        reader.feed(b"\x30" + codec.encode_varint(4096))
