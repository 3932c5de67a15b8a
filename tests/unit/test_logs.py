"""Logs never carry link tokens, phone numbers, secrets or restricted details."""

from __future__ import annotations

import io
import json
import sys

import structlog

from sims.logs import configure, redact


def test_redaction_removes_secrets_tokens_and_numbers() -> None:
    event = {"event": "sms.sent", "to": "+447700900123", "restricted": "Victim: J Smith",
             "error": "link http://127.0.0.1:8000/l/aqpc24k4miencfj5p.25QFoJgv8ka9Hhmi to +44 7700 900123 refused",
             "incident_id": "abc123"}
    out = redact(None, "info", dict(event))
    assert out["to"] == "[redacted]" and out["restricted"] == "[redacted]"
    assert out["error"] == "link http://127.0.0.1:8000/l/[token] to [phone] refused"
    assert out["incident_id"] == "abc123"


def test_configured_json_logs_are_scanned_clean(monkeypatch: object) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)  # type: ignore[attr-defined]
    configure("debug", json=True)
    try:
        structlog.get_logger("test").info(
            "message.accepted", key="i.holding.p.sms.1", body="SIMS: http://x/l/aqpc24k4miencfj5p.25QFoJgv8ka9Hhmi",
            mobile="+447700900555", reason="call 07700 900555")
    finally:
        structlog.reset_defaults()
        import logging
        logging.getLogger().setLevel(logging.WARNING)
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    text = json.dumps(line)
    assert "25QFoJgv8ka9Hhmi" not in text and "900555" not in text
    assert line["event"] == "message.accepted" and line["key"] == "i.holding.p.sms.1"


def test_asyncio_tls_upgrade_notice_is_dropped_and_other_warnings_kept(monkeypatch: object) -> None:
    import logging

    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)  # type: ignore[attr-defined]
    configure("info", json=True)
    configure("info", json=True)  # configured twice (CLI, then a server): one filter
    try:
        asyncio_log = logging.getLogger("asyncio")
        asyncio_log.warning("returning true from eof_received() has no effect when using ssl")
        asyncio_log.warning("Task was destroyed but it is pending!")
    finally:
        configure("info", json=False)
    assert "eof_received" not in buffer.getvalue()
    assert "Task was destroyed but it is pending!" in buffer.getvalue()
    assert len(logging.getLogger("asyncio").filters) == 1
