"""`sims drill`: start an exercise (every message marked EXERCISE), list drills, write a readiness report."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from sims.messages import RaiseIncident
from sims.model import IncidentType, Level

drill_app = typer.Typer(help="Drills: exercises that run the whole protocol with real contacts, and their "
                             "readiness reports.", no_args_is_help=True)


def _cli() -> Any:
    from handlers import cli  # the shared helpers (runtime, failures); imported late: cli imports this module

    return cli


@drill_app.command("start")
def start(
    ward: str = typer.Option(..., help="Ward of the scenario, e.g. 'Peckham' (see `sims wards`)"),
    type: IncidentType = typer.Option(IncidentType.STABBING, "--type", help="Type of incident played"),
    level: Level = typer.Option(Level.LOCAL, help="1 local, 2 borough-wide, 3 major"),
    location: str = typer.Option("Exercise location", help="Where the scenario is set"),
    outline: str = typer.Option("Exercise scenario: a serious incident to test the protocol.",
                                help="What the scenario says happened (shareable words)"),
    actor: str = typer.Option(os.environ.get("USER", "duty-officer"), help="Who starts the drill"),
    idempotency_key: Optional[str] = typer.Option(None, help="Same key twice = one drill"),
) -> None:
    """Start a drill: raise an exercise incident; the whole protocol runs, every message marked EXERCISE."""
    data: dict[str, Any] = dict(type=type, level=level, ward=ward, location=location, outline=outline,
                                exercise=True, actor=actor, occurred_at=datetime.now(timezone.utc).isoformat())
    if idempotency_key:
        data["command_id"] = idempotency_key
    try:
        command = RaiseIncident.model_validate(data)
    except Exception as exc:  # pydantic's message names each field
        _cli()._fail(f"Invalid drill: {exc}", code=2)
        return
    result = _cli()._run_command(command)
    if result.get("ok"):
        typer.echo(f"Drill {result['reference']} started. When it is over: "
                   f"sims drill report {result['reference']} --out report.html")


def _figure(seconds: float | None) -> str:
    from sims.drill_report import _duration

    return _duration(seconds)


@drill_app.command("list")
def list_() -> None:
    """Every drill, newest first, with its headline figures."""
    from sims import drills

    async def go(rt: Any) -> list[Any]:
        return [await drills.report_for(rt, d) for d in await drills.list_drills(rt)]

    reports = _cli()._with_runtime(go)
    if not reports:
        typer.echo("No drills yet. Start one with `sims drill start --ward <ward>`.")
        return
    typer.echo(f"{'drill':15} {'raised (UTC)':16} {'state':12} {'msgs':>5} {'failed':>6} {'delivery':>9} "
               f"{'ack':>9} {'acked':>6}  tasks on time/late/never  stale")
    for r in reports:
        rate = "-" if r.ack_rate is None else f"{100 * r.ack_rate:.0f}%"
        tasks = f"{r.task_counts.on_time}/{r.task_counts.late}/{r.task_counts.never}"
        typer.echo(f"{r.reference:15} {r.raised_at:%Y-%m-%d %H:%M} {r.state:12} {r.messages:5} {r.failed:6} "
                   f"{_figure(r.median_delivery):>9} {_figure(r.median_ack):>9} {rate:>6}  {tasks:24} {len(r.stale)}")


@drill_app.command("report")
def report(
    drill: str = typer.Argument(..., help="The drill's reference (or id)"),
    out: Optional[Path] = typer.Option(None, help="Write the HTML report here (charts inline)"),
) -> None:
    """The readiness report of a drill: per role and person, tasks, failed channels, stale contacts, trend."""
    from sims import drill_report, drills

    report_, points = _cli()._with_runtime(lambda rt: drills.drill_report(rt, drill))
    r = report_
    rate = "-" if r.ack_rate is None else f"{100 * r.ack_rate:.0f}%"
    typer.echo(f"Drill {r.reference} ({r.state}): {r.messages} message(s), {r.failed} failed; median time to "
               f"delivery {_figure(r.median_delivery)}, to acknowledge {_figure(r.median_ack)}; acknowledged "
               f"{r.acknowledged} of {r.asked} ({rate})")
    typer.echo(f"Tasks: {r.task_counts.on_time} on time, {r.task_counts.late} late, {r.task_counts.never} never, "
               f"{r.task_counts.open} open, {r.task_counts.waived} waived")
    for row in r.roles:
        channels = ", ".join(f"{c.channel} delivery {_figure(c.median_delivery)} ack {_figure(c.median_ack)}"
                             for c in row.channels) or "no messages"
        typer.echo(f"  {row.name:32} {channels}; tasks {row.tasks.on_time}/{row.tasks.late}/{row.tasks.never}")
    for stale in r.stale:
        typer.secho(f"Stale contact: {stale.name} ({stale.person}) {stale.channel}: {stale.reason} "
                    f"(code {stale.code})", fg=typer.colors.YELLOW)
    typer.echo(f"Trend: {len(points)} drill(s) compared.")
    if out is not None:
        out.write_text(drill_report.render_html(r, points), encoding="utf-8")
        typer.secho(f"Wrote {out}", fg=typer.colors.GREEN)
