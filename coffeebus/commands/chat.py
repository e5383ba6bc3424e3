"""`coffeebus chat`: a line-oriented chat client in the terminal (the SDK behind it).

The logic is `coffeebus.chat.ChatSession`; this module only parses the options, connects
and logs in, reads lines from stdin and prints what the session writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys

from coffeebus.commands import ExitCode

__all__ = ["register"]

DESCRIPTION = """\
Chat in a terminal as one user: log in to a gate with the user's token, list conversations
with their unread counts, open a single chat or a group, read its history, send messages,
and see messages and read receipts arrive live. What is shown of the open conversation is
acknowledged as read. Type /help once connected for the commands:

  /sessions          list conversations with unread counts
  /open u:ID | ID    open the single chat with user ID
  /open g:ID         open group ID
  /more              show older messages of the open conversation
  /quit              leave (or Ctrl-D)
  text               send it to the open conversation

Try it: `coffeebus run` creates demo users alice (1001, token alice-demo-token) and bob
(1002, bob-demo-token); in two more terminals:
  coffeebus chat --user 1001 --token alice-demo-token     then  /open 1002
  coffeebus chat --user 1002 --token bob-demo-token       then  /open 1001
Other users and tokens come from the HTTP API (PUT /v1/users/{id}).

exit codes:
  0  left with /quit or end of input
  2  the gate refused the login (wrong user or token)
  3  the gate did not answer
"""


def _gate(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `chat`."""
    parser = subparsers.add_parser(
        "chat",
        help="chat in the terminal as a user (a client of a gate)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--user", type=int, required=True, metavar="ID", help="the user id to log in as"
    )
    parser.add_argument(
        "--token", required=True, metavar="T", help="the user's token (from the HTTP API)"
    )
    parser.add_argument(
        "--gate",
        type=_gate,
        default=("127.0.0.1", 8000),
        metavar="HOST:PORT",
        help="the gate's TCP listener (default 127.0.0.1:8000, `coffeebus run`'s)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, verifying the gate's certificate against the system's CAs "
        "(for a gate with [gateway] tls_cert/tls_key)",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    # Ctrl-C ends the process through the CLI's KeyboardInterrupt handling (exit 130).
    return asyncio.run(_chat(args.user, args.token, args.gate, tls=args.tls))


async def _stdin_lines() -> asyncio.StreamReader:
    """Stdin as an asyncio stream (a terminal, a pipe or a pty)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _print(line: str) -> None:
    print(line, flush=True)


async def _chat(user: int, token: str, gate: tuple[str, int], *, tls: bool) -> int:
    from coffeebus.chat import ChatSession  # noqa: PLC0415  # keeps --help fast
    from sdk.client import Client  # noqa: PLC0415
    from sdk.errors import LoginError  # noqa: PLC0415

    client = Client()
    host, port = gate
    try:
        await client.connect(host, port, ssl=ssl.create_default_context() if tls else None)
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach the gate {host}:{port}: {exc}", file=sys.stderr)
        return ExitCode.UNREACHABLE
    try:
        try:
            await client.login(user, token)
        except LoginError as exc:
            print(f"login refused: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        session = ChatSession(client, _print)
        _print(f"logged in as {user} on {host}:{port} — /help lists the commands")
        await session.show_sessions()

        async def pump_events() -> None:
            async for event in client.events():
                await session.handle_event(event)
                if session.done:
                    return

        events = asyncio.create_task(pump_events())
        lines = await _stdin_lines()
        try:
            while not session.done and not events.done():
                read = asyncio.ensure_future(lines.readline())
                await asyncio.wait({read, events}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    break
                raw = read.result()
                if not raw:  # end of input (Ctrl-D)
                    break
                await session.handle_line(raw.decode("utf-8", errors="replace"))
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
        return ExitCode.OK
    finally:
        await client.close()
