"""Console pages for drills: the list with headline figures, and each drill's readiness report and charts.

Charts are SVG files of their own (`<img>`), served with a CSP that lets their inline styles apply and
nothing else, so the pages keep the console's CSP (no inline script or style).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from handlers.auth import Need
from handlers.console import Console, Refused
from sims import drill_report, drills
from sims.errors import IncidentNotFound

SVG_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
               "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def build_router(con: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    rt = con.rt
    drill_report.add_filters(con.env)

    async def report(key: str) -> tuple[drills.readiness.ReadinessReport, list[drills.readiness.TrendPoint]]:
        if not 1 <= len(key) <= 64:
            raise Refused(404, "Drill not found", "There is no such drill. Check the reference.")
        try:
            return await drills.drill_report(rt, key)
        except IncidentNotFound:
            raise Refused(404, "Drill not found", f"There is no drill {key}: only exercises have a readiness "
                                                  "report.") from None

    @router.get("/console/drills", response_class=HTMLResponse)
    async def drill_list(request: Request) -> HTMLResponse:
        session = await con.require(request, Need.VIEW)
        reports = [await drills.report_for(rt, d) for d in await drills.list_drills(rt)]
        return con.page("drills.html", session, reports=reports)

    @router.get("/console/drills/{key}", response_class=HTMLResponse)
    async def drill_page(request: Request, key: str) -> HTMLResponse:
        session = await con.require(request, Need.VIEW)
        found, points = await report(key)
        svgs = {name: Markup('<img class="chart-image" src="/console/drills/{0}/charts/{1}.svg" alt="{2}">').format(
                    found.reference, name, drill_report.CHART_TITLES[name]) for name in drill_report.CHARTS}
        return con.page("drill.html", session, svgs=svgs, **drill_report.context(found, points))

    @router.get("/console/drills/{key}/charts/{name}.svg")
    async def chart(request: Request, key: str, name: str) -> Response:
        await con.require(request, Need.VIEW)
        if name not in drill_report.CHARTS:
            raise Refused(404, "Not found", f"The charts are: {', '.join(drill_report.CHARTS)}.")
        found, points = await report(key)
        svg = drill_report.charts(found, points)[name]
        return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)

    @router.get("/console/drills/{key}/report.html")
    async def download(request: Request, key: str) -> Response:
        await con.require(request, Need.VIEW)
        found, points = await report(key)
        html = drill_report.render_html(found, points)
        return Response(html, media_type="text/html; charset=utf-8", headers={
            **SVG_HEADERS, "Content-Disposition": f'attachment; filename="drill-{found.reference}.html"'})

    return router
