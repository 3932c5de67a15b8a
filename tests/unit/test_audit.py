"""The audit chain: verification names the first altered, removed or reordered record."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sims.audit import GENESIS, seal, verify
from sims.queries import parse_export, to_csv, to_jsonl

T0 = datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)


def trail(n: int = 6) -> list[dict[str, object]]:
    records, prev = [], {"a": GENESIS, "b": GENESIS}
    for i in range(n):
        chain = "a" if i % 3 else "b"
        index = sum(1 for r in records if r["chain"] == chain)
        record = seal(chain=chain, index=index, prev=prev[chain], at=T0 + timedelta(seconds=i), actor="duty",
                      incident_id=chain, action=f"step{i}", outcome="accepted", detail={"n": i})
        prev[chain] = record.hash
        records.append(json.loads(record.model_dump_json()))
    return records


def test_an_intact_trail_verifies_and_reports_its_last_hash() -> None:
    records = trail()
    verdict = verify(records)
    assert verdict.ok and verdict.records == 6 and verdict.chains == 2
    assert verdict.last_hash == records[-1]["hash"]


def test_an_edited_record_is_named() -> None:
    records = trail()
    records[3]["outcome"] = "refused"
    verdict = verify(records)
    assert not verdict.ok and verdict.position == 4 and "altered" in (verdict.problem or "")


def test_an_edited_record_with_a_recomputed_hash_breaks_the_next_link() -> None:
    records = trail()
    forged = seal(**{k: v for k, v in records[1].items() if k not in ("hash",)} | {"outcome": "forged",
                  "at": datetime.fromisoformat(str(records[1]["at"]))})
    records[1] = json.loads(forged.model_dump_json())
    verdict = verify(records)
    assert not verdict.ok and verdict.position == 3  # the next record of chain "a" no longer links


def test_a_deleted_record_is_named() -> None:
    records = trail()
    del records[2]
    verdict = verify(records)
    assert not verdict.ok and verdict.position == 4 and "removed" in (verdict.problem or "")


def test_swapped_records_are_named() -> None:
    records = trail()
    records[1], records[2] = records[2], records[1]
    verdict = verify(records)
    assert not verdict.ok and verdict.position == 2 and "removed" in (verdict.problem or "")
    records = trail()
    records[4], records[5] = records[5], records[4]
    verdict = verify(records)
    assert not verdict.ok and verdict.position == 5


def test_csv_and_jsonl_exports_round_trip_and_verify() -> None:
    records = trail()
    for text in (to_jsonl(records), to_csv(records)):
        assert verify(parse_export(text)).ok
    tampered = to_csv(records).replace("step4", "step9")
    assert verify(parse_export(tampered)).position == 5
