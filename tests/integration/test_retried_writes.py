"""Guarded writes retried after a lost acknowledgement (as in a leader election) are recognised as their own.

The server checks the expected last sequence before de-duplicating, so a retried write whose first copy
was stored is refused as stale; the adapters see their own Nats-Msg-Id right after the expected sequence
and treat the write as done: no second event, no second audit record, a timer claim still won.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.js.errors import APIError

from sims.adapters import jetstream as jsa
from sims.bootstrap import Runtime
from sims.messages import Event


async def test_one_of_two_workers_claims_a_due_timer_and_a_retried_claim_stays_won(runtime: Runtime) -> None:
    mine, theirs = jsa.NatsTimers(runtime.js), jsa.NatsTimers(runtime.js)
    now = datetime.now(UTC)
    await mine.set("t.inc.task.1", now - timedelta(seconds=1), {"incident": "inc", "task": "task"})
    [(key, payload, revision)] = await mine.due(now)
    lease = await mine.claim(key, revision, payload, now)
    assert lease is not None
    assert await theirs.claim(key, revision, payload, now) is None  # the other worker lost
    assert await mine.claim(key, revision, payload, now) == lease  # the same claim again (after a timeout): still won
    assert await mine.due(now) == []  # leased: not due again while the lease lasts
    await mine.done(key, lease)
    assert await mine.due(now + 2 * jsa.TIMER_LEASE) == []  # fired and gone: once


async def test_a_timer_whose_worker_died_after_claiming_it_fires_when_the_lease_runs_out(runtime: Runtime) -> None:
    dead, alive = jsa.NatsTimers(runtime.js), jsa.NatsTimers(runtime.js)
    now = datetime.now(UTC)
    await dead.set("t.inc.task.2", now - timedelta(seconds=1), {"incident": "inc", "task": "task", "level": 2})
    [(key, payload, revision)] = await dead.due(now)
    first = await dead.claim(key, revision, payload, now)
    assert first is not None  # ... and the worker dies here
    later = now + jsa.TIMER_LEASE + timedelta(seconds=1)
    [(again, payload2, revision2)] = await alive.due(later)  # due again: nothing lost
    assert again == key and payload2["level"] == 2 and payload2["task"] == "task"
    lease = await alive.claim(again, revision2, payload2, later)
    assert lease is not None
    await dead.done(key, first)  # a late `done` from the first claim changes nothing now
    assert await alive.due(later + 2 * jsa.TIMER_LEASE) != []  # still the second worker's to finish
    await alive.done(again, lease)
    assert await alive.due(later + 2 * jsa.TIMER_LEASE) == []


async def test_an_event_append_retried_after_it_was_stored_is_not_stored_twice(runtime: Runtime) -> None:
    event = Event.model_validate({"type": "incident.updated", "incident_id": "retried", "command_id": "c-retried-0001",
                                  "at": datetime.now(UTC).isoformat(), "actor": "duty", "data": {}})
    first = await runtime.store.append("retried", [event], 0, "c-retried-0001")
    again = await runtime.store.append("retried", [event], 0, "c-retried-0001")  # the retry of the same append
    assert again == first
    events, _ = await runtime.store.load("retried")
    assert len(events) == 1


async def test_an_audit_publish_retried_after_it_was_stored_is_recognised_and_kept_once(runtime: Runtime) -> None:
    record = await runtime.audit.append(chain="retried", actor="duty", incident_id=None, action="a", outcome="ok")
    subject, msg_id = jsa.audit_subject("retried"), f"audit-{record.hash}"
    stored = await runtime.js.get_last_msg(jsa.AUDIT, subject)
    with pytest.raises(APIError) as refused:  # the retry: same bytes, same headers (a new chain: expected 0)
        await runtime.js.publish(subject, record.model_dump_json().encode(),
                                 headers={"Nats-Expected-Last-Subject-Sequence": "0", "Nats-Msg-Id": msg_id})
    assert refused.value.err_code == jsa.WRONG_LAST_SEQUENCE
    assert await jsa.stored_after(runtime.js, jsa.AUDIT, subject, 0, msg_id) == stored.seq
    assert await jsa.stored_after(runtime.js, jsa.AUDIT, subject, 0, "audit-someone-else") is None
    assert len([r async for r in runtime.audit.records("retried")]) == 1
