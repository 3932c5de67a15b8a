"""GSM-7 awareness for SMS: which alphabet a text needs and how many segments it costs.

An SMS is 140 bytes: 160 GSM-7 septets or 70 UCS-2 code units. A longer text is split into parts
that each lose room to a header (153 septets or 67 code units per part), and a part never splits an
escape sequence (GSM-7 extension characters) or a surrogate pair (UCS-2). One character outside the
GSM-7 alphabet turns the whole message into UCS-2, so `to_gsm7` swaps common typography first.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

# 3GPP TS 23.038 default alphabet (the escape character 0x1B itself is not a printable character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each costs two septets (escape + character).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_GSM7, PART_GSM7 = 160, 153
SINGLE_UCS2, PART_UCS2 = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentInfo:
    """What an SMS costs: its encoding, its length in septets or UTF-16 code units, its parts."""

    encoding: Encoding
    units: int
    segments: int


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM-7 basic set or its extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _pack(widths: list[int], single: int, part: int) -> int:
    """Parts needed for characters of these widths; a character is never split across parts."""
    if sum(widths) <= single:
        return 1
    parts, used = 1, 0
    for width in widths:
        if used + width > part:
            parts, used = parts + 1, 0
        used += width
    return parts


def segments(text: str) -> SegmentInfo:
    """Encoding, units and number of parts of `text` as a handset or SMS gateway counts them."""
    if is_gsm7(text):
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return SegmentInfo(encoding="GSM-7", units=sum(widths),
                           segments=_pack(widths, SINGLE_GSM7, PART_GSM7))
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SegmentInfo(encoding="UCS-2", units=sum(widths), segments=_pack(widths, SINGLE_UCS2, PART_UCS2))


_REPLACEMENTS: dict[str, str] = {
    # quotes and primes
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    # dashes, hyphens and minus
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    # dots and bullets
    "\u2026": "...", "\u2022": "-", "\u00b7": ".",
    # spaces
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ",
    "\u202f": " ", "\t": " ",
    # invisible characters
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "", "\u00ad": "",
}


def _fallback(ch: str) -> str:
    """A GSM-7 spelling of `ch` from its compatibility decomposition (á -> a, ﬁ -> fi), else `ch`."""
    spelled = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return spelled if spelled and is_gsm7(spelled) else ch


def to_gsm7(text: str) -> str:
    """`text` with typographic characters (curly quotes, dashes, ellipsis, odd spaces) made GSM-7.

    Characters with no reasonable GSM-7 spelling (emoji, non-Latin scripts) are kept, so the caller
    sees the message turn UCS-2 rather than losing meaning silently.
    """
    text = text.replace("\r\n", "\n")
    out = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
            out.append(ch)
        elif ch in _REPLACEMENTS:
            out.append(_REPLACEMENTS[ch])
        else:
            out.append(_fallback(ch))
    return "".join(out)
