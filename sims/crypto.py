"""Per-incident encryption of personal data (AES-256-GCM), so erasing an incident's key erases the data.

Restricted details are sealed before they are written into the events stream, which cannot be
edited or purged; the key lives apart (KV `sims_keys`). Destroying the key leaves ciphertext that
nobody can read ("crypto-shredding"), while every event, and the audit trail, stays in place.

A sealed value is text: `sealed:v1:<base64url(nonce | ciphertext | tag)>`. The incident id and the
field name are authenticated with it, so a value cannot be moved to another incident or field.
Pure functions (no I/O); keys come in as bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sims.errors import SimsError

PREFIX = "sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
SEALED_FIELDS = ("restricted",)  # event data fields holding personal data; sealed when not empty
ERASED = ""  # what a sealed field reads as once its key is destroyed
UNAVAILABLE = "[restricted details unavailable: the incident's data key is missing]"
UNREADABLE = "[restricted details unreadable: the stored value was altered]"


class SealBroken(SimsError):
    """A sealed value failed authentication: altered, truncated, or moved from another incident or field."""

    code = "sealed_data_invalid"

    def __init__(self, incident_id: str, field: str) -> None:
        self.incident_id = incident_id
        self.field = field
        super().__init__(f"The sealed {field} of incident {incident_id} was altered or does not belong to it; "
                         "it was not decrypted")


def new_key() -> bytes:
    """A fresh random 256-bit data key."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def _aad(incident_id: str, field: str) -> bytes:
    return f"sims:{incident_id}:{field}".encode()


def is_sealed(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(key: bytes, plaintext: str, *, incident_id: str, field: str) -> str:
    """Encrypt `plaintext` for `incident_id`'s `field`; a new random nonce each time."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), _aad(incident_id, field))
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def unseal(key: bytes, value: str, *, incident_id: str, field: str) -> str:
    """The plaintext of a sealed value; SealBroken if it was altered or belongs elsewhere."""
    if not is_sealed(value):
        raise SealBroken(incident_id, field)
    body = value[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if len(raw) < NONCE_BYTES + 16:
            raise ValueError("too short")
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(incident_id, field)).decode()
    except (InvalidTag, ValueError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise SealBroken(incident_id, field) from exc


def needs_key(datas: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any of these event data hold personal data to seal (plaintext, not empty)."""
    return any(data.get(name) for data in datas for name in SEALED_FIELDS)


def seal_data(key: bytes, data: Mapping[str, Any], *, incident_id: str) -> dict[str, Any]:
    """Event data with every non-empty personal field sealed (always: even text that looks sealed)."""
    out = dict(data)
    for name in SEALED_FIELDS:
        if out.get(name):
            out[name] = seal(key, str(out[name]), incident_id=incident_id, field=name)
    return out


def has_sealed(data: Mapping[str, Any]) -> bool:
    return any(is_sealed(data.get(name)) for name in SEALED_FIELDS)


def unseal_data(key: bytes | None, data: Mapping[str, Any], *, incident_id: str,
                missing: str = ERASED) -> dict[str, Any]:
    """Event data with sealed fields opened; with no key (erased), each reads as `missing`.

    Plain values (events written before sealing existed) are returned as they are.
    """
    out = dict(data)
    for name in SEALED_FIELDS:
        value = out.get(name)
        if is_sealed(value):
            out[name] = missing if key is None else unseal(key, value, incident_id=incident_id, field=name)
    return out


def withhold(raw: bytes) -> bytes:
    """A command payload with its personal fields replaced by their length: dead letters keep what a
    person needs to fix the input, not the details themselves (they stay a year, beyond retention)."""
    try:
        data = json.loads(raw)
    except ValueError:  # not JSON (or cut short): blank out anything that looks like a personal field
        for name in SEALED_FIELDS:
            raw = re.sub(rb'("' + name.encode() + rb'"\s*:\s*")((?:[^"\\]|\\.)*)("?)',
                         lambda m: m.group(1) + f"withheld ({len(m.group(2))} bytes)".encode() + m.group(3), raw)
        return raw
    found = [name for name in SEALED_FIELDS
             if isinstance(data, dict) and isinstance(data.get(name), str) and data[name]]
    if not found:
        return raw
    for name in found:
        data[name] = f"withheld ({len(data[name])} characters)"
    return json.dumps(data, ensure_ascii=False).encode()


def fingerprint(key: bytes, text: str) -> str:
    """A keyed hash of personal text for the audit trail: it proves what was given while the key lives,
    and says nothing (not even to a dictionary attack on names) once the key is destroyed."""
    return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    key = base64.b64decode(text)
    if len(key) != KEY_BYTES:
        raise ValueError("a data key is 32 bytes")
    return key
