"""Retention and erasure on a real nats-server: restricted details are sealed in the events stream, and
erasing a closed incident destroys its key, scrubs its copies and keeps the record and a valid audit trail."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.auth import UserStore

from sims import crypto, queries
from sims.adapters import jetstream as jsa
from sims.adapters.keystore import BUCKET as KEYS
from sims.adapters.nats_server import NatsServer
from sims.adapters.outbox import OutboxSender, erase_incident, read_outbox
from sims.crypto import SealBroken
from sims.erasure import ERASED, ErasureRefused
from sims.messages import Event, EventType, Transition, Trigger
from sims.ports import OutgoingEmail, OutgoingSms
from tests.support.api import api_client
from tests.support.console import PASSWORD, signed_in
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import SECRET_WORDS, Stack, protocol_without_steps, stack, start_stack  # noqa: F401
from tests.support.twilio_server import TwilioServer

REVIEW_PATH = [Trigger.CONFIRM_NOTIFIED, Trigger.BEGIN_REASSURANCE, Trigger.BEGIN_RECOVERY, Trigger.BEGIN_REVIEW]


async def raw_messages(stack: Stack, stream: str, subject: str) -> list[Any]:
    return [m async for m in jsa.read_subject(stack.rt.js, stream, subject)]


async def raw_events(stack: Stack, incident_id: str) -> bytes:
    return b"\n".join(m.data for m in await raw_messages(stack, jsa.EVENTS, jsa.evt_subject(incident_id)))


def reveals(data: bytes | str) -> list[str]:
    text = data.decode() if isinstance(data, bytes) else data
    return [word for word in SECRET_WORDS if word in text]


async def state_of(stack: Stack, incident_id: str) -> str:
    incident, _ = await queries.incident_with_timeline(stack.rt, incident_id)
    return incident.state.value


async def closed(stack: Stack) -> dict[str, Any]:
    """Raise (with restricted details), let the holding notices go, walk the protocol to closed."""
    raised = await stack.raise_incident()
    incident_id = raised["incident_id"]
    await stack.wait_for(lambda: _notifying(stack, incident_id))
    await stack.settled(incident_id, 1)
    for trigger in REVIEW_PATH:
        result = await stack.run(Transition(actor="duty", incident=incident_id, trigger=trigger, reason="on we go"))
        assert result["ok"], result
    result = await stack.run(Transition(actor="duty", incident=incident_id, trigger=Trigger.CLOSE,
                                        reason="Review complete"))
    assert result["ok"] and result["state"] == "closed", result
    await stack.wait_for(lambda: _closure_sent(stack, incident_id))
    await stack.settled(incident_id, 1)
    return raised


async def _notifying(stack: Stack, incident_id: str) -> bool:
    return await state_of(stack, incident_id) == "notifying"


async def _closure_sent(stack: Stack, incident_id: str) -> bool:
    return any(d["kind"] == "closure" for d in await stack.deliveries(incident_id))


async def test_restricted_details_are_sealed_in_the_stream_and_shown_to_staff(stack: Stack) -> None:
    raised = await stack.raise_incident()
    incident_id = raised["incident_id"]
    assert reveals(await raw_events(stack, incident_id)) == []
    first = (await raw_messages(stack, jsa.EVENTS, jsa.evt_subject(incident_id)))[0]  # the raise
    sealed = json.loads(first.data)["events"][0]["data"]["restricted"]
    assert crypto.is_sealed(sealed)
    incident, _ = await queries.incident_with_timeline(stack.rt, incident_id)
    assert incident.restricted.reveal() == "Victim: Jordan Smith, 17, of 12 Acacia Road"
    assert queries.public(incident, restricted=True)["restricted"] == incident.restricted.reveal()
    assert queries.public(incident)["restricted"] == "[restricted]"
    projection = await stack.rt.kv.get("sims_incidents", incident_id)  # sealed there too
    assert crypto.is_sealed(projection["restricted"]) and reveals(json.dumps(projection)) == []
    [listed] = [queries.public(i) for i in await queries.list_incidents(stack.rt) if i.id == incident_id]
    assert listed["restricted"] == "[restricted]"
    key = await stack.rt.js.get_last_msg(f"KV_{KEYS}", f"$KV.{KEYS}.{incident_id}")
    assert len(base64.b64decode(key.data)) == 32
    audit = json.dumps(await queries.audit_records(stack.rt, incident_id))
    assert reveals(audit) == [] and "hmac-sha256:" in audit and "sha256:" not in audit.replace("hmac-sha256:", "")


async def test_erasing_a_closed_incident_destroys_its_key_and_keeps_the_record(stack: Stack) -> None:
    raised = await closed(stack)
    incident_id, rt = raised["incident_id"], stack.rt
    before, timeline_before = await queries.incident_with_timeline(rt, incident_id)
    deliveries_before = await stack.deliveries(incident_id)
    links_before = [k for k, v in (await rt.kv.entries("sims_links")).items() if v.get("incident_id") == incident_id]
    assert before.restricted.reveal() and before.closed_at is not None and before.erased_at is None
    assert deliveries_before and all(d["to"] != ERASED for d in deliveries_before)
    assert links_before

    assert rt.erasure is not None
    assert rt.erasure.due(await queries.list_incidents(rt)) == []  # a year's retention by default
    rt.erasure.retention = timedelta(0)
    [done] = await rt.erasure.sweep(await queries.list_incidents(rt))
    assert (done.incident_id, done.newly, done.key_destroyed) == (incident_id, True, True)
    assert done.deliveries == len(deliveries_before) and done.links == len(links_before)

    # the key is gone from the bucket's stream: only a purge marker is left on its subject
    left = await raw_messages(stack, f"KV_{KEYS}", f"$KV.{KEYS}.{incident_id}")
    assert len(left) == 1 and not left[0].data and left[0].headers["KV-Operation"] == "PURGE"
    # the events stream still holds every event, and none reveals the details
    events = await raw_events(stack, incident_id)
    assert reveals(events) == [] and b"sealed:v1:" in events
    # the projection, the API view and the staff view show it erased
    after, timeline = await queries.incident_with_timeline(rt, incident_id)
    assert after.restricted.reveal() == "" and after.erased_at is not None
    assert queries.public(after, restricted=True)["restricted"] == "[erased]"
    projection = await rt.kv.get("sims_incidents", incident_id)
    assert projection["erased_at"] and reveals(json.dumps(projection)) == []
    for key in (incident_id, raised["reference"]):
        assert (await rt.incidents.current(key)).restricted.reveal() == ""
    # the record stands: same events, states and times, one more entry saying what was erased
    assert timeline[:-1] == timeline_before
    assert timeline[-1]["type"] == "personal_data.erased" and "retention period ended" in timeline[-1]["summary"]
    assert (after.state.value, after.closed_at, after.closed_reason, after.reference, after.outline,
            after.occurred_at, after.raised_at) == ("closed", before.closed_at, "Review complete", before.reference,
                                                    before.outline, before.occurred_at, before.raised_at)
    # recipients' addresses are gone from delivery records; who was told, and the statuses, stay
    deliveries = await stack.deliveries(incident_id)
    assert all(d["to"] == ERASED for d in deliveries)
    assert [(d["key"], d["contact_id"], d["channel"]) for d in deliveries] == [
        (d["key"], d["contact_id"], d["channel"]) for d in deliveries_before]
    assert all(d["status"] not in ("pending", "retrying") and d["accepted_at"] for d in deliveries)
    assert not [k for k, v in (await rt.kv.entries("sims_links")).items() if v.get("incident_id") == incident_id]
    # the audit trail verifies, says what was erased, and never held the details
    records = await queries.audit_records(rt)
    assert queries.verify_records(records).ok
    assert [r["action"] for r in records if r["action"] == "personal_data.erased"] == ["personal_data.erased"]
    assert reveals(json.dumps(records)) == []

    # erasing again changes nothing and breaks nothing
    again = await rt.erasure.erase(incident_id, actor="duty", reason="asked twice")
    assert (again.newly, again.key_destroyed, again.deliveries, again.links) == (False, False, 0, 0)
    assert len((await queries.incident_with_timeline(rt, incident_id))[1]) == len(timeline)
    assert queries.verify_records(await queries.audit_records(rt)).ok
    assert await rt.erasure.sweep(await queries.list_incidents(rt)) == []


async def test_erasing_an_open_incident_is_refused_and_audited(stack: Stack) -> None:
    raised = await stack.raise_incident()
    rt = stack.rt
    assert rt.erasure is not None
    with pytest.raises(ErasureRefused, match="still open"):
        await rt.erasure.erase(raised["reference"], actor="duty", reason="too early")
    incident, _ = await queries.incident_with_timeline(rt, raised["incident_id"])
    assert incident.restricted.reveal().startswith("Victim: Jordan") and incident.erased_at is None
    assert await rt.js.get_last_msg(f"KV_{KEYS}", f"$KV.{KEYS}.{raised['incident_id']}")
    records = await queries.audit_records(rt, raised["incident_id"])
    assert any(r["action"] == "command.erase_personal_data" and r["outcome"].startswith("refused") for r in records)


async def test_a_tampered_or_moved_sealed_value_is_refused(stack: Stack) -> None:
    first = await stack.raise_incident()
    second = await stack.raise_incident(restricted="Witness: Ada Lovelace")
    message = (await raw_messages(stack, jsa.EVENTS, jsa.evt_subject(first["incident_id"])))[0]  # the raise
    sealed = json.loads(message.data)["events"][0]["data"]["restricted"]
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for incident_id, value in ((first["incident_id"], tampered), (second["incident_id"], sealed)):
        loaded, _seq, _ = await stack.rt.incidents.load(incident_id)
        event = Event(type=EventType.UPDATED, incident_id=incident_id, at=loaded.updated_at, actor="intruder",
                      command_id=f"forged-{incident_id}", data={"restricted": value})
        await stack.rt.js.publish(jsa.evt_subject(incident_id),
                                  json.dumps({"events": [event.model_dump(mode="json")]}).encode())
        with pytest.raises(SealBroken):
            await stack.rt.incidents.load(incident_id)


async def cli(command: list[str], *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `sims ...` in another process without blocking the loop the worker runs on."""
    return await asyncio.to_thread(subprocess.run, [*command, *args], env=env, cwd=cwd, capture_output=True,
                                   text=True, timeout=60, check=False)


