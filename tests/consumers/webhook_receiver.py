"""A real local HTTP/1.1 server receiving webhooks in tests, checking every signature.

`Receiver(secret, answer)` listens on a free loopback port; `answer(request)` decides each
response: a status code, optionally with headers, or `STALL` to never answer (so the sender
times out). Requests are kept in arrival order with whether their signature verified.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from schemas.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

STALL = -1


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool
    status: int

    @property
    def event_id(self) -> str:
        return self.headers["x-coffeebus-event-id"]

    @property
    def attempt(self) -> int:
        return int(self.headers["x-coffeebus-delivery-attempt"])


Answer = Callable[["Received"], int | tuple[int, dict[str, str]]]


class Receiver:
    """A webhook receiver on 127.0.0.1 (see the module docstring)."""

    def __init__(self, secret: str, answer: Answer) -> None:
        self._secret = secret
        self._answer = answer
        self.requests: list[Received] = []
        self._changed = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: where to POST (set when started)
        self.url = ""

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # kept-alive connections: end their handlers
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def succeeded(self) -> list[Received]:
        """The requests answered 2xx, in order."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait(self, done: Callable[[list[Received]], bool], *, within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not done(self.requests):
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                signed = verify(
                    self._secret,
                    headers.get(TIMESTAMP_HEADER.lower()),
                    headers.get(SIGNATURE_HEADER.lower()),
                    body,
                )
                probe = Received(method, path, headers, body, signed, 0)
                answer = self._answer(probe)
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                self.requests.append(Received(method, path, headers, body, signed, status))
                self._changed.set()
                if status == STALL:
                    await self._release.wait()
                    return
                payload = b"" if status in (204, 304) else b"ok"  # 204: no body, ever
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(head.encode() + b"\r\n" + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
