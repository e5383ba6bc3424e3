"""Every error of the HTTP API as an RFC 9457 ``application/problem+json`` body.

Litestar raises `HTTPException`s for what it rejects itself (malformed JSON, wrong types,
missing fields, an oversize body, an unknown route or method); the handlers raise them for
what the domain rejects (unknown user, taken user name); the stores raise their own errors.
The exception handlers here turn all of them into one body shape::

    {"type": "urn:coffeebus:problem:invalid-request", "title": "Invalid request",
     "status": 400, "detail": "...", "errors": [{"message": ..., "key": ..., "source": ...}]}

Bad input is always a 4xx. A store that cannot be reached is a 503 (retry later); anything
else unexpected is logged with its traceback and answered with a bare 500 that leaks no
internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap
from pymongo.errors import ConnectionFailure, OperationFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.base import BusError
from producers.models import Problem, ProblemFieldError
from store.errors import (
    InvalidUserInputError,
    UnknownUserError,
    UserDeletedError,
    UserNameTakenError,
)
from store.mongo.errors import is_transient_mongo

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEMS",
    "PROBLEM_MEDIA_TYPE",
    "ApiProblem",
    "make_problem",
    "problem_response",
    "problem_responses",
]

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_TYPE_PREFIX: Final = "urn:coffeebus:problem:"

# Problem type slugs by status, for exceptions that do not say more precisely what failed.
_SLUGS: Final[Mapping[int, str]] = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "rate-limited",
    500: "internal-error",
    503: "unavailable",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries documenting problem+json answers of these statuses."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=HTTPStatus(status).phrase,
            generate_examples=False,
        )
        for status in statuses
    }


#: The problems any business endpoint may answer (`responses=` of each route handler).
PROBLEMS: Final = problem_responses(400, 401, 404, 409, 413, 422, 503)


class ApiProblem(Exception):
    """A refusal a handler raises with its own problem type (e.g. 404 ``unknown-group``)."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail


def make_problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[ProblemFieldError] | None = None,
) -> Problem:
    """The problem body of a status (its type from `slug`, or the status's default)."""
    return Problem(
        type=_TYPE_PREFIX + (slug or _SLUGS.get(status, "error")),
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=errors,
    )


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[ProblemFieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Problem]:
    """A problem+json response."""
    return Response(
        make_problem(status, detail, slug=slug, errors=errors),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def _field_errors(extra: Any) -> list[ProblemFieldError] | None:
    """Litestar's validation details (a list of {message, key, source}) as field errors."""
    if not isinstance(extra, list):
        return None
    errors = [
        ProblemFieldError(
            message=str(item.get("message", "")),
            key=None if item.get("key") is None else str(item["key"]),
            source=None if item.get("source") is None else str(item["source"]),
        )
        for item in extra
        if isinstance(item, dict)
    ]
    return errors or None


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.detail, exc_info=exc)
        return problem_response(status, HTTPStatus(status).description)
    errors = _field_errors(exc.extra) if isinstance(exc, ValidationException) else None
    detail = exc.detail or HTTPStatus(status).description
    if errors and detail.startswith("Validation failed for"):
        # Litestar's generic sentence names only the route; the first field error says more.
        detail = "; ".join(
            f"{e.key}: {e.message}" if e.key else e.message for e in errors if e.message
        )
    return problem_response(status, detail, errors=errors, headers=exc.headers)


def _unknown_user(_: Request[Any, Any, Any], exc: UnknownUserError) -> Response[Problem]:
    return problem_response(404, str(exc), slug="unknown-user")


def _user_deleted(_: Request[Any, Any, Any], exc: UserDeletedError) -> Response[Problem]:
    return problem_response(410, str(exc), slug="user-deleted")


def _name_taken(_: Request[Any, Any, Any], exc: UserNameTakenError) -> Response[Problem]:
    return problem_response(409, str(exc), slug="user-name-taken")


def _invalid_input(_: Request[Any, Any, Any], exc: InvalidUserInputError) -> Response[Problem]:
    return problem_response(400, str(exc), slug="invalid-request")


def _api_problem(_: Request[Any, Any, Any], exc: ApiProblem) -> Response[Problem]:
    return problem_response(exc.status, exc.detail, slug=exc.slug)


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    logger.warning("%s %s: store unavailable: %r", request.method, request.url.path, exc)
    return problem_response(
        503, "a backing store is unavailable; retry later", headers={"Retry-After": "1"}
    )


def _store_failure(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """A server-side store error: 503 when the server says a retry may succeed (a busy or
    stepping-down server, FerretDB-on-SQLite's "database is locked"), else 500."""
    if is_transient_mongo(exc):
        return _unavailable(request, exc)
    return _internal(request, exc)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal server error")


#: Handlers for `Litestar(exception_handlers=...)`.
EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    HTTPException: _http_exception,
    UnknownUserError: _unknown_user,
    UserDeletedError: _user_deleted,
    UserNameTakenError: _name_taken,
    InvalidUserInputError: _invalid_input,
    ApiProblem: _api_problem,
    BusError: _unavailable,
    ConnectionFailure: _unavailable,
    OperationFailure: _store_failure,
    RedisConnectionError: _unavailable,
    RedisTimeoutError: _unavailable,
    Exception: _internal,
}
