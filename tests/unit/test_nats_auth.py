"""The roles' permission table, read the way nats-server reads it (deny wins; `*` one token, `>` the rest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sims.adapters.nats_auth import PERMISSIONS, ROLES, authorization_config, ensure_seeds, public_key, tls_config


def matches(pattern: str, subject: str) -> bool:
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def may(role: str, action: str, subject: str) -> bool:
    rules = PERMISSIONS[role][action]
    if any(matches(p, subject) for p in rules.get("deny", [])):
        return False
    return any(matches(p, subject) for p in rules.get("allow", []))


@pytest.mark.parametrize(("role", "subject", "allowed"), [
    ("web", "sims.cmd.incident", True), ("web", "sims.cmd.ack", True), ("web", "sims.cmd.delivery", True),
    ("web", "sims.cmd.audit", True), ("web", "sims.evt.abc", False), ("web", "sims.audit.system", False),
    ("web", "sims.send.sms", False), ("web", "sims.reply.c1", False), ("web", "$JS.ACK.SIMS_COMMANDS.x.1.1.1.1.0", False),
    ("web", "$KV.sims_incidents.abc", False), ("web", "$KV.sims_users.alice", True),
    ("web", "$JS.API.STREAM.DELETE.SIMS_EVENTS", False), ("web", "$JS.API.STREAM.INFO.SIMS_EVENTS", True),
    ("web", "$JS.API.CONSUMER.MSG.NEXT.SIMS_COMMANDS.incident-commands", False),
    ("web", "$JS.API.CONSUMER.CREATE.SIMS_EVENTS.abc.sims.evt.x", True),
    ("web", "$JS.API.CONSUMER.CREATE.SIMS_OUTBOX.abc.sims.send.sms", False),
    ("web", "$JS.API.CONSUMER.DELETE.SIMS_COMMANDS.incident-commands", False),
    ("web", "$JS.API.DIRECT.GET.KV_sims_incidents.$KV.sims_incidents.abc", True),
    ("worker", "sims.cmd.ack", False), ("worker", "sims.cmd.audit", False), ("worker", "sims.cmd.incident", True),
    ("worker", "sims.evt.abc", True), ("worker", "_INBOX.web.1", False), ("worker", "sims.audit.abc.person", True), ("worker", "$JS.ACK.x.y", True),
    ("worker", "$KV.sims_incidents.abc", True), ("worker", "$KV.sims_users.alice", False),
    ("worker", "$KV.sims_api_tokens.h.abc", False), ("worker", "$JS.API.STREAM.PURGE.SIMS_AUDIT", False),
    ("worker", "$JS.API.STREAM.UPDATE.SIMS_EVENTS", False),
    ("worker", "$JS.API.CONSUMER.MSG.NEXT.SIMS_COMMANDS.incident-commands", True),
    ("worker", "$JS.API.STREAM.MSG.DELETE.SIMS_COMMANDS", True), ("worker", "$JS.API.STREAM.MSG.DELETE.SIMS_EVENTS", False),
    ("admin", "$JS.API.STREAM.CREATE.SIMS_EVENTS", True), ("admin", "sims.cmd.ack", True),
])
def test_who_may_publish_what(role: str, subject: str, allowed: bool) -> None:
    assert may(role, "publish", subject) is allowed


def test_only_the_worker_takes_gateway_requests_and_only_admin_and_worker_see_advisories() -> None:
    assert may("worker", "subscribe", "sims.api.command") and not may("web", "subscribe", "sims.api.command")
    assert may("worker", "subscribe", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SIMS_COMMANDS.x")
    assert not may("web", "subscribe", "sims.cmd.incident")  # the web sees no one else's commands
    assert all(may(role, "subscribe", "_INBOX.abc.1") for role in ROLES)


def test_seeds_are_made_once_private_and_the_server_block_holds_public_keys_only(tmp_path: Path) -> None:
    first = ensure_seeds(tmp_path / "nats")
    seeds = {role: path.read_bytes() for role, path in first.items()}
    assert ensure_seeds(tmp_path / "nats") == first and {r: p.read_bytes() for r, p in first.items()} == seeds
    block = authorization_config({role: public_key(seed) for role, seed in seeds.items()})
    assert block.startswith("authorization ")
    users = json.loads(block.removeprefix("authorization "))["users"]
    assert [u["nkey"][0] for u in users] == ["U", "U", "U"] and len({u["nkey"] for u in users}) == 3
    assert not any(seed.decode().strip() in block for seed in seeds.values())
    assert "no_auth_user" not in block


def test_tls_block_asks_for_client_certificates_only_when_told() -> None:
    plain = json.loads(tls_config(Path("/c.pem"), Path("/k.pem"), Path("/ca.pem")).removeprefix("tls "))
    assert plain == {"cert_file": "/c.pem", "key_file": "/k.pem", "ca_file": "/ca.pem", "timeout": 2.0}
    assert json.loads(tls_config(Path("/c"), Path("/k"), verify=True).removeprefix("tls "))["verify"] is True


def test_signatures_on_acknowledgements_verify_only_for_the_same_command_and_a_trusted_key(tmp_path: Path) -> None:
    from sims.adapters.nats_auth import check_signatures, sign_command, signature_valid

    seeds = {role: path.read_bytes() for role, path in ensure_seeds(tmp_path / "nats").items()}
    web, worker = public_key(seeds["web"]), public_key(seeds["worker"])
    command = {"kind": "acknowledge", "incident": "i1", "message_kind": "holding", "person": "p1", "actor": "p1"}
    signed = sign_command(seeds["web"], command)
    assert signed["signed_by"] == web and signature_valid(dict(reversed(command.items())), signed, {web})
    assert not signature_valid({**command, "person": "p2"}, signed, {web})  # another person
    assert not signature_valid(command, sign_command(seeds["worker"], command), {web})  # the worker's own key
    assert not signature_valid(command, {**signed, "signed_by": worker}, {web, worker})  # someone else's name
    assert not signature_valid(command, {**signed, "signature": "not base64!"}, {web})

    def record(detail: dict[str, object], outcome: str = "accepted") -> dict[str, object]:
        return {"chain": "i1", "index": 3, "action": "command.acknowledge", "actor": "p1", "outcome": outcome,
                "detail": detail}
    records = [record({"command": command, "attestation": signed}), record({"command": command}),
               record({"command": {**command, "person": "p2"}, "attestation": signed}),
               record({"command": command, "attestation": {"signed_by": web, "signature": ""}}, "refused: x")]
    good, unsigned, forged = check_signatures(records, {web})
    assert (good, unsigned) == (1, 1) and len(forged) == 1 and "i1 #3" in forged[0]


def test_a_persons_event_without_its_command_on_record_is_named_and_timer_escalations_are_not() -> None:
    from sims.adapters.nats_auth import person_events_without_record

    def event(kind: str, command_id: str, via: str) -> dict[str, object]:
        return {"type": kind, "incident_id": "i1", "actor": "p1", "at": "t", "command_id": command_id,
                "data": {"via": via}}
    records = [{"action": "command.task", "outcome": "accepted", "detail": {"command": {"command_id": "c1"}}},
               {"action": "command.acknowledge", "outcome": "refused: wrong_channel",
                "detail": {"command": {"command_id": "c2"}}}]
    events = [event("task.changed", "c1", "link"), event("task.changed", "t1", "timer"),
              event("message.acknowledged", "c2", "sms"), event("incident.updated", "u1", "console")]
    problems = person_events_without_record(events, records)
    assert len(problems) == 1 and "message.acknowledged (sms)" in problems[0]
