"""The tamper-evident audit trail: hash-chained records and their verification. No I/O.

Each chain (one per incident, plus `system`) is a list of records; record n carries `index` n, the
SHA-256 of record n-1 (`prev`) and its own `hash` over every other field in canonical JSON. Editing,
removing or reordering a record breaks the chain at that record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

GENESIS = "0" * 64


class AuditRecord(BaseModel):
    """One append-only fact: who did what to which incident, when, and how it ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain: str
    index: int
    at: datetime
    actor: str
    incident_id: str | None
    action: str
    outcome: str
    detail: dict[str, Any] = {}
    prev: str
    hash: str = ""


def canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def digest(record: AuditRecord | dict[str, Any]) -> str:
    """SHA-256 over every field but `hash`, in canonical JSON."""
    data = record.model_dump(mode="json") if isinstance(record, AuditRecord) else dict(record)
    data.pop("hash", None)
    return hashlib.sha256(canonical(data)).hexdigest()


def seal(*, chain: str, index: int, prev: str, at: datetime, actor: str, incident_id: str | None,
         action: str, outcome: str, detail: dict[str, Any] | None = None) -> AuditRecord:
    """A new record linked to `prev`, with its hash filled in."""
    record = AuditRecord(chain=chain, index=index, prev=prev, at=at, actor=actor, incident_id=incident_id,
                         action=action, outcome=outcome, detail=detail or {})
    return record.model_copy(update={"hash": digest(record)})


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int
    chains: int
    last_hash: str
    problem: str | None = None
    position: int | None = None  # 1-based line/record position where it broke

    def describe(self) -> str:
        if self.ok:
            return f"OK: {self.records} record(s) in {self.chains} chain(s) verified; last hash {self.last_hash}"
        return f"BROKEN at record {self.position}: {self.problem}"


def verify(records: Iterable[dict[str, Any]]) -> Verdict:
    """Check every chain in `records` (in stored order); name the first altered, removed or moved record."""
    last: dict[str, tuple[int, str]] = {}
    count, last_hash = 0, GENESIS
    for position, raw in enumerate(records, start=1):
        count = position
        chain = str(raw.get("chain", "?"))
        index = raw.get("index")
        where = f"record {position} (chain {chain}, index {index}, action {raw.get('action')!r})"
        if raw.get("hash") != digest(raw):
            return Verdict(False, position, len(last), last_hash, f"{where} was altered: its hash does not match its content", position)
        prev_index, prev_hash = last.get(chain, (-1, GENESIS))
        if index != prev_index + 1:
            kind = "removed" if isinstance(index, int) and index > prev_index + 1 else "reordered or duplicated"
            return Verdict(False, position, len(last), last_hash,
                           f"{where}: expected index {prev_index + 1}; record(s) before it were {kind}", position)
        if raw.get("prev") != prev_hash:
            return Verdict(False, position, len(last), last_hash,
                           f"{where} does not link to the record before it (altered or replaced)", position)
        last[chain] = (index, raw["hash"])
        last_hash = raw["hash"]
    return Verdict(True, count, len(last), last_hash)
