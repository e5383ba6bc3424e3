"""The commands of ``im.up.msg`` other than MsgData, as a table the msg group dispatches on.

``im.up.msg`` is keyed by conversation, so whatever must be ordered with a conversation's
messages travels there: MsgData (`consumers.msg`), RevokeReq (a revoke changes the timeline
its single writer owns) and TypingNotify (transient, but ordered with the messages it
announces). Each non-MsgData command lives in a module of its own that registers itself::

    @msg_command(Cmd.REVOKE_REQ, ordered=True)
    async def revoke(ctx: MsgContext, request: Request, effects: Effects) -> None: ...

and is listed in `COMMAND_MODULES` (imported when the msg handler is built; a module that
does not exist yet is skipped with a log line, so the table grows without touching msg.py).

``ordered=True`` means the command must see every MsgData that precedes it in the batch
stored first (the msg group stores MsgData in bulk per run of consecutive sends, and flushes
that run before an ordered command); ``ordered=False`` commands (typing) touch no timeline.

A handler writes what it must, then adds its responses and pushes to `effects`; the msg
handler publishes them with the batch's other effects, after every store write of the batch.
A handler refuses a request by raising `consumers.requests.Refusal` (answered with an
ErrorRsp when the request has an origin); any other exception fails the batch like a store
error (retried if transient, else the record is dead-lettered).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bus.base import Bus
from bus.topology import Topology
from consumers.effects import Effects
from consumers.requests import Request
from schemas.commands import Cmd
from store.groups import GroupStore
from store.messages import MessageStore
from store.routes import RouteStore
from store.seq import SeqAllocator
from store.users import UserStore

__all__ = [
    "COMMAND_MODULES",
    "MsgCommand",
    "MsgContext",
    "load_command_modules",
    "msg_command",
    "registered",
]

log = logging.getLogger(__name__)

#: Modules registering ``im.up.msg`` commands (imported if present).
COMMAND_MODULES: tuple[str, ...] = ("consumers.typing_notify", "consumers.revoke")


@dataclass(frozen=True, slots=True)
class MsgContext:
    """What a command handler of the msg group may use."""

    bus: Bus
    topology: Topology
    users: UserStore
    routes: RouteStore
    messages: MessageStore
    groups: GroupStore
    #: conversation seqs of the partitions this member owns (the msg group is their writer)
    seqs: SeqAllocator
    #: how long after sending a message its sender may revoke it (``[messaging]``)
    revoke_window_s: float = 120.0


MsgCommandHandler = Callable[[MsgContext, Request, Effects], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MsgCommand:
    """A registered command: its handler and whether preceding sends must be stored first."""

    handler: MsgCommandHandler
    ordered: bool


_COMMANDS: dict[int, MsgCommand] = {}


def msg_command(cmd: Cmd, *, ordered: bool) -> Callable[[MsgCommandHandler], MsgCommandHandler]:
    """Register the handler of `cmd` (an ``im.up.msg`` command other than MsgData)."""
    if cmd == Cmd.MSG_DATA:
        raise ValueError("MsgData is the msg group's own")

    def register(handler: MsgCommandHandler) -> MsgCommandHandler:
        _COMMANDS[int(cmd)] = MsgCommand(handler, ordered)
        return handler

    return register


def load_command_modules() -> None:
    """Import the modules of `COMMAND_MODULES` that exist (idempotent)."""
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            log.info("msg group: %s does not exist yet; its commands are refused", name)
            continue
        importlib.import_module(name)


def registered(cmd: int) -> MsgCommand | None:
    """The registration of `cmd`, or None."""
    return _COMMANDS.get(cmd)
