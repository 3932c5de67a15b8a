"""Fuzzing command payloads: the parser never raises; the worker refuses bad ones clearly and changes nothing.

(a) pure: arbitrary JSON-ish values and mutations of a valid command of every kind through
    `handlers.worker.bad_input` (the one parser of the NATS gateway and the command stream).
(b) real nats-server + worker: a few hundred fuzzed payloads (mutated raises, updates, transitions,
    fund commands, random bytes) on `sims.api.command` and straight onto `sims.cmd.incident`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from handlers.worker import bad_input
from sims.adapters import jetstream as jsa
from sims.bootstrap import Runtime
from sims.messages import MAX_COMMAND_BYTES

pytestmark = pytest.mark.fuzz

RAISE = {"kind": "raise", "actor": "duty-officer", "type": "stabbing", "level": "2",
         "occurred_at": "2026-11-30T21:40:00Z", "ward": "Peckham", "location": "Rye Lane, near the station",
         "outline": "A young man was stabbed", "restricted": "Victim: J Smith, 17", "exercise": False}


def valid_commands(ref: str) -> list[dict[str, Any]]:
    """One valid payload of every command kind, about incident `ref`."""
    who = {"actor": "duty-officer"}
    return [
        RAISE,
        {**who, "kind": "update", "incident": ref, "add_cordons": ["Rye Lane north"], "victim_age_band": "10-17",
         "add_police_powers": [{"kind": "section_60", "area": "Peckham", "authorised_at": "2026-11-30T22:00:00Z",
                                "expires_at": "2026-12-01T06:00:00Z"}]},
        {**who, "kind": "transition", "incident": ref, "trigger": "escalate"},
        {**who, "kind": "transition", "incident": ref, "trigger": "stand_down", "reason": "No injuries"},
        {**who, "kind": "draft_briefing", "incident": ref, "talking_points": "Police are on scene."},
        {**who, "kind": "approve_briefing", "incident": ref, "briefing_version": 1},
        {**who, "kind": "send_update", "incident": ref, "text": "An arrest has been made"},
        {**who, "kind": "task", "incident": ref, "task": "confirm_facts", "action": "acknowledge"},
        {**who, "kind": "acknowledge", "incident": ref, "message_kind": "holding_notice", "person": "police-lead"},
        {**who, "kind": "escalate_task", "incident": ref, "task": "confirm_facts", "level": 1},
        {**who, "kind": "fund_edit", "incident_id": ref, "purpose": "Youth sessions", "start_date": "2026-12-05",
         "end_date": "2027-01-30", "lines": [{"description": "Sessions", "amount": "1800.00"}]},
        {**who, "kind": "fund_submit", "incident_id": ref},
        {**who, "kind": "fund_approve", "incident_id": ref, "actor_role": "vru_lead", "amount": "1000.00"},
        {**who, "kind": "fund_decline", "incident_id": ref, "actor_role": "vru_lead", "reason": "Out of scope"},
        {**who, "kind": "fund_record_spend", "incident_id": ref, "amount": "125.50", "date": "2026-12-06",
         "description": "Sessions"},
        {**who, "kind": "fund_submit_evaluation", "incident_id": ref, "text": "It helped", "outcomes": ["calm"]},
        {**who, "kind": "fund_close", "incident_id": ref},
        {**who, "kind": "fund_withdraw", "incident_id": ref, "reason": "Not needed"},
    ]


KINDS = sorted({c["kind"] for c in valid_commands("SWK-2026-0001")})
FIELDS = sorted({k for c in valid_commands("SWK-2026-0001") for k in c} | {"expected_version", "via", "note",
                                                                            "briefing_version", "person"})
# Values known to upset parsers, NATS subjects and headers, KV keys, dates and money.
NASTY = st.sampled_from([
    "", " ", "*", ">", "sims.evt.>", "a.b", "a b c d e f", "..", ".", "\r\nNats-Msg-Id: x", "\x00", "\ufeff",
    "SWK-2026-0001", "SWK-2026-9999", "ref.>", "x" * 129, "é" * 70, "1e999", "-1", "NaN", "Infinity", "9" * 50,
    "0.001", "5000.01", "2026-13-45T99:00:00Z", "0001-01-01T00:00:00+19:54", "9999-12-31T23:59:59-05:00", "2026-11-30T21:40:00", "9999-12-31T23:59:59Z", "true", "null",
    "{}", "[]", "commandid-" + "y" * 120, "fuzz-cmd-id.", "fuzz..cmd-id", "fuzz-cmd/id", "fuzz-cmd-id\n", "$JS.API.>", "_INBOX.x",
]) | st.sampled_from([-1, 0, 1, 2, 3, 4, 2 ** 63, -(2 ** 63), 10 ** 30, 1.5, 1e308, True, False, None])
LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
          | st.text(max_size=40) | NASTY)
JSONISH = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=12) | st.sampled_from(FIELDS), inner, max_size=5),
                       max_leaves=12)

_ids = itertools.count()


@st.composite
def mutated(draw: st.DrawFn, templates: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid command with 1-4 changes: a field dropped, set to anything, its kind swapped, a field added."""
    command = dict(draw(st.sampled_from(templates)))
    command["command_id"] = f"fuzz-{next(_ids):06d}-{draw(st.integers(0, 10 ** 6))}"
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "set", "set", "kind", "add", "grow"]))
        keys = sorted(command)
        if op == "drop" and keys:
            command.pop(draw(st.sampled_from(keys)))
        elif op == "set" and keys:
            command[draw(st.sampled_from(keys))] = draw(JSONISH)
        elif op == "kind":
            command["kind"] = draw(st.sampled_from(KINDS) | NASTY)
        elif op == "add":
            command[draw(st.sampled_from(FIELDS) | st.text(max_size=10))] = draw(JSONISH)
        elif op == "grow" and keys:
            command[draw(st.sampled_from(keys))] = draw(st.sampled_from(["x", "é", "\n", " "])) * draw(
                st.sampled_from([1, 65, 81, 121, 301, 601, 1501, 2001, 8001]))
    return command


