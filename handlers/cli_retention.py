"""`sims retention`: erase the personal data of incidents closed longer than the retention period."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import typer

retention_app = typer.Typer(help="Retention: erase closed incidents' personal data when SIMS_RETENTION_DAYS "
                                 "have passed (the worker also does this on its own).", no_args_is_help=True)
ACTOR = os.environ.get("USER", "duty-officer")


def _cli() -> Any:
    from handlers import cli  # the shared helpers (runtime, failures); imported late: cli imports this module

    return cli


def _line(done: Any) -> str:
    what = [("key destroyed" if done.key_destroyed else "no key held"), f"{done.deliveries} delivery record(s)",
            f"{done.links} link(s)", f"{done.outbox} outbox message(s)"]
    state = "Erased" if done.newly else "Already erased; checked"
    return f"{state} {done.reference} ({done.incident_id}): " + ", ".join(what)


@retention_app.command("run")
def run(dry_run: bool = typer.Option(False, "--dry-run", help="List what is due; erase nothing"),
        days: int | None = typer.Option(None, min=0, help="Retention in days (default: SIMS_RETENTION_DAYS)"),
        actor: str = typer.Option(ACTOR, help="Who runs it (audit trail)")) -> None:
    """Erase the personal data of every incident closed (or stood down) more than the retention period ago."""
    cli = _cli()

    async def go(rt: Any) -> list[str]:
        from sims.erasure import Erased
        from sims.queries import list_incidents

        erasure = rt.erasure
        if days is not None:
            erasure.retention = timedelta(days=days)
        incidents = await list_incidents(rt, reveal=False)
        if dry_run:
            return [f"Due: {d.reference} ({d.incident_id}) closed {d.closed_at.isoformat()}, "
                    f"due {d.due_at.isoformat()}" for d in erasure.due(incidents)]
        return [_line(outcome) if isinstance(outcome, Erased)
                else f"Not erased {due.reference} ({due.incident_id}): {outcome}"
                for due, outcome in await erasure.run(incidents, actor=actor)]

    lines = cli._with_runtime(go)
    retention = days if days is not None else cli._settings().retention_days
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo(f"Nothing is due for erasure (retention: {retention} day(s) after closure).")
    elif dry_run:
        typer.echo(f"{len(lines)} incident(s) due; nothing erased (--dry-run).")


@retention_app.command("erase")
def erase(incident: str = typer.Argument(..., help="Incident id or reference (closed or stood down)"),
          reason: str = typer.Option(..., help="Why now (e.g. an erasure request); goes into the audit trail"),
          actor: str = typer.Option(ACTOR, help="Who erases it (audit trail)")) -> None:
    """Erase one closed incident's personal data now, before its retention period ends."""
    cli = _cli()

    async def go(rt: Any) -> str:
        return _line(await rt.erasure.erase(incident, actor=actor, reason=reason))

    typer.echo(cli._with_runtime(go))


__all__ = ["retention_app"]
