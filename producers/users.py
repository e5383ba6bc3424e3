"""User endpoints: the seed's ``POST /user/register`` and the versioned ``/v1/users`` API.

Handlers get the stores by dependency injection (``stores``, a `producers.deps.Stores`; see
`producers.app.create_app`), so the embedded process and the real one run the same code on
different stores.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post, put
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, Parameter

from producers.deps import StoresDep
from producers.jsonbody import BodyProblem, check_media_type, parse_json_body
from producers.models import (
    Device,
    DevicesResponse,
    RegisterRequest,
    RegisterResponse,
    TokenResponse,
    UserImportBody,
    UserView,
)
from producers.problems import PROBLEMS, ApiProblem, problem_responses
from schemas.codes import ClientType, ErrorCode
from store.errors import InvalidUserInputError, UnknownUserError, UserDeletedError
from store.ids import MAX_USER_ID, UserId
from store.users import User, UserImport, UserStore, generate_token

__all__ = [
    "devices",
    "get_user",
    "legacy_register",
    "live_user",
    "parse_id",
    "parse_user_id",
    "put_user",
    "rotate_token",
]

logger = logging.getLogger(__name__)

UserIdPath = Annotated[
    str, Parameter(description=f"user id, a decimal integer in 1..{MAX_USER_ID}")
]
_MAX_ID_DIGITS: Final = len(str(MAX_USER_ID))


def parse_id(raw: str, what: str) -> int:
    """An id (`what`: "user id", "group id") from a path or query segment;
    `ValidationException` (400) unless it is a decimal integer in 1..MAX_USER_ID.

    Parsed by hand rather than by a typed path parameter so that ``/v1/users/abc`` is a 400
    saying why, not a 404 from a route that does not match.
    """
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_ID_DIGITS + 1:
        raise ValidationException(f"{what} must be a decimal integer in 1..{MAX_USER_ID}")
    value = int(raw)
    if not 0 < value <= MAX_USER_ID:
        raise ValidationException(f"{what} must be in 1..{MAX_USER_ID}, not {value}")
    return value


def parse_user_id(raw: str) -> UserId:
    """A user id from a path or query segment (`parse_id`)."""
    return UserId(parse_id(raw, "user id"))


async def live_user(users: UserStore, user_id: UserId) -> User:
    """The user; `UnknownUserError` (404) when there never was one, `UserDeletedError` (410)
    when it was deleted."""
    user = await users.get(user_id)
    if user is None:
        raise UnknownUserError(f"no user {user_id}")
    if user.deleted:
        raise UserDeletedError(f"user {user_id} was deleted")
    return user


def _view(user: User, *, with_token: bool) -> UserView:
    return UserView(
        user_id=user.user_id,
        nick_name=user.nick_name,
        nick_name_spell=user.nick_name_spell,
        phone=user.phone,
        avatar_url=user.avatar_url,
        attach_info=user.attach_info,
        user_name=user.user_name,
        has_password=user.password_hash is not None,
        created_ms=user.created_ms,
        updated_ms=user.updated_ms,
        token=user.token if with_token else None,
    )


# --- the seed's endpoint ------------------------------------------------------------------


def _seed_error(status: int, code: int, message: str) -> Response[RegisterResponse]:
    return Response(RegisterResponse(error_code=code, error_msg=message), status_code=status)


@post(
    "/user/register",
    summary="Register a user (CoffeeChat seed compatible)",
    description=(
        "The seed's legacy endpoint. Body `{user_id, user_nick_name, user_token}`; the token "
        "is generated when missing or empty. Answers in the seed's envelope "
        "`{error_code, error_msg}`: 0/'success' (200), 9001 invalid parameter (400), "
        "9000 user already exists (409), 201 internal error (503)."
    ),
    tags=["legacy"],
    status_code=200,
    responses={
        status: ResponseSpec(data_container=RegisterResponse, description=HTTPStatus(status).phrase)
        for status in (400, 409, 413, 415, 503)
    }
    | problem_responses(401),
)
async def legacy_register(
    request: Request[Any, Any, Any], stores: StoresDep
) -> Response[RegisterResponse]:
    """``POST /user/register``: create a user; the seed's envelope on success and error."""
    # The body is decoded here, not by Litestar, so that every error keeps the seed's shape.
    try:
        raw = await request.body()
        if raw:
            check_media_type(request.headers.get("content-type"))
        body = msgspec.convert(parse_json_body(raw), type=RegisterRequest)
    except HTTPException as exc:  # e.g. 413, the body is above the limit
        return _seed_error(exc.status_code, ErrorCode.USER_INVALID_PARAMETER, exc.detail)
    except BodyProblem as exc:  # not UTF-8, not JSON, a duplicate key, a NUL ...
        return _seed_error(exc.status, ErrorCode.USER_INVALID_PARAMETER, exc.detail)
    except msgspec.ValidationError as exc:
        return _seed_error(400, ErrorCode.USER_INVALID_PARAMETER, f"invalid parameters: {exc}")
    if not 0 < body.user_id <= MAX_USER_ID:
        return _seed_error(400, ErrorCode.USER_INVALID_PARAMETER, "invalid user_id")
    user_id = UserId(body.user_id)
    token = body.user_token or generate_token()
    # Check-then-create, as the seed did: two concurrent registrations of one new id may
    # both succeed (the later one's fields win); re-registering an existing id is refused.
    if await stores.users.get(user_id) is not None:
        return _seed_error(409, ErrorCode.USER_ALREADY_EXIST, "user already exist")
    try:
        user = await stores.users.upsert(
            UserImport(user_id=user_id, nick_name=body.user_nick_name.strip(), token=token)
        )
    except InvalidUserInputError as exc:
        return _seed_error(400, ErrorCode.USER_INVALID_PARAMETER, str(exc))
    logger.info("registered user %d (legacy endpoint)", user_id)
    return Response(
        RegisterResponse(
            error_code=0, error_msg="success", user_id=user.user_id, user_token=user.token
        )
    )


