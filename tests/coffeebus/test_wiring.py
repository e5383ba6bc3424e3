"""The wiring hands every role the limits of ``[messaging]``."""

from __future__ import annotations

import msgspec
import pytest

from coffeebus.settings import MessagingSettings, Settings
from coffeebus.wiring import Mode, open_runtime
from consumers import group as group_consumer
from consumers import msg as msg_consumer
from schemas.ids import UserId
from store.groups import GroupFullError, GroupSpec

LIMITED = msgspec.structs.replace(
    Settings(),
    messaging=MessagingSettings(
        group_max_members=3, super_group_max_members=5, revoke_window_s=7.5
    ),
)


async def test_group_limits_and_revoke_window_come_from_settings() -> None:
    async with open_runtime(LIMITED, Mode.EMBEDDED, client_id="test") as runtime:
        assert (runtime.group_limits.normal, runtime.group_limits.super_group) == (3, 5)
        groups = group_consumer.build(runtime)
        assert isinstance(groups, group_consumer.GroupHandler)
        assert groups.limits == runtime.group_limits
        handler = msg_consumer.build(runtime)
        assert isinstance(handler, msg_consumer.MsgHandler)
        assert handler._ctx.revoke_window_s == 7.5
        owner = UserId(1)
        created = await runtime.groups.create(
            GroupSpec(name="g", owner_id=owner), [UserId(2), UserId(3)], create_key="k1"
        )
        with pytest.raises(GroupFullError):
            await runtime.groups.add_members(created.group.group_id, [UserId(4)])
