"""Console sign-in: argon2 hashes, signed expiring sessions, CSRF tokens, roles and the sign-in rate limit."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from argon2 import PasswordHasher

from handlers import auth
from handlers.auth import Need, Session
from handlers.console import linkify
from handlers.console_board import age
from handlers.console_incident import check_raise

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # the same algorithm, cheaper for tests
KEY = auth.session_key(b"link-secret")


def test_passwords_are_stored_as_argon2id_hashes_and_only_the_right_one_verifies() -> None:
    stored = auth.hash_password("correct horse battery", FAST)
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert auth.verify_password(stored, "correct horse battery", FAST)
    assert not auth.verify_password(stored, "correct horse batterY", FAST)
    assert not auth.verify_password("not-a-hash", "anything", FAST)
    assert auth.hash_password("same", FAST) != auth.hash_password("same", FAST)  # salted


def test_the_default_hasher_is_argon2id() -> None:
    assert auth.hash_password("a long enough password").startswith("$argon2id$")


def test_a_signed_session_reads_back_until_it_expires() -> None:
    session = Session.start("duty.one", "duty_officer", now=1000.0, ttl=60)
    token = auth.sign_session(KEY, session)
    assert auth.read_session([KEY], token, now=1059.0) == session
    assert auth.read_session([KEY], token, now=1060.0) is None  # expired


def test_a_tampered_or_foreign_session_is_refused() -> None:
    token = auth.sign_session(KEY, Session.start("viewer.one", "viewer", now=1000.0))
    payload, mac = token.split(".")
    admin = auth.sign_session(KEY, Session.start("viewer.one", "admin", now=1000.0)).split(".")[0]
    assert auth.read_session([KEY], f"{admin}.{mac}", now=1001.0) is None  # role changed, old signature
    assert auth.read_session([auth.session_key(b"other")], token, now=1001.0) is None
    assert auth.read_session([b"link-secret"], token, now=1001.0) is None  # not the link secret itself
    for junk in ("", ".", "abc", "abc.", ".abc", f"{payload}.!!!", f"{payload}.{mac}x"):
        assert auth.read_session([KEY], junk, now=1001.0) is None


def test_sessions_signed_with_an_older_key_still_verify_while_it_is_in_the_keyring() -> None:
    old = auth.session_key(b"old-secret")
    token = auth.sign_session(old, Session.start("a.b", "viewer", now=10.0))
    assert auth.read_session([KEY, old], token, now=11.0) is not None


def test_csrf_token_must_be_the_sessions_own() -> None:
    session, other = Session.start("a.b", "duty_officer"), Session.start("a.b", "duty_officer")
    assert session.csrf != other.csrf and len(session.csrf) >= 32
    assert auth.csrf_ok(session, session.csrf)
    assert not auth.csrf_ok(session, other.csrf)
    assert not auth.csrf_ok(session, "")
    assert not auth.csrf_ok(session, None)
    assert not auth.csrf_ok(None, session.csrf)
    assert not auth.same_token("", "")


def test_roles_viewer_views_duty_officer_acts_admin_also_manages_users() -> None:
    assert auth.may("viewer", Need.VIEW) and not auth.may("viewer", Need.ACT)
    assert auth.may("duty_officer", Need.ACT) and not auth.may("duty_officer", Need.ADMIN)
    assert all(auth.may("admin", need) for need in Need)
    assert not auth.may("root", Need.VIEW)


def test_sign_in_attempts_are_limited_per_username_and_address() -> None:
    limiter = auth.SignInLimiter(attempts=3, window=60)
    for t in range(3):
        assert not limiter.blocked("Duty.One", "10.0.0.1", now=t)
        limiter.failed("Duty.One", "10.0.0.1", now=t)
    assert limiter.blocked("duty.one", "10.0.0.1", now=5)
    assert not limiter.blocked("duty.one", "10.0.0.2", now=5)  # another address
    assert not limiter.blocked("duty.two", "10.0.0.1", now=5)  # another username
    assert not limiter.blocked("duty.one", "10.0.0.1", now=61)  # the window passed
    limiter.failed("duty.one", "10.0.0.1", now=62)
    limiter.succeeded("duty.one", "10.0.0.1")
    assert not limiter._failures


def test_usernames_and_passwords_are_checked() -> None:
    assert auth.username_problems("duty.officer-1") == []
    for bad in ("D", "Duty", "a..b", ".ab", "ab.", "a b", "x" * 65):
        assert auth.username_problems(bad)
    assert auth.password_problems("short") and auth.password_problems("duty.officer", "duty.officer")
    assert auth.password_problems("a sufficiently long one") == []


def test_raise_form_reads_london_time_and_names_every_problem() -> None:
    london, now = ZoneInfo("Europe/London"), datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
    form = {"type": "stabbing", "level": "2", "ward": "Peckham", "occurred_at": "2026-07-01T11:30",
            "location": "Rye Lane", "outline": "A stabbing", "exercise": "yes"}
    values, errors = check_raise(form, ("Peckham",), london, now)
    assert errors == [] and values["exercise"] is True
    assert values["occurred_utc"] == datetime(2026, 7, 1, 10, 30, tzinfo=timezone.utc)  # BST is UTC+1
    _, errors = check_raise({"occurred_at": "2026-03-29T01:30"}, ("Peckham",), london, now)  # clocks forward
    assert [f for f, _ in errors] == ["type", "level", "ward", "occurred_at", "location", "outline"]
    assert "does not exist" in dict(errors)["occurred_at"]
    _, errors = check_raise({**form, "occurred_at": "2026-07-01T14:00"}, ("Peckham",), london, now)
    assert dict(errors) == {"occurred_at": "When it happened must be in the past"}


def test_outbox_links_are_made_clickable_and_the_rest_escaped() -> None:
    html = linkify("Open <b> http://127.0.0.1:8000/l/abc.def, then reply")
    assert '<a href="http://127.0.0.1:8000/l/abc.def">http://127.0.0.1:8000/l/abc.def</a>,' in html
    assert "&lt;b&gt;" in html


@pytest.mark.parametrize(("seconds", "text"), [(30, "0 min"), (600, "10 min"), (7500, "2 h 5 min"),
                                               (90000, "1 d 1 h")])
def test_board_age(seconds: int, text: str) -> None:
    from datetime import timedelta

    assert age(timedelta(seconds=seconds)) == text
