"""Fuzzing personal link tokens (pure): nothing but a genuine token opens; nothing raises but LinkRefused."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sims.links import TOKEN, Binding, LinkRefused, check, link_id_for, mint

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)
RING = {"a": b"old secret", "b": b"new secret", "c": b"third secret"}
FAST = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.fuzz

bindings = st.builds(
    Binding,
    incident_id=st.text(min_size=1, max_size=40),
    task=st.text(min_size=1, max_size=40),
    person=st.text(min_size=1, max_size=40),
    expires_at=st.just(NOW + timedelta(hours=72)),
    kid=st.sampled_from(sorted(RING)),
)
keys = st.text(min_size=1, max_size=60)
TOKEN_CHARS = string.ascii_letters + string.digits + "-_.=/+%~ \n\t\x00" + "ÿé日"


def genuine(binding: Binding, key: str) -> str:
    return mint(RING[binding.kid], binding, link_id_for(key))


def refused(token: str, binding: Binding | None) -> LinkRefused:
    """`check` refuses `token` as forged, raising nothing but LinkRefused."""
    try:
        accepted = check(RING, token, binding, NOW)
    except LinkRefused as exc:
        assert exc.reason == "forged", (token, exc.reason)
        assert str(exc)
        return exc
    raise AssertionError(f"forged token accepted: {token!r} -> {accepted}")


@FAST
@given(bindings, keys)
def test_a_genuine_token_opens_for_its_own_binding(binding: Binding, key: str) -> None:
    assert check(RING, genuine(binding, key), binding, NOW) == binding


@FAST
@given(bindings, keys, st.data())
def test_any_byte_flip_is_refused(binding: Binding, key: str, data: st.DataObject) -> None:
    token = genuine(binding, key)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(token) - 1), st.sampled_from(TOKEN_CHARS)),
                               min_size=1, max_size=4))
    chars = list(token)
    for at, char in flips:
        chars[at] = char
    mutated = "".join(chars)
    assume(mutated != token)
    refused(mutated, binding)


@FAST
@given(bindings, keys, st.data())
def test_truncation_and_extension_are_refused(binding: Binding, key: str, data: st.DataObject) -> None:
    token = genuine(binding, key)
    cut = data.draw(st.integers(0, len(token) - 1))
    refused(token[:cut], binding)
    refused(token[len(token) - cut:] if cut else "", binding)
    extra = data.draw(st.one_of(st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "=", ".", "/"]),
                                st.text(alphabet=st.sampled_from(TOKEN_CHARS), min_size=1, max_size=8)))
    refused(token + extra, binding)
    refused(extra + token, binding)


@FAST
@given(bindings, keys, keys)
def test_swapped_and_transplanted_parts_are_refused(binding: Binding, key: str, other_key: str) -> None:
    token = genuine(binding, key)
    kid, link_id, mac = token[0], token[1:17], token[18:]
    refused(f"{kid}{mac}.{link_id}", binding)  # id and MAC swapped
    refused(f"{mac}.{kid}{link_id}", binding)
    refused(f"{kid}{link_id}{mac}", binding)  # no separator
    other = genuine(binding, other_key)
    if other != token:  # another link's MAC on this id, this MAC on another id
        refused(f"{kid}{link_id}.{other[18:]}", binding)
        refused(f"{other[:17]}.{mac}", binding)
    refused(token, None)  # no stored binding


@FAST
@given(bindings, keys, st.sampled_from(sorted(RING)), st.sampled_from(sorted(RING)))
def test_another_kid_or_secret_is_refused(binding: Binding, key: str, kid: str, secret_of: str) -> None:
    token = genuine(binding, key)
    if kid != binding.kid:
        refused(kid + token[1:], binding)  # relabelled to another key
        moved = Binding(incident_id=binding.incident_id, task=binding.task, person=binding.person,
                        expires_at=binding.expires_at, kid=kid)
        refused(token, moved)  # the stored binding names another key
    if secret_of != binding.kid:
        refused(mint(RING[secret_of], binding, link_id_for(key)), binding)  # signed with the wrong secret
    refused(mint(b"attacker secret", binding, link_id_for(key)), binding)
    refused(token.replace(token[0], "z", 1), binding)  # a kid not in the keyring


@FAST
@given(bindings, keys, st.sampled_from(["incident_id", "task", "person", "expires_at"]), st.text(max_size=20))
def test_a_token_cannot_be_moved_to_another_binding(binding: Binding, key: str, field: str, suffix: str) -> None:
    token = genuine(binding, key)
    values = {"incident_id": binding.incident_id, "task": binding.task, "person": binding.person,
              "expires_at": binding.expires_at, "kid": binding.kid}
    values[field] = (binding.expires_at + timedelta(seconds=1 + len(suffix)) if field == "expires_at"
                     else values[field] + suffix + "x")
    refused(token, Binding(**values))  # type: ignore[arg-type]


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(alphabet=st.sampled_from(TOKEN_CHARS), max_size=40),
                 st.from_regex(TOKEN, fullmatch=True), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))),
       bindings)
def test_random_strings_are_refused_as_forged(token: str, binding: Binding) -> None:
    refused(token, binding)
    refused(token, None)
