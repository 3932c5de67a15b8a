"""What DATA sends: the fast path of `_smtp_data` against the plain rule it replaces, on any bytes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sims.adapters.smtp_email import _quoted, _smtp_data

_END_OF_LINE = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def reference(raw: bytes) -> bytes:
    """RFC 5321 4.5.2 as two regular expressions: CRLF line ends, a final CRLF, leading dots doubled."""
    data = _END_OF_LINE.sub(b"\r\n", raw)
    return _LEADING_DOT.sub(b"..", data if data.endswith(b"\r\n") else data + b"\r\n")


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"Zo\xc3\xab", b" "]), max_size=40))
def test_same_bytes_as_the_plain_rule(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert _smtp_data(raw) == reference(raw)


def test_a_crlf_message_is_only_dot_stuffed() -> None:
    raw = b"Subject: x\r\n\r\n.one\r\ntwo\r\n..three"
    assert _smtp_data(raw) == b"Subject: x\r\n\r\n..one\r\ntwo\r\n...three\r\n"
    assert _smtp_data(b".") == b"..\r\n" and _smtp_data(b"") == b"\r\n"


def test_envelope_addresses_are_quoted_and_checked_once() -> None:
    """aiosmtplib's own rules, kept per address: nothing but the mailbox goes on the command line."""
    assert _quoted("duty.officer@example.org") == b"<duty.officer@example.org>"
    assert _quoted("Duty Officer <duty.officer@example.org>") == b"<duty.officer@example.org>"
    assert _quoted("a@b.org> SIZE=1") == _quoted("a@b.org\r\nRSET") == b"<a@b.org>"
    with pytest.raises(ValueError):
        _quoted("a b@c.org")
