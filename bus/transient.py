"""Which errors mean "try again later": the bus's own rules and those adapters register.

The runner (`bus.runner`) retries a batch whose handler raised a *transient* error and
dead-letters the records of any other; the HTTP API answers a transient one with 503. The bus
knows its own errors — `RetriableError`, Python's network and timeout errors, Kafka errors
flagged `retriable`, uvloop's write to a closed connection — but not those of the drivers a
handler reaches through the stores: it imports neither PyMongo nor redis-py. Each adapter
package classifies its own driver's errors and registers the classifier here when it is
imported (`store.mongo.errors`, `store.redis.errors`), so whatever process can raise a
driver's error has its classifier: the error can only come from an adapter that was imported.

A classifier answers True for an error it knows to be transient and False for anything else;
`is_transient` asks them in the order they registered, after its own rules.
"""

from __future__ import annotations

from collections.abc import Callable

from bus.base import RetriableError

__all__ = ["Classifier", "is_closed_transport", "is_transient", "register_transient"]

#: Answers whether an error is transient; False for errors it does not know.
Classifier = Callable[[BaseException], bool]

# Exceptions that mean "try again later" whoever raises them.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (RetriableError, ConnectionError, TimeoutError)

_classifiers: list[Classifier] = []


def register_transient(classifier: Classifier) -> None:
    """Have `is_transient` ask `classifier` too (registering one twice changes nothing)."""
    if classifier not in _classifiers:
        _classifiers.append(classifier)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is worth retrying: a known transient type, flagged `retriable`, or one a
    registered classifier knows to be transient.

    The flag is aiokafka's convention (`KafkaError.retriable`); aiokafka's
    `KafkaTimeoutError` (a batch expired before the broker answered) lacks it but is
    transient all the same.
    """
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if getattr(exc, "retriable", False) is True:
        return True
    if type(exc).__name__ == "KafkaTimeoutError" and type(exc).__module__.startswith("aiokafka"):
        return True
    if is_closed_transport(exc):
        return True
    return any(classifier(exc) for classifier in _classifiers)


def is_closed_transport(exc: BaseException) -> bool:
    """uvloop's error for a write to a connection that has closed.

    Where asyncio's own loop drops such a write, uvloop (the roles' loop) raises
    ``RuntimeError('unable to perform operation on <TCPTransport closed=True …>; the handler
    is closed')``. aiokafka writes to a broker's connection before it notices the broker
    went away, and passes that error on from a fetch or a produce: a lost connection, not a
    bug — found when a broker was killed under the deployed-system test's load, where it
    ended a consumer group's member (tests/chaos/test_deployed_system.py).
    """
    text = str(exc)
    return (
        type(exc) is RuntimeError
        and text.startswith("unable to perform operation on <")
        and text.endswith("the handler is closed")
    )
