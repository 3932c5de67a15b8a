"""The `sims` command line: run SIMS, raise and follow incidents, export and verify the audit trail."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from handlers import loop as event_loop
from handlers.progress import progress
from sims import queries
from sims.adapters.commands import submit
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.errors import SimsError
from sims.logs import configure
from sims.messages import (
    ApproveBriefing,
    Command,
    DraftBriefing,
    RaiseIncident,
    SendUpdate,
    Transition,
    Trigger,
    UpdateIncident,
)
from sims.model import IncidentType, Level, State
from sims.protocol_config import load_protocol

app = typer.Typer(help="SIMS - Serious Incident Management System.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
audit_app = typer.Typer(help="Export and verify the tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
contacts_app = typer.Typer(help="The contacts directory.", no_args_is_help=True)
app.add_typer(contacts_app, name="contacts")
templates_app = typer.Typer(help="Message templates.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
fund_app = typer.Typer(help="The Critical Incident Fund claim (up to GBP 5,000 from the London VRU).",
                       no_args_is_help=True)
app.add_typer(fund_app, name="fund")
briefing_app = typer.Typer(help="The elected members' briefing: show, edit, approve (and send).", no_args_is_help=True)
app.add_typer(briefing_app, name="briefing")
T = TypeVar("T")


def _settings() -> Settings:
    return Settings()


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _with_runtime(fn: Callable[[Runtime], Awaitable[T]], setup: bool = False) -> T:
    settings = _settings()
    configure("warning", json=False)
    url = settings.resolved_nats_url()
    if not url:
        _fail("SIMS is not running here: start it with `sims up` (or set SIMS_NATS_URL).")

    async def go() -> T:
        try:
            rt = await asyncio.wait_for(connect_runtime(settings, str(url), "sims-cli", setup=setup), 10)
        except Exception as exc:  # noqa: BLE001 - any connection failure gets the same advice
            _fail(f"Cannot reach NATS at {url}: {exc}. Is `sims up` running?")
            raise
        try:
            return await fn(rt)
        finally:
            await rt.close()

    try:
        return event_loop.run(go())
    except SimsError as exc:
        _fail(str(exc))
        raise


def _run_command(command: Command) -> dict[str, Any]:
    async def go(rt: Runtime) -> dict[str, Any]:
        return await submit(rt.nc, rt.js, rt.kv, command, rt.settings.command_timeout)

    result = _with_runtime(go)
    if result.get("ok"):
        typer.secho(f"{result['kind']}: {result['reference']} ({result['incident_id']}) is now "
                    f"{result['state']} [version {result['version']}]", fg=typer.colors.GREEN)
    elif result.get("queued"):
        typer.secho(result["message"], fg=typer.colors.YELLOW)
    else:
        _fail(f"Refused: {result['error']['message']}", code=2)
    return result


def _serve(worker: bool, web: bool, embedded: bool) -> None:
    from handlers.serve import serve

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure(settings.log_level, settings.log_json)
    try:
        event_loop.run(serve(settings, worker=worker, web=web, embedded=embedded))
    except SimsError as exc:
        _fail(f"SIMS cannot start: {exc}")


@app.command()
def up() -> None:
    """Run everything on this machine: embedded NATS (unless SIMS_NATS_URL), handlers and web."""
    _serve(worker=True, web=True, embedded=True)


@app.command()
def worker() -> None:
    """Run the handlers only (needs SIMS_NATS_URL)."""
    _serve(worker=True, web=False, embedded=False)


@app.command()
def web() -> None:
    """Run the HTTP server only (needs SIMS_NATS_URL)."""
    _serve(worker=False, web=True, embedded=False)


@app.command("raise")
def raise_(
    type: IncidentType = typer.Option(..., "--type", help="stabbing, shooting, homicide, serious_assault, other"),
    level: Level = typer.Option(..., help="1 local, 2 borough-wide, 3 major"),
    ward: str = typer.Option(..., help="Ward name, e.g. 'Peckham' (see `sims wards`)"),
    location: str = typer.Option(..., help="Where, e.g. 'Rye Lane near the station'"),
    outline: str = typer.Option(..., help="What happened, in words that may be shared"),
    restricted: str = typer.Option("", help="Details that must not be shared (names...)"),
    occurred_at: Optional[str] = typer.Option(None, help="ISO time with zone; default now"),
    exercise: bool = typer.Option(False, "--exercise", help="This is an exercise"),
    actor: str = typer.Option(os.environ.get("USER", "duty-officer"), help="Who is raising it"),
    idempotency_key: Optional[str] = typer.Option(None, help="Same key twice = one incident"),
    also_affects: list[str] = typer.Option([], help="Pan-London: a neighbouring borough's code to tell as well "
                                           "(e.g. LAM); repeat for more"),
) -> None:
    """Raise a critical incident."""
    data: dict[str, Any] = dict(type=type, level=level, ward=ward, location=location, outline=outline,
                                restricted=restricted, exercise=exercise, actor=actor, also_affects=also_affects,
                                occurred_at=occurred_at or datetime.now(timezone.utc).isoformat())
    if idempotency_key:
        data["command_id"] = idempotency_key
    try:
        command = RaiseIncident.model_validate(data)
    except Exception as exc:  # pydantic's message names each field
        _fail(f"Invalid incident: {exc}", code=2)
        return
    _run_command(command)


@app.command()
def update(
    incident: str = typer.Argument(..., help="Incident id or reference"),
    outline: Optional[str] = None, location: Optional[str] = None, restricted: Optional[str] = None,
    level: Optional[Level] = None, victim_age_band: Optional[str] = None,
    cross_border: Optional[bool] = typer.Option(None, "--cross-border/--no-cross-border"),
    other_borough: Optional[str] = None,
    add_crime_scene: list[str] = typer.Option([], help="Repeatable"),
    add_cordon: list[str] = typer.Option([], help="Repeatable"),
    add_rendezvous_point: list[str] = typer.Option([], help="Repeatable"),
    add_road_closure: list[str] = typer.Option([], help="Repeatable"),
    add_power: list[str] = typer.Option([], help="KIND,AREA,EXPIRES e.g. section_60,Peckham,2026-12-01T06:00Z"),
    remove_cordon: list[str] = typer.Option([], help="Repeatable"),
    expected_version: Optional[int] = None,
    actor: str = typer.Option(os.environ.get("USER", "duty-officer")),
) -> None:
    """Add or correct an incident's details (each update is an event in its timeline)."""
    powers = []
    for spec in add_power:
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) != 3:
            _fail(f"--add-power {spec!r}: write KIND,AREA,EXPIRES", code=2)
        powers.append({"kind": parts[0], "area": parts[1], "expires_at": parts[2],
                       "authorised_at": datetime.now(timezone.utc).isoformat()})
    data = dict(incident=incident, outline=outline, location=location, restricted=restricted, level=level,
                victim_age_band=victim_age_band, cross_border=cross_border, other_borough=other_borough,
                add_crime_scenes=add_crime_scene, add_cordons=add_cordon,
                add_rendezvous_points=add_rendezvous_point, add_road_closures=add_road_closure,
                add_police_powers=powers, remove_cordons=remove_cordon, expected_version=expected_version,
                actor=actor)
    try:
        command = UpdateIncident.model_validate({k: v for k, v in data.items() if v not in (None, [])})
    except Exception as exc:
        _fail(f"Invalid update: {exc}", code=2)
        return
    _run_command(command)


