"""`bus.transient`: which errors the runner retries, the consumer loop fetches again after."""

from __future__ import annotations

import asyncio

import uvloop

from bus.transient import is_closed_transport, is_transient


def _write_after_close() -> BaseException:
    """The error uvloop raises for a write to a connection that has closed (a broker that
    went away), from a real connection on a real uvloop loop."""

    async def main() -> BaseException:
        accepted: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            try:
                writer.write(b"a request")
            except Exception as exc:
                return exc
            raise AssertionError("uvloop accepted a write to a closed connection")
        finally:
            for peer in accepted:
                peer.close()
                await peer.wait_closed()
            server.close()
            await server.wait_closed()

    return uvloop.run(main())


def test_uvlooops_write_to_a_closed_connection_is_transient() -> None:
    error = _write_after_close()
    assert type(error) is RuntimeError, repr(error)
    assert is_closed_transport(error)
    assert is_transient(error)


def test_other_runtime_errors_are_not() -> None:
    assert not is_transient(RuntimeError("unable to perform operation on a dict"))
    assert not is_transient(RuntimeError("Event loop is closed"))
    assert not is_transient(ValueError("unable to perform operation on <x>; the handler is closed"))
