"""Exceptions of the client SDK.

::

    SdkError                      root of everything the SDK raises on purpose
    ├── NotConnectedError         no live, logged-in connection (not yet, reconnecting, closed)
    ├── ConnectionLostError       the connection dropped while a request waited
    ├── RequestTimeoutError       no response within the timeout (also a TimeoutError)
    ├── TooManyPendingError       65,535 requests already wait on this connection
    ├── ServerError               the server rejected the request with an ErrorRsp (0x0802)
    ├── LoginError                a login answered with a result code other than SUCCESS
    └── ServerProtocolError       the server sent a frame or body that does not decode

`ServerError.retriable` says whether the same request may succeed later (rate limited,
unavailable, internal error), from the code's own `ExtResultCode.retriable`.
"""

from __future__ import annotations

from schemas.codes import ErrorCode, ExtResultCode

__all__ = [
    "ConnectionLostError",
    "LoginError",
    "NotConnectedError",
    "RequestTimeoutError",
    "SdkError",
    "ServerError",
    "ServerProtocolError",
    "TooManyPendingError",
]


class SdkError(Exception):
    """Root of the SDK's exceptions."""


class NotConnectedError(SdkError):
    """The client has no live connection to send on."""


class ConnectionLostError(SdkError):
    """The connection dropped (or was closed) before the response arrived."""


class RequestTimeoutError(SdkError, TimeoutError):
    """No response to a request within its timeout."""

    def __init__(self, command_id: int, seq: int, timeout: float) -> None:
        super().__init__(
            f"no response to command 0x{command_id:04X} (seq {seq}) within {timeout:g} s"
        )
        self.command_id = command_id
        self.seq = seq
        self.timeout = timeout


class TooManyPendingError(SdkError):
    """Every request seq of the connection is taken by a request still waiting."""


class ServerError(SdkError):
    """The server answered a request with an ErrorRsp (0x0802)."""

    def __init__(self, code: int, request_command_id: int, text: str) -> None:
        try:
            self.code: ExtResultCode | int = ExtResultCode(code)
            name = self.code.name
        except ValueError:  # a newer server's code: keep the number
            self.code = code
            name = str(code)
        super().__init__(
            f"server rejected command 0x{request_command_id:04X}: {name}"
            + (f" ({text})" if text else "")
        )
        self.request_command_id = request_command_id
        self.text = text

    @property
    def retriable(self) -> bool:
        """Whether the same request may succeed if sent again later."""
        return isinstance(self.code, ExtResultCode) and self.code.retriable


class LoginError(SdkError):
    """A login (by token or by password) failed; `code` is the response's result code."""

    def __init__(self, code: int, text: str) -> None:
        try:
            self.code: ErrorCode | int = ErrorCode(code)
            name = self.code.name
        except ValueError:
            self.code = code
            name = str(code)
        super().__init__(f"login failed: {name}" + (f" ({text})" if text else ""))
        self.text = text


class ServerProtocolError(SdkError):
    """The server broke the wire protocol (bad frame, undecodable body)."""
