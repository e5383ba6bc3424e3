"""The sans-I/O frame codec: golden bytes, stream reassembly, and protocol errors."""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import FrameError, ProtocolError, SchemaError
from schemas.frame import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_SEQ,
    VERSION,
    Frame,
    FrameDecoder,
    SharedPush,
    decode_frame,
    encode_frame,
    next_push_seq,
)
from schemas.pb.coffeechat import base_pb2, login_pb2

# An AuthTokenReq frame written out by hand from PROTOCOL.md, not produced by the encoder:
# user_id=1008, nick_name="ann", user_token="tok", client_type=ANDROID (1),
# client_version="1.0", sent with seq 7.
GOLDEN_AUTH_BODY = bytes(
    [
        0x08, 0xF0, 0x07,                    # field 1 varint (1<<3|0): 1008 = 0x70|0x80, 0x07
        0x12, 0x03, 0x61, 0x6E, 0x6E,        # field 2 len-delimited (2<<3|2): "ann"
        0x1A, 0x03, 0x74, 0x6F, 0x6B,        # field 3 len-delimited (3<<3|2): "tok"
        0x20, 0x01,                          # field 4 varint (4<<3|0): ANDROID = 1
        0x2A, 0x03, 0x31, 0x2E, 0x30,        # field 5 len-delimited (5<<3|2): "1.0"
    ]
)  # fmt: skip
GOLDEN_AUTH_HEADER = bytes(
    [
        0x00, 0x00, 0x00, 0x24,  # length 36 = 16 header + 20 body
        0x00, 0x01,              # version 1
        0x00, 0x00,              # flag
        0x00, 0x00,              # service_id
        0x01, 0x01,              # command_id 0x0101 (auth by token req)
        0x00, 0x07,              # seq 7
        0x00, 0x00,              # reserved
    ]
)  # fmt: skip
GOLDEN_AUTH_FRAME = GOLDEN_AUTH_HEADER + GOLDEN_AUTH_BODY

u16 = st.integers(min_value=0, max_value=0xFFFF)
frames_st = st.builds(
    Frame,
    command_id=u16,
    seq=u16,
    body=st.binary(max_size=300),
    version=u16,
    flag=u16,
    service_id=u16,
    reserved=u16,
)


def _golden_request() -> login_pb2.AuthTokenReq:
    return login_pb2.AuthTokenReq(
        user_id=1008,
        nick_name="ann",
        user_token="tok",
        client_type=base_pb2.CLIENT_TYPE_ANDROID,
        client_version="1.0",
    )


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_golden_auth_token_req_frame_encodes_byte_for_byte() -> None:
    body = _golden_request().SerializeToString()
    assert body == GOLDEN_AUTH_BODY
    assert encode_frame(0x0101, 7, body) == GOLDEN_AUTH_FRAME


def test_golden_auth_token_req_frame_decodes() -> None:
    frame = decode_frame(GOLDEN_AUTH_FRAME)
    assert frame == Frame(command_id=0x0101, seq=7, body=GOLDEN_AUTH_BODY)
    assert login_pb2.AuthTokenReq.FromString(frame.body) == _golden_request()
    assert FrameDecoder().feed(GOLDEN_AUTH_FRAME) == [frame]


def test_header_constants() -> None:
    assert HEADER_SIZE == 16
    assert VERSION == 1
    assert encode_frame(0x0105, 1) == bytes.fromhex("00000010 0001 0000 0000 0105 0001 0000")


@given(frame=frames_st)
def test_encode_decode_round_trip(frame: Frame) -> None:
    data = frame.encode()
    assert len(data) == HEADER_SIZE + len(frame.body)
    assert decode_frame(data) == frame
    assert decode_frame(bytearray(data)) == frame
    assert decode_frame(memoryview(data)) == frame