@app.command()
def transition(
    incident: str = typer.Argument(..., help="Incident id or reference"),
    trigger: Trigger = typer.Argument(..., help="e.g. escalate, begin_reassurance, stand_down, close"),
    reason: str = typer.Option("", help="Needed to stand down, de-escalate or close"),
    actor: str = typer.Option(os.environ.get("USER", "duty-officer")),
    expected_version: Optional[int] = None,
) -> None:
    """Move an incident on through the Critical Incident Protocol."""
    _run_command(Transition(incident=incident, trigger=trigger, reason=reason, actor=actor,
                            expected_version=expected_version))


@app.command()
def status(incident: Optional[str] = typer.Argument(None, help="Incident id or reference")) -> None:
    """List incidents, or show one incident's state and timeline."""
    if incident is None:
        incidents = _with_runtime(queries.list_incidents)
        if not incidents:
            typer.echo("No incidents.")
        for i in incidents:
            mark = " EXERCISE" if i.exercise else ""
            typer.echo(f"{i.reference:15} {i.state.value:12} L{i.level.value} {i.type.value:16} "
                       f"{i.ward:32} raised {i.raised_at:%Y-%m-%d %H:%M}Z{mark}")
        return

    async def go(rt: Runtime) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
        found, timeline = await queries.incident_with_timeline(rt, incident)
        return found, timeline, await rt.notifications.deliveries(found.id)

    found, timeline, deliveries = _with_runtime(go)
    typer.echo(f"{found.reference} ({found.id}){' EXERCISE' if found.exercise else ''}")
    typer.echo(f"  state: {found.state.value}  version {found.version}  level {found.level.value}"
               f"{'  GOLD' if found.gold else ''}")
    typer.echo(f"  {found.type.value} in {found.ward}: {found.location}")
    typer.echo(f"  outline: {found.outline}")
    from sims.protocol import allowed_triggers
    typer.echo("  next: " + (", ".join(t.value for t in allowed_triggers(found.state)) or "(none)"))
    typer.echo("Timeline:")
    for entry in timeline:
        typer.echo(f"  {entry['at'][:19]}Z  {entry['actor']:14} {entry['summary']}")
    if found.tasks:
        typer.echo("Tasks:")
        for t in found.tasks:
            typer.echo(f"  {t.number:2}. [{t.status.value:12}] {t.title} - {t.owner or '(nobody holds ' + t.owner_role + ')'}, "
                       f"due {t.due_at:%Y-%m-%d %H:%M}Z ({t.kind})")
    typer.echo(f"Messages ({len(deliveries)}):")
    for d in deliveries:
        error = f"  ({d['error']})" if d.get("error") else ""
        typer.echo(f"  {d['kind']:10} {d['contact_id']:32} {d['channel']:8} {d['status']:11} "
                   f"attempts {d.get('attempts', 0)}{error}")