STRINGS = st.text(min_size=1, max_size=30) | NASTY.filter(lambda v: isinstance(v, str))


@st.composite
def tweaked(draw: st.DrawFn, templates: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid command with 1-2 values replaced by others of the same JSON type (often still well-formed)."""
    command = dict(draw(st.sampled_from(templates)))
    command["command_id"] = f"fuzz-{next(_ids):06d}-{draw(st.integers(0, 10 ** 6))}"
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(k for k in command if k != "kind")))
        value = command[key]
        if isinstance(value, bool):
            command[key] = draw(st.booleans())
        elif isinstance(value, int):
            command[key] = draw(st.integers(-2, 5) | st.sampled_from([2 ** 31, 2 ** 63]))
        elif isinstance(value, str):
            command[key] = draw(STRINGS)
        elif isinstance(value, list):
            command[key] = draw(st.lists(STRINGS, max_size=3)) if all(isinstance(v, str) for v in value) else []
    return command


def as_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


payloads = st.one_of(
    mutated(valid_commands("SWK-2026-0001")).map(as_bytes),
    tweaked(valid_commands("SWK-2026-0001")).map(as_bytes),
    JSONISH.map(as_bytes),
    st.binary(max_size=300),
    mutated(valid_commands("SWK-2026-0001")).map(lambda c: as_bytes(c)[: len(as_bytes(c)) // 2]),  # cut short
)


def assert_clear(error: Any) -> None:
    """A refusal a caller can act on: a code and a sentence."""
    assert isinstance(error, dict), error
    assert isinstance(error.get("error"), str) and error["error"], error
    assert isinstance(error.get("message"), str) and len(error["message"].strip()) >= 5, error


# ---------------------------------------------------------------------------------------------- (a) pure


def test_every_valid_template_parses() -> None:
    for template in valid_commands("SWK-2026-0001"):
        command, error = bad_input(as_bytes(template))
        assert error is None and command is not None and command.kind == template["kind"], error


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(payloads)
def test_bad_input_never_raises_and_every_refusal_says_why(raw: bytes) -> None:
    command, error = bad_input(raw)
    assert (command is None) != (error is None)
    if command is None:
        assert_clear(error)
        assert error is not None and error["error"] in ("invalid", "too_large")
    else:
        assert command.kind in KINDS and 8 <= len(command.command_id) <= 128
        json.loads(command.model_dump_json())  # what goes on the stream serialises again


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(valid_commands("SWK-2026-0001")), st.integers(0, 2000))
def test_oversized_payloads_are_refused_before_parsing(template: dict[str, Any], pad: int) -> None:
    raw = as_bytes({**template, "outline": "x" * (MAX_COMMAND_BYTES + pad)})
    command, error = bad_input(raw)
    assert command is None and error is not None and error["error"] == "too_large"
    assert_clear(error)


# ---------------------------------------------------------------------------------- (b) real nats-server


def collect(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    """`count` payloads drawn by Hypothesis (generation only; sent afterwards on one event loop)."""
    found: list[bytes] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(raw: bytes) -> None:
        found.append(raw)

    draw()
    return found


async def request(rt: Runtime, payload: bytes) -> dict[str, Any]:
    reply = await rt.nc.request(jsa.API_SUBJECT, payload, timeout=15)
    return dict(json.loads(reply.data))


async def dead_letters(rt: Runtime) -> list[dict[str, Any]]:
    return [json.loads(m.data) | {"subject": m.subject} async for m in jsa.read_subject(rt.js, jsa.DEAD, "sims.dlq.>")]


async def snapshot(rt: Runtime) -> tuple[dict[str, Any], int]:
    """Every incident's projection, and how many event messages the events stream holds."""
    info = await rt.js.stream_info(jsa.EVENTS)
    return await rt.kv.entries("sims_incidents"), int(info.state.messages)


async def quiet(rt: Runtime, timeout: float = 20.0) -> tuple[dict[str, Any], int]:
    """The snapshot once nothing has changed for a second (the notifier has finished with new incidents)."""
    loop = asyncio.get_running_loop()
    deadline, last, stable = loop.time() + timeout, None, 0
    while loop.time() < deadline:
        now = await snapshot(rt)
        stable = stable + 1 if now == last else 0
        if stable >= 4:
            return now
        last = now
        await asyncio.sleep(0.25)
    raise AssertionError("SIMS did not settle")


async def events_by_command(rt: Runtime) -> dict[str, set[str]]:
    """command id -> actors of the events it produced."""
    found: dict[str, set[str]] = {}
    async for msg in jsa.read_subject(rt.js, jsa.EVENTS, "sims.evt.>"):
        for event in json.loads(msg.data)["events"]:
            found.setdefault(event["command_id"], set()).add(event["actor"])
    return found


async def test_fuzzed_payloads_over_nats_are_refused_clearly_and_change_nothing(worker: Runtime) -> None:
    rt = worker
    baseline = await request(rt, as_bytes({**RAISE, "command_id": "fuzz-baseline-raise"}))
    assert baseline["ok"], baseline
    ref, incident_id = baseline["reference"], baseline["incident_id"]
    templates = valid_commands(ref) + [{**c, "incident": incident_id} for c in valid_commands(ref) if "incident" in c]
    drawn = collect(st.one_of(mutated(templates).map(as_bytes), st.binary(max_size=200), JSONISH.map(as_bytes)),
                    170)
    drawn += collect(tweaked(templates).map(as_bytes), 130)
    drawn.append(as_bytes({**RAISE, "outline": "x" * (MAX_COMMAND_BYTES + 10)}))
    drawn += [as_bytes(c) for c in (  # found by this test once: each crashed the worker or hit every incident
        {**RAISE, "command_id": "fuzz-regress."}, {**RAISE, "command_id": "fuzz..regress"},
        {"kind": "fund_submit", "actor": "x", "incident_id": ref, "command_id": "fuzz regress 1"},
        {"kind": "update", "actor": "x", "incident": "*", "outline": "everyone", "command_id": "fuzz-regress-2"},
        {"kind": "transition", "actor": "x", "incident": ">", "trigger": "escalate", "command_id": "fuzz-regress-3"})]
    invalid = [raw for raw in drawn if bad_input(raw)[0] is None]
    parsed = [raw for raw in drawn if bad_input(raw)[0] is not None]
    assert len(invalid) >= 100 and len(parsed) >= 20, (len(invalid), len(parsed))

    # 1. Payloads the parser refuses: answered with a reason, dead-lettered, and nothing changes at all.
    before = await quiet(rt)
    letters_before = len(await dead_letters(rt))
    for raw in invalid:
        answer = await request(rt, raw)
        assert answer["ok"] is False, (raw, answer)
        assert_clear(answer["error"])
    for raw in invalid:
        await rt.js.publish(jsa.CMD_SUBJECT, raw, timeout=5.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(letters := await dead_letters(rt)) < letters_before + 2 * len(invalid) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    new = letters[letters_before:]
    assert sum(1 for d in new if d["subject"] == jsa.DLQ_INTAKE) == len(invalid)
    assert sum(1 for d in new if d["subject"] == jsa.DLQ_COMMANDS and d["source"] == "stream") == len(invalid)
    for letter in new:
        assert_clear(letter["reason"])
    assert await quiet(rt) == before, "a payload the parser refused changed an incident"

    # 2. Well-formed but fuzzed commands: each is applied or refused with a reason; refused ones leave no event.
    accepted, refused = set(), set()
    for raw in parsed:
        command = bad_input(raw)[0]
        assert command is not None
        answer = await request(rt, raw)
        assert answer.get("queued") is not True, ("no worker answer", raw, answer)
        command_id = answer.get("command_id") or command.command_id  # a payload without one got a fresh id
        if answer["ok"]:
            accepted.add(command_id)
            named = getattr(command, "incident", None) or getattr(command, "incident_id", None)
            assert named is None or named in (answer["incident_id"], answer["reference"]), (
                "applied to an incident it did not name", raw, answer)
        else:
            assert_clear(answer["error"])
            refused.add(command_id)
    await quiet(rt)
    made = await events_by_command(rt)
    by_people = {cid for cid, actors in made.items() if actors != {"sims"}}
    assert not (refused - accepted) & set(made), "a refused command left events"
    assert by_people <= accepted | {"fuzz-baseline-raise"}, by_people - accepted
    letters = await dead_letters(rt)
    assert not [d for d in letters if d["reason"].get("error") == "retries_exhausted"], "a command crashed the worker"

    # 3. The worker still does its work.
    again = await request(rt, as_bytes({**RAISE, "command_id": "fuzz-after-raise"}))
    assert again["ok"] and again["reference"].startswith("SWK-"), again
