"""Tasks end to end: personal links, SMS replies, escalation timers across a restart, closing."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from sims import queries
from sims.adapters.nats_server import NatsServer
from sims.links import Binding, link_id_for, mint
from sims.messages import ActOnTask, Transition
from sims.protocol_config import DEFAULT_PROTOCOL
from tests.support import twilio_server as tw  # noqa: F401
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack, full_stack, start_stack  # noqa: F401
from tests.support.twilio_server import TwilioServer

LINK = re.compile(r"http://127\.0\.0\.1:\d+/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")


async def incident(stack: Stack, key: str) -> Any:
    found, _ = await queries.incident_with_timeline(stack.rt, key)
    return found


def task_links(stack: Stack, person_number: str) -> list[str]:
    return [LINK.search(m.body).group(0) for m in stack.twilio.messages  # type: ignore[union-attr]
            if m.to == person_number and "Task for you" in m.body]


async def raised_with_tasks(stack: Stack, *, notified: bool = True, **overrides: Any) -> dict[str, Any]:
    raised = await stack.raise_incident(**overrides)

    async def task_messages_sent() -> bool:
        recs = await stack.deliveries(raised["incident_id"])
        return any(r["kind"] == "task" and r["status"] not in ("pending", "retrying") for r in recs)
    await stack.wait_for(task_messages_sent)

    async def confirmed() -> bool:  # the sweeper's 'notified' comes once every first message has a record
        return str((await incident(stack, raised["incident_id"])).state) != "notifying"
    if notified:
        await stack.wait_for(confirmed)
    await asyncio.sleep(0.3)
    return raised


async def test_opening_a_link_changes_nothing_and_only_a_post_acts(full_stack: Stack) -> None:
    stack = full_stack
    raised = await raised_with_tasks(stack)
    police = stack.rt.directory.get("police-lead-whitford")
    assert police and police.mobile
    link = task_links(stack, police.mobile)[0]
    before = await incident(stack, raised["incident_id"])
    async with httpx.AsyncClient(follow_redirects=False) as client:
        for _ in range(5):  # mail scanners and previews open links
            page = await client.get(link)
            assert page.status_code == 200 and "Confirm the facts that can be shared" in page.text
            assert page.headers["referrer-policy"] == "no-referrer"
        assert (await incident(stack, raised["incident_id"])).version == before.version
        acked = await client.post(link, data={"action": "acknowledge"})
        assert acked.status_code == 303
        again = await client.post(link, data={"action": "acknowledge"})  # a second click is harmless
        assert again.status_code == 303
        after_ack = await incident(stack, raised["incident_id"])
        assert after_ack.version == before.version + 1
        done = await client.post(link, data={"action": "done", "note": "Facts agreed with the SIO at 23:10"})
        assert done.status_code == 303
        page = await client.get(stack.http_url + done.headers["location"])
        assert "This task is done" in page.text
    task = next(t for t in (await incident(stack, raised["incident_id"])).tasks if t.id == "confirm_facts")
    assert task.status == "done" and task.note == "Facts agreed with the SIO at 23:10"
    outcomes = [r["outcome"] for r in await queries.audit_records(stack.rt, raised["incident_id"])
                if r["action"] == "command.task"]
    assert outcomes == ["accepted", "no change", "accepted"]  # the second click changed nothing


async def test_forged_moved_expired_and_revoked_links_get_a_clear_page_and_change_nothing(full_stack: Stack) -> None:
    stack = full_stack
    raised = await raised_with_tasks(stack)
    police = stack.rt.directory.get("police-lead-whitford")
    link = task_links(stack, police.mobile)[0]  # type: ignore[arg-type]
    base, token = link.rsplit("/", 1)
    other = task_links(stack, stack.rt.directory.get("csp-lead-harrington").mobile)[0].rsplit("/", 1)[1]  # type: ignore[arg-type]
    moved = token[:1] + other[1:17] + token[17:]  # another task's link id with this link's signature
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    binding = Binding(incident_id=raised["incident_id"], task="confirm_facts", person=police.id, kid="k",  # type: ignore[union-attr]
                      expires_at=datetime.now(timezone.utc) - timedelta(minutes=1))
    link_id = link_id_for("expired-link")
    await stack.rt.kv.put("sims_links", link_id, {"incident_id": binding.incident_id, "task": binding.task,
                                                  "person": binding.person, "kid": "k",
                                                  "expires_at": binding.expires_at.isoformat()})
    expired = mint(b"test-secret-for-links", binding, link_id)
    version = (await incident(stack, raised["incident_id"])).version
    async with httpx.AsyncClient() as client:
        for bad, status, words in ((moved, 404, "not valid"), (altered, 404, "not valid"),
                                   (expired, 410, "expired"), ("nonsense", 404, "not valid")):
            page = await client.get(f"{base}/{bad}")
            assert page.status_code == status and words in page.text
            posted = await client.post(f"{base}/{bad}", data={"action": "done"})
            assert posted.status_code == status
        # can't do -> the deputy gets it, and the first owner's link is withdrawn
        handed = await client.post(link, data={"action": "decline", "reason": "On leave from tonight"},
                                   follow_redirects=False)
        assert handed.status_code == 303

        async def withdrawn() -> bool:
            return (await client.get(link)).status_code == 410
        await stack.wait_for(withdrawn)
    task = next(t for t in (await incident(stack, raised["incident_id"])).tasks if t.id == "confirm_facts")
    deputy = stack.rt.directory.deputy_of(police.id)  # type: ignore[union-attr]
    assert task.owner == deputy.id and task.status == "pending" and task.reason == "On leave from tonight"  # type: ignore[union-attr]
    await stack.wait_for(lambda: task_links(stack, deputy.mobile))  # type: ignore[union-attr]
    refused = [r for r in await queries.audit_records(stack.rt) if r["action"] == "link.refused"]
    assert {r["outcome"] for r in refused} >= {"forged", "expired"}
    assert (await incident(stack, raised["incident_id"])).version == version + 1  # only the hand-over


async def test_sms_replies_act_on_the_senders_latest_open_task(full_stack: Stack) -> None:
    stack = full_stack
    raised = await raised_with_tasks(stack)
    url = f"{stack.http_url}/hooks/twilio/inbound"
    police = stack.rt.directory.get("police-lead-whitford")

    async def reply(sender: str, body: str) -> httpx.Response:
        params = {"From": sender, "To": "+447700900999", "Body": body, "MessageSid": "SM" + "1" * 32,
                  "AccountSid": stack.twilio.account_sid}
        attempt = await stack.twilio.post_signed(url, params)
        assert attempt.response_status is not None
        async with httpx.AsyncClient() as client:  # the same request again, to read the TwiML answer
            from twilio.request_validator import RequestValidator
            signature = RequestValidator(stack.twilio.auth_token).compute_signature(url, params)
            return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})

    answer = await reply(police.mobile, "ack")  # type: ignore[union-attr]
    assert answer.status_code == 200 and "acknowledged" in answer.text and "<Response><Message>" in answer.text
    task = next(t for t in (await incident(stack, raised["incident_id"])).tasks if t.owner == police.id)  # type: ignore[union-attr]
    assert task.status == "acknowledged"
    unknown = await reply("+447700900998", "ACK")
    assert "not in our directory" in unknown.text
    unclear = await reply(police.mobile, "what is this?")  # type: ignore[union-attr]
    assert "reply ACK" in unclear.text
    async with httpx.AsyncClient() as client:
        forged = await client.post(url, data={"From": police.mobile, "Body": "DONE"},  # type: ignore[union-attr]
                                   headers={"X-Twilio-Signature": "AAAA"})
    assert forged.status_code == 403
    task = next(t for t in (await incident(stack, raised["incident_id"])).tasks if t.owner == police.id)  # type: ignore[union-attr]
    assert task.status == "acknowledged"


def fast_protocol(tmp_path: Path) -> Path:
    """The demo protocol with two tasks due in seconds: one to leave, one to acknowledge."""
    text = DEFAULT_PROTOCOL.read_text()
    text = text[:text.index("\nsteps:")] + """
