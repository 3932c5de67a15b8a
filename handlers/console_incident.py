"""Console pages for one incident: the raise form (check, preview, confirm) and the incident page."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from handlers.auth import Need, Session
from handlers.console import HEADERS, Console, Refused
from sims import protocol, queries
from sims.errors import IncidentNotFound
from sims.ids import new_id
from sims.messages import ActOnTask, ApproveBriefing, DraftBriefing, RaiseIncident, Transition, Trigger
from sims.model import TERMINAL_STATES, IncidentType, Level
from sims.views import LEVEL_LABELS, TYPE_LABELS

FIELDS = ("type", "level", "ward", "occurred_at", "location", "outline", "restricted")
LIMITS = {"location": 300, "outline": 2000, "restricted": 8000}
COMMAND_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
TRIGGER_LABELS = {
    "start_notifying": "Start notifying", "confirm_notified": "Confirm everyone has been notified",
    "escalate": "Escalate to gold", "de_escalate": "De-escalate from gold",
    "begin_reassurance": "Begin reassurance",
    "begin_recovery": "Begin recovery", "begin_review": "Begin the review", "close": "Close the incident",
    "stand_down": "Stand down the response",
}
DONE = {"raised": "The incident was raised and people are being notified.",
        "transition": "The incident moved on.",
        "task": "The task was updated.", "briefing": "A new version of the briefing was saved.",
        "approved": "The briefing was approved and is being sent to members."}


def check_raise(form: dict[str, str], wards: tuple[str, ...], tz: ZoneInfo,
                now: datetime) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The raise form's values (occurred_at in UTC) and its errors as (field, message), in form order."""
    errors: list[tuple[str, str]] = []
    values: dict[str, Any] = {name: form.get(name, "").strip() for name in FIELDS}
    values["exercise"] = form.get("exercise") == "yes"
    if values["type"] not in {t.value for t in IncidentType}:
        errors.append(("type", "Select the type of incident"))
    if values["level"] not in {lv.value for lv in Level}:
        errors.append(("level", "Select the level of the response"))
    if values["ward"] not in wards:
        errors.append(("ward", "Select the ward where it happened"))
    try:
        local = datetime.strptime(values["occurred_at"], "%Y-%m-%dT%H:%M")
    except ValueError:
        errors.append(("occurred_at", "Enter when it happened, for example 30/11/2026 21:40"))
    else:
        utc = local.replace(tzinfo=tz).astimezone(timezone.utc)
        if utc.astimezone(tz).replace(tzinfo=None) != local:
            errors.append(("occurred_at", "That time does not exist in London (the clocks went forward)"))
        elif utc > now:
            errors.append(("occurred_at", "When it happened must be in the past"))
        values["occurred_utc"] = utc
    for name, what in (("location", "where it happened"), ("outline", "what happened, in outline")):
        if not values[name]:
            errors.append((name, f"Enter {what}"))
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            errors.append((name, f"{name.capitalize()} must be {limit} characters or fewer"))
    return values, errors


def _known(key: str) -> None:
    if not 1 <= len(key) <= 64:
        raise Refused(404, "Incident not found", "There is no such incident. Check the reference.")


