"""Log context: fields every log line carries while a connection or a record is handled.

The gate binds the connection id and user id around the work of one connection, the bus
runner binds the consumer group, topic, partition and offset (and the trace id when a batch
is one record) around a handler call; `ContextFilter`, installed on the process's log
handler (`coffeebus.logs`), copies them into every `logging.LogRecord` emitted meanwhile —
by any module, without it passing ``extra=`` — so the text and JSON formatters show them.

The fields live in a `contextvars.ContextVar`: each asyncio task sees the fields bound in
it (and those of the task that created it), never those of a concurrent task.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Final

__all__ = ["ContextFilter", "bind", "current"]

_EMPTY: Final[dict[str, object]] = {}
_fields: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar(
    "coffeebus_log_context", default=_EMPTY
)


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add `fields` to the log context for the duration of the ``with`` block."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def current() -> dict[str, object]:
    """The fields bound now (a copy)."""
    return dict(_fields.get())


class ContextFilter(logging.Filter):
    """Adds the bound fields to each record; a field passed with ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        if fields:
            attrs = record.__dict__
            for name, value in fields.items():
                attrs.setdefault(name, value)
        return True