@given(
    frames=st.lists(frames_st, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_any_split_of_any_stream_decodes_to_the_same_frames(
    frames: list[Frame], cuts: list[int]
) -> None:
    stream = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder()
    decoded = [got for chunk in _split(stream, cuts) for got in decoder.feed(chunk)]
    assert decoded == frames
    assert decoder.buffered == 0


def test_one_byte_at_a_time_and_all_at_once() -> None:
    frames = [Frame(0x0301, seq, bytes([seq]) * seq) for seq in range(1, 60)]
    stream = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
        # Nothing is held back once a frame is complete.
        assert decoder.buffered == i + 1 - sum(len(f.encode()) for f in out)
    assert out == frames
    assert FrameDecoder().feed(memoryview(stream)) == frames


@given(
    command_id=st.integers(0, 0xFFFF),
    seq=st.integers(1, MAX_SEQ),
    body=st.binary(max_size=300),
)
def test_a_shared_push_frames_exactly_as_encode_frame(
    command_id: int, seq: int, body: bytes
) -> None:
    assert SharedPush(command_id, body).frame(seq) == encode_frame(command_id, seq, body)


@given(length=st.integers(min_value=0, max_value=HEADER_SIZE - 1), rest=st.binary(max_size=40))
def test_length_below_header_size_is_a_frame_error(length: int, rest: bytes) -> None:
    data = struct.pack(">I", length) + rest
    with pytest.raises(FrameError, match="below"):
        FrameDecoder().feed(data)
    with pytest.raises(FrameError):
        decode_frame(data)


def test_oversize_length_is_rejected_from_its_first_four_bytes() -> None:
    decoder = FrameDecoder(max_frame_size=64)
    assert decoder.feed(b"\x00\x00\x00") == []
    with pytest.raises(FrameError, match="exceeds the limit of 64"):
        decoder.feed(b"\x41")
    assert decoder.buffered == 0


def test_max_frame_size_is_inclusive() -> None:
    frame = Frame(0x0301, 1, b"x" * 48)
    assert FrameDecoder(max_frame_size=64).feed(frame.encode()) == [frame]
    assert decode_frame(frame.encode(), max_frame_size=64) == frame
    with pytest.raises(FrameError):
        decode_frame(frame.encode(), max_frame_size=63)


def test_a_failed_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(b"\x00\x00\x00\x01")
    with pytest.raises(FrameError, match="already failed"):
        decoder.feed(encode_frame(0x0105, 1))


def test_frames_before_garbage_do_not_mask_the_error() -> None:
    good = encode_frame(0x0105, 1)
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(good + b"\x00\x00\x00\x02" + b"\x00" * 20)


def test_frame_error_is_a_protocol_error() -> None:
    assert issubclass(FrameError, ProtocolError)
    assert issubclass(ProtocolError, SchemaError)


def _feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    return [frame for chunk in chunks for frame in decoder.feed(chunk)]


@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=10))
def test_garbage_raises_only_frame_error(data: bytes, cuts: list[int]) -> None:
    # Any other exception escapes the suppress() and fails the test.
    with contextlib.suppress(FrameError):
        for frame in _feed_all(FrameDecoder(max_frame_size=128), _split(data, cuts)):
            assert HEADER_SIZE + len(frame.body) <= 128
    with contextlib.suppress(FrameError):
        decode_frame(data, max_frame_size=128)


@given(
    frames=st.lists(frames_st, min_size=1, max_size=5),
    where=st.integers(min_value=0),
    garbage=st.binary(min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_garbage_spliced_into_valid_frames(
    frames: list[Frame], where: int, garbage: bytes, cuts: list[int]
) -> None:
    encoded = [f.encode() for f in frames]
    at = where % (len(encoded) + 1)
    stream = b"".join([*encoded[:at], garbage, *encoded[at:]])
    decoder = FrameDecoder(max_frame_size=400)
    with contextlib.suppress(FrameError):
        decoded = _feed_all(decoder, _split(stream, cuts))
        # Without an error the garbage happened to parse as frames: the valid ones before it
        # must come out intact and in order.
        assert decoded[:at] == frames[:at]


@given(frame=frames_st, delta=st.integers(min_value=-15, max_value=15).filter(bool))
def test_websocket_message_size_must_equal_length_field(frame: Frame, delta: int) -> None:
    data = frame.encode()
    tampered = struct.pack(">I", max(0, len(data) + delta)) + data[4:]
    with pytest.raises(FrameError):
        decode_frame(tampered)


def test_truncated_websocket_message() -> None:
    with pytest.raises(FrameError, match="shorter than"):
        decode_frame(GOLDEN_AUTH_FRAME[:15])
    with pytest.raises(FrameError, match="!= message size"):
        decode_frame(GOLDEN_AUTH_FRAME[:-1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"command_id": 0x10000, "seq": 1},
        {"command_id": 1, "seq": -1},
        {"command_id": 1, "seq": MAX_SEQ + 1},
        {"command_id": 1, "seq": 1, "version": 0x10000},
        {"command_id": 1, "seq": 1, "reserved": -1},
    ],
)
def test_encoding_out_of_range_fields_is_a_value_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_frame(body=b"", **kwargs)


@pytest.mark.parametrize("size", [0, HEADER_SIZE - 1, 1 << 32])
def test_max_frame_size_must_be_sane(size: int) -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=size)


def test_default_limit() -> None:
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE


def test_push_seq_wraps_to_one() -> None:
    assert next_push_seq(0) == 1
    assert next_push_seq(1) == 2
    assert next_push_seq(MAX_SEQ - 1) == MAX_SEQ
    assert next_push_seq(MAX_SEQ) == 1
