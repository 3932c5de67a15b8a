"""Committed API documents match the code; the audit and event streams refuse deletion."""

from __future__ import annotations

import json

import pytest
from nats.js.errors import APIError

from handlers.docs import DOCS, asyncapi, openapi
from sims.adapters import jetstream as jsa
from sims.bootstrap import Runtime
from sims.messages import RaiseIncident


def test_committed_openapi_and_asyncapi_are_current() -> None:
    """`sims docs` was run after the last API change."""
    assert json.loads((DOCS / "openapi.json").read_text()) == json.loads(json.dumps(openapi()))
    assert json.loads((DOCS / "asyncapi.json").read_text()) == json.loads(json.dumps(asyncapi()))
    assert "/api/incidents" in openapi()["paths"]
    assert "sims.api.command" in json.dumps(asyncapi())


async def test_audit_and_event_records_cannot_be_deleted_or_purged(runtime: Runtime) -> None:
    result = await runtime.incidents.handle(RaiseIncident(
        actor="d", type="other", level="1", occurred_at="2026-11-30T20:00:00Z", ward="Peckham",
        location="x", outline="y"))
    assert result.ok
    for stream in (jsa.AUDIT, jsa.EVENTS):
        info = await runtime.js.stream_info(stream)
        assert info.config.deny_delete and info.config.deny_purge
        with pytest.raises(APIError):
            await runtime.js.delete_msg(stream, 1)
        with pytest.raises(APIError):
            await runtime.js.purge_stream(stream)
    assert (await runtime.js.stream_info(jsa.AUDIT)).state.messages == 1