@briefing_app.command("show")
def briefing_show(incident: str, version: Optional[int] = typer.Option(None, help="Default: the latest draft")) -> None:
    """Show the members' briefing as members will get it."""
    async def go(rt: Runtime) -> dict[str, Any]:
        found, _ = await queries.incident_with_timeline(rt, incident)
        return rt.notifications.briefing_preview(found, version)

    shown = _with_runtime(go)
    status = "approved and sent" if shown["approved"] == shown["version"] else "draft"
    typer.echo(f"Version {shown['version']} of {shown['versions']} ({status}; approved: {shown['approved'] or 'none'})")
    typer.echo(f"SMS ({shown['sms_segments']} segment(s)): {shown['sms']}\n")
    typer.echo(f"Subject: {shown['subject']}\n\n{shown['text']}")


@briefing_app.command("edit")
def briefing_edit(incident: str, text: str = typer.Option(..., help="What members can say to the community"),
                  actor: str = typer.Option(os.environ.get("USER", "duty-officer"))) -> None:
    """Save a new version of what members can say (each version is kept in the audit trail)."""
    _run_command(DraftBriefing(incident=incident, talking_points=text, actor=actor))


@briefing_app.command("approve")
def briefing_approve(incident: str, version: int = typer.Option(..., help="The version to send"),
                     actor: str = typer.Option(os.environ.get("USER", "duty-officer"))) -> None:
    """Approve a version: it goes to the elected members by SMS and email."""
    _run_command(ApproveBriefing(incident=incident, briefing_version=version, actor=actor))


