"""Device push-token endpoints: register, list and remove a user's offline-push devices.

The tokens are what the ``push`` group sends offline pushes to (`store.push_tokens`); the
API writes them directly — a registration is one document keyed by provider and token, not
a timeline, so there is no single-writer consumer to go through.
"""

from __future__ import annotations

from typing import Annotated

from litestar import delete, get, post
from litestar.params import JSONBody, Parameter

from producers.deps import Stores, StoresDep
from producers.models import PushTokenBody, PushTokenList, PushTokenView
from producers.problems import PROBLEMS, ApiProblem
from producers.users import UserIdPath, live_user, parse_user_id
from store.ids import UserId
from store.push_tokens import PushDevice, PushProvider, PushTokenStore

__all__ = ["list_push_tokens", "register_push_token", "remove_push_token"]


def _view(device: PushDevice) -> PushTokenView:
    return PushTokenView(
        provider=device.provider.value,
        token=device.token,
        app_id=device.app_id,
        client_type=device.client_type,
        registered_ms=device.registered_ms,
    )


async def _user_and_store(stores: Stores, raw: str) -> tuple[UserId, PushTokenStore]:
    uid = parse_user_id(raw)
    if stores.push_tokens is None:  # routes are only served with a store; kept for mypy
        raise ApiProblem(503, "unavailable", "push tokens are not configured")
    await live_user(stores.users, uid)  # 404, or 410 for a deleted user
    return uid, stores.push_tokens


@post(
    "/v1/users/{user_id:str}/push-tokens",
    summary="Register a device push token",
    description="Idempotent: registering again renews it; a token of another user moves here.",
    tags=["users"],
    responses=PROBLEMS,
    status_code=200,
)
async def register_push_token(
    user_id: UserIdPath, data: JSONBody[PushTokenBody], stores: StoresDep
) -> PushTokenView:
    """``POST /v1/users/{user_id}/push-tokens``."""
    uid, tokens = await _user_and_store(stores, user_id)
    device = await tokens.register(
        PushDevice(
            user_id=uid,
            provider=data.provider,
            token=data.token,
            app_id=data.app_id,
            client_type=data.client_type,
        )
    )
    return _view(device)


@get(
    "/v1/users/{user_id:str}/push-tokens",
    summary="A user's push devices",
    tags=["users"],
    responses=PROBLEMS,
)
async def list_push_tokens(user_id: UserIdPath, stores: StoresDep) -> PushTokenList:
    """``GET /v1/users/{user_id}/push-tokens``."""
    uid, tokens = await _user_and_store(stores, user_id)
    return PushTokenList(user_id=uid, devices=[_view(d) for d in await tokens.devices(uid)])


@delete(
    "/v1/users/{user_id:str}/push-tokens",
    summary="Remove a device push token",
    description="`?provider=apns&token=...`; 404 when the user does not hold that token.",
    tags=["users"],
    responses=PROBLEMS,
    status_code=204,
)
async def remove_push_token(
    user_id: UserIdPath,
    stores: StoresDep,
    provider: Annotated[PushProvider, Parameter(description="apns, fcm or webhook")],
    token: Annotated[str, Parameter(min_length=1, max_length=4096, description="the token")],
) -> None:
    """``DELETE /v1/users/{user_id}/push-tokens?provider=&token=``."""
    uid, tokens = await _user_and_store(stores, user_id)
    if not await tokens.remove(uid, provider, token):
        raise ApiProblem(404, "unknown-push-token", "the user holds no such token")