steps:
  - {id: confirm_facts, title: Confirm the facts that can be shared, kind: task, owner: police_borough_lead, due: 2s, escalation: [2s, 4s]}
  - {id: gold_decision, title: Decide whether the gold threshold is met, kind: task, owner: community_safety_lead, due: 3s, escalation: [2s, 4s]}
  - {id: reassurance_patrols, title: Reassurance patrols in the area, kind: reassurance, owner: neighbourhood_policing, due: 1h}
"""
    path = tmp_path / "fast.yaml"
    path.write_text(text)
    return path


async def test_escalation_fires_on_time_after_a_full_restart_and_never_after_an_acknowledgement(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer, tmp_path: Path) -> None:
    protocol = fast_protocol(tmp_path)
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, protocol=protocol, sweep=True)
    raised = await raised_with_tasks(stack, notified=False)  # tasks fall due in seconds: acknowledge at once
    csp = stack.rt.directory.get("csp-lead-harrington")
    result = await stack.run(ActOnTask(actor=csp.id, person=csp.id, via="link", incident=raised["incident_id"],  # type: ignore[union-attr]
                                       task="gold_decision", action="acknowledge"))
    assert result["ok"]
    await stop()  # every process down, and the server too
    nats_server.kill()
    nats_server.start()
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, protocol=protocol, sweep=True)
    try:
        async def escalated() -> bool:
            task = next(t for t in (await incident(stack, raised["incident_id"])).tasks if t.id == "confirm_facts")
            return task.escalation_level == 3
        await stack.wait_for(escalated, timeout=20)
        found = await incident(stack, raised["incident_id"])
        facts = next(t for t in found.tasks if t.id == "confirm_facts")
        gold = next(t for t in found.tasks if t.id == "gold_decision")
        assert facts.status == "escalated" and gold.status == "acknowledged" and gold.escalation_level == 0
        _, timeline = await queries.incident_with_timeline(stack.rt, raised["incident_id"])
        fired = [datetime.fromisoformat(t["at"]) for t in timeline if "escalate_" in t["summary"]]
        due = facts.due_at
        assert len(fired) == 3
        assert all(abs((at - target).total_seconds()) < 5 for at, target in
                   zip(fired, [due, due + timedelta(seconds=2), due + timedelta(seconds=4)]))
        police = stack.rt.directory.get("police-lead-whitford")
        deputy = stack.rt.directory.deputy_of(police.id)  # type: ignore[union-attr]

        async def deputy_and_duty_officers_told() -> bool:
            recs = await stack.deliveries(raised["incident_id"])
            people = {r["contact_id"] for r in recs if r["kind"] == "task" and r["key"].split(".")[-1].startswith("1e")}
            officers = {c.id for c in stack.rt.directory.by_role("duty_officer")}
            return deputy.id in people and officers <= people  # type: ignore[union-attr]
        await stack.wait_for(deputy_and_duty_officers_told)
        assert not any("gold" in t["summary"] and "escalate_" in t["summary"] for t in timeline)
    finally:
        await stop()


async def test_an_incident_cannot_close_while_reassurance_steps_are_open(full_stack: Stack) -> None:
    stack = full_stack
    raised = await raised_with_tasks(stack)
    key = raised["incident_id"]
    for trigger in ("begin_reassurance", "begin_recovery", "begin_review"):
        if trigger == "begin_reassurance":
            await stack.wait_for(lambda: incident_state(stack, key, "active"))
        assert (await stack.run(Transition(actor="duty", incident=key, trigger=trigger)))["ok"]
    refused = await stack.run(Transition(actor="duty", incident=key, trigger="close", reason="Review held"))
    assert refused["ok"] is False and "Reassurance patrols in the area" in refused["error"]["message"]
    found = await incident(stack, key)
    for task in found.tasks:
        if task.kind == "reassurance":
            action = "done" if task.id == "reassurance_patrols" else "waive"
            result = await stack.run(ActOnTask(actor="duty", incident=key, task=task.id, action=action,
                                               reason="Not needed: covered by the police", note="Patrols 3 nights"))
            assert result["ok"], result
    waived_without_reason = await stack.run(ActOnTask(actor="duty", incident=key, task="review", action="waive"))
    assert waived_without_reason["ok"] is False and "reason" in waived_without_reason["error"]["message"]
    closed = await stack.run(Transition(actor="duty", incident=key, trigger="close", reason="Review held"))
    assert closed["ok"] and closed["state"] == "closed"


async def incident_state(stack: Stack, key: str, state: str) -> bool:
    return bool((await incident(stack, key)).state == state)
