"""A local GOV.UK Notify-like API for tests: JWT checked as Notify does, faults, rate limit, receipts.

From a test::

    async with NotifyServer(callback_url=url, callback_token="t") as notify:
        sender = NotifySmsSender(NotifyApi(notify.api_key, notify.base_url), notify.sms_template)
        notify.script(429, 500)        # the next two requests, then normal answers
        notify.fault = 500             # every request until cleared
        notify.outcome_for["+447700900123"] = "permanent-failure"
        assert notify.sent[0].personalisation["body"] == "..."
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from notifications_python_client.authentication import decode_jwt_token, get_token_issuer
from notifications_python_client.errors import TokenError

from tests.support.http_server import LocalHttpServer

ERROR_NAMES = {400: "BadRequestError", 403: "AuthError", 429: "RateLimitError", 500: "Internal server error",
               503: "ServiceUnavailable"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """One notification the server accepted."""

    id: str
    type: str  # sms | email
    to: str
    template_id: str
    personalisation: dict[str, Any]
    reference: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """One delivery receipt the server posted (or tried to)."""

    body: dict[str, Any]
    status: int | None  # None: connection failed


@dataclass
class NotifyServer(LocalHttpServer):
    """Speaks `POST /v2/notifications/sms|email` on 127.0.0.1 and posts receipts to `callback_url`."""

    callback_url: str | None = None
    callback_token: str = "local-notify-callback-token-0123456789"
    per_minute: int = 3000
    receipt_delay: float = 0.0
    service_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    sms_template: str = field(default_factory=lambda: str(uuid.uuid4()))
    email_template: str = field(default_factory=lambda: str(uuid.uuid4()))
    host: str = "127.0.0.1"
    port: int = 0
    fault: int | None = None  # answer every request with this status (429, 500, 403...) until cleared
    outcome_for: dict[str, str] = field(default_factory=dict)  # recipient -> receipt status
    sent: list[Sent] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    requests: int = 0
    refused: list[int] = field(default_factory=list)  # statuses of refused requests, in order

    def __post_init__(self) -> None:
        self._script: collections.deque[int] = collections.deque()
        self._window: collections.deque[float] = collections.deque()
        super().__init__()

    @property
    def api_key(self) -> str:
        """A key shaped like Notify's: `{name}-{service id}-{secret}`."""
        return f"sims_local-{self.service_id}-{self.secret}"

    def script(self, *statuses: int) -> None:
        """Refuse the next requests with these statuses, in order; then answer normally."""
        self._script.extend(statuses)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/notifications/sms", self._sms)
        app.router.add_post("/v2/notifications/email", self._email)

    async def drain_receipts(self, timeout: float = 5.0) -> None:
        await self._drain(timeout)

    # -- HTTP --------------------------------------------------------------------------------------

    def _error(self, status: int, message: str, name: str | None = None) -> web.Response:
        self.refused.append(status)
        return web.json_response({"status_code": status, "errors": [
            {"error": name or ERROR_NAMES.get(status, "BadRequestError"), "message": message}]}, status=status)

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        """Notify's check: a Bearer JWT, issuer = service id, HS256 signature with the key's secret, fresh iat."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return self._error(401, "Unauthorized: authentication token must be provided", "AuthError")
        token = header[len("Bearer "):]
        try:
            if get_token_issuer(token) != self.service_id:
                return self._error(403, "Invalid token: service not found", "AuthError")
            decode_jwt_token(token, self.secret)
        except TokenError as exc:
            return self._error(403, exc.message, "AuthError")
        return None

    def _limited(self) -> web.Response | None:
        now = time.monotonic()
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        if len(self._window) >= self.per_minute:
            return self._error(429, f"Exceeded rate limit for key type LIVE of {self.per_minute} requests per "
                                    "60 seconds")
        self._window.append(now)
        return None

    async def _refusal(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        if (problem := self._auth_problem(request)) is not None:
            return problem
        if (limited := self._limited()) is not None:
            return limited
        status = self._script.popleft() if self._script else self.fault
        if status is not None:
            message = {429: "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds",
                       403: "Invalid token: API key revoked", 500: "Internal server error"}.get(status, "Error")
            return self._error(status, message)
        return None

    async def _create(self, request: web.Request, kind: str) -> web.Response:
        if (refusal := await self._refusal(request)) is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Invalid JSON supplied in POST data", "BadRequestError")
        address_field = "phone_number" if kind == "sms" else "email_address"
        template = self.sms_template if kind == "sms" else self.email_template
        to = body.get(address_field)
        if not to:
            return self._error(400, f"{address_field} is a required property", "ValidationError")
        if body.get("template_id") != template:
            return self._error(400, "Template not found", "BadRequestError")
        personalisation = body.get("personalisation") or {}
        needed = ("body",) if kind == "sms" else ("subject", "body")
        if missing := [n for n in needed if n not in personalisation]:
            return self._error(400, f"Missing personalisation: {', '.join(missing)}", "BadRequestError")
        notification = Sent(id=str(uuid.uuid4()), type=kind, to=to, template_id=template,
                            personalisation=personalisation, reference=body.get("reference"),
                            created_at=datetime.now(UTC))
        self.sent.append(notification)
        content: dict[str, Any] = {"body": personalisation["body"]}
        if kind == "sms":
            content["from_number"] = "GOVUK"
        else:
            content.update(subject=personalisation["subject"], from_email="sims@notifications.service.gov.uk",
                           one_click_unsubscribe_url=None)
        if self.callback_url:
            self._spawn(self._receipt(notification))
        return web.json_response({
            "id": notification.id, "reference": notification.reference, "content": content,
            "uri": f"{self.base_url}/v2/notifications/{notification.id}",
            "template": {"id": template, "version": 1, "uri": f"{self.base_url}/services/{self.service_id}"
                                                               f"/templates/{template}"},
            "scheduled_for": None}, status=201)

    async def _sms(self, request: web.Request) -> web.Response:
        return await self._create(request, "sms")

    async def _email(self, request: web.Request) -> web.Response:
        return await self._create(request, "email")

    # -- receipts ----------------------------------------------------------------------------------

    async def _receipt(self, notification: Sent) -> None:
        if self.receipt_delay:
            await asyncio.sleep(self.receipt_delay)
        await self.post_receipt(notification, self.outcome_for.get(notification.to, "delivered"))

    async def post_receipt(self, notification: Sent, status: str) -> Receipt:
        """POST a receipt as Notify does: JSON, `Authorization: Bearer <callback token>`."""
        assert self._session is not None and self.callback_url, "server not started or no callback URL"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"id": notification.id, "reference": notification.reference, "to": notification.to,
                "status": status, "created_at": notification.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "completed_at": now, "sent_at": now, "notification_type": notification.type,
                "template_id": notification.template_id, "template_version": 1}
        code: int | None
        try:
            async with self._session.post(self.callback_url, json=body, headers={
                    "Authorization": f"Bearer {self.callback_token}"}) as response:
                await response.read()
                code = response.status
        except (TimeoutError, OSError):
            code = None
        receipt = Receipt(body=body, status=code)
        self.receipts.append(receipt)
        return receipt


def random_token() -> str:
    return secrets.token_urlsafe(24)
