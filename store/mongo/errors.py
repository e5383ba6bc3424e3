"""Which PyMongo errors are transient, registered with `bus.transient` on import.

Transient: PyMongo's `AutoReconnect` family (NetworkTimeout, NotPrimaryError,
ServerSelectionTimeoutError), and a server error that MongoDB labels or codes as one a retry
may cure — or that the server is known to answer when busy
(`store.mongo.compat.is_busy_error`: FerretDB v1 on SQLite's "database is locked"). A bulk
write's error (`BulkWriteError`, an `OperationFailure`) is transient only when every write
error in it is: one poison document makes the whole batch non-transient, so the runner
isolates it instead of retrying forever.
"""

from __future__ import annotations

from pymongo.errors import AutoReconnect, OperationFailure

from bus.transient import register_transient
from store.mongo.compat import is_busy_error

__all__ = ["is_transient_mongo"]

# Server error codes MongoDB documents as transient: the operation may succeed if sent again
# (HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, PrimarySteppedDown,
# ExceededTimeLimit, SocketException, NotWritablePrimary, InterruptedAtShutdown,
# InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
# WriteConflict, LockTimeout).
_TRANSIENT_SERVER_CODES = frozenset(
    {6, 7, 24, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)
# Labels the server puts on errors that a retry may cure.
_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")


def is_transient_mongo(exc: BaseException) -> bool:
    """Whether `exc` is a PyMongo error worth retrying (module docstring)."""
    if isinstance(exc, AutoReconnect):
        return True
    if not isinstance(exc, OperationFailure):
        return False
    if any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    details = exc.details or {}
    write_errors = details.get("writeErrors") if isinstance(details, dict) else None
    if write_errors:
        return all(_transient_code(e.get("code"), str(e.get("errmsg", ""))) for e in write_errors)
    return _transient_code(exc.code, str(exc))


def _transient_code(code: object, message: str) -> bool:
    return code in _TRANSIENT_SERVER_CODES or is_busy_error(code, message)


register_transient(is_transient_mongo)
