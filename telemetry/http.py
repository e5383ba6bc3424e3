"""The metrics and health listener of a process: ``/metrics``, ``/healthz``, ``/readyz``.

A minimal HTTP/1.1 server on `asyncio.start_server`, on the process's own event loop —
deliberately not `prometheus_client.start_http_server`, whose thread would keep answering
``/healthz`` while the event loop is stuck: here an answer proves the loop runs. It serves
one GET per connection (Prometheus and Kubernetes probes send nothing else), reads at most
`MAX_REQUEST_BYTES` of headers and closes connections that are slow to send them.

- ``GET /metrics``: the default `prometheus_client` registry, in the text exposition format
  (or OpenMetrics when the scraper asks for it).
- ``GET /healthz``: 200 ``ok`` — the process is alive and its loop answers.
- ``GET /readyz``: 200 ``ready`` when every readiness check passes within
  `CHECK_TIMEOUT_S`, else 503 naming the checks that failed, one per line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

__all__ = ["CHECK_TIMEOUT_S", "MAX_REQUEST_BYTES", "ReadinessCheck", "TelemetryServer"]

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises (or times out) unless what it checks is ready."""

#: How long /readyz waits for one check before calling it failed.
CHECK_TIMEOUT_S: Final = 2.0
#: The longest request head read; a longer one gets 431.
MAX_REQUEST_BYTES: Final = 8192
#: How long a client may take to send its request head.
READ_TIMEOUT_S: Final = 5.0

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class TelemetryServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on `host`:`port` (0: any port).

    `checks` are (name, check) pairs run concurrently by each ``/readyz``.
    """

    def __init__(
        self, host: str, port: int, *, checks: Sequence[tuple[str, ReadinessCheck]] = ()
    ) -> None:
        self._host = host
        self._port = port
        self._checks = tuple(checks)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._server is None:
            raise RuntimeError("the telemetry server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_REQUEST_BYTES
        )
        log.info("metrics and health on http://%s:%d/metrics", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def readiness(self) -> list[str]:
        """The names of the checks that fail now (empty: ready)."""
        results = await asyncio.gather(
            *(asyncio.wait_for(check(), CHECK_TIMEOUT_S) for _, check in self._checks),
            return_exceptions=True,
        )
        down = []
        for (name, _), result in zip(self._checks, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("readiness: %s failed: %r", name, result)
                down.append(name)
        return down

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._respond(head)
        except asyncio.LimitOverrunError:
            status, content_type, body = 431, "text/plain", b"request too large\n"
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        try:
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return 400, "text/plain", b"bad request line\n"
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        path = target.partition("?")[0]
        if path == "/metrics":
            accept = ""
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(REGISTRY)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            down = await self.readiness()
            if down:
                return 503, "text/plain", ("".join(f"{n} not ready\n" for n in down)).encode()
            return 200, "text/plain", b"ready\n"
        return 404, "text/plain", b"not found\n"
