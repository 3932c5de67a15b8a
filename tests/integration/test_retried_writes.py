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
    await mine.set("t.inc.task.1", datetime.now(UTC) - timedelta(seconds=1), {"incident": "inc", "task": "task"})
    [(key, _payload, revision)] = await mine.due(datetime.now(UTC))
    assert await mine.claim(key, revision)
    assert not await theirs.claim(key, revision)  # the other worker lost
    assert await mine.claim(key, revision)  # the same delete again (as after a timeout): still won
    assert await mine.due(datetime.now(UTC)) == []  # gone: it fires once


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
