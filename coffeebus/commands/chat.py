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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from coffeebus.commands import ExitCode

if TYPE_CHECKING:
    from coffeebus.chat import ProfileLookup

__all__ = ["register"]

DESCRIPTION = """\
Chat in a terminal as one user: log in to a gate with the user's token, list conversations
with their unread counts, open a single chat or a group by name, read its history, send
messages, and see messages, read receipts and business pushes arrive live. Other people's
messages shown in the open conversation are acknowledged as read; activity in other
conversations is summed up in one line. If the server restarts, the client reconnects and
shows what it missed. Type /help once connected for the commands:

  /sessions            list conversations with unread counts
  /open NAME | ID      open the single chat with a user (u:ID works too)
  /open #NAME | g:ID   open a group
  /more                show older messages of the open conversation
  /quit                leave (or Ctrl-D)
  text                 send it to the open conversation

Try it: `coffeebus run` creates demo users alice (1001, token alice-demo-token) and bob
(1002, bob-demo-token); in two more terminals:
  coffeebus chat --user 1001 --token alice-demo-token     then  /open bob
  coffeebus chat --user 1002 --token bob-demo-token       then  /open alice
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
        "--api",
        default="http://127.0.0.1:18080",
        metavar="URL",
        help="the HTTP API, asked for the names of a group's members (GET /demo/users; "
        "default %(default)s, `coffeebus run`'s); without it they show as ids",
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
    return asyncio.run(_chat(args.user, args.token, args.gate, api=args.api, tls=args.tls))


async def _stdin_lines() -> asyncio.StreamReader:
    """Stdin as an asyncio stream (a terminal, a pipe or a pty)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _print(line: str) -> None:
    print(line, flush=True)


#: Cursor up one line and erase it: the terminal's echo of a typed message, which the
#: client writes again once it is stored (with its time and "you"), so it shows once.
_ERASE_ECHO = "\x1b[1A\x1b[2K"


def _profiles(api: str, user: int, token: str) -> ProfileLookup:
    """Names of people from the API's ``GET /demo/users`` (the web demo's lookup)."""
    import httpx  # noqa: PLC0415

    async def lookup(ids: Sequence[int]) -> dict[int, str]:
        async with httpx.AsyncClient(base_url=api, timeout=3.0) as http:
            rsp = await http.get(
                "/demo/users",
                params=[("id", str(i)) for i in ids],
                headers={"X-CoffeeBus-User-Id": str(user), "X-CoffeeBus-Token": token},
            )
            rsp.raise_for_status()
        return {int(u["user_id"]): u["nick_name"] for u in rsp.json()["users"] if u["nick_name"]}

    return lookup


async def _chat(user: int, token: str, gate: tuple[str, int], *, api: str, tls: bool) -> int:
    from coffeebus.chat import ChatSession  # noqa: PLC0415  # keeps --help fast
    from sdk.client import Client  # noqa: PLC0415
    from sdk.errors import LoginError  # noqa: PLC0415

    # A restarted server is back within seconds: do not wait the SDK's default 30 s.
    client = Client(reconnect_max_delay=3.0)
    host, port = gate
    try:
        await client.connect(host, port, ssl=ssl.create_default_context() if tls else None)
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach the gate {host}:{port}: {exc}", file=sys.stderr)
        return ExitCode.UNREACHABLE
    try:
        try:
            rsp = await client.login(user, token)
        except LoginError as exc:
            print(f"login refused: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        tty = sys.stdout.isatty()
        session = ChatSession(client, _print, tty=tty, profiles=_profiles(api, user, token))
        name = rsp.user_info.nick_name or str(user)
        _print(f"logged in as {name} ({user}) on {host}:{port} — /help lists the commands")
        await session.start()

        async def pump_events() -> None:
            async for event in client.events():
                await session.handle_event(event)
                if session.done:
                    return

        events = asyncio.create_task(pump_events())
        lines = await _stdin_lines()
        echoing = tty and sys.stdin.isatty()
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
                text = raw.decode("utf-8", errors="replace")
                sending = text.strip() and not text.lstrip().startswith("/")
                if echoing and sending and session.current is not None:
                    sys.stdout.write(_ERASE_ECHO)
                await session.handle_line(text)
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
        return ExitCode.OK
    finally:
        await client.close()
