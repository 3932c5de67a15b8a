"""The review pack: what a Gold group, a CSP board or an Offensive Weapons Homicide Review reads. No I/O.

`assemble(sources, ...)` turns plain data (the incident, its events, delivery records, the fund claim
and the incident's audit records) into a `Pack`: sections of plain values that a template or a PDF
writer only lays out. Restricted details enter the pack only when `may_see_restricted` is true; the
content hash covers every section (not who made the pack or when), so two packs of the same facts
for the same audience have the same hash and copies can be compared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from enum import StrEnum
from typing import Any

from sims.audit import verify
from sims.fund import Claim, pounds
from sims.messages import Event, EventType
from sims.model import Incident, Task

PACK_FORMAT = "1"
WITHHELD = "Withheld: restricted details appear only in a pack made by someone allowed to see them."


class Audience(StrEnum):
    GOLD = "gold"
    CSP = "csp"
    OWHR = "owhr"


TITLES = {
    Audience.GOLD: "Gold group review pack",
    Audience.CSP: "Community Safety Partnership board review pack",
    Audience.OWHR: "Offensive Weapons Homicide Review pack",
}
PURPOSES = {
    Audience.GOLD: "For the Gold group: the response so far, who was told and what is still open.",
    Audience.CSP: "For the Community Safety Partnership board: how the partnership responded and what it cost.",
    Audience.OWHR: "For the Offensive Weapons Homicide Review: the agencies' response, in order, with evidence.",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sources:
    """Everything a pack is made from, already read from the stores."""

    incident: Incident
    events: Sequence[Event]
    deliveries: Sequence[Mapping[str, Any]]
    people: Mapping[str, tuple[str, str]]  # contact id -> (name, organisation)
    claim: Claim | None
    audit: Sequence[Mapping[str, Any]]  # the incident's audit records, in stored order


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionBlock:
    """Which pack this is: format, SIMS version, when, by whom, for whom, and the content's hash."""

    pack_format: str
    sims_version: str
    generated_at: str
    generated_by: str
    audience: Audience
    restricted: bool
    incident_version: int
    content_sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pack:
    title: str
    purpose: str
    content: dict[str, Any]
    version: VersionBlock
    data: dict[str, Any] = field(default_factory=dict)  # content + version, for templates and JSON

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, ensure_ascii=False, indent=1)


def content_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 of the content in canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _when(value: datetime | str | None, tz: tzinfo) -> str:
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(tz).strftime("%a %d %b %Y %H:%M:%S %Z")


def _day(value: date | None) -> str:
    return value.strftime("%d %b %Y") if value else ""


def _name(people: Mapping[str, tuple[str, str]], person: str | None) -> tuple[str, str]:
    if not person:
        return "nobody", ""
    return people.get(person, (person, ""))


def _what(record: Mapping[str, Any], events: Sequence[Event], incident: Incident) -> str:
    """What a message told its recipient, from the record when stored, else from the event that caused it."""
    if record.get("subject"):
        return str(record["subject"])
    kind, revision = str(record.get("kind", "")), str(record.get("key", "")).rsplit(".", 1)[-1]
    number = int(revision) if revision.isdigit() else 1
    if kind == "holding":
        raised = next((e for e in events if e.type is EventType.RAISED), None)
        outline = raised.data.get("outline", incident.outline) if raised else incident.outline
        return f"Holding notice: {outline}"
    if kind == "briefing" and 1 <= number <= len(incident.briefings):
        return f"Members' briefing version {number}: {incident.briefings[number - 1]}"
    if kind == "update":
        sent = [e for e in events if e.type is EventType.UPDATE_SENT]
        match = next((e for e in sent if int(e.data.get("number", 1)) == number), sent[-1] if sent else None)
        return f"Update: {match.data['text']}" if match else "Update"
    if kind == "task":
        task = next((t for t in incident.tasks if t.id == record.get("task")), None)
        return f"Task: {task.title}" if task else f"Task {record.get('task') or ''}".strip()
    if kind in ("stand_down", "closure"):
        target = "stood_down" if kind == "stand_down" else "closed"
        change = next((e for e in events if e.type is EventType.STATE_CHANGED and e.data.get("to") == target), None)
        reason = change.data.get("reason", "") if change else ""
        return f"{'Stand-down' if kind == 'stand_down' else 'Closure'} notice{': ' + reason if reason else ''}"
    return kind.replace("_", " ").capitalize()


