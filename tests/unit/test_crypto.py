"""Sealing personal data per incident (AES-256-GCM): round trip, and every kind of tampering refused."""

from __future__ import annotations

import base64
import json

import pytest

from sims import crypto
from sims.crypto import SealBroken

NAME = "Victim: Jordan Smith, 17, of 12 Acacia Road"


def test_a_sealed_value_opens_to_the_same_text_and_does_not_contain_it() -> None:
    key = crypto.new_key()
    sealed = crypto.seal(key, NAME, incident_id="i1", field="restricted")
    assert sealed.startswith(crypto.PREFIX) and crypto.is_sealed(sealed)
    assert "Jordan" not in sealed and "Smith" not in sealed and "Acacia" not in sealed
    assert crypto.unseal(key, sealed, incident_id="i1", field="restricted") == NAME
    assert len(key) == 32


def test_the_same_text_seals_differently_each_time() -> None:
    key = crypto.new_key()
    assert crypto.seal(key, NAME, incident_id="i1", field="restricted") != crypto.seal(
        key, NAME, incident_id="i1", field="restricted")


def test_unicode_and_empty_text_round_trip() -> None:
    key = crypto.new_key()
    for text in ("", "Zoë Ñúñez – 19 🙂", "x" * 8000):
        assert crypto.unseal(key, crypto.seal(key, text, incident_id="i", field="f"), incident_id="i", field="f") == text


def _flip(sealed: str, position: int) -> str:
    body = sealed[len(crypto.PREFIX):]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[position] ^= 0x01
    return crypto.PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1])  # nonce, first ciphertext byte, inside, tag
def test_a_changed_bit_anywhere_is_refused(position: int) -> None:
    key = crypto.new_key()
    sealed = crypto.seal(key, NAME, incident_id="i1", field="restricted")
    with pytest.raises(SealBroken) as refused:
        crypto.unseal(key, _flip(sealed, position), incident_id="i1", field="restricted")
    assert refused.value.incident_id == "i1" and refused.value.code == "sealed_data_invalid"


def test_truncated_garbled_or_unsealed_values_are_refused() -> None:
    key = crypto.new_key()
    sealed = crypto.seal(key, NAME, incident_id="i1", field="restricted")
    for bad in (sealed[:-6], sealed[:len(crypto.PREFIX) + 10], crypto.PREFIX + "!!!not base64!!!", NAME,
                crypto.PREFIX):
        with pytest.raises(SealBroken):
            crypto.unseal(key, bad, incident_id="i1", field="restricted")


def test_a_value_moved_to_another_incident_or_field_or_opened_with_another_key_is_refused() -> None:
    key = crypto.new_key()
    sealed = crypto.seal(key, NAME, incident_id="i1", field="restricted")
    with pytest.raises(SealBroken):
        crypto.unseal(key, sealed, incident_id="i2", field="restricted")
    with pytest.raises(SealBroken):
        crypto.unseal(key, sealed, incident_id="i1", field="outline")
    with pytest.raises(SealBroken):
        crypto.unseal(crypto.new_key(), sealed, incident_id="i1", field="restricted")


def test_event_data_seals_only_personal_fields_and_reads_as_erased_without_a_key() -> None:
    key = crypto.new_key()
    data = {"restricted": NAME, "outline": "A young man was stabbed", "ward": "Peckham"}
    sealed = crypto.seal_data(key, data, incident_id="i1")
    assert crypto.is_sealed(sealed["restricted"]) and sealed["outline"] == data["outline"]
    assert crypto.has_sealed(sealed) and not crypto.has_sealed(data)
    assert crypto.unseal_data(key, sealed, incident_id="i1") == data
    assert crypto.unseal_data(None, sealed, incident_id="i1")["restricted"] == crypto.ERASED
    assert crypto.unseal_data(None, data, incident_id="i1") == data  # plain (older) events pass as they are
    assert crypto.seal_data(key, {"restricted": ""}, incident_id="i1") == {"restricted": ""}
    assert not crypto.needs_key([{"restricted": ""}, {"outline": "x"}]) and crypto.needs_key([data])


def test_text_that_merely_looks_sealed_is_sealed_again_not_trusted() -> None:
    key = crypto.new_key()
    lookalike = crypto.PREFIX + "AAAA"
    sealed = crypto.seal_data(key, {"restricted": lookalike}, incident_id="i1")
    assert sealed["restricted"] != lookalike
    assert crypto.unseal_data(key, sealed, incident_id="i1")["restricted"] == lookalike


def test_fingerprints_are_keyed_so_a_guess_cannot_be_checked_without_the_key() -> None:
    key, other = crypto.new_key(), crypto.new_key()
    assert crypto.fingerprint(key, NAME) == crypto.fingerprint(key, NAME)
    assert crypto.fingerprint(key, NAME) != crypto.fingerprint(other, NAME)
    assert crypto.fingerprint(key, NAME).startswith("hmac-sha256:")


def test_keys_encode_and_decode_and_wrong_lengths_are_refused() -> None:
    key = crypto.new_key()
    assert crypto.decode_key(crypto.encode_key(key)) == key
    with pytest.raises(ValueError):
        crypto.decode_key(base64.b64encode(b"short").decode())


def test_dead_letter_payloads_keep_everything_but_the_personal_fields() -> None:
    raw = json.dumps({"kind": "raise", "ward": "Nowhere", "restricted": NAME}).encode()
    kept = json.loads(crypto.withhold(raw))
    assert kept == {"kind": "raise", "ward": "Nowhere", "restricted": f"withheld ({len(NAME)} characters)"}
    cut = b'{"kind": "raise", "restricted": "Victim: Jordan \\"JJ\\" Smith, 17, of 12 Aca'
    assert b"Jordan" not in crypto.withhold(cut) and b'"kind": "raise"' in crypto.withhold(cut)
    for untouched in (b"not json", b"[1,2]", b'{"restricted": ""}', b'{"ward": "Peckham"}'):
        assert crypto.withhold(untouched) == untouched
