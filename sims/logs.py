"""structlog set-up: JSON lines with the incident id bound; framework chatter at DEBUG."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_TOKEN = re.compile(r"/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")
_PHONE = re.compile(r"\+?\d[\d ]{9,14}\d")
_SECRET_KEYS = {"restricted", "token", "password", "auth_token", "link", "to", "body", "text", "html", "mobile",
                "email", "talking_points", "link_secrets", "smtp_password", "twilio_auth_token"}


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return _PHONE.sub("[phone]", _TOKEN.sub("/l/[token]", value))
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Keep secrets, link tokens, phone numbers and restricted details out of every log line."""
    for key in list(event):
        if key in _SECRET_KEYS:
            event[key] = "[redacted]"
        else:
            event[key] = _scrub(event[key])
    return event


class _TlsUpgradeNotice(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl" warning.

    nats-py upgrades a connection to TLS after the server's INFO (`loop.start_tls`), so asyncio's stream
    protocol still believes it is plain and warns at every close of a TLS connection; nothing is wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


_TLS_UPGRADE_NOTICE = _TlsUpgradeNotice()


def configure(level: str = "info", json: bool = True) -> None:
    """Configure structlog and the standard logging it shares with FastStream and uvicorn."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s", force=True)
    for noisy in ("faststream", "faststream.access", "nats", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    logging.getLogger("asyncio").addFilter(_TLS_UPGRADE_NOTICE)  # adding it twice keeps one
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
