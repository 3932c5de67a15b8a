"""The Critical Incident Fund claim end to end: draft, cap, submit, VRU approves by link, spend, evaluate."""

from __future__ import annotations

import re

from sims import queries
from tests.support.api import api_client
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.stack import Stack, stack  # noqa: F401

LINK = re.compile(r"http://127\.0\.0\.1:\d+/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")


async def test_a_claim_goes_from_draft_to_closed_with_the_vru_approving_through_their_link(stack: Stack) -> None:
    raised = await stack.raise_incident()
    api = f"{stack.http_url}/api/incidents/{raised['reference']}/fund"
    async with await api_client(stack.rt, timeout=20) as client:
        over = await client.post(api, json={"kind": "fund_edit", "actor": "duty", "purpose": "Reassure young people",
                                            "lines": [{"description": "Sessions", "amount": "4000.00"},
                                                      {"description": "Event", "amount": "1000.01"}]})
        assert over.json()["ok"] is False and "5,000" in over.json()["error"]["message"]
        floaty = await client.post(api, json={"kind": "fund_edit", "actor": "duty",
                                              "lines": [{"description": "Sessions", "amount": 12.5}]})
        assert floaty.status_code == 422 and floaty.json()["error"]["error"] == "invalid"
        draft = await client.post(api, json={
            "kind": "fund_edit", "actor": "duty", "purpose": "Reassure young people after the stabbing",
            "planned_activity": "Six evening youth sessions and a community event", "beneficiaries": "About 60 young people",
            "start_date": "2026-12-05", "end_date": "2027-01-30",
            "lines": [{"description": "Youth sessions", "amount": "0.10"}, {"description": "Event", "amount": "0.20"},
                      {"description": "Mentoring", "amount": "2999.70"}]})
        assert draft.json()["ok"], draft.text
        assert draft.json()["detail"]["requested"] == "3000.00"
        assert (await client.post(api, json={"kind": "fund_submit", "actor": "duty"})).json()["ok"]
        self_approval = await client.post(api, json={"kind": "fund_approve", "actor": "duty", "amount": "3000.00"})
        assert self_approval.json()["ok"] is False and "vru" in self_approval.json()["error"]["message"].lower()

        vru = stack.rt.directory.by_role("vru_lead")[0]
        address = vru.address(vru.channels[0])

        def vru_link() -> str | None:
            texts = [m.body for m in stack.twilio.messages if m.to.removeprefix("whatsapp:") == address]
            texts += [m.message.get_body(("plain",)).get_content() for m in stack.smtp.handler.messages
                      if address in m.rcpt_tos]
            found = [LINK.search(t).group(0) for t in texts if "Fund claim" in t and LINK.search(t)]  # type: ignore[union-attr]
            return found[-1] if found else None
        await stack.wait_for(vru_link)
        link = vru_link()
        page = await client.get(link)  # type: ignore[arg-type]
        assert page.status_code == 200 and "Requested: £3,000.00" in page.text
        approved = await client.post(link, data={"action": "approve", "amount": "2500.00"})  # type: ignore[arg-type]
        assert approved.status_code in (200, 303)
        claim = (await client.get(api)).json()
        assert claim["state"] == "approved" and claim["approved_amount"] == "2500.00"
        over_spend = await client.post(api, json={"kind": "fund_record_spend", "actor": "duty", "amount": "2500.01",
                                                  "date": "2026-12-06", "description": "Sessions"})
        assert over_spend.json()["ok"] is False and "£2,500.00 is left" in over_spend.json()["error"]["message"]
        spent = await client.post(api, json={"kind": "fund_record_spend", "actor": "duty", "amount": "1250.50",
                                             "date": "2026-12-06", "description": "Sessions", "supplier": "Youth Hub"})
        assert spent.json()["detail"]["spent"] == "1250.50"
        assert (await client.post(api, json={"kind": "fund_submit_evaluation", "actor": "duty",
                                             "text": "Sessions ran", "outcomes": ["58 young people attended"]})).json()["ok"]
        assert (await client.post(api, json={"kind": "fund_close", "actor": "duty"})).json()["ok"]
        summary = (await client.get(api)).json()["summary"]
    assert "Approved: £2,500.00" in summary and "Spent: £1,250.50 (£1,249.50 left)" in summary
    audit = await queries.audit_records(stack.rt, raised["incident_id"])
    fund_records = [(r["action"], r["outcome"]) for r in audit if r["action"].startswith("fund.")]
    assert fund_records == [("fund.edit", "draft"), ("fund.submit", "submitted"), ("fund.approve", "approved"),
                            ("fund.record_spend", "spend_recorded"), ("fund.submit_evaluation", "evaluated"),
                            ("fund.close", "closed")]
    assert next(r for r in audit if r["action"] == "fund.approve")["actor"] == vru.id
    assert queries.verify_records(audit).ok


async def test_fund_deadlines_are_timers_that_escalate_to_the_duty_officers_only_while_owed(stack: Stack) -> None:
    from datetime import date, datetime, timedelta, timezone

    from sims.fund import EditClaim, SubmitClaim

    raised = await stack.raise_incident()
    incident_id = raised["incident_id"]
    edit = EditClaim(actor="duty", incident_id=incident_id, purpose="Reassure young people",
                     planned_activity="Youth sessions", beneficiaries="About 60 young people",
                     start_date=date(2026, 12, 5), end_date=date(2027, 1, 30),
                     lines=({"description": "Sessions", "amount": "1500.00"},))
    assert (await stack.run(edit))["ok"]
    due = await stack.rt.notifications.timers.due(datetime(2026, 12, 15, tzinfo=timezone.utc))
    keys = [key for key, _, _ in due]
    assert f"fd.{incident_id}.submit" in keys  # 14 days after the incident, 09:00
    assert not [k for k, _, _ in await stack.rt.notifications.timers.due(datetime(2026, 12, 14, tzinfo=timezone.utc))
                if k.startswith("fd.")]
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    payload = {"type": "fund_deadline", "incident": incident_id, "deadline": "submit", "due": "2026-12-14"}
    await stack.rt.notifications.timers.set(f"fd.{incident_id}.submit", past, payload)
    assert await stack.rt.notifications.fire_due_timers() >= 1
    officers = {c.id for c in stack.rt.directory.by_role("duty_officer")}

    async def told() -> bool:
        recs = await stack.deliveries(incident_id)
        return {r["contact_id"] for r in recs if r["key"].endswith(".fund-submit")} == officers
    await stack.wait_for(told)
    assert (await stack.run(SubmitClaim(actor="duty", incident_id=incident_id)))["ok"]
    await stack.rt.notifications.timers.set(f"fd.{incident_id}.submit", past, payload)
    await stack.rt.notifications.fire_due_timers()
    audit = await queries.audit_records(stack.rt, incident_id)
    assert [r["outcome"] for r in audit if r["action"] == "fund.deadline_missed"] == ["submit"]  # once: then submitted