@app.command("send-update")
def send_update(incident: str, text: str = typer.Option(..., help="Shareable text only: it goes by SMS"),
                actor: str = typer.Option(os.environ.get("USER", "duty-officer"))) -> None:
    """Send an update to everyone who was told about the incident."""
    _run_command(SendUpdate(incident=incident, text=text, actor=actor))


def _fund(data: dict[str, Any]) -> None:
    from sims.fund import FUND_COMMAND_ADAPTER

    try:
        command = FUND_COMMAND_ADAPTER.validate_python({k: v for k, v in data.items() if v not in (None, [], ())})
    except Exception as exc:  # pydantic names each field
        _fail(f"Invalid: {exc}", code=2)
        return
    result = _run_command(command)  # type: ignore[arg-type]
    if result.get("ok") and result.get("detail"):
        d = result["detail"]
        typer.echo(f"Claim is {d['claim_state']} (version {d['claim_version']}): requested GBP {d['requested']}, "
                   f"approved {d['approved'] or '-'}, spent GBP {d['spent']}")


ACTOR = typer.Option(os.environ.get("USER", "duty-officer"), help="Who acts (the VRU contact's id to approve)")


@fund_app.command("edit")
def fund_edit(incident: str, purpose: Optional[str] = None, activity: Optional[str] = None,
              beneficiaries: Optional[str] = None, start: Optional[str] = typer.Option(None, help="YYYY-MM-DD"),
              end: Optional[str] = typer.Option(None, help="YYYY-MM-DD"),
              line: list[str] = typer.Option([], help="'Description=1250.50' (repeatable; replaces all lines)"),
              actor: str = ACTOR) -> None:
    """Draft or change the claim (amounts in pounds and pence)."""
    lines = []
    for spec in line:
        if "=" not in spec:
            _fail(f"--line {spec!r}: write 'Description=amount'", code=2)
        description, amount = spec.rsplit("=", 1)
        lines.append({"description": description.strip(), "amount": amount.strip()})
    _fund({"kind": "fund_edit", "incident_id": incident, "actor": actor, "purpose": purpose,
           "planned_activity": activity, "beneficiaries": beneficiaries, "start_date": start, "end_date": end,
           "lines": lines or None})


@fund_app.command("submit")
def fund_submit(incident: str, actor: str = ACTOR) -> None:
    """Submit the claim to the VRU (their contact gets a link to approve or decline)."""
    _fund({"kind": "fund_submit", "incident_id": incident, "actor": actor})


@fund_app.command("approve")
def fund_approve(incident: str, amount: str = typer.Option(...), actor: str = ACTOR) -> None:
    """Approve (VRU only)."""
    _fund({"kind": "fund_approve", "incident_id": incident, "actor": actor, "amount": amount, "actor_role": "-"})


@fund_app.command("decline")
def fund_decline(incident: str, reason: str = typer.Option(...), actor: str = ACTOR) -> None:
    """Decline with a reason (VRU only)."""
    _fund({"kind": "fund_decline", "incident_id": incident, "actor": actor, "reason": reason, "actor_role": "-"})


@fund_app.command("spend")
def fund_spend(incident: str, amount: str = typer.Option(...), on: str = typer.Option(..., help="YYYY-MM-DD"),
               description: str = typer.Option(...), supplier: Optional[str] = None, actor: str = ACTOR) -> None:
    """Record money spent."""
    _fund({"kind": "fund_record_spend", "incident_id": incident, "actor": actor, "amount": amount, "date": on,
           "description": description, "supplier": supplier})


@fund_app.command("evaluate")
def fund_evaluate(incident: str, text: str = typer.Option(...), outcome: list[str] = typer.Option([]),
                  actor: str = ACTOR) -> None:
    """Submit the evaluation of what the money achieved."""
    _fund({"kind": "fund_submit_evaluation", "incident_id": incident, "actor": actor, "text": text,
           "outcomes": outcome})


