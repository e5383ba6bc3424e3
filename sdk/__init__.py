"""CoffeeBus client SDK: an asyncio client of the gate over TCP or WebSocket.

See `sdk.client.Client` and docs/sdk.md.
"""

from sdk.client import Client
from sdk.errors import (
    ConnectionLostError,
    LoginError,
    NotConnectedError,
    RequestTimeoutError,
    SdkError,
    ServerError,
    ServerProtocolError,
    TooManyPendingError,
)
from sdk.events import Disconnected, Event, Kicked, Push, Reconnected

__all__ = [
    "Client",
    "ConnectionLostError",
    "Disconnected",
    "Event",
    "Kicked",
    "LoginError",
    "NotConnectedError",
    "Push",
    "Reconnected",
    "RequestTimeoutError",
    "SdkError",
    "ServerError",
    "ServerProtocolError",
    "TooManyPendingError",
]