async def test_the_cli_lists_what_is_due_then_erases_it(stack: Stack, nats_server: NatsServer, tmp_path: Path) -> None:
    raised = await closed(stack)
    env = {**os.environ, "SIMS_NATS_URL": nats_server.url, "SIMS_DATA_DIR": str(tmp_path / "cli")}
    sims = [sys.executable, "-m", "handlers.cli", "retention", "run"]
    cwd = Path(__file__).resolve().parents[2]
    waiting = await cli(sims, "--dry-run", env=env, cwd=cwd)
    assert waiting.returncode == 0, waiting.stderr
    assert "Nothing is due for erasure (retention: 365 day(s)" in waiting.stdout
    dry = await cli(sims, "--dry-run", "--days", "0", env=env, cwd=cwd)
    assert dry.returncode == 0, dry.stderr
    assert f"Due: {raised['reference']}" in dry.stdout and "nothing erased" in dry.stdout
    assert (await queries.incident_with_timeline(stack.rt, raised["incident_id"]))[0].erased_at is None
    run = await cli(sims, "--days", "0", env=env, cwd=cwd)
    assert run.returncode == 0, run.stderr
    assert f"Erased {raised['reference']} ({raised['incident_id']}): key destroyed" in run.stdout
    incident, _ = await queries.incident_with_timeline(stack.rt, raised["incident_id"])
    assert incident.erased_at is not None and incident.restricted.reveal() == ""
    assert queries.verify_records(await queries.audit_records(stack.rt)).ok
    again = await cli(sims, "--days", "0", env=env, cwd=cwd)
    assert again.returncode == 0 and "Nothing is due" in again.stdout
    verified = await cli([sys.executable, "-m", "handlers.cli", "audit", "verify"], env=env, cwd=cwd)
    assert verified.returncode == 0 and "OK:" in verified.stdout, verified.stdout + verified.stderr