def _first(history: Sequence[Mapping[str, Any]], *statuses: str) -> str | None:
    return next((h.get("at") for h in history if h.get("status") in statuses), None)


def _told(src: Sources, tz: tzinfo) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(src.deliveries, key=lambda r: (r.get("queued_at", ""), r.get("key", ""))):
        name, organisation = _name(src.people, r.get("contact_id"))
        history = r.get("history") or []
        rows.append({
            "person": name, "organisation": organisation, "kind": str(r.get("kind", "")).replace("_", " "),
            "what": _what(r, src.events, src.incident), "channel": r.get("channel", ""),
            "supplier": r.get("provider") or "", "status": r.get("status", ""),
            "attempts": int(r.get("attempts") or 0), "error": r.get("error") or "",
            "queued_at": _when(r.get("queued_at"), tz), "sent_at": _when(r.get("accepted_at"), tz),
            "delivered_at": _when(_first(history, "delivered", "read"), tz),
        })
    return rows


def _acknowledgements(src: Sources, tz: tzinfo) -> list[dict[str, Any]]:
    rows = []
    for e in src.events:
        if e.type is EventType.MESSAGE_ACKNOWLEDGED:
            name, organisation = _name(src.people, e.data.get("person"))
            what = f"the {str(e.data.get('kind', 'message')).replace('_', ' ')}"
            rows.append({"at": _when(e.at, tz), "person": name, "organisation": organisation, "what": what,
                         "via": e.data.get("via", "")})
        elif e.type is EventType.TASK_CHANGED and e.data.get("action") == "acknowledge":
            task = e.data.get("task", {})
            name, organisation = _name(src.people, task.get("owner") or e.actor)
            rows.append({"at": _when(e.at, tz), "person": name, "organisation": organisation,
                         "what": f"task: {task.get('title', '')}", "via": e.data.get("via", "")})
    return rows


def _steps(src: Sources, tz: tzinfo, reassurance: bool) -> list[dict[str, Any]]:
    finished: dict[str, datetime] = {}
    for e in src.events:
        if e.type is EventType.TASK_CHANGED and e.data.get("action") in ("done", "waive"):
            finished[e.data.get("task", {}).get("id", "")] = e.at
    rows = []
    for t in src.incident.tasks:
        if (t.kind == "reassurance") is not reassurance:
            continue
        name, organisation = _name(src.people, t.owner)
        rows.append({"title": t.title, "owner": name, "organisation": organisation, "due": _when(t.due_at, tz),
                     "status": t.status.value, "evidence": t.note, "reason": t.reason,
                     "finished_at": _when(finished.get(t.id), tz), "on_time": _on_time(t, finished.get(t.id))})
    return rows


def _on_time(task: Task, finished: datetime | None) -> str:
    if finished is None:
        return "not finished"
    return "on time" if finished <= task.due_at else "late"


def _fund(claim: Claim | None, tz: tzinfo) -> dict[str, Any] | None:
    if claim is None:
        return None
    return {
        "state": claim.state.value.replace("_", " "), "version": claim.version, "purpose": claim.purpose,
        "planned_activity": claim.planned_activity, "beneficiaries": claim.beneficiaries,
        "start": _day(claim.start_date), "end": _day(claim.end_date),
        "lines": [{"description": x.description, "amount": pounds(x.amount)} for x in claim.lines],
        "requested": pounds(claim.requested_total),
        "approved": pounds(claim.approved_amount) if claim.approved_amount is not None else "",
        "decline_reason": claim.decline_reason or "", "closed_reason": claim.closed_reason or "",
        "spend": [{"date": _day(s.date), "description": s.description, "supplier": s.supplier or "",
                   "amount": pounds(s.amount)} for s in claim.spend],
        "spent": pounds(claim.spent_total), "remaining": pounds(claim.remaining),
        "evaluation_due": _day(claim.evaluation_due),
        "evaluation": claim.evaluation.text if claim.evaluation else "",
        "outcomes": list(claim.evaluation.outcomes) if claim.evaluation else [],
        "decisions": [{"at": _when(h.at, tz), "actor": h.actor, "what": str(h.trigger).replace("_", " "),
                       "note": h.note} for h in claim.history],
    }


