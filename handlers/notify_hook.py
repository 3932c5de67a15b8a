"""GOV.UK Notify delivery receipts: `POST /hooks/notify/status` becomes a report on `sims.cmd.delivery`.

Notify authenticates its callbacks with `Authorization: Bearer <the token set on the service>`;
receipts are mapped onto the same status ladder as Twilio's, so a person's status does not depend
on the supplier that carried the message.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from sims.adapters.govuk_notify import RECEIPT_STATUS, provider_id
from sims.adapters.jetstream import STATUS_SUBJECT
from sims.bootstrap import Runtime


class NotifyReceipt(BaseModel):
    """The fields of Notify's callback SIMS uses (Notify sends more; they are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    reference: str | None = None
    status: str
    notification_type: str | None = None


def _refuse(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"error": error, "message": message}}, status_code=status)


def build_router(rt: Runtime) -> APIRouter:
    router = APIRouter()

    @router.post("/hooks/notify/status", status_code=204, summary="GOV.UK Notify delivery receipt (bearer token)")
    async def notify_status(request: Request) -> Response:
        token = rt.settings.notify_callback_token
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token.get_secret_value()}" if token else ""
        if not token or not hmac.compare_digest(given.encode(), expected.encode()):
            return _refuse(403, "forbidden", "Bad or missing bearer token.")
        try:
            receipt = NotifyReceipt.model_validate(json.loads(await request.body()))
            pid = provider_id(receipt.id)
        except (ValueError, ValidationError) as exc:
            return _refuse(422, "invalid", f"Not a Notify receipt: {str(exc)[:200]}")
        status = RECEIPT_STATUS.get(receipt.status)
        if status is None:
            return Response(status_code=204)  # a status SIMS does not track: accepted, nothing to record
        report: dict[str, Any] = {"provider_id": pid, "status": status, "key": receipt.reference,
                                  "error_code": None if status == "delivered" else receipt.status}
        await rt.js.publish(STATUS_SUBJECT, json.dumps(report).encode(), timeout=5.0,
                            headers={"Nats-Msg-Id": f"status-{pid}-{receipt.status}"})
        return Response(status_code=204)

    return router