@fund_app.command("close")
def fund_close(incident: str, actor: str = ACTOR) -> None:
    """Close the claim."""
    _fund({"kind": "fund_close", "incident_id": incident, "actor": actor})


@fund_app.command("export")
def fund_export(incident: str) -> None:
    """The claim summary, for the VRU."""
    from sims.fund import summary

    async def go(rt: Runtime) -> Any:
        return await rt.incidents.fund.claim(await rt.incidents.resolve(incident))

    claim = _with_runtime(go)
    if claim is None:
        _fail(f"No fund claim for {incident} yet: start one with `sims fund edit`.")
    typer.echo(summary(claim), nl=False)


@app.command()
def pack(
    incident: str = typer.Argument(..., help="Incident id or reference"),
    audience: str = typer.Option(..., help="gold, csp (Community Safety Partnership board) or owhr (Offensive "
                                           "Weapons Homicide Review)"),
    out: Path = typer.Option(..., "--out", help="Where to write the HTML pack"),
    pdf: Optional[Path] = typer.Option(None, "--pdf", help="Also write the pack as a PDF here"),
    restricted: bool = typer.Option(False, "--restricted", help="Include restricted details (needs --by; audited)"),
    by: Optional[str] = typer.Option(None, "--by", help="Who is producing the pack (required with --restricted)"),
) -> None:
    """Write a self-contained review pack (HTML, and PDF with --pdf) for the Gold group, CSP board or OWHR."""
    from sims.adapters.pack_pdf import render_pdf
    from sims.pack_render import render_html
    from sims.pack_service import produce
    from sims.review_pack import Audience, Pack

    if audience not in {a.value for a in Audience}:
        _fail(f"--audience must be one of: {', '.join(a.value for a in Audience)}", code=2)
    who = (by or "").strip()
    if restricted and not who:
        _fail("--restricted needs --by NAME: say who you are (it goes into the audit trail).", code=2)
    actor = f"cli:{who or os.environ.get('USER', '-')}"

    async def go(rt: Runtime) -> Pack:
        return await produce(rt, incident, audience=Audience(audience), may_see_restricted=restricted, by=actor,
                             via="cli")

    made = _with_runtime(go)
    settings = _settings()
    out.write_text(render_html(made, settings.templates_dir, settings.protective_marking), encoding="utf-8")
    if pdf is not None:
        pdf.write_bytes(render_pdf(made, settings.protective_marking))
    typer.secho(f"Wrote {out}{f' and {pdf}' if pdf else ''}: {made.title} for "
                f"{made.content['incident']['reference']}, restricted details "
                f"{'included' if restricted else 'not included'}; content sha256 {made.version.content_sha256}",
                fg=typer.colors.GREEN)
    typer.echo(f"Audit trail: {made.content['audit']['result']}")


@app.command()
def wards() -> None:
    """The wards of the borough in the protocol."""
    protocol = load_protocol(_settings().protocol)
    for ward in protocol.borough.wards:
        typer.echo(ward)


@app.command("dead-letters")
def dead_letters(limit: int = 50) -> None:
    """What could not be handled, with the reason (newest last)."""
    from sims.adapters.jetstream import DEAD, read_subject

    async def go(rt: Runtime) -> list[dict[str, Any]]:
        return [json.loads(m.data) | {"subject": m.subject} async for m in read_subject(rt.js, DEAD, "sims.dlq.>")]

    items = _with_runtime(go)[-limit:]
    if not items:
        typer.echo("No dead letters.")
    for item in items:
        typer.echo(f"{item['subject']}: {item['reason'].get('message')}  payload: {item['payload'][:120]}")


