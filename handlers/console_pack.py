"""The console's review pack download: an HTML (or PDF) pack of one incident for Gold, the CSP board or an OWHR.

Anyone signed in may download a pack; restricted details go in only for roles that may act on
incidents (duty officers and administrators), and only when asked for. Every pack made is audited
(`pack.produced`); a refused request for restricted details is audited as `console.refused`.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from handlers.auth import Need, may
from handlers.console import HEADERS, Console, Refused
from sims.adapters.pack_pdf import render_pdf
from sims.errors import IncidentNotFound
from sims.pack_render import render_html
from sims.pack_service import produce
from sims.review_pack import Audience


def may_see_restricted(role: str) -> bool:
    """Restricted details are for those who act on incidents, not for viewers."""
    return may(role, Need.ACT)


def build_router(con: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    rt = con.rt

    @router.get("/console/incidents/{key}/pack")
    async def download(request: Request, key: str, audience: str = "gold", format: str = "html",
                       restricted: str = "") -> Response:
        session = await con.require(request, Need.VIEW)
        if audience not in {a.value for a in Audience} or format not in ("html", "pdf") or not 1 <= len(key) <= 64:
            raise Refused(400, "Choose the pack", "Choose who the pack is for (gold, csp or owhr) and HTML or PDF.")
        wants_restricted = restricted == "yes"
        if wants_restricted and not may_see_restricted(session.role):
            await con.audit(session.username, "console.refused", "forbidden",
                            {"path": request.url.path, "what": "pack with restricted details", "role": session.role})
            raise Refused(403, "You cannot include restricted details",
                          f"Your role ({session.role.replace('_', ' ')}) may download the pack without restricted "
                          "details only.")
        try:
            made = await produce(rt, key, audience=Audience(audience), may_see_restricted=wants_restricted,
                                 by=session.username, via="console")
        except IncidentNotFound:
            raise Refused(404, "Incident not found", f"There is no incident {key}.") from None
        marking = rt.settings.protective_marking
        name = f"review-pack-{re.sub(r'[^A-Za-z0-9-]', '', made.content['incident']['reference'])}-{audience}"
        if format == "pdf":
            body, media = render_pdf(made, marking), "application/pdf"
        else:
            body, media = render_html(made, rt.settings.templates_dir, marking).encode(), "text/html; charset=utf-8"
        return Response(body, media_type=media, headers={
            **HEADERS, "Content-Disposition": f'attachment; filename="{name}.{format}"',
            "X-Content-SHA256": made.version.content_sha256})

    return router


__all__ = ["build_router", "may_see_restricted"]
