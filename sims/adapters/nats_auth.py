"""NATS users (NKeys), what each may publish and subscribe to, TLS, and how a process connects.

Three roles:
  admin   the CLI, stream and bucket setup: everything.
  worker  applies commands, writes events and audit records, sends messages; may not publish
          acknowledgements (`sims.cmd.ack`), touch console users or API tokens, or manage streams.
  web     HTTP API, console, link pages: publishes commands and reads; may not write events,
          audit records (its audit notes go through `sims.cmd.audit`), KV state other than console
          users and API tokens, pull work, ack messages, or manage streams.

The embedded server (`sims up`) gets an `authorization` block built from these, with one NKey per
role generated on first start under `<data>/nats/` (seed files 0600); nothing is anonymous.
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sims.adapters.jetstream import ACK_SUBJECT, AUDIT_NOTE_SUBJECT

ROLES = ("admin", "worker", "web")
JS = "$JS.API"

# Streams whose work only the worker takes: no other role may make consumers on them or pull from them.
_WORK_STREAMS = ("SIMS_COMMANDS", "SIMS_OUTBOX")
_STREAM_ADMIN = [f"{JS}.STREAM.{op}.*" for op in ("CREATE", "UPDATE", "DELETE", "PURGE")]
_READ = [f"{JS}.INFO", f"{JS}.STREAM.INFO.*", f"{JS}.STREAM.NAMES", f"{JS}.STREAM.LIST", f"{JS}.STREAM.MSG.GET.*",
         f"{JS}.DIRECT.GET.>", f"{JS}.CONSUMER.INFO.*.*", f"{JS}.CONSUMER.CREATE.*", f"{JS}.CONSUMER.CREATE.*.>",
         f"{JS}.CONSUMER.DELETE.*.*", "$JS.FC.>"]
_DURABLES = ("SIMS_COMMANDS.*", "SIMS_OUTBOX.*", "SIMS_EVENTS.notifier")

PERMISSIONS: dict[str, dict[str, Any]] = {
    "admin": {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}},
    "worker": {
        "publish": {
            "allow": ["sims.cmd.incident", "sims.evt.>", "sims.audit.>", "sims.send.>", "sims.dlq.>",
                      "sims.reply.>", "$JS.ACK.>", "$KV.>", *_READ,
                      f"{JS}.CONSUMER.>", f"{JS}.STREAM.MSG.DELETE.SIMS_COMMANDS"],
            "deny": [ACK_SUBJECT, AUDIT_NOTE_SUBJECT, "sims.cmd.delivery", "$KV.sims_users.>",
                     "$KV.sims_api_tokens.>", *_STREAM_ADMIN],
        },
        "subscribe": {"allow": ["_INBOX.>", "sims.reply.>", "sims.api.command", "$JS.EVENT.ADVISORY.>"]},
        "allow_responses": True,  # one answer to each gateway request, not any inbox (no forged PubAcks)
    },
    "web": {
        "publish": {
            "allow": ["sims.cmd.incident", "sims.cmd.delivery", ACK_SUBJECT, AUDIT_NOTE_SUBJECT,
                      "$KV.sims_users.>", "$KV.sims_api_tokens.>", *_READ],
            "deny": ["sims.evt.>", "sims.audit.>", "sims.send.>", "sims.dlq.>", "sims.reply.>", "$JS.ACK.>",
                     *_STREAM_ADMIN, f"{JS}.STREAM.MSG.DELETE.*", f"{JS}.CONSUMER.MSG.NEXT.>",
                     f"{JS}.CONSUMER.DURABLE.CREATE.>",
                     *(f"{JS}.CONSUMER.CREATE.{s}" for s in _WORK_STREAMS),
                     *(f"{JS}.CONSUMER.CREATE.{s}.>" for s in _WORK_STREAMS),
                     *(f"{JS}.CONSUMER.DELETE.{d}" for d in _DURABLES)],
        },
        "subscribe": {"allow": ["_INBOX.>", "sims.reply.>"]},
    },
}


def new_seed() -> bytes:
    """A fresh NKey user seed (`SU...`)."""
    import nkeys  # type: ignore[import-untyped]

    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    """The user's public NKey (`U...`) for a seed."""
    import nkeys

    return str(nkeys.from_seed(bytearray(seed.strip())).public_key.decode())