async def test_the_outbox_loses_an_incidents_messages_and_keeps_the_others(tmp_path: Path) -> None:
    sms, email = OutboxSender.for_sms(tmp_path), OutboxSender.for_email(tmp_path)
    await sms.send(OutgoingSms(key="gone.holding.p1.sms.1", to="+447700900123", body="Holding notice"))
    await email.send(OutgoingEmail(key="gone.closure.p2.email.1", to="p2@example.org", subject="Closed", text="t",
                                   html="<p>t</p>", message_id="<m@sims>"))
    await sms.send(OutgoingSms(key="kept.holding.p1.sms.1", to="+447700900123", body="Another incident"))
    assert erase_incident(tmp_path, "gone") == 2
    left = read_outbox(tmp_path, None)
    assert [e["key"] for e in left] == ["kept.holding.p1.sms.1"]
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert not [f for f in files if "gone" in f] and any("kept" in f for f in files)
    assert erase_incident(tmp_path, "gone") == 0
    await sms.send(OutgoingSms(key="kept.update.p1.sms.1", to="+447700900123", body="Appends still work"))
    assert [e["key"] for e in read_outbox(tmp_path, None)] == ["kept.holding.p1.sms.1", "kept.update.p1.sms.1"]


async def test_the_workers_sweeper_erases_once_retention_ends_and_the_api_shows_it(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer, tmp_path: Path) -> None:
    started, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, sweep=True,
                                      protocol=protocol_without_steps(tmp_path), retention_days=0)
    try:
        raised = await started.raise_incident()
        incident_id = raised["incident_id"]
        async with await api_client(started.rt, started.http_url) as api:
            shown = (await api.get(f"/api/incidents/{raised['reference']}")).json()
            assert shown["restricted"] == "[restricted]" and shown["erased_at"] is None
            page = f"{started.http_url}/console/incidents/{raised['reference']}"
            await UserStore(started.rt.js).add("duty.one", "duty_officer", PASSWORD, by="test")
            async with signed_in(started, "duty.one") as duty:
                before = (await duty.get(page)).text
                assert "Show restricted details" in before and "Jordan Smith" in before
            await started.settled(incident_id, 1)
            assert (await started.rt.incidents.current(incident_id)).erased_at is None  # open: kept
            result = await started.run(Transition(actor="duty", incident=incident_id, trigger=Trigger.STAND_DOWN,
                                                  reason="Police confirm no injuries"))
            assert result["ok"], result

            async def erased() -> bool:
                return bool((await started.rt.kv.get("sims_incidents", incident_id) or {}).get("erased_at"))
            await started.wait_for(erased)
            shown = (await api.get(f"/api/incidents/{raised['reference']}")).json()
            assert shown["restricted"] == "[erased]" and shown["erased_at"] and shown["state"] == "stood_down"
            assert shown["timeline"][-1]["type"] == "personal_data.erased"
            assert reveals(json.dumps(shown)) == []
            listed = (await api.get("/api/incidents")).json()
            assert [i["restricted"] for i in listed if i["id"] == incident_id] == ["[erased]"]
            audit = (await api.get(f"/api/incidents/{raised['reference']}/audit?format=jsonl")).text
            assert reveals(audit) == [] and '"personal_data.erased"' in audit
            async with signed_in(started, "duty.one") as duty:
                after = (await duty.get(page)).text
                assert 'data-erased="true"' in after and "retention period ended" in after
                assert reveals(after) == [] and "Show restricted details" not in after
                pack = await duty.get(f"{page}/pack", params={"audience": "gold", "restricted": "yes"})
                assert pack.status_code == 200 and reveals(pack.text) == []
        records = await queries.audit_records(started.rt)
        assert queries.verify_records(records).ok
        assert [r["actor"] for r in records if r["action"] == "personal_data.erased"] == ["sims"]
    finally:
        await stop()


