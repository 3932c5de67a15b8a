"""FastStream subscribers: the command handler, the NATS request gateway, dead letters."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from pydantic import ValidationError

from handlers import pull
from handlers.message import NatsMessage
from sims.adapters import jetstream as jsa
from sims.adapters import nats_auth
from sims.adapters.commands import submit
from sims.bootstrap import Runtime
from sims.crypto import withhold  # restricted details never wait a year in a dead letter
from sims.errors import WrongChannel
from sims.messages import COMMAND_ADAPTER, MAX_COMMAND_BYTES, Command, Event, is_acknowledgement
from sims.notifications import MAX_ATTEMPTS, Retry, UnknownMessage
from sims.notify import Delivery, Status

log = structlog.get_logger("sims.worker")
ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{jsa.COMMANDS}.{jsa.COMMAND_CONSUMER}"


def bad_input(raw: bytes) -> tuple[Command | None, dict[str, Any] | None]:
    """Parse a command; on failure, an error a caller can act on (every problem, with its field)."""
    if len(raw) > MAX_COMMAND_BYTES:
        return None, {"error": "too_large", "message": f"Payload is {len(raw)} bytes; the limit is {MAX_COMMAND_BYTES}."}
    try:
        return COMMAND_ADAPTER.validate_json(raw), None
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()]
        return None, {"error": "invalid", "message": "The command is not valid: " + "; ".join(problems),
                      "problems": problems}


async def dead_letter(rt: Runtime, subject: str, raw: bytes, reason: dict[str, Any], source: str) -> None:
    """Keep what could not be handled, with the reason, where a person will see it."""
    body = json.dumps({"reason": reason, "source": source,
                       "payload": withhold(raw[:MAX_COMMAND_BYTES]).decode("utf-8", "replace")}).encode()
    await jsa.publish(rt.js, subject, body)
    log.warning("command.dead_lettered", subject=subject, source=source, error=reason.get("error"))


class FetchTimeoutRestart(logging.Filter):
    """nats-py's `fetch` can end with asyncio's TimeoutError where FastStream's pull loop only expects
    nats-py's own; FastStream's supervisor then restarts the pull task and logs an error with a
    traceback. The fetch had found no message and the task goes on, so nothing is lost: the record is
    turned into one debug line (dropped unless the logger shows debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not (isinstance(exc, TimeoutError) and "raised an exception, retrying" in record.getMessage()):
            return True
        record.msg, record.args = "pull fetch timed out (asyncio.TimeoutError from nats-py); task restarted", ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def build_broker(rt: Runtime, url: str) -> NatsBroker:
    """A broker whose subscribers call `rt`'s services; nothing connects until it is started."""
    quiet = logging.getLogger("sims.faststream")
    quiet.setLevel(logging.WARNING)
    if not any(isinstance(f, FetchTimeoutRestart) for f in quiet.filters):
        quiet.addFilter(FetchTimeoutRestart())
    security = rt.access.broker_security() if rt is not None and rt.access else None
    broker = NatsBroker(jsa.servers(url), max_reconnect_attempts=-1, logger=quiet, log_level=logging.DEBUG,
                        security=security)
    stream = JStream(name=jsa.COMMANDS, declare=False)
    signers = nats_auth.trusted_signers(rt.settings) if rt is not None else set()

    @broker.subscriber(jsa.ACK_SUBJECT, stream=stream, durable=jsa.ACK_CONSUMER,
                       pull_sub=PullSub(batch_size=16, timeout=1.0), ack_policy=AckPolicy.NACK_ON_ERROR,
                       title="acknowledgements",
                       description="Acknowledgements and task actions from people (links, SMS, console, API); "
                                   "only the web's NATS user may publish here.")
    @broker.subscriber(jsa.CMD_SUBJECT, stream=stream, durable=jsa.COMMAND_CONSUMER,
                       pull_sub=PullSub(batch_size=16, timeout=1.0), ack_policy=AckPolicy.NACK_ON_ERROR,
                       title="incident-commands",
                       description="Applies commands (raise, update, transition) to incidents.")
    async def on_command(msg: NatsMessage) -> None:
        raw = msg.body
        person_channel = msg.raw_message.subject == jsa.ACK_SUBJECT
        command, error = bad_input(raw)
        if command is None:
            assert error is not None
            await dead_letter(rt, jsa.DLQ_COMMANDS, raw, error, "stream")
            return
        attestation = None
        if person_channel and signers:  # the web's signature, checked; without it, not a person's word
            attestation = nats_auth.attestation_from(msg.raw_message.headers)
            person_channel = attestation is not None and nats_auth.signature_valid(json.loads(raw), attestation,
                                                                                 signers)
        with structlog.contextvars.bound_contextvars(command_id=command.command_id):
            result = await rt.incidents.handle(command, person_channel=person_channel, attestation=attestation)
            if result.dead_letter:
                await dead_letter(rt, jsa.DLQ_COMMANDS, raw, result.error or {}, "stream")
            await rt.nc.publish(jsa.reply_subject(command.command_id), result.model_dump_json().encode())

    @broker.subscriber(jsa.API_SUBJECT, queue="sims-api", title="command-gateway",
                       description="Request/reply intake for other systems: send a command, get its result.")
    async def on_request(msg: NatsMessage) -> dict[str, Any]:
        raw = msg.body
        command, error = bad_input(raw)
        if command is None:
            assert error is not None
            await dead_letter(rt, jsa.DLQ_INTAKE, raw, error, "nats-request")
            return {"ok": False, "error": error}
        if is_acknowledgement(command):  # the worker may not publish on the acknowledgement subject
            return {"ok": False, "command_id": command.command_id, "kind": command.kind,
                    "error": WrongChannel(command.kind).to_dict()}
        return await submit(rt.nc, rt.js, rt.kv, command, rt.settings.command_timeout)

    events = JStream(name=jsa.EVENTS, declare=False)

    @broker.subscriber("sims.evt.>", stream=events, durable=jsa.NOTIFIER, pull_sub=PullSub(batch_size=16, timeout=1.0),
                       ack_policy=AckPolicy.NACK_ON_ERROR, title="notifier",
                       description="Turns incident events into messages to send (holding notice, stand-down, closure).")
    async def on_event(msg: NatsMessage) -> None:
        for item in json.loads(msg.body)["events"]:
            event = Event.model_validate(item)
            with structlog.contextvars.bound_contextvars(incident_id=event.incident_id):
                await rt.notifications.on_event(event)

    outbox = JStream(name=jsa.OUTBOX, declare=False)
    for channel, durable in jsa.SEND_CONSUMERS.items():
        register_sender(broker, rt, outbox, channel, durable)

    @broker.subscriber(jsa.STATUS_SUBJECT, stream=stream, durable=jsa.STATUS_CONSUMER,
                       pull_sub=PullSub(batch_size=1, timeout=1.0), ack_policy=AckPolicy.MANUAL,
                       title="delivery-status", description="Provider delivery reports (Twilio status callbacks), in order.")
    async def on_status(msg: NatsMessage) -> None:
        report = json.loads(msg.body)
        try:
            await rt.notifications.on_status(str(report["provider_id"]), str(report["status"]), report.get("error_code"),
                                             key=report.get("key"))
        except UnknownMessage:
            attempt = int(msg.raw_message.metadata.num_delivered or 1)
            if attempt < jsa.MAX_DELIVER:
                await msg.nack(delay=0.2 * attempt)  # the send's record may not be written yet
                return
            await dead_letter(rt, "sims.dlq.status", msg.body,
                              {"error": "unknown_message", "message": "Report for a message SIMS did not send."}, "twilio")
        await msg.ack()

    @broker.subscriber(jsa.AUDIT_NOTE_SUBJECT, stream=stream, durable=jsa.AUDIT_NOTE_CONSUMER,
                       pull_sub=PullSub(batch_size=16, timeout=1.0), ack_policy=AckPolicy.NACK_ON_ERROR,
                       title="audit-notes",
                       description="System audit records the web asks for (sign-ins, refusals); the web may not "
                                   "write the audit stream itself.")
    async def on_audit_note(msg: NatsMessage) -> None:
        note = json.loads(msg.body)
        if note.get("chain") != "system":  # the web writes only the system chain
            await dead_letter(rt, jsa.DLQ_INTAKE, msg.body, {"error": "invalid", "message": "Audit notes from "
                              "the web may only go to the system chain."}, "audit-note")
            return
        await rt.audit.append(chain="system", actor=str(note["actor"]), incident_id=note.get("incident_id"),
                              action=str(note["action"]), outcome=str(note["outcome"]),
                              detail={**(note.get("detail") or {}), "via": "web", "note": note.get("id")},
                              at=datetime.fromisoformat(note["at"]))

    @broker.subscriber(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{jsa.COMMANDS}.{jsa.ACK_CONSUMER}",
                       title="acknowledgement-max-deliveries", include_in_schema=False)
    @broker.subscriber(ADVISORY, title="command-max-deliveries", include_in_schema=False)
    async def on_exhausted(msg: NatsMessage) -> None:
        advisory = json.loads(msg.body)
        seq = int(advisory["stream_seq"])
        stored = await rt.js.get_msg(jsa.COMMANDS, seq)
        await dead_letter(rt, jsa.DLQ_COMMANDS, stored.data or b"",
                          {"error": "retries_exhausted",
                           "message": f"Command failed {advisory.get('deliveries')} times and was set aside."},
                          "stream")
        await rt.js.delete_msg(jsa.COMMANDS, seq)

    from handlers.pan_london import attach  # boundary notices and the VRU feed (SIMS_PAN_LONDON)

    attach(broker, rt)
    start = broker.start

    async def start_then_pull_cleanly() -> None:  # handlers/pull.py: one pull request at a time
        await start()
        await pull.install(broker)

    broker.start = start_then_pull_cleanly  # type: ignore[method-assign]
    return broker


def register_sender(broker: NatsBroker, rt: Runtime, outbox: JStream, channel: str, durable: str) -> None:
    """A channel worker: sends each work item once; transient failures come back after a backoff."""

    @broker.subscriber(f"sims.send.{channel}", stream=outbox, durable=durable,
                       pull_sub=PullSub(batch_size=64, timeout=0.5), ack_policy=AckPolicy.MANUAL,
                       title=f"sender-{channel}", description=f"Sends {channel} messages through the provider.")
    async def on_send(msg: NatsMessage) -> None:
        try:
            delivery = Delivery.model_validate_json(msg.body)
        except ValidationError as exc:
            await dead_letter(rt, "sims.dlq.outbox", msg.body, {"error": "invalid", "message": str(exc)[:500]}, "outbox")
            await msg.ack()
            return
        attempt = int(msg.raw_message.metadata.num_delivered or 1)
        with structlog.contextvars.bound_contextvars(incident_id=delivery.incident_id, key=delivery.key):
            try:
                status = await rt.notifications.send(delivery, attempt)
            except Retry as retry:
                await msg.nack(delay=retry.delay)
                return
            except Exception:
                await msg.nack(delay=min(60.0, 2.0 ** attempt))  # NATS or KV trouble: try again later
                raise
            if status is Status.FAILED and attempt >= MAX_ATTEMPTS:
                await dead_letter(rt, "sims.dlq.outbox", msg.body, {
                    "error": "retries_exhausted",
                    "message": f"{channel} to {delivery.contact_id} failed {attempt} times; fallback queued."}, "outbox")
        await msg.ack()