def ensure_seeds(folder: Path) -> dict[str, Path]:
    """One seed file per role under `folder` (0700), each 0600; made on first call, then reused."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    paths = {}
    for role in ROLES:
        path = folder / f"{role}.nk"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(new_seed() + b"\n")
        path.chmod(0o600)
        paths[role] = path
    return paths


def authorization_config(users: dict[str, str]) -> str:
    """The server's `authorization` block: role -> public NKey, with that role's permissions.

    No `no_auth_user`, so a connection without a known key is refused.
    """
    entries = [{"nkey": key, "permissions": PERMISSIONS[role]} for role, key in users.items()]
    return "authorization " + json.dumps({"users": entries}, indent=2) + "\n"


def tls_config(cert: Path, key: Path, ca: Path | None = None, verify: bool = False, timeout: float = 2.0) -> str:
    """A server `tls` block: clients must speak TLS (plaintext is refused); `verify` also wants their cert."""
    block: dict[str, Any] = {"cert_file": str(cert), "key_file": str(key), "timeout": timeout}
    if ca:
        block["ca_file"] = str(ca)
    if verify:
        block["verify"] = True
    return "tls " + json.dumps(block, indent=2) + "\n"


def embedded_config(folder: Path) -> str:
    """Generate (once) the roles' seeds under `folder` and return the server's authorization block."""
    seeds = ensure_seeds(folder)
    return authorization_config({role: public_key(path.read_bytes()) for role, path in seeds.items()})


@dataclass(frozen=True, slots=True)
class NatsAccess:
    """How one process proves who it is to NATS: an NKey seed or a `.creds` file, and TLS files."""

    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def is_jwt(self) -> bool:
        return bool(self.creds and "BEGIN NATS USER JWT" in self.creds.read_text())

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca or self.tls_cert):
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.tls_ca) if self.tls_ca else None)
        if self.tls_cert:
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key) if self.tls_key else None)
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        options: dict[str, Any] = {}
        if self.creds:
            options["user_credentials" if self.is_jwt else "nkeys_seed"] = str(self.creds)
        if (context := self.ssl_context()) is not None:
            options["tls"] = context
        return options

    def broker_security(self) -> Any:
        """The same for a FastStream `NatsBroker` (`security=`), or None."""
        from faststream.nats.security import NatsCredentials, NatsNKey, NatsSecurity

        context = self.ssl_context()
        use_ssl = True if context else None
        if self.creds:
            make = NatsCredentials.from_file if self.is_jwt else NatsNKey.from_file
            return make(self.creds, ssl_context=context, use_ssl=use_ssl)
        return NatsSecurity(ssl_context=context, use_ssl=True) if context else None


def seeds_folder(data_dir: Path) -> Path:
    return data_dir / "nats"


def access_for(settings: Any, role: str) -> NatsAccess:
    """SIMS_NATS_CREDS if set, else the role's seed that `sims up` generated in the data folder (if any)."""
    creds = settings.nats_creds
    if creds is None:
        own = seeds_folder(settings.data_dir) / f"{role}.nk"
        creds = own if own.exists() else None
    return NatsAccess(creds=creds, tls_ca=settings.nats_tls_ca, tls_cert=settings.nats_tls_cert,
                      tls_key=settings.nats_tls_key)


