"""HTTP API (FastAPI): translates requests into commands and reads; never changes state itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from twilio.request_validator import RequestValidator

from sims import queries
from sims.adapters import jetstream as jsa
from sims.adapters.jetstream import STATUS_SUBJECT
from sims.model import IncidentType, Level
from sims.adapters.commands import submit
from sims.bootstrap import Runtime
from sims.errors import IncidentNotFound, SimsError
from sims.messages import (
    MAX_COMMAND_BYTES,
    ApproveBriefing,
    Command,
    DraftBriefing,
    RaiseIncident,
    SendUpdate,
    Transition,
    Trigger,
    UpdateIncident,
)

class _Acting(BaseModel):
    actor: str = Field(min_length=1, max_length=120)
    command_id: str | None = Field(default=None, min_length=8, max_length=128)
    expected_version: int | None = Field(default=None, ge=0)


class BriefingBody(_Acting):
    talking_points: str = Field(min_length=1, max_length=1500)


class ApproveBody(_Acting):
    briefing_version: int = Field(ge=1)


class MessageBody(_Acting):
    text: str = Field(min_length=1, max_length=600, description="Shareable text only: it goes by SMS.")


class ErrorInfo(BaseModel):
    error: str = Field(description="A stable code: invalid, not_found, conflict, transition_not_allowed, "
                                   "unauthorized, forbidden, too_large, ...")
    message: str = Field(description="What went wrong, for a person to act on")
    problems: list[str] | None = Field(default=None, description="Each invalid field, when the input was invalid")


class ErrorBody(BaseModel):
    """Every refusal SIMS answers: `{"ok": false, "error": {...}}`."""

    ok: bool = Field(False, description="Always false for a refusal")
    error: ErrorInfo


def _refusal(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _refusal("The command was refused"),
    401: _refusal("No API token, or an unknown or revoked one"),
    403: _refusal("The API token does not have the scope this route needs"),
    404: _refusal("No such incident"),
    409: _refusal("A conflict: a stale expected_version, or a transition the protocol does not allow now"),
    413: _refusal("The request body is too large"),
    422: _refusal("The input is invalid; `error.problems` lists each problem"),
}


def _ids(body: _Acting) -> dict[str, Any]:
    return {k: v for k, v in (("command_id", body.command_id), ("expected_version", body.expected_version)) if v is not None}


class PreviewBody(BaseModel):
    type: IncidentType
    level: Level
    ward: str = Field(min_length=1, max_length=80)
    gold: bool = False


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type", 429: "rate_limited"}
STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "transition_not_allowed": 409}


class RaiseBody(RaiseIncident):
    """`POST /api/incidents`: a raise; `actor` is who raises it (the duty officer)."""


class UpdateBody(UpdateIncident):
    incident: str = Field(default="-", exclude=True)


class TransitionBody(BaseModel):
    trigger: Trigger
    reason: str = Field(default="", max_length=2000)
    actor: str = Field(min_length=1, max_length=120)
    command_id: str | None = Field(default=None, min_length=8, max_length=128)
    expected_version: int | None = Field(default=None, ge=0)


def _answer(result: dict[str, Any], created: bool = False) -> JSONResponse:
    if result.get("queued"):
        return JSONResponse(result, status_code=202)
    if result.get("ok"):
        return JSONResponse(result, status_code=201 if created else 200)
    error = result.get("error") or {}
    return JSONResponse(result, status_code=STATUS.get(str(error.get("error")), 400))


def create_app(rt: Runtime) -> FastAPI:
    """The HTTP app over a connected runtime; nothing connects at import time."""
    app = FastAPI(title="SIMS", version="0.1.0",
                  description="Serious Incident Management System: raise and follow critical incidents. "
                              "Every /api/ route needs an API token (`Authorization: Bearer <token>`, from "
                              "`sims tokens add NAME --scope read|raise|write`).")
    from handlers.api_tokens import TokenStore
    from handlers.security import ApiRefused, SecurityHeaders, api_guard, refused_response

    tokens: list[TokenStore] = []

    def token_store() -> TokenStore:
        if not tokens:
            from sims.adapters.jetstream import replicas_for

            tokens.append(TokenStore(rt.js, replicas_for(rt.nc, rt.settings.replicas)))
        return tokens[0]

    app.state.token_store = token_store
    api = APIRouter(dependencies=[Security(api_guard(rt, token_store))], responses=REFUSALS)
    https = bool(rt is not None and str(rt.settings.base_url).startswith("https://"))

    @app.exception_handler(ApiRefused)
    async def api_refused(_: Request, exc: ApiRefused) -> JSONResponse:
        return refused_response(exc)

    from fastapi.staticfiles import StaticFiles

    from handlers.links import build_router

    app.include_router(build_router(rt))
    from handlers.notify_hook import build_router as notify_receipts

    app.include_router(notify_receipts(rt))  # GOV.UK Notify delivery receipts
    from handlers.console import install as install_console

    install_console(app, rt)  # the duty officer's web console (/console), signed-in staff only
    app.mount("/static", StaticFiles(directory=str(Path(__file__).resolve().parent / "static")), name="static")

    @app.middleware("http")
    async def limit_size(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_COMMAND_BYTES:
            return JSONResponse({"ok": False, "error": {"error": "too_large", "message":
                                 f"Request body is {length} bytes; the limit is {MAX_COMMAND_BYTES}."}},
                                status_code=413)
        response: Response = await call_next(request)
        return response

    app.add_middleware(SecurityHeaders, https=https)  # added last: outermost, so every answer has the headers

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(PydanticValidationError)
    async def invalid(_: Request, exc: PydanticValidationError | RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"ok": False, "error": {"error": "invalid", "message": "; ".join(problems),
                                                    "problems": problems}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_refusal(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "refused")
        return JSONResponse({"ok": False, "error": {"error": code, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(SimsError)
    async def sims_error(_: Request, exc: SimsError) -> JSONResponse:
        return JSONResponse({"ok": False, "error": exc.to_dict()}, status_code=STATUS.get(exc.code, 400))

    async def run(command: Command) -> dict[str, Any]:
        return await submit(rt.nc, rt.js, rt.kv, command, rt.settings.command_timeout)

    @api.post("/api/incidents", status_code=201, summary="Raise an incident")
    async def raise_incident(body: RaiseBody) -> JSONResponse:
        command = RaiseIncident.model_validate(body.model_dump(exclude={"kind"}))
        return _answer(await run(command), created=True)

    @api.get("/api/incidents", summary="Open and recent incidents")
    async def list_incidents() -> list[dict[str, Any]]:
        return [queries.public(i) for i in await queries.list_incidents(rt)]

    @api.get("/api/incidents/{key}", summary="One incident with its timeline")
    async def get_incident(key: str) -> dict[str, Any]:
        incident, timeline = await queries.incident_with_timeline(rt, key)
        return {**queries.public(incident), "timeline": timeline}

    @api.post("/api/incidents/{key}/updates", summary="Add or correct details")
    async def update_incident(key: str, body: UpdateBody) -> JSONResponse:
        data = body.model_dump(exclude={"kind", "incident"}, exclude_unset=True)
        data.setdefault("command_id", body.command_id)
        return _answer(await run(UpdateIncident.model_validate({**data, "incident": key})))

    @api.post("/api/incidents/{key}/transitions", summary="Move the incident on through the protocol")
    async def transition(key: str, body: TransitionBody) -> JSONResponse:
        data = body.model_dump(exclude_none=True)
        return _answer(await run(Transition.model_validate({**data, "incident": key})))

    @api.get("/api/incidents/{key}/audit", summary="Export the incident's audit trail")
    async def audit_export(key: str, format: str = Query("jsonl", pattern="^(jsonl|csv)$")) -> PlainTextResponse:
        records = await queries.audit_records(rt, key)
        text = queries.to_jsonl(records) if format == "jsonl" else queries.to_csv(records)
        media = "application/x-ndjson" if format == "jsonl" else "text/csv"
        return PlainTextResponse(text, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="audit-{key}.{format}"'})

    @api.get("/api/incidents/{key}/briefing", summary="The members' briefing: draft, versions, preview")
    async def briefing(key: str, version: int | None = Query(None, ge=1)) -> dict[str, Any]:
        incident, _ = await queries.incident_with_timeline(rt, key)
        return rt.notifications.briefing_preview(incident, version)

    @api.post("/api/incidents/{key}/briefing", summary="Save a new version of the members' briefing")
    async def draft_briefing(key: str, body: BriefingBody) -> JSONResponse:
        return _answer(await run(DraftBriefing(incident=key, talking_points=body.talking_points, actor=body.actor,
                                               **_ids(body))))

    @api.post("/api/incidents/{key}/briefing/approve", summary="Approve a version: sent to elected members")
    async def approve_briefing(key: str, body: ApproveBody) -> JSONResponse:
        return _answer(await run(ApproveBriefing(incident=key, briefing_version=body.briefing_version,
                                                 actor=body.actor, **_ids(body))))

    @api.post("/api/incidents/{key}/messages", summary="Send an update to everyone told about the incident")
    async def send_update(key: str, body: MessageBody) -> JSONResponse:
        return _answer(await run(SendUpdate(incident=key, text=body.text, actor=body.actor, **_ids(body))))

    @api.get("/api/incidents/{key}/fund", summary="The Critical Incident Fund claim")
    async def get_fund(key: str) -> dict[str, Any]:
        from sims.fund import summary

        claim = await rt.incidents.fund.claim(await rt.incidents.resolve(key))
        if claim is None:
            raise IncidentNotFound(f"{key} (no fund claim yet)")
        return {**claim.model_dump(mode="json"), "summary": summary(claim)}

    @api.post("/api/incidents/{key}/fund", summary="Act on the fund claim (fund_edit, fund_submit, ...)")
    async def act_on_fund(key: str, body: dict[str, Any]) -> JSONResponse:
        from sims.fund import FUND_COMMAND_ADAPTER

        command = FUND_COMMAND_ADAPTER.validate_python({**body, "incident_id": key, "actor_role": "-"}
                                                       if body.get("kind") in ("fund_approve", "fund_decline")
                                                       else {**body, "incident_id": key})
        return _answer(await run(command))  # type: ignore[arg-type]

    @api.get("/api/incidents/{key}/deliveries", summary="Every message sent about the incident, with its status")
    async def deliveries(key: str) -> list[dict[str, Any]]:
        incident_id = await rt.incidents.resolve(key)
        return await rt.notifications.deliveries(incident_id)

    @api.get("/api/drills", summary="Drills (exercise incidents), newest first")
    async def list_drills() -> list[dict[str, Any]]:
        from sims import drills

        return [queries.public(i) for i in await drills.list_drills(rt)]

    @api.get("/api/drills/{key}/report", summary="A drill's readiness report, with the trend across drills")
    async def drill_report(key: str) -> dict[str, Any]:
        from sims import drills

        report, points = await drills.drill_report(rt, key)
        return drills.as_json(report, points)

    @api.post("/api/preview", summary="Who would be notified of an incident like this, and why")
    async def preview(body: PreviewBody) -> list[dict[str, Any]]:
        return queries.preview(rt, body.type, body.level, body.ward, body.gold)

    @app.post("/hooks/twilio/status", status_code=204, summary="Twilio status callback (signed)",
              responses={403: _refusal("Bad or missing Twilio signature")})
    async def twilio_status(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        token = rt.settings.twilio_auth_token
        query = request.url.query  # Twilio signs the whole URL we gave it, the message key included
        url = f"{rt.settings.base_url}/hooks/twilio/status" + (f"?{query}" if query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if token is None or not RequestValidator(token.get_secret_value()).validate(url, form, signature):
            return JSONResponse({"ok": False, "error": {"error": "forbidden", "message": "Bad or missing signature."}},
                                status_code=403)
        report = {"provider_id": form.get("MessageSid", ""), "status": form.get("MessageStatus", ""),
                  "error_code": form.get("ErrorCode"), "key": request.query_params.get("k")}
        await jsa.publish(rt.js, STATUS_SUBJECT, json.dumps(report).encode(),
                          headers={"Nats-Msg-Id": f"status-{report['provider_id']}-{report['status']}"})
        return Response(status_code=204)

    @api.get("/api/outbox", summary="Messages written to the local outbox (embedded default)")
    async def outbox(limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
        from sims.adapters.outbox import read_outbox

        return read_outbox(rt.settings.data_dir, limit)

    @app.get("/asyncapi.json", summary="The AsyncAPI document of the NATS interface")
    async def asyncapi_doc() -> dict[str, Any]:
        from handlers.docs import asyncapi

        return asyncapi()

    @app.get("/metrics", summary="Prometheus metrics (counts only, no personal data)",
             response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        from sims.metrics import exposition

        return PlainTextResponse((await exposition(rt)).decode(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", summary="Is SIMS able to work? NATS, JetStream and each provider")
    async def healthz() -> JSONResponse:
        checks: dict[str, Any] = {"nats": rt.nc.is_connected}
        try:
            info = await rt.js.account_info()
            checks["jetstream"] = True
            checks["streams"] = info.streams
        except Exception as exc:  # reported, not raised: this endpoint says what is wrong
            checks["jetstream"] = False
            checks["jetstream_error"] = str(exc)
        from sims.adapters.reachability import providers

        checks["providers"] = await providers(rt.settings)
        ok = bool(checks["nats"] and checks["jetstream"]
                  and all(p["reachable"] for p in checks["providers"].values()))
        return JSONResponse({"ok": ok, **checks}, status_code=200 if ok else 503)

    app.include_router(api)
    return app
