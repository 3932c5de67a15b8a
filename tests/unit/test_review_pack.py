"""The review pack from plain data: its sections, restricted details kept out, the version block, the hash."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sims import protocol
from sims.adapters.pack_pdf import render_pdf
from sims.audit import GENESIS, seal
from sims.fund import ApproveClaim, RecordSpend, SubmitClaim, decide, new_claim
from sims.messages import Event, EventType
from sims.pack_render import render_html
from sims.review_pack import PACK_FORMAT, Audience, Sources, assemble, content_hash

T0 = datetime(2026, 11, 30, 21, 40, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")
SECRET = "Victim: Jordan Smith, 17, of 12 Acacia Road"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
TASKS = [
    {"id": "confirm_facts", "number": 1, "title": "Confirm the facts that can be shared", "kind": "task",
     "owner_role": "police_borough_lead", "owner": "police-lead", "due_at": (T0 + timedelta(hours=1)).isoformat()},
    {"id": "reassurance_patrols", "number": 2, "title": "Reassurance patrols around the scene", "kind": "reassurance",
     "owner_role": "police_borough_lead", "owner": "police-lead", "due_at": (T0 + timedelta(hours=4)).isoformat()},
]


def event(type_: EventType, minutes: int, data: dict[str, Any], actor: str = "duty-officer") -> Event:
    return Event(type=type_, incident_id="inc1", at=T0 + timedelta(minutes=minutes), actor=actor,
                 command_id=f"c{minutes}", data=data)


def task_changed(minutes: int, task_id: str, action: str, status: str, note: str = "", via: str = "link") -> Event:
    task = {**next(t for t in TASKS if t["id"] == task_id), "status": status, "note": note}
    return event(EventType.TASK_CHANGED, minutes, {"action": action, "via": via, "note": note, "reason": "",
                                                   "previous_owner": "police-lead", "task": task}, "police-lead")


EVENTS = [
    event(EventType.RAISED, 0, {"id": "inc1", "reference": "SWK-2026-0042", "type": "stabbing", "level": "1",
                                "occurred_at": T0.isoformat(), "ward": "Peckham", "location": "Rye Lane",
                                "outline": "A young man was stabbed", "restricted": SECRET, "exercise": False,
                                "raised_by": "duty-officer"}),
    event(EventType.TASKS_PLANNED, 1, {"tasks": TASKS}),
    event(EventType.STATE_CHANGED, 2, {"from": "raised", "to": "notifying", "trigger": "start_notifying"}),
    event(EventType.MESSAGE_ACKNOWLEDGED, 9, {"kind": "holding", "person": "csp-lead", "via": "link"}, "csp-lead"),
    task_changed(12, "confirm_facts", "acknowledge", "acknowledged"),
    task_changed(30, "confirm_facts", "done", "done", "Facts agreed with the SIO"),
    task_changed(300, "reassurance_patrols", "done", "done", "Patrols 22:00-02:00, 14 stops, leaflets to 40 homes"),
    event(EventType.UPDATE_SENT, 40, {"text": "Cordon lifted on Rye Lane", "number": 1}),
]
DELIVERIES = [
    {"key": "inc1.holding.csp-lead.sms.1", "kind": "holding", "contact_id": "csp-lead", "channel": "sms",
     "to": "+447700900123", "provider": "twilio", "status": "delivered", "attempts": 1,
     "queued_at": (T0 + timedelta(minutes=1)).isoformat(), "accepted_at": (T0 + timedelta(minutes=1, seconds=2)).isoformat(),
     "history": [{"status": "sent", "at": (T0 + timedelta(minutes=1, seconds=3)).isoformat()},
                 {"status": "delivered", "at": (T0 + timedelta(minutes=1, seconds=9)).isoformat()}]},
    {"key": "inc1.update.police-lead.email.1", "kind": "update", "contact_id": "police-lead", "channel": "email",
     "to": "lead@police.example", "provider": "smtp", "status": "accepted", "attempts": 2,
     "queued_at": (T0 + timedelta(minutes=40)).isoformat(), "accepted_at": (T0 + timedelta(minutes=41)).isoformat()},
]
PEOPLE = {"csp-lead": ("Pat Harrington", "Community Safety Partnership"), "police-lead": ("Sam Whitford", "Met Police")}


def audit_records() -> list[dict[str, Any]]:
    records, prev = [], {"inc1": GENESIS, "inc1.csp-lead": GENESIS}
    for n, (chain, action) in enumerate([("inc1", "command.raise"), ("inc1.csp-lead", "message.accepted"),
                                         ("inc1", "command.task")]):
        index = sum(1 for r in records if r["chain"] == chain)
        record = seal(chain=chain, index=index, prev=prev[chain], at=T0 + timedelta(minutes=n), actor="sims",
                      incident_id="inc1", action=action, outcome="accepted", detail={"restricted_sha256": "ab"})
        prev[chain] = record.hash
        records.append(record.model_dump(mode="json"))
    return records


def claim() -> Any:
    now = T0 + timedelta(days=1)
    c = new_claim("inc1", T0.date(), actor="duty-officer", now=now, purpose="Reassure young people",
                  planned_activity="Six youth sessions", beneficiaries="About 60 young people",
                  start_date="2026-12-05", end_date="2027-01-30",
                  lines=[{"description": "Youth sessions", "amount": "3000.00"}])
    c = decide(c, SubmitClaim(actor="duty-officer", incident_id="inc1"), now)
    c = decide(c, ApproveClaim(actor="vru", actor_role="vru_lead", incident_id="inc1", amount="2500.00"), now)
    return decide(c, RecordSpend(actor="duty-officer", incident_id="inc1", amount="1250.50", date="2026-12-06",
                                 description="Sessions", supplier="Youth Hub"), now)


def sources(**overrides: Any) -> Sources:
    data: dict[str, Any] = dict(incident=protocol.replay(EVENTS), events=EVENTS, deliveries=DELIVERIES,
                                people=PEOPLE, claim=claim(), audit=audit_records())
    return Sources(**{**data, **overrides})


def make(audience: Audience = Audience.GOLD, restricted: bool = False, **kw: Any) -> Any:
    args: dict[str, Any] = dict(audience=audience, may_see_restricted=restricted, generated_by="duty.one",
                                generated_at=T0 + timedelta(days=2), sims_version="0.1.0", tz=LONDON)
    return assemble(sources(), **{**args, **kw})


def test_the_pack_holds_the_timeline_who_was_told_acknowledgements_steps_fund_and_audit() -> None:
    c = make().content
    assert c["timeline"][0]["what"] == "Raised (stabbing, level 1) in Peckham"
    assert len(c["timeline"]) == len(EVENTS)
    told = {t["person"]: t for t in c["told"]}
    assert told["Pat Harrington"]["what"] == "Holding notice: A young man was stabbed"
    assert told["Pat Harrington"]["supplier"] == "twilio" and told["Pat Harrington"]["status"] == "delivered"
    assert told["Pat Harrington"]["sent_at"] == "Mon 30 Nov 2026 21:41:02 GMT"
    assert told["Pat Harrington"]["delivered_at"] == "Mon 30 Nov 2026 21:41:09 GMT"
    assert told["Sam Whitford"]["what"] == "Update: Cordon lifted on Rye Lane" and told["Sam Whitford"]["delivered_at"] == ""
    assert [(a["person"], a["what"], a["via"]) for a in c["acknowledgements"]] == [
        ("Pat Harrington", "the holding", "link"),
        ("Sam Whitford", "task: Confirm the facts that can be shared", "link")]
    (patrols,) = c["reassurance"]
    assert patrols["evidence"].startswith("Patrols 22:00-02:00") and patrols["status"] == "done"
    assert patrols["on_time"] == "late" and patrols["finished_at"] == "Tue 01 Dec 2026 02:40:00 GMT"
    assert [s["on_time"] for s in c["steps"]] == ["on time"]
    fund = c["fund"]
    assert (fund["requested"], fund["approved"], fund["spent"], fund["remaining"]) == (
        "£3,000.00", "£2,500.00", "£1,250.50", "£1,249.50")
    assert [d["what"] for d in fund["decisions"]] == ["create", "submit", "approve", "record spend"]
    audit = c["audit"]
    assert audit["ok"] and audit["records"] == 3 and audit["chains"] == 2
    assert audit["last_hash"] == audit_records()[-1]["hash"]
    assert {ch["chain"]: ch["records"] for ch in audit["per_chain"]} == {"inc1": 2, "inc1.csp-lead": 1}


def test_a_pack_without_restricted_details_holds_no_restricted_string_in_any_form() -> None:
    pack = make(restricted=False)
    html = render_html(pack, TEMPLATES, "OFFICIAL-SENSITIVE")
    pdf = render_pdf(pack, "OFFICIAL-SENSITIVE")
    for form in (pack.to_json(), html, pdf.decode("latin-1")):
        for word in ("Jordan", "Smith", "Acacia"):
            assert word not in form
    assert pack.content["incident"]["restricted"] is None and pack.content["incident"]["has_restricted"]
    assert "Withheld: restricted details appear only" in html
    assert 'data-restricted="no"' in html
    for number in ("+447700900123", "lead@police.example"):  # contact details stay out of every pack
        assert number not in pack.to_json() and number not in html


def test_a_pack_for_someone_allowed_shows_the_restricted_details_and_says_so() -> None:
    pack = make(restricted=True)
    html = render_html(pack, TEMPLATES, "OFFICIAL-SENSITIVE")
    assert pack.content["incident"]["restricted"] == SECRET
    assert "Jordan Smith" in html and 'data-restricted="yes"' in html
    assert pack.version.content_sha256 != make(restricted=False).version.content_sha256


def test_the_version_block_says_which_pack_it_is() -> None:
    pack = make(Audience.OWHR)
    v = pack.version
    assert (v.pack_format, v.sims_version, v.generated_by, v.audience, v.restricted) == (
        PACK_FORMAT, "0.1.0", "duty.one", Audience.OWHR, False)
    assert v.generated_at == "Wed 02 Dec 2026 21:40:00 GMT" and v.incident_version == protocol.replay(EVENTS).version
    assert v.content_sha256 == content_hash(pack.content) and len(v.content_sha256) == 64
    html = render_html(pack, TEMPLATES, "OFFICIAL-SENSITIVE")
    assert "Offensive Weapons Homicide Review pack" in html and v.content_sha256 in html
    assert f'<meta name="sims-content-sha256" content="{v.content_sha256}">' in html


def test_the_hash_is_stable_for_the_same_content_whoever_makes_it_and_when() -> None:
    first = make(generated_by="duty.one", generated_at=T0 + timedelta(days=2))
    second = make(generated_by="admin", generated_at=T0 + timedelta(days=9), sims_version="0.2.0")
    assert first.version.content_sha256 == second.version.content_sha256
    assert first.version.content_sha256 != make(Audience.CSP).version.content_sha256
    changed = assemble(replace(sources(), deliveries=DELIVERIES[:1]), audience=Audience.GOLD,
                       may_see_restricted=False, generated_by="x", generated_at=T0, sims_version="0.1.0", tz=LONDON)
    assert changed.version.content_sha256 != first.version.content_sha256


def test_an_altered_audit_record_shows_as_broken_in_the_pack() -> None:
    records = audit_records()
    records[1] = {**records[1], "outcome": "rejected"}
    pack = assemble(replace(sources(), audit=records), audience=Audience.GOLD, may_see_restricted=False,
                    generated_by="x", generated_at=T0, sims_version="0.1.0", tz=LONDON)
    assert not pack.content["audit"]["ok"] and "altered" in pack.content["audit"]["problem"]
    assert 'data-audit-ok="no"' in render_html(pack, TEMPLATES, "OFFICIAL")


@pytest.mark.parametrize("audience", list(Audience))
def test_every_audience_gets_its_own_heading_and_a_self_contained_html_file(audience: Audience) -> None:
    html = render_html(make(audience), TEMPLATES, "OFFICIAL-SENSITIVE")
    assert f'data-audience="{audience.value}"' in html
    for external in ("<link", "src=", "@import", "url(", "http://", "https://"):
        assert external not in html
    assert "£2,500.00" in html and "OFFICIAL-SENSITIVE" in html


def test_the_pdf_is_a_pdf_with_pages_and_names_its_content_hash() -> None:
    pack = make()
    pdf = render_pdf(pack, "OFFICIAL-SENSITIVE")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 2
    text = "".join(page.extract_text() for page in reader.pages)
    assert pack.version.content_sha256 in text.replace("\n", "")
    assert "Reassurance patrols around the scene" in text


def test_an_exercise_is_marked_as_such() -> None:
    exercise = protocol.replay(EVENTS).model_copy(update={"exercise": True})
    pack = assemble(replace(sources(), incident=exercise), audience=Audience.CSP, may_see_restricted=False,
                    generated_by="x", generated_at=T0, sims_version="0.1.0", tz=LONDON)
    assert "EXERCISE EXERCISE EXERCISE" in render_html(pack, TEMPLATES, "OFFICIAL")


def test_without_a_unicode_font_the_pdf_still_renders_replacing_what_latin_1_cannot_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from pypdf import PdfReader

    import sims.adapters.pack_pdf as pack_pdf

    monkeypatch.setattr(pack_pdf, "FONT_DIRS", (Path("/nonexistent"),))
    pdf = render_pdf(make(), "OFFICIAL ✓")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "£2,500.00" in text and "OFFICIAL ?" in text
