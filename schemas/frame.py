"""Sans-I/O codec for CoffeeChat frames (PROTOCOL.md, "Frame").

Every frame is a 16-byte big-endian header followed by a protobuf body::

    offset  size  field
         0   u32  length       whole frame, header included
         4   u16  version      1
         6   u16  flag         reserved, 0
         8   u16  service_id   reserved, 0
        10   u16  command_id
        12   u16  seq          a response echoes its request's seq
        14   u16  reserved     0
        16     …  body

On TCP frames arrive as a byte stream, split anywhere and several per read: feed every read
to a `FrameDecoder` and handle the frames it returns. A WebSocket binary message is exactly
one frame: use `decode_frame`. Neither touches a socket, so both are tested without one.

The header fields the protocol calls reserved (version, flag, service_id, reserved) are kept
as received in `Frame` and not validated: old clients are known to fill them loosely, and a
gate that wants to be strict can check them itself.

Exceptions (all in `schemas.errors`)::

    SchemaError
    ├── ProtocolError             a client broke the protocol: close the connection
    │   ├── FrameError            raised here: length < 16, > max_frame_size, or (for a
    │   │                         WebSocket message) length field != message size
    │   └── CommandError          raised by schemas.commands for the frame's content
    │       ├── UnknownCommandError
    │       └── BodyDecodeError
    └── EnvelopeError             raised by schemas.envelope for bad bus records

Encoding with an out-of-range field (a seq above 65535, say) is a bug of the caller and
raises `ValueError`.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from schemas.errors import FrameError, ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAX_SEQ",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "ProtocolError",
    "SharedPush",
    "decode_frame",
    "encode_frame",
    "next_push_seq",
]

HEADER_SIZE: Final = 16
VERSION: Final = 1
#: Largest u16 seq; server push seqs wrap from here back to 1.
MAX_SEQ: Final = 0xFFFF
#: Largest frame a decoder accepts unless configured otherwise. Messages, history pages and
#: group lists fit comfortably; larger uploads belong to a file service, not the chat socket.
DEFAULT_MAX_FRAME_SIZE: Final = 1 << 20
_MAX_U32: Final = 0xFFFF_FFFF

_HEADER = struct.Struct(">IHHHHHH")
_LENGTH = struct.Struct(">I")
#: The header before the seq (length, version, flag, service_id, command_id), and after it.
_HEAD = struct.Struct(">IHHHH")
_SEQ_RESERVED = struct.Struct(">HH")

Buffer = bytes | bytearray | memoryview


class Frame(msgspec.Struct, frozen=True, gc=False):
    """One decoded (or to-be-encoded) frame.

    `command_id` stays a plain int: a frame with an unknown command is still a well-formed
    frame, and what to do with it is the command layer's decision (`schemas.commands`).
    """

    command_id: int
    seq: int
    body: bytes
    version: int = VERSION
    flag: int = 0
    service_id: int = 0
    reserved: int = 0

    def encode(self) -> bytes:
        """The frame's bytes, header included."""
        return encode_frame(
            self.command_id,
            self.seq,
            self.body,
            version=self.version,
            flag=self.flag,
            service_id=self.service_id,
            reserved=self.reserved,
        )


def encode_frame(
    command_id: int,
    seq: int,
    body: Buffer = b"",
    *,
    version: int = VERSION,
    flag: int = 0,
    service_id: int = 0,
    reserved: int = 0,
) -> bytes:
    """Encode one frame: the 16-byte header, then `body` (a serialized protobuf message).

    Raises `ValueError` when a header field does not fit its u16 or the frame its u32 length.
    """
    length = HEADER_SIZE + len(body)
    if length > _MAX_U32:
        raise ValueError(f"frame of {length} bytes does not fit the u32 length field")
    try:
        header = _HEADER.pack(length, version, flag, service_id, command_id, seq, reserved)
    except struct.error as exc:
        raise ValueError(
            "frame header field out of range (u16): "
            f"version={version} flag={flag} service_id={service_id} "
            f"command_id={command_id} seq={seq} reserved={reserved}"
        ) from exc
    return header + body


