"""Exceptions of the schemas package.

Two kinds of bad input reach CoffeeBus: bytes from a client (the wire protocol) and records
from the bus. They are handled differently — a client that breaks the protocol loses its
connection, a bad bus record goes to the dead-letter topic — so they have separate roots
under one package root::

    SchemaError                   root of everything raised here on bad input
    ├── ProtocolError             a client broke the wire protocol: close its connection
    │   ├── FrameError            frame length < 16, above the limit, or not the message size
    │   └── CommandError          the frame is well formed but its content is not
    │       ├── UnknownCommandError   command id not served (unknown, or VoIP for now)
    │       └── BodyDecodeError       body is not a valid protobuf of the command's message
    └── EnvelopeError             a bus record is not a valid envelope: dead-letter it

Programming errors (a seq outside u16 when encoding, say) raise `ValueError`, never one of
these: they are bugs in our code, not bad input.
"""

from __future__ import annotations

__all__ = [
    "BodyDecodeError",
    "CommandError",
    "EnvelopeError",
    "FrameError",
    "ProtocolError",
    "SchemaError",
    "UnknownCommandError",
]


class SchemaError(Exception):
    """Root of the exceptions raised on bad input by the schemas package."""


class ProtocolError(SchemaError):
    """A client sent something that breaks the wire protocol; the connection must close."""


class FrameError(ProtocolError):
    """A frame header is invalid: length below the header size, above the limit, or not equal
    to the WebSocket message size. The byte stream cannot be resynchronised after it."""


class CommandError(ProtocolError):
    """A well-framed request whose command or body cannot be served.

    `command_id` is the frame's command id, so a gate can answer with an ErrorRsp that
    echoes it.
    """

    def __init__(self, message: str, *, command_id: int) -> None:
        super().__init__(message)
        self.command_id = command_id


class UnknownCommandError(CommandError):
    """The command id is not in the command table (or has no message type yet)."""


class BodyDecodeError(CommandError):
    """The frame body does not parse as the protobuf message of its command."""


class EnvelopeError(SchemaError):
    """A bus record does not decode as the expected envelope (poison record)."""
