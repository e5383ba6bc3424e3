"""Real local HTTP servers standing in for push services in the push tests.

- `Http1Server`: HTTP/1.1 on ``asyncio.start_server`` (keep-alive, Content-Length bodies) —
  the webhook push receiver, FCM's send endpoint and the OAuth2 token endpoint;
- `H2Server`: HTTP/2 with prior knowledge on the `h2` state machine — APNs, which speaks
  HTTP/2 only (an HTTP/1.1 request is a protocol error to it, as to APNs).

Both record every request (`Seen`) with its arrival time and answer it with a function of
the request (`Responder`), so a test scripts failures and checks method, path, headers and
body afterwards. Waiting is on an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

WAIT_S = 20.0


@dataclass(frozen=True, slots=True)
class Seen:
    """One request a server received."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes
    at_ms: int


@dataclass(frozen=True, slots=True)
class Answer:
    """What a server answers."""

    status: int = 200
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


Responder = Callable[[Seen], Answer]


@dataclass
class _Recorder:
    respond: Responder = field(default=lambda seen: Answer())
    requests: list[Seen] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, seen: Seen) -> Answer:
        self.requests.append(seen)
        self._changed.set()
        return self.respond(seen)

    def on(self, path_prefix: str) -> list[Seen]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def wait_for(self, count: int, path_prefix: str = "/", within: float = WAIT_S) -> None:
        """Until at least `count` requests under `path_prefix` arrived."""
        async with asyncio.timeout(within):
            while len(self.on(path_prefix)) < count:
                self._changed.clear()
                await self._changed.wait()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Http1Server(_Recorder):
    """A minimal HTTP/1.1 server on 127.0.0.1 (module docstring)."""

    def __init__(self, respond: Responder | None = None) -> None:
        super().__init__()
        if respond is not None:
            self.respond = respond
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> Http1Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self.record(Seen(method, path, headers, body, _now_ms()))
                out = [f"HTTP/1.1 {answer.status} X", f"content-length: {len(answer.body)}"]
                out += [f"{name}: {value}" for name, value in answer.headers]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + answer.body)
                await writer.drain()
        finally:
            writer.close()


class H2Server(_Recorder):
    """A minimal HTTP/2 (prior knowledge, no TLS) server on 127.0.0.1 (module docstring)."""

    def __init__(self, respond: Responder | None = None) -> None:
        super().__init__()
        if respond is not None:
            self.respond = respond
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> H2Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {str(k): str(v) for k, v in event.headers or ()}
                        streams[event.stream_id or 0] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        stream_id = event.stream_id or 0
                        streams[stream_id][1].extend(event.data or b"")
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        stream_id = event.stream_id or 0
                        headers, body = streams.pop(stream_id)
                        seen = Seen(
                            headers.pop(":method", ""),
                            headers.pop(":path", ""),
                            headers,
                            bytes(body),
                            _now_ms(),
                        )
                        answer = self.record(seen)
                        conn.send_headers(
                            stream_id,
                            [
                                (":status", str(answer.status)),
                                ("content-length", str(len(answer.body))),
                                *answer.headers,
                            ],
                        )
                        conn.send_data(stream_id, answer.body, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()