@app.command()
def task(
    incident: str = typer.Argument(..., help="Incident id or reference"),
    task_id: str = typer.Argument(..., help="The task's id, e.g. reassurance_patrols (see `sims status`)"),
    action: str = typer.Argument(..., help="acknowledge, done, decline or waive"),
    note: str = typer.Option("", help="What was done (evidence)"),
    reason: str = typer.Option("", help="Why it is declined or waived"),
    actor: str = typer.Option(os.environ.get("USER", "duty-officer")),
) -> None:
    """Act on a task as the duty officer (waive needs a reason)."""
    from sims.messages import ActOnTask

    if action not in ("acknowledge", "done", "decline", "waive"):
        _fail("action must be acknowledge, done, decline or waive", code=2)
    _run_command(ActOnTask(incident=incident, task=task_id, action=action, note=note, reason=reason,  # type: ignore[arg-type]
                           actor=actor, via="cli"))


@app.command()
def preview(
    type: IncidentType = typer.Option(..., "--type"), level: Level = typer.Option(...),
    ward: str = typer.Option(...), gold: bool = typer.Option(False, "--gold"),
) -> None:
    """Who would be notified of an incident like this, and why (nothing is sent)."""
    settings = _settings()
    protocol = load_protocol(settings.protocol)
    from sims.directory import load_directory
    from sims.model import Incident
    from sims.routing import explain, recipients_for

    if ward not in protocol.ward_set:
        _fail(f"{ward!r} is not a ward of {protocol.borough.name} (see `sims wards`).", code=2)
    now = datetime.now(timezone.utc)
    probe = Incident(id="preview", reference="PREVIEW", type=type, level=level, ward=ward, gold=gold, occurred_at=now,
                     raised_at=now, updated_at=now, location="-", outline="-", raised_by="-")
    people = recipients_for(probe, load_directory(settings.contacts_dir, protocol), protocol)
    typer.echo(f"{len(people)} people would be told:")
    for line in explain(people):
        typer.echo(f"  {line}")


@app.command()
def outbox(limit: int = 20) -> None:
    """Messages written to the local outbox (when no SMS/email provider is configured)."""
    from sims.adapters.outbox import read_outbox

    entries = read_outbox(_settings().data_dir, limit)
    if not entries:
        typer.echo("The outbox is empty.")
    for entry in entries:
        head = entry.get("subject") or ""
        typer.echo(f"--- {entry['at'][:19]}Z {entry['channel']} to {entry['to']}  {head}")
        typer.echo(str(entry.get("body") or entry.get("text") or "").strip())


@contacts_app.command("check")
def contacts_check(folder: Optional[Path] = typer.Argument(None, help="Default: SIMS_CONTACTS_DIR")) -> None:
    """Check the whole directory; every problem with file and line."""
    from sims.directory import check_directory

    settings = _settings()
    protocol = load_protocol(settings.protocol)
    problems = check_directory(folder or settings.contacts_dir, protocol)
    if problems:
        for problem in problems:
            typer.secho(problem, fg=typer.colors.RED, err=True)
        _fail(f"{len(problems)} problem(s) in the contacts directory.", code=2)
    typer.secho(f"Contacts directory {folder or settings.contacts_dir} is valid.", fg=typer.colors.GREEN)


@templates_app.command("preview")
def templates_preview(kind: str = typer.Argument(..., help="holding, briefing, task, update, stand_down, closure")) -> None:
    """Render a message kind with sample (worst-case) data, with SMS segment counts."""
    from sims.rendering import KINDS, Renderer, sample_context

    if kind not in KINDS:
        _fail(f"Unknown kind {kind!r}; one of: {', '.join(KINDS)}", code=2)
    settings = _settings()
    renderer = Renderer(settings.templates_dir, settings.protective_marking)
    args = sample_context(kind).args()
    sms = renderer.render_sms(kind, *args)
    email = renderer.render_email(kind, *args)
    info = sms.segments
    typer.echo(f"SMS ({info.encoding}, {info.units} units, {info.segments} segment(s)):\n{sms.body}\n")
    typer.echo(f"Email subject: {email.subject}\n\n{email.text}")