def _audit(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    verdict = verify(dict(r) for r in records)
    chains: dict[str, dict[str, Any]] = {}
    for r in records:
        chain = chains.setdefault(str(r.get("chain")), {"chain": str(r.get("chain")), "records": 0, "last_hash": ""})
        chain["records"] += 1
        chain["last_hash"] = str(r.get("hash", ""))
    return {"ok": verdict.ok, "records": verdict.records, "chains": verdict.chains, "last_hash": verdict.last_hash,
            "problem": verdict.problem or "", "result": verdict.describe(), "per_chain": list(chains.values())}


def _plain(text: str) -> str:
    """The text itself, also for a `Restricted` (whose str() is only a marker)."""
    return str.__str__(text)


def _incident(incident: Incident, may_see_restricted: bool, tz: tzinfo) -> dict[str, Any]:
    d = incident.details
    details = {
        "crime scenes": list(d.crime_scenes), "cordons": list(d.cordons),
        "rendezvous points": list(d.rendezvous_points), "road closures": list(d.road_closures),
        "police powers": [f"{p.kind.value.replace('_', ' ')} in {p.area} until {_when(p.expires_at, tz)}"
                          for p in d.police_powers],
        "victim age band": [d.victim_age_band.value] if d.victim_age_band else [],
        "other borough": [d.other_borough] if d.cross_border and d.other_borough else [],
    }
    return {
        "id": incident.id, "reference": incident.reference, "type": incident.type.value.replace("_", " "),
        "level": incident.level.value, "state": incident.state.value.replace("_", " "), "gold": incident.gold,
        "exercise": incident.exercise, "ward": incident.ward, "location": incident.location,
        "outline": incident.outline, "occurred_at": _when(incident.occurred_at, tz),
        "raised_at": _when(incident.raised_at, tz), "raised_by": incident.raised_by,
        "closed_reason": incident.closed_reason or "",
        "details": {k: v for k, v in details.items() if v},
        "restricted": _plain(incident.restricted) if may_see_restricted else None,
        "has_restricted": bool(_plain(incident.restricted)),
    }


def assemble(src: Sources, *, audience: Audience, may_see_restricted: bool, generated_by: str,
             generated_at: datetime, sims_version: str, tz: tzinfo) -> Pack:
    """The pack for `audience`; restricted details only when `may_see_restricted`."""
    content: dict[str, Any] = {
        "audience": audience.value,
        "restricted": may_see_restricted,
        "incident": _incident(src.incident, may_see_restricted, tz),
        "timeline": [{"at": _when(e.at, tz), "actor": e.actor, "what": e.summary()} for e in src.events],
        "told": _told(src, tz),
        "acknowledgements": _acknowledgements(src, tz),
        "steps": _steps(src, tz, reassurance=False),
        "reassurance": _steps(src, tz, reassurance=True),
        "fund": _fund(src.claim, tz),
        "audit": _audit(src.audit),
    }
    version = VersionBlock(pack_format=PACK_FORMAT, sims_version=sims_version,
                           generated_at=_when(generated_at, tz), generated_by=generated_by, audience=audience,
                           restricted=may_see_restricted, incident_version=src.incident.version,
                           content_sha256=content_hash(content))
    data = {"title": TITLES[audience], "purpose": PURPOSES[audience], "content": content,
            "version": {"pack_format": version.pack_format, "sims_version": version.sims_version,
                        "generated_at": version.generated_at, "generated_by": version.generated_by,
                        "audience": version.audience.value, "restricted": version.restricted,
                        "incident_version": version.incident_version, "content_sha256": version.content_sha256}}
    return Pack(title=TITLES[audience], purpose=PURPOSES[audience], content=content, version=version, data=data)


__all__ = ["PACK_FORMAT", "TITLES", "WITHHELD", "Audience", "Pack", "Sources", "VersionBlock", "assemble",
           "content_hash"]
