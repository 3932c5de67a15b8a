"""Who was told of an incident: kept whole when planning, fallbacks and timers add people at the same time."""

from __future__ import annotations

import asyncio

from sims.bootstrap import Runtime
from sims.notifications.core import BUCKET


async def test_people_told_at_once_are_all_kept(runtime: Runtime) -> None:
    notifications = runtime.notifications
    await asyncio.gather(*(notifications._mark_told("inc1", [(f"p{i}", f"inc1.holding.p{i}.sms.1")])
                           for i in range(20)))
    await notifications._mark_told("inc1", [("p3", "inc1.holding.p3.email.1"), ("p3", "inc1.holding.p3.sms.1")])
    told = await runtime.kv.get(BUCKET, "told.inc1")
    assert set(told) == {f"p{i}" for i in range(20)}  # none lost to a concurrent read-modify-write
    assert told["p3"] == ["inc1.holding.p3.sms.1", "inc1.holding.p3.email.1"]  # each key once, in order