@audit_app.command("export")
def audit_export(incident: str, format: str = typer.Option("jsonl", help="jsonl or csv"),
                 output: Optional[Path] = typer.Option(None, "-o", "--output")) -> None:
    """Export an incident's audit trail (verifiable on its own with `sims audit verify FILE`)."""
    if format not in ("jsonl", "csv"):
        _fail("--format must be jsonl or csv", code=2)

    async def go(rt: Runtime) -> list[dict[str, Any]]:
        with progress(f"Reading the audit trail of {incident}") as tick:
            return await queries.audit_records(rt, incident, on_record=tick)

    records = _with_runtime(go)
    text = queries.to_jsonl(records) if format == "jsonl" else queries.to_csv(records)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"Wrote {len(records)} records to {output}", err=True)
    else:
        sys.stdout.write(text)


@audit_app.command("verify")
def audit_verify(file: Optional[Path] = typer.Argument(None, help="An exported file; default: the live trail")) -> None:
    """Check the hash chain; names the first record that was altered, removed or reordered."""
    if file is not None:
        records = queries.parse_export(file.read_text(encoding="utf-8"))
    else:
        async def read(rt: Runtime) -> list[dict[str, Any]]:
            with progress("Reading the audit trail", total=await queries.audit_size(rt)) as tick:
                return await queries.audit_records(rt, on_record=tick)

        records = _with_runtime(read)
    verdict = queries.verify_records(records)
    if verdict.ok:
        typer.secho(verdict.describe(), fg=typer.colors.GREEN)
    else:
        _fail(verdict.describe(), code=3)
    from sims.adapters.nats_auth import check_signatures, person_events_without_record, trusted_signers

    good, unsigned, forged = check_signatures(records, trusted_signers(_settings()))
    if file is None:  # the live trail: every person's acknowledgement event must have its command on record
        async def events(rt: Runtime) -> list[dict[str, Any]]:
            from sims.adapters import jetstream as jsa

            return [e async for m in jsa.read_subject(rt.js, jsa.EVENTS, "sims.evt.>")
                    for e in json.loads(m.data or b"{}").get("events", [])]

        forged += person_events_without_record(_with_runtime(events), records)
    if forged:
        _fail("Acknowledgements that no person's link, SMS reply, console or API sent (or whose "
              "signature does not verify):\n  " + "\n  ".join(forged), code=3)
    if good or unsigned:
        typer.echo(f"Acknowledgements and task actions: {good} signed by the web and verified, {unsigned} unsigned.")


@app.command()
def replay() -> None:
    """Rebuild every incident's stored state from its events (after restoring a backup, say)."""

    async def go(rt: Runtime) -> int:
        ids = await queries.incident_ids(rt)
        with progress("Replaying incidents from their events", total=len(ids)) as tick:
            for incident_id in ids:
                await rt.incidents.reproject(incident_id)
                tick(1)
        return len(ids)

    count = _with_runtime(go)
    typer.secho(f"Rebuilt {count} incident(s) from their events.", fg=typer.colors.GREEN)


