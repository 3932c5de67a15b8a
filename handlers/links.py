"""Personal link pages (GET shows, only POST acts) and SMS replies; both end in ordinary commands."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from sims import queries
from sims.adapters.commands import submit
from sims.bootstrap import Runtime
from pydantic import ValidationError

from sims.fund import FUND_COMMAND_ADAPTER
from sims.fund import summary as fund_summary
from sims.links import Binding, LinkRefused
from sims.messages import Acknowledge, ActOnTask
from sims.model import TERMINAL_STATES, Incident
from sims.views import SharedView
from handlers.security import RateLimiter

PAGES = Path(__file__).resolve().parent.parent / "templates" / "pages"
REFUSED_STATUS = {"forged": 404, "expired": 410, "revoked": 410}
ACTIONS = {"acknowledge", "done", "decline"}
TOO_MANY = """{% extends "_base.html" %}{% block title %}Too many requests{% endblock %}{% block main %}
<h1 class="heading-l">Too many requests</h1>
<p class="body">{{ message }}</p>
<p class="body">Nothing has been changed. If you need to act on an incident now, call the community safety duty officer.</p>
{% endblock %}"""
LINK_RATE = 30  # link requests (GET and POST) a minute per client address


def sms_intent(body: str) -> tuple[str | None, str]:
    """What an SMS reply asks for: (action, rest) with action acknowledge/done/decline, or None."""
    text = body.strip()
    match = re.match(r"^\s*([A-Za-z']+)[\s:,.-]*(.*)$", text, re.S)
    word = (match.group(1) if match else "").upper().replace("'", "")
    rest = match.group(2).strip() if match else ""
    if word in {"ACK", "OK", "YES", "Y", "ACKNOWLEDGE", "ACKNOWLEDGED", "RECEIVED"}:
        return "acknowledge", rest
    if word in {"DONE", "COMPLETE", "COMPLETED", "FINISHED"}:
        return "done", rest
    if word in {"CANT", "CANNOT", "NO", "DECLINE", "UNABLE"}:
        return "decline", rest
    return None, rest


def build_router(rt: Runtime, limiter: RateLimiter | None = None) -> APIRouter:
    router = APIRouter()
    limiter = limiter or RateLimiter(LINK_RATE, 60.0)
    env = Environment(loader=FileSystemLoader(str(PAGES)), autoescape=select_autoescape(("html",)))
    env.filters["local_time"] = lambda v: rt.notifications.renderer.env.filters["local_time"](v)
    too_many_page = env.from_string(TOO_MANY)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"Referrer-Policy": "no-referrer",
                                                               "Cache-Control": "no-store"})

    async def refused(token: str, exc: LinkRefused) -> HTMLResponse:
        await rt.audit.append(chain="system", actor="link", incident_id=None, action="link.refused",
                              outcome=exc.reason, detail={"token_prefix": token[:6]})
        return page("link_refused.html", REFUSED_STATUS.get(exc.reason, 403), message=str(exc), reason=exc.reason)

    async def limited(request: Request) -> HTMLResponse | None:
        """A 429 page if this address has used up its link requests, else None."""
        address = request.client.host if request.client else "-"
        wait = limiter.take(address)
        if not wait:
            return None
        if limiter.first_refusal(address):  # once a window: a flood is one audit record, not thousands
            await rt.audit.append(chain="system", actor="link", incident_id=None, action="link.rate_limited",
                                  outcome="429", detail={"address": address})
        retry = str(max(1, math.ceil(wait)))
        html = too_many_page.render(message=f"Too many requests from your address. Please wait {retry} seconds "
                                            "and try again.")
        response = HTMLResponse(html, status_code=429, headers={"Referrer-Policy": "no-referrer",
                                                                "Cache-Control": "no-store"})
        response.headers["Retry-After"] = retry
        return response

    async def context(binding: Binding) -> dict[str, Any]:
        incident, _ = await queries.incident_with_timeline(rt, binding.incident_id)
        person = rt.directory.get(binding.person)
        task = next((t for t in incident.tasks if t.id == binding.task), None)
        others = []
        for t in incident.tasks:
            owner = rt.directory.get(t.owner) if t.owner else None
            if owner and owner.id != binding.person:
                others.append({"name": owner.name, "organisation": owner.organisation, "task": t.title,
                               "status": t.status.value})
        kind = binding.task.removeprefix("msg.") if binding.task.startswith("msg.") else None
        claim = await rt.incidents.fund.claim(incident.id) if binding.task == "fund.review" else None
        return {"incident": incident, "view": SharedView.of(incident), "person": person, "task": task,
                "message_kind": kind, "others": others[:12],
                "acknowledged": bool(kind and f"{kind}:{binding.person}" in incident.acknowledged),
                "closed": incident.state in TERMINAL_STATES, "claim": claim,
                "claim_summary": fund_summary(claim) if claim else ""}

    @router.get("/l/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def show(token: str, request: Request, done: str | None = None) -> HTMLResponse:
        """Shows the task or message; never changes anything (mail scanners open links)."""
        if (too_many := await limited(request)) is not None:
            return too_many
        try:
            binding = await rt.notifications.open_link(token)
        except LinkRefused as exc:
            return await refused(token, exc)
        return page("link.html", **await context(binding), token=token, request_done=bool(done))

    @router.post("/l/{token}", include_in_schema=False)
    async def act(token: str, request: Request) -> Response:
        if (too_many := await limited(request)) is not None:
            return too_many
        try:
            binding = await rt.notifications.open_link(token)
        except LinkRefused as exc:
            return await refused(token, exc)
        form = await request.form()
        action = str(form.get("action", ""))
        if binding.task == "fund.review" and action in ("approve", "decline"):
            kind = "fund_approve" if action == "approve" else "fund_decline"
            try:
                command = FUND_COMMAND_ADAPTER.validate_python({
                    "kind": kind, "incident_id": binding.incident_id, "actor": binding.person, "actor_role": "-",
                    **({"amount": str(form.get("amount", ""))} if action == "approve" else {"reason": str(form.get("reason", ""))})})
            except ValidationError as exc:
                return page("link.html", 400, **await context(binding), token=token,
                            error="; ".join(e["msg"] for e in exc.errors()))
        elif binding.task.startswith("msg."):
            command: Any = Acknowledge(incident=binding.incident_id, message_kind=binding.task.removeprefix("msg."),
                                       person=binding.person, actor=binding.person, via="link")
        elif action in ACTIONS:
            command = ActOnTask(incident=binding.incident_id, task=binding.task, action=action, person=binding.person,
                                actor=binding.person, via="link", note=str(form.get("note", ""))[:2000],
                                reason=str(form.get("reason", ""))[:2000])
        else:
            return page("link.html", 400, **await context(binding), token=token,
                        error="Choose one of the buttons.")
        result = await submit(rt.nc, rt.js, rt.kv, command, rt.settings.command_timeout)
        if result.get("ok") is False:
            return page("link.html", 409, **await context(binding), token=token,
                        error=result["error"]["message"])
        return RedirectResponse(f"/l/{token}?done={action or 'acknowledge'}", status_code=303,
                                headers={"Referrer-Policy": "no-referrer"})

    @router.post("/hooks/twilio/inbound", include_in_schema=False)
    async def inbound(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        token = rt.settings.twilio_auth_token
        url = f"{rt.settings.base_url}/hooks/twilio/inbound"
        if token is None or not RequestValidator(token.get_secret_value()).validate(
                url, form, request.headers.get("X-Twilio-Signature", "")):
            return Response("Bad or missing signature.", status_code=403)
        reply = await answer_sms(rt, form.get("From", ""), form.get("Body", ""))
        twiml = MessagingResponse()
        twiml.message(reply)
        await rt.audit.append(chain="system", actor="sms", incident_id=None, action="sms.reply",
                              outcome=reply[:80], detail={"from_known": rt.directory.by_mobile(form.get("From", "")) is not None})
        return Response(str(twiml), media_type="application/xml")

    return router


async def answer_sms(rt: Runtime, sender: str, body: str) -> str:
    """Act on the sender's most recent open task (or unread message) and say what happened."""
    contact = rt.directory.by_mobile(sender.removeprefix("whatsapp:"))
    if contact is None:
        return "SIMS: this number is not in our directory. Please call the duty officer."
    action, rest = sms_intent(body)
    if action is None:
        return "SIMS: reply ACK to acknowledge, DONE when it is done, or CANT and the reason to hand it to your deputy."
    incidents: list[Incident] = [i for i in await queries.list_incidents(rt) if i.state not in TERMINAL_STATES]
    tasks = [(i, t) for i in incidents for t in i.tasks if t.owner == contact.id and t.is_open]
    tasks.sort(key=lambda it: (-it[0].raised_at.timestamp(), it[1].due_at))  # newest incident, most urgent task
    if tasks:
        incident, task = tasks[0]
        command: Any = ActOnTask(incident=incident.id, task=task.id, action=action, person=contact.id, actor=contact.id,
                                 via="sms", note=rest if action == "done" else "", reason=rest if action == "decline" else "")
        what = f"'{task.title}' ({incident.reference})"
    else:
        unread: list[tuple[Incident, str]] = []
        for incident in sorted(incidents, key=lambda i: i.raised_at, reverse=True):
            told = await rt.kv.get("sims_deliveries", f"told.{incident.id}") or {}
            kinds = [key.split(".")[1] for key in told.get(contact.id, [])]
            unread += [(incident, k) for k in reversed(kinds) if k != "task" and f"{k}:{contact.id}" not in incident.acknowledged]
        if action != "acknowledge" or not unread:
            return "SIMS: you have no open tasks or unread messages. Thank you."
        incident, kind = unread[0]
        command = Acknowledge(incident=incident.id, message_kind=kind, person=contact.id, actor=contact.id, via="sms")
        what = f"the {kind.replace('_', ' ')} about {incident.reference}"
    result = await submit(rt.nc, rt.js, rt.kv, command, rt.settings.command_timeout)
    if result.get("ok") is False:
        return f"SIMS: could not record that for {what}: {result['error']['message']}"[:300]
    done = {"acknowledge": "acknowledged", "done": "marked done", "decline": "handed to your deputy"}[action]
    return f"SIMS: thank you, {what} is {done}."