# --- /v1/users ----------------------------------------------------------------------------


@put(
    "/v1/users/{user_id:str}",
    summary="Import or update a user",
    description=(
        "Creates the user or updates the fields given; omitted fields keep their value. "
        "Returns the user with its current token."
    ),
    tags=["users"],
    responses=PROBLEMS,
)
async def put_user(
    user_id: UserIdPath, data: JSONBody[UserImportBody], stores: StoresDep
) -> UserView:
    """``PUT /v1/users/{user_id}``."""
    uid = parse_user_id(user_id)
    change = UserImport(
        user_id=uid,
        nick_name=data.nick_name,
        nick_name_spell=data.nick_name_spell,
        phone=data.phone,
        avatar_url=data.avatar_url,
        attach_info=data.attach_info,
        token=data.token,
        user_name=data.user_name,
        password=data.password,
    )
    if data.password is not None and data.user_name is None:
        existing = await stores.users.get(uid)
        if existing is None or existing.user_name is None:
            raise ValidationException("a password needs a user_name to log in with")
    try:
        user = await stores.users.upsert(change)  # UserNameTakenError -> 409
    except UserDeletedError as exc:
        raise ApiProblem(409, "user-deleted", f"{exc}: its id cannot be used again") from None
    return _view(user, with_token=True)


@get("/v1/users/{user_id:str}", summary="Get a user", tags=["users"], responses=PROBLEMS)
async def get_user(user_id: UserIdPath, stores: StoresDep) -> UserView:
    """``GET /v1/users/{user_id}``; the token is not shown."""
    uid = parse_user_id(user_id)
    return _view(await live_user(stores.users, uid), with_token=False)


@post(
    "/v1/users/{user_id:str}/token",
    summary="Rotate a user's token",
    description=(
        "Gives the user a new random token; the old one stops working at once. (An API "
        "served with the messaging pipeline also closes the old token's connections: "
        "`producers.admin.rotate_token`.)"
    ),
    tags=["users"],
    responses=PROBLEMS,
    status_code=200,
)
async def rotate_token(user_id: UserIdPath, stores: StoresDep) -> TokenResponse:
    """``POST /v1/users/{user_id}/token``."""
    uid = parse_user_id(user_id)
    token = await stores.users.rotate_token(uid)  # UnknownUserError -> 404
    logger.info("rotated the token of user %d", uid)
    return TokenResponse(user_id=uid, token=token)


def _client_type_name(value: int) -> str:
    try:
        return ClientType(value).name
    except ValueError:
        return "UNKNOWN"


@get(
    "/v1/users/{user_id:str}/devices",
    summary="A user's online devices",
    description="Where each online device of the user is connected, one per client type.",
    tags=["users"],
    responses=PROBLEMS,
)
async def devices(user_id: UserIdPath, stores: StoresDep) -> DevicesResponse:
    """``GET /v1/users/{user_id}/devices``."""
    uid = parse_user_id(user_id)
    await live_user(stores.users, uid)
    routes = await stores.routes.get(uid)
    return DevicesResponse(
        user_id=uid,
        online=bool(routes),
        devices=[
            Device(
                client_type=route.client_type,
                client_type_name=_client_type_name(route.client_type),
                gate_id=route.gate_id,
                conn_id=route.conn_id,
                login_ms=route.login_ms,
            )
            for route in routes
        ],
    )