class SharedPush:
    """One push body framed for many connections (the room fan-out): the header fields that
    do not depend on the connection are packed once, and `frame` adds a connection's push
    seq — two concatenations per connection instead of a whole `encode_frame`."""

    __slots__ = ("body", "head")

    def __init__(self, command_id: int, body: bytes) -> None:
        length = HEADER_SIZE + len(body)
        if length > _MAX_U32:
            raise ValueError(f"frame of {length} bytes does not fit the u32 length field")
        self.head = _HEAD.pack(length, VERSION, 0, 0, command_id)
        self.body = body

    def frame(self, seq: int) -> bytes:
        """The frame's bytes with push seq `seq` (1..`MAX_SEQ`)."""
        return self.head + _SEQ_RESERVED.pack(seq, 0) + self.body


def _check_max_frame_size(max_frame_size: int) -> int:
    if not HEADER_SIZE <= max_frame_size <= _MAX_U32:
        raise ValueError(f"max_frame_size must be in [{HEADER_SIZE}, {_MAX_U32}]")
    return max_frame_size


def _check_length(length: int, max_frame_size: int) -> None:
    if length < HEADER_SIZE:
        raise FrameError(f"frame length {length} is below the {HEADER_SIZE}-byte header")
    if length > max_frame_size:
        raise FrameError(f"frame length {length} exceeds the limit of {max_frame_size} bytes")


def decode_frame(data: Buffer, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Frame:
    """Decode one complete frame, e.g. one binary WebSocket message.

    The frame's length field must equal the size of `data`: on WebSocket one message is one
    frame, and anything else means the client frames differently from what we speak.
    """
    _check_max_frame_size(max_frame_size)
    size = len(data)
    if size < HEADER_SIZE:
        raise FrameError(f"message of {size} bytes is shorter than the {HEADER_SIZE}-byte header")
    length, version, flag, service_id, command_id, seq, reserved = _HEADER.unpack_from(data)
    _check_length(length, max_frame_size)
    if length != size:
        raise FrameError(f"frame length field {length} != message size {size}")
    with memoryview(data) as view:
        body = view[HEADER_SIZE:].tobytes()
    return Frame(command_id, seq, body, version, flag, service_id, reserved)


class FrameDecoder:
    """Incremental decoder for a byte stream of frames (TCP).

    `feed` takes whatever a read returned and gives back every frame that is now complete,
    in order; an incomplete tail is kept for the next call. Bytes are buffered in one
    `bytearray` and consumed from its front, which CPython does in place, so feeding a
    frame one byte at a time or a thousand frames at once both cost linear time.

    A length outside [16, max_frame_size] raises `FrameError` as soon as its four bytes have
    arrived — an oversize frame is rejected before it is buffered. After that the stream
    cannot be resynchronised: the decoder stays failed and every later `feed` raises again.
    Frames completed earlier in the failing call are discarded with it; the connection is
    being closed, and a client resends whatever it did not see acknowledged.
    """

    __slots__ = ("_buffer", "_error", "_max_frame_size")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max_frame_size = _check_max_frame_size(max_frame_size)
        self._buffer = bytearray()
        self._error: FrameError | None = None

    @property
    def max_frame_size(self) -> int:
        """The largest frame accepted, header included."""
        return self._max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame.

        Non-zero when the peer closes the stream means it closed in the middle of a frame.
        """
        return len(self._buffer)

    def feed(self, data: Buffer) -> list[Frame]:
        """Add received bytes; return the frames completed by them (possibly none)."""
        if self._error is not None:
            raise FrameError(f"stream already failed: {self._error}")
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        frames: list[Frame] = []
        pos = 0
        try:
            with memoryview(buffer) as view:
                while end - pos >= 4:
                    (length,) = _LENGTH.unpack_from(view, pos)
                    _check_length(length, self._max_frame_size)
                    if end - pos < length:
                        break
                    _, version, flag, service_id, command_id, seq, reserved = _HEADER.unpack_from(
                        view, pos
                    )
                    body = view[pos + HEADER_SIZE : pos + length].tobytes()
                    frames.append(Frame(command_id, seq, body, version, flag, service_id, reserved))
                    pos += length
        except FrameError as exc:
            self._error = exc
            buffer.clear()
            raise
        # The memoryview is released above: a bytearray cannot be resized while exported.
        if pos:
            del buffer[:pos]
        return frames


def next_push_seq(seq: int) -> int:
    """The seq after `seq` of a connection's server-push counter: 1..65535, wrapping to 1.

    Start a connection with 0 so that its first push gets 1. Seq 0 is never produced.
    """
    return 1 if seq >= MAX_SEQ else seq + 1