users_app = typer.Typer(help="Staff who sign in to the web console (/console).", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(username: str, role: str = typer.Option(..., help="duty_officer, viewer or admin"),
              replace: bool = typer.Option(False, help="Reset an existing user's password and role")) -> None:
    """Add a console user; the password is prompted for (or read from SIMS_USER_PASSWORD)."""
    from handlers.auth import UserExists, UserStore

    password = os.environ.get("SIMS_USER_PASSWORD") or typer.prompt("Password", hide_input=True,
                                                                    confirmation_prompt=True)

    async def go(rt: Runtime) -> None:
        from sims.adapters.jetstream import replicas_for

        await UserStore(rt.js, replicas_for(rt.nc, rt.settings.replicas)).add(
            username, role, password, by=f"cli:{os.environ.get('USER', '-')}", replace=replace)
        await rt.audit.append(chain="system", actor=f"cli:{os.environ.get('USER', '-')}", incident_id=None,
                              action="user.added", outcome=role, detail={"username": username, "replace": replace})

    try:
        _with_runtime(go, setup=True)  # works on a NATS that SIMS has not used yet
    except (ValueError, UserExists) as exc:
        _fail(str(exc), code=2)
    typer.secho(f"User {username} ({role}) can now sign in at /console", fg=typer.colors.GREEN)


tokens_app = typer.Typer(help="API tokens for other systems calling the JSON API (/api/...).", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


def _tokens(rt: Runtime) -> Any:
    from handlers.api_tokens import TokenStore
    from sims.adapters.jetstream import replicas_for

    return TokenStore(rt.js, replicas_for(rt.nc, rt.settings.replicas))


@tokens_app.command("add")
def tokens_add(name: str = typer.Argument(..., help="Who uses it, e.g. 'cad-gateway'"),
               scope: list[str] = typer.Option(..., "--scope", help="read, raise or write (repeatable)")) -> None:
    """Make an API token; it is printed once and only its hash is kept."""
    from handlers.api_tokens import TokenExists

    by = f"cli:{os.environ.get('USER', '-')}"

    async def go(rt: Runtime) -> str:
        token, record = await _tokens(rt).add(name, scope, by=by)
        await rt.audit.append(chain="system", actor=by, incident_id=None, action="api_token.added",
                              outcome=",".join(record.scopes), detail={"name": name})
        return str(token)

    try:
        token = _with_runtime(go, setup=True)
    except (ValueError, TokenExists) as exc:
        _fail(str(exc), code=2)
        return
    typer.echo(token)
    typer.secho(f"API token {name} ({', '.join(sorted(set(scope)))}): copy it now, it is not shown again. "
                "Send it as 'Authorization: Bearer <token>'.", fg=typer.colors.GREEN, err=True)


@tokens_app.command("list")
def tokens_list() -> None:
    """API tokens: name, scopes, created, last used, revoked (never the token)."""
    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t else "-"

    found = _with_runtime(lambda rt: _tokens(rt).all(), setup=True)
    if not found:
        typer.echo("No API tokens. Make one with `sims tokens add NAME --scope read|raise|write`.")
        return
    typer.echo(f"{'name':<24} {'scopes':<18} {'created':<21} {'last used':<21} revoked")
    for t in found:
        typer.echo(f"{t.name:<24} {','.join(t.scopes):<18} {when(t.created_at):<21} {when(t.last_used_at):<21} "
                   f"{when(t.revoked_at) if t.revoked else 'no'}")


@tokens_app.command("revoke")
def tokens_revoke(name: str) -> None:
    """Revoke an API token by name: refused from the next request."""
    from handlers.api_tokens import TokenNotFound

    by = f"cli:{os.environ.get('USER', '-')}"

    async def go(rt: Runtime) -> None:
        await _tokens(rt).revoke(name, by=by)
        await rt.audit.append(chain="system", actor=by, incident_id=None, action="api_token.revoked",
                              outcome="revoked", detail={"name": name})

    try:
        _with_runtime(go, setup=True)
    except TokenNotFound as exc:
        _fail(str(exc), code=2)
    typer.secho(f"API token {name} is revoked.", fg=typer.colors.GREEN)


@app.command()
def docs() -> None:
    """Write the OpenAPI and AsyncAPI documents to docs/."""
    from handlers.docs import write

    for path in write():
        typer.echo(f"Wrote {path}")


from handlers.cli_drills import drill_app  # noqa: E402 - its commands use the helpers above

app.add_typer(drill_app, name="drill")


def main() -> None:
    app()


from handlers.cli_retention import retention_app  # noqa: E402 - its commands use the helpers above

app.add_typer(retention_app, name="retention")

from handlers.cli_nats import nats_app  # noqa: E402

app.add_typer(nats_app, name="nats")

from handlers.cli_london import london_app  # noqa: E402 - pan-London: accounts, setup, the VRU's overview

app.add_typer(london_app, name="london")

__all__ = ["app", "main", "State"]


if __name__ == "__main__":
    main()