def build_router(con: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    rt = con.rt

    def raise_page(session: Session, status: int = 200, **context: Any) -> HTMLResponse:
        return con.page("raise.html", session, status, types=[(t.value, TYPE_LABELS[t]) for t in IncidentType],
                        levels=[(lv.value, LEVEL_LABELS[lv]) for lv in Level], wards=rt.protocol.borough.wards,
                        **context)

    @router.get("/console/raise", response_class=HTMLResponse)
    async def raise_form(request: Request) -> HTMLResponse:
        session = await con.require(request, Need.ACT)
        now = datetime.now(ZoneInfo(rt.protocol.borough.timezone))
        return raise_page(session, values={"occurred_at": now.strftime("%Y-%m-%dT%H:%M"), "level": "1"},
                          errors=[])

    @router.post("/console/raise")
    async def raise_incident(request: Request) -> Response:
        session, form = await con.posted(request)
        values, errors = check_raise(form, rt.protocol.borough.wards, ZoneInfo(rt.protocol.borough.timezone),
                                     datetime.now(timezone.utc))
        if errors or form.get("step") == "edit":
            return raise_page(session, 400 if errors else 200, values=values, errors=errors)
        if form.get("step") != "confirm":
            recipients = queries.preview(rt, values["type"], values["level"], values["ward"])
            return con.page("raise_confirm.html", session, values=values, recipients=recipients,
                            command_id=new_id(),
                            type_label=TYPE_LABELS[IncidentType(values["type"])],
                            level_label=LEVEL_LABELS[Level(values["level"])])
        command_id = form.get("command_id", "")
        result = await con.run(RaiseIncident(
            command_id=command_id if COMMAND_ID.match(command_id) else new_id(), actor=session.username,
            type=values["type"], level=values["level"], occurred_at=values["occurred_utc"], ward=values["ward"],
            location=values["location"], outline=values["outline"], restricted=values["restricted"],
            exercise=values["exercise"]))
        if result.get("queued"):
            return RedirectResponse("/console?queued=1", status_code=303)
        if not result.get("ok"):
            return raise_page(session, 409, values=values, errors=[("type", result["error"]["message"])])
        return RedirectResponse(f"/console/incidents/{result['reference']}?done=raised", status_code=303)

    async def incident_page(session: Session, key: str, status: int = 200, **extra: Any) -> HTMLResponse:
        try:
            incident, timeline = await queries.incident_with_timeline(rt, key)
        except IncidentNotFound:
            raise Refused(404, "Incident not found", f"There is no incident {key}. Check the reference.") from None
        records = await rt.notifications.deliveries(incident.id)
        tasks = {t.id: t for t in incident.tasks}
        deliveries = []
        for record in sorted(records, key=lambda r: (r.get("contact_id", ""), r.get("queued_at", ""))):
            person = rt.directory.get(record.get("contact_id", ""))
            task = tasks.get(record.get("task") or "")
            ack = (task.status.value if task else "acknowledged"
                   if f"{record.get('kind')}:{record.get('contact_id')}" in incident.acknowledged else "not yet")
            deliveries.append({**record, "name": person.name if person else record.get("contact_id"),
                               "organisation": person.organisation if person else "", "ack": ack})
        owners = {t.id: rt.directory.get(t.owner) if t.owner else None for t in incident.tasks}
        claim = await rt.incidents.fund.claim(incident.id)
        from sims.fund import summary

        briefing = rt.notifications.briefing_preview(incident) if incident.briefings else None
        triggers = [] if incident.state in TERMINAL_STATES else protocol.allowed_triggers(incident.state)
        return con.page("incident.html", session, status, incident=incident, timeline=timeline,
                        deliveries=deliveries, owners=owners, claim=claim,
                        claim_summary=summary(claim) if claim else "",
                        briefing=briefing, open=incident.state not in TERMINAL_STATES,
                        type_label=TYPE_LABELS[incident.type], level_label=LEVEL_LABELS[incident.level],
                        transitions=[{"trigger": t.value, "label": TRIGGER_LABELS[t.value],
                                      "needs_reason": t in protocol.GUARDS,
                                      "warning": t in (Trigger.STAND_DOWN, Trigger.CLOSE)} for t in triggers],
                        **extra)

    @router.get("/console/incidents/{key}", response_class=HTMLResponse)
    async def incident(request: Request, key: str, done: str = "") -> HTMLResponse:
        session = await con.require(request, Need.VIEW)
        return await incident_page(session, key, notice=DONE.get(done, ""))

    async def act(session: Session, key: str, command: Any, done: str, **on_error: Any) -> Response:
        result = await con.run(command)
        if result.get("ok") is False:
            return await incident_page(session, key, 409, error=result["error"]["message"], **on_error)
        return RedirectResponse(f"/console/incidents/{quote(result.get('reference') or key)}?done={done}",
                                status_code=303)

    @router.post("/console/incidents/{key}/transition")
    async def transition(request: Request, key: str) -> Response:
        session, form = await con.posted(request)
        _known(key)
        try:
            trigger = Trigger(form.get("trigger", ""))
        except ValueError:
            return await incident_page(session, key, 400, error="Choose one of the buttons.")
        return await act(session, key, Transition(actor=session.username, incident=key, trigger=trigger,
                                                  reason=form.get("reason", "").strip()[:2000]), "transition")

    @router.post("/console/incidents/{key}/tasks/{task}")
    async def task_action(request: Request, key: str, task: str) -> Response:
        session, form = await con.posted(request)
        _known(key)
        action = form.get("action", "")
        if action not in ("done", "waive"):
            return await incident_page(session, key, 400, error="Choose one of the buttons.")
        if action == "waive" and not form.get("reason", "").strip():
            return await incident_page(session, key, 400, error="Give the reason for waiving the step.")
        return await act(session, key, ActOnTask(
            actor=session.username, incident=key, task=task[:64], action=action, via="console",
            note=form.get("note", "").strip()[:2000], reason=form.get("reason", "").strip()[:2000]), "task")

    @router.post("/console/incidents/{key}/briefing")
    async def briefing(request: Request, key: str) -> Response:
        session, form = await con.posted(request)
        _known(key)
        text, action = form.get("talking_points", "").strip(), form.get("action", "")
        if action == "approve":
            version = int(form["version"]) if form.get("version", "").isdigit() else 0
            return await act(session, key, ApproveBriefing(actor=session.username, incident=key,
                                                           briefing_version=max(version, 1)), "approved")
        if not text or len(text) > 1500:
            return await incident_page(session, key, 400, draft=text,
                                       error="Enter what members may say, in 1500 characters or fewer.")
        if action == "preview":
            incident, _ = await queries.incident_with_timeline(rt, key)
            draft = incident.model_copy(update={"briefings": (*incident.briefings, text)})
            return await incident_page(session, key, draft=text,
                                       draft_preview=rt.notifications.briefing_preview(draft))
        return await act(session, key, DraftBriefing(actor=session.username, incident=key, talking_points=text),
                         "briefing", draft=text)

    @router.get("/console/incidents/{key}/audit.{fmt}")
    async def audit_export(request: Request, key: str, fmt: str) -> Response:
        session = await con.require(request, Need.VIEW)
        if fmt not in ("csv", "jsonl"):
            raise Refused(404, "Not found", "The audit trail can be exported as csv or jsonl.")
        try:
            records = await queries.audit_records(rt, key)
        except IncidentNotFound:
            raise Refused(404, "Incident not found", f"There is no incident {key}.") from None
        await con.audit(session.username, "audit.exported", fmt, {"incident": key, "records": len(records)})
        text = queries.to_csv(records) if fmt == "csv" else queries.to_jsonl(records)
        name = re.sub(r"[^A-Za-z0-9-]", "", key)[:64]
        return PlainTextResponse(text, media_type="text/csv" if fmt == "csv" else "application/x-ndjson", headers={
            **HEADERS, "Content-Disposition": f'attachment; filename="audit-{name}.{fmt}"'})

    from handlers.console_pack import build_router as pack_router

    router.include_router(pack_router(con))  # the review pack download (/console/incidents/{key}/pack)
    return router
