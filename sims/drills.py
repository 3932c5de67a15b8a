"""Read side of drills: exercise incidents, and each one's readiness report with the trend. Reads only."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sims import queries, readiness
from sims.bootstrap import Runtime
from sims.errors import IncidentNotFound
from sims.model import Incident

MAX_TREND = 12  # drills compared in the trend (the newest, up to the one reported)


async def list_drills(rt: Runtime) -> list[Incident]:
    """Every exercise incident, newest first."""
    return [i for i in await queries.list_incidents(rt) if i.exercise]


def people(rt: Runtime) -> dict[str, readiness.Person]:
    """The directory as the report needs it (with when each person last confirmed their details)."""
    return {c.id: readiness.Person(id=c.id, name=c.name, roles=tuple(c.roles), verified_on=c.verified_on)
            for c in rt.directory.all()}


async def deliveries(rt: Runtime, incident_id: str) -> list[dict[str, Any]]:
    found = await rt.kv.entries("sims_deliveries", f"d.{incident_id}.>")
    return list(found.values())


async def report_for(rt: Runtime, incident: Incident, now: datetime | None = None) -> readiness.ReadinessReport:
    """One drill's readiness report, from its events (the truth) and its delivery records."""
    current, _seq, events = await rt.incidents.load(incident.id)
    return readiness.build(current, events, await deliveries(rt, incident.id), people(rt),
                           now or datetime.now(UTC))


async def drill_report(rt: Runtime, key: str, now: datetime | None = None
                       ) -> tuple[readiness.ReadinessReport, list[readiness.TrendPoint]]:
    """The report of the drill `key` (id or reference) and the trend of the drills up to it."""
    incident_id = await rt.incidents.resolve(key)
    incident, _seq, _events = await rt.incidents.load(incident_id)
    if not incident.exercise:
        raise IncidentNotFound(key)  # a live incident has no readiness report: it is not a drill
    now = now or datetime.now(UTC)
    report = await report_for(rt, incident, now)
    earlier = [d for d in await list_drills(rt) if d.raised_at < incident.raised_at][: MAX_TREND - 1]
    reports = [report] + [await report_for(rt, d, now) for d in earlier]
    return report, readiness.trend(reports)


def as_json(report: readiness.ReadinessReport, points: list[readiness.TrendPoint]) -> dict[str, Any]:
    """The report for the API: every figure, with the medians and rates spelt out, and the trend."""

    def channels(figures: tuple[readiness.ChannelFigures, ...]) -> list[dict[str, Any]]:
        return [{**asdict(c), "median_delivery": c.median_delivery, "median_ack": c.median_ack} for c in figures]

    def rows(found: tuple[readiness.Readiness, ...]) -> list[dict[str, Any]]:
        return [{**asdict(r), "channels": channels(r.channels), "median_ack": r.median_ack,
                 "median_delivery": r.median_delivery} for r in found]

    return {**asdict(report), "people": rows(report.people), "roles": rows(report.roles),
            "channels": channels(report.channels), "summary": {
                "messages": report.messages, "failed": report.failed, "median_delivery": report.median_delivery,
                "median_ack": report.median_ack, "ack_rate": report.ack_rate},
            "trend": [asdict(p) for p in points], "change": readiness.change(points, report.reference)}