async def test_dead_letters_keep_the_reason_but_not_the_restricted_details(stack: Stack) -> None:
    from tests.support.stack import RAISE

    rt = stack.rt
    for payload in (json.dumps({**RAISE, "kind": "raise", "ward": "Atlantis"}).encode(),  # refused by the domain
                    json.dumps({**RAISE, "kind": "raise", "level": "nine"}).encode()):  # invalid at intake
        reply = json.loads((await rt.nc.request(jsa.API_SUBJECT, payload, timeout=15)).data)
        assert reply["ok"] is False

    async def both() -> list[dict[str, Any]]:
        return [json.loads(m.data) async for m in jsa.read_subject(rt.js, jsa.DEAD, "sims.dlq.>")]
    await stack.wait_for(lambda: _count(both, 2))
    letters = await both()
    assert reveals(json.dumps(letters)) == []
    payloads = [json.loads(letter["payload"]) for letter in letters]
    assert {p["ward"] for p in payloads} == {"Atlantis", "Peckham"}
    assert all(p["restricted"] == f"withheld ({len(RAISE['restricted'])} characters)" for p in payloads)


async def _count(found: Any, at_least: int) -> bool:
    return len(await found()) >= at_least


async def test_erasure_waits_while_the_incidents_messages_are_still_going_out(stack: Stack) -> None:
    """Erasing before the last notices are sent would let them write addresses and links again."""
    from sims.erasure import ErasureDeferred
    from tests.support import twilio_server as tw

    rt = stack.rt
    assert rt.erasure is not None
    raised = await stack.raise_incident()
    incident_id = raised["incident_id"]
    await stack.wait_for(lambda: rt.kv.get("sims_deliveries", f"told.{incident_id}"))  # all planned
    told = await rt.kv.get("sims_deliveries", f"told.{incident_id}")
    await stack.settled(incident_id, sum(len(keys) for keys in told.values()))
    stack.twilio.set_default(tw.slow(1.5))  # the stand-down notices by SMS are still with the provider
    result = await stack.run(Transition(actor="duty", incident=incident_id, trigger=Trigger.STAND_DOWN,
                                        reason="Police confirm no injuries"))
    assert result["ok"]
    rt.erasure.retention = timedelta(0)
    with pytest.raises(ErasureDeferred, match="still being"):  # the stand-down notices are not all out yet
        await rt.erasure.erase(incident_id, actor="duty", reason="too soon")
    assert (await rt.incidents.current(incident_id)).restricted.reveal()
    stack.twilio.set_default(tw.ok())

    async def quiet() -> bool:
        return await rt.erasure.sending(incident_id) is None  # type: ignore[union-attr]
    await stack.wait_for(quiet)
    [done] = await rt.erasure.sweep(await queries.list_incidents(rt))
    assert done.incident_id == incident_id and done.newly
    stand_downs = [d for d in await stack.deliveries(incident_id) if d["kind"] == "stand_down"]
    assert len(stand_downs) >= len(told) and all(d["to"] == ERASED for d in stand_downs)  # one per person told
    assert not [k for k, v in (await rt.kv.entries("sims_links")).items() if v.get("incident_id") == incident_id]


async def test_a_providers_error_quoting_a_number_reaches_the_audit_trail_without_it(stack: Stack) -> None:
    """Audit records are never changed, so a failed number must not go into one in the first place."""
    from tests.support import twilio_server as tw

    person = next(c for c in stack.rt.directory.all() if c.mobile and c.email and c.channels[0].value == "sms")
    stack.twilio.fail_to[person.mobile] = tw.invalid_number()  # "The 'To' number +44... is not valid"
    raised = await stack.raise_incident()

    async def failed() -> list[dict[str, Any]]:
        return [r for r in await stack.deliveries(raised["incident_id"])
                if r["contact_id"] == person.id and r["channel"] == "sms" and r["status"] == "failed"]

    async def audited() -> list[dict[str, Any]]:
        return [r for r in await queries.audit_records(stack.rt, raised["incident_id"])
                if r["action"] == "message.failed"]
    await stack.wait_for(failed)
    await stack.wait_for(audited)
    assert person.mobile in (await failed())[0]["error"]  # the delivery record keeps it, until erasure
    audit = await audited()
    assert audit and "[address] is not a valid phone number" in audit[0]["detail"]["error"]
    assert person.mobile not in json.dumps(audit) and person.mobile.replace("+44", "0") not in json.dumps(audit)
