"""Personal link tokens: genuine ones open; forged, altered, moved, expired and revoked ones do not."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sims.links import Binding, LinkRefused, check, link_id_for, mint

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)
RING = {"a": b"old secret", "b": b"new secret"}


def binding(**overrides: object) -> Binding:
    data: dict[str, object] = dict(incident_id="i1", task="confirm_facts", person="police-lead", kid="b",
                                   expires_at=NOW + timedelta(hours=72))
    return Binding(**{**data, **overrides})  # type: ignore[arg-type]


def token_for(b: Binding, key: str = "i1.task.police-lead.sms.1") -> str:
    return mint(RING[b.kid], b, link_id_for(key))


def test_a_genuine_link_opens_and_fits_in_an_sms() -> None:
    b = binding()
    token = token_for(b)
    assert check(RING, token, b, NOW) == b
    assert len(token) == 34 and len("https://sims.southwark.gov.uk/l/" + token) < 70


def test_altering_any_byte_is_refused() -> None:
    b = binding()
    token = token_for(b)
    for i, char in enumerate(token):
        if char == ".":
            continue
        other = "b" if char != "b" else "c"
        with pytest.raises(LinkRefused):
            check(RING, token[:i] + other + token[i + 1:], b, NOW)


@pytest.mark.parametrize("change", [{"task": "gold_decision"}, {"person": "someone-else"}, {"incident_id": "i2"},
                                    {"expires_at": NOW + timedelta(days=30)}])
def test_a_link_cannot_be_moved_to_another_task_person_incident_or_expiry(change: dict[str, object]) -> None:
    token = token_for(binding())
    with pytest.raises(LinkRefused) as refused:
        check(RING, token, binding(**change), NOW)
    assert refused.value.reason == "forged"


def test_old_secret_still_verifies_after_rotation_until_retired() -> None:
    old = binding(kid="a")
    token = token_for(old)
    assert check(RING, token, old, NOW) == old
    with pytest.raises(LinkRefused):
        check({"b": RING["b"]}, token, old, NOW)


def test_expired_and_revoked_links_say_so() -> None:
    b = binding(expires_at=NOW - timedelta(seconds=1))
    with pytest.raises(LinkRefused) as expired:
        check(RING, token_for(b), b, NOW)
    assert expired.value.reason == "expired"
    b = binding()
    with pytest.raises(LinkRefused) as revoked:
        check(RING, token_for(b), b, NOW, revoked=True)
    assert revoked.value.reason == "revoked"


@pytest.mark.parametrize("token", ["", "x", "b" + "a" * 16 + "." + "A" * 15, "../../etc/passwd", "b" * 200])
def test_malformed_tokens_are_refused_as_not_valid(token: str) -> None:
    with pytest.raises(LinkRefused) as refused:
        check(RING, token, binding(), NOW)
    assert refused.value.reason == "forged"