class RelayedAuditLog:
    """The web's audit log: reads like `NatsAuditLog`; appends go to `sims.cmd.audit` for the worker.

    The web's NATS user may not publish on `sims.audit.>`, so its records (sign-ins, refusals) are
    notes that the worker appends to the `system` chain.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.js = inner.js

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, *, chain: str, actor: str, incident_id: str | None, action: str, outcome: str,
                     detail: dict[str, Any] | None = None, at: Any = None) -> Any:
        import uuid
        from datetime import datetime, timezone

        from sims.adapters.jetstream import publish
        from sims.audit import GENESIS, seal

        at = at or datetime.now(timezone.utc)
        note_id = uuid.uuid4().hex
        body = {"id": note_id, "chain": chain, "actor": actor, "incident_id": incident_id, "action": action,
                "outcome": outcome, "detail": detail, "at": at.isoformat()}
        await publish(self.js, AUDIT_NOTE_SUBJECT, json.dumps(body, default=str).encode(),
                      {"Nats-Msg-Id": f"note-{note_id}"})
        return seal(chain=chain, index=0, prev=GENESIS, at=at, actor=actor, incident_id=incident_id,
                    action=action, outcome=outcome, detail=detail)  # provisional: the worker's copy is the record


# Acknowledgements signed by the web's (or the admin's CLI) NKey: the worker checks them, the audit record keeps them, and
# `sims audit verify` checks them again, so an acknowledgement no web process made shows up as forged.
SIGNER_HEADER, SIGNATURE_HEADER = "Sims-Signer", "Sims-Signature"


def canonical(command: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the command as JSON, keys sorted, no spaces."""
    return json.dumps(command, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_command(seed: bytes, command: dict[str, Any]) -> dict[str, str]:
    import base64

    import nkeys

    pair = nkeys.from_seed(bytearray(seed.strip()))
    return {"signed_by": str(pair.public_key.decode()),
            "signature": base64.urlsafe_b64encode(pair.sign(canonical(command))).decode()}


def signature_valid(command: dict[str, Any], attestation: dict[str, Any], trusted: set[str]) -> bool:
    """Whether `attestation` is a signature of `command` by one of the `trusted` public NKeys."""
    import base64
    import binascii

    import nacl.exceptions
    import nacl.signing
    import nkeys

    key = str(attestation.get("signed_by") or "")
    if key not in trusted:
        return False
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
        sig = base64.urlsafe_b64decode(str(attestation.get("signature") or ""))
        if raw[0] != nkeys.PREFIX_BYTE_USER or len(raw) != 35:
            return False
        nacl.signing.VerifyKey(raw[1:33]).verify(canonical(command), sig)
        return True
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        return False


def trusted_signers(settings: Any) -> set[str]:
    """Public NKeys whose signatures are accepted: SIMS_NATS_SIGNERS, else the web's and admin's seeds
    under the data folder (`sims up`), else none (signatures are then not checked)."""
    if getattr(settings, "nats_signers", None):
        return {k.strip() for k in settings.nats_signers.split(",") if k.strip()}
    seeds = [seeds_folder(settings.data_dir) / f"{role}.nk" for role in ("web", "admin")]
    return {public_key(seed.read_bytes()) for seed in seeds if seed.exists()}


class SigningJetStream:
    """The web's (and the CLI's) JetStream context: a publish on the acknowledgement subject carries its signature."""

    def __init__(self, js: Any, seed: bytes) -> None:
        self._js, self._seed = js, seed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def publish(self, subject: str, payload: bytes = b"", timeout: float | None = None,
                      stream: str | None = None, headers: dict[str, str] | None = None) -> Any:
        if subject == ACK_SUBJECT:
            signed = sign_command(self._seed, json.loads(payload))
            headers = {**(headers or {}), SIGNER_HEADER: signed["signed_by"], SIGNATURE_HEADER: signed["signature"]}
        return await self._js.publish(subject, payload, timeout=timeout, stream=stream, headers=headers)


def attestation_from(headers: dict[str, str] | None) -> dict[str, str] | None:
    if not headers or SIGNER_HEADER not in headers:
        return None
    return {"signed_by": headers[SIGNER_HEADER], "signature": headers.get(SIGNATURE_HEADER, "")}


ATTESTED_ACTIONS = ("command.acknowledge", "command.task")


def check_signatures(records: list[dict[str, Any]], trusted: set[str]) -> tuple[int, int, list[str]]:
    """(signed and valid, unsigned, problems) over the audit records of people's acknowledgements and
    task actions that were applied; a signature that does not verify is a problem."""
    good, unsigned, problems = 0, 0, []
    for record in records:
        if record.get("action") not in ATTESTED_ACTIONS or str(record.get("outcome", "")).startswith("refused"):
            continue
        detail = record.get("detail") or {}
        attestation = detail.get("attestation")
        if attestation is None:
            unsigned += 1
        elif signature_valid(detail.get("command") or {}, attestation, trusted):
            good += 1
        else:
            problems.append(f"{record.get('chain')} #{record.get('index')}: {record.get('action')} by "
                            f"{record.get('actor')} has a signature that does not verify")
    return good, unsigned, problems


def person_events_without_record(events: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    """Acknowledgement and task-action events (not the timers') with no accepted command record in the
    audit trail: written around the command handler, e.g. by a worker's user appending events itself."""
    recorded = {str((r.get("detail") or {}).get("command", {}).get("command_id")) for r in records
                if r.get("action") in ATTESTED_ACTIONS and not str(r.get("outcome", "")).startswith("refused")}
    problems = []
    for event in events:
        kind, data = event.get("type"), event.get("data") or {}
        if kind == "message.acknowledged" or (kind == "task.changed" and data.get("via") != "timer"):
            if str(event.get("command_id")) not in recorded:
                problems.append(f"incident {event.get('incident_id')}: {kind} ({data.get('via')}) by "
                                f"{event.get('actor')} at {event.get('at')} has no command in the audit trail")
    return problems
