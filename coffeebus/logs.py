"""Logging for every CoffeeBus process: text for people, JSON lines for log shippers.

Context that helps find a record or a connection (topic, partition, offset, conn id, user
id, trace id) is either passed with ``extra={...}`` or bound for a stretch of work with
`telemetry.logcontext.bind` (the gate binds the connection, the bus runner the record);
`telemetry.logcontext.ContextFilter` on the handler adds the bound fields to every record.
The JSON formatter writes every such field, the text formatter appends them as
``key=value``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, Protocol

import msgspec

from coffeebus.settings import LogSettings
from telemetry.logcontext import ContextFilter

__all__ = [
    "ConsoleHandler",
    "JsonFormatter",
    "StatusLine",
    "TextFormatter",
    "configure_logging",
    "console_status",
]

#: Attributes every LogRecord has; anything else came from ``extra``.
#: uvicorn's ``color_message`` (an ANSI-coloured copy of the message) is dropped too.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)
_json: Final = msgspec.json.Encoder()
#: Libraries whose INFO lines say what the process's own lines say better ("listening on",
#: "application startup complete"): shown only at DEBUG.
_CHATTY_LIBRARIES: Final = ("uvicorn", "websockets")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extras, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _json.encode(doc).decode()


class StatusLine(Protocol):
    """A line the terminal shows below the log (`coffeebus.progress.StartupProgress`)."""

    def clear(self) -> None: ...

    def redraw(self) -> None: ...


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler; it keeps a status line, if one is shown, below the records.

    While a status line is shown at the INFO level, it stands for the INFO records ("gate
    listening", "consumer started"): only warnings and errors are printed above it. At
    DEBUG (``-v``) every record is.
    """

    status: StatusLine | None = None

    def emit(self, record: logging.LogRecord) -> None:
        status = self.status
        if status is None:
            super().emit(record)
            return
        if record.levelno < logging.WARNING and logging.getLogger().level > logging.DEBUG:
            return
        status.clear()
        try:
            super().emit(record)
        finally:
            status.redraw()


def console_status(status: StatusLine | None) -> None:
    """Show `status` below the records of the console handler (None: stop showing it)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ConsoleHandler):
            handler.status = status


def configure_logging(settings: LogSettings, *, verbosity: int = 0) -> None:
    """Route the root logger to stderr in the configured format and level.

    `verbosity` (``-v`` flags) lowers the level: ``-v`` one step below the configured one
    (INFO, the default, becomes DEBUG), ``-vv`` to DEBUG. Third-party clients that log every
    reconnect attempt (aiokafka) stay at WARNING unless ``-vv``; the web and WebSocket
    servers' start and stop lines (uvicorn, websockets) are DEBUG chatter: shown from
    ``-v`` on, or when the configured level is DEBUG.
    """
    level = logging.getLevelNamesMapping()[settings.level]
    if verbosity:
        level = logging.DEBUG if verbosity > 1 else max(logging.DEBUG, level - 10)
    handler = ConsoleHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
    chatter = logging.NOTSET if level <= logging.DEBUG else logging.WARNING
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(chatter)
