"""GSM-7 detection, segment counting as SMS gateways count, and typographic clean-up."""

from __future__ import annotations

import pytest

from sims.gsm import SegmentInfo, is_gsm7, segments, to_gsm7

EXTENSION_CHARS = "€[]{}^~|\\"


def test_plain_english_and_the_basic_set_are_gsm7() -> None:
    assert is_gsm7("Stabbing in Nunhead & Queen's Road ward, 21:40. Call 0800 555 111 (24/7) @ £0!")
    assert is_gsm7("Ça a été déjà vu: ÄÖÑÜ äöñüà ¿¡ §")


def test_emoji_and_other_scripts_are_not_gsm7() -> None:
    assert not is_gsm7("Stay safe \U0001F64F")
    assert not is_gsm7("ê")
    assert not is_gsm7("\u2019")  # a curly apostrophe alone turns a message into UCS-2


def test_empty_text_is_one_gsm7_segment() -> None:
    assert segments("") == SegmentInfo(encoding="GSM-7", units=0, segments=1)


@pytest.mark.parametrize(
    ("length", "parts"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_is_160_septets_in_one_part_then_153_per_part(length: int, parts: int) -> None:
    assert segments("a" * length) == SegmentInfo(encoding="GSM-7", units=length, segments=parts)


@pytest.mark.parametrize("char", list(EXTENSION_CHARS))
def test_each_extension_character_costs_two_septets(char: str) -> None:
    assert is_gsm7(char)
    assert segments(char) == SegmentInfo(encoding="GSM-7", units=2, segments=1)
    assert segments("a" * 158 + char) == SegmentInfo(encoding="GSM-7", units=160, segments=1)
    assert segments("a" * 159 + char) == SegmentInfo(encoding="GSM-7", units=161, segments=2)


def test_eighty_euro_signs_fill_one_part_and_eighty_one_need_two() -> None:
    assert segments("€" * 80) == SegmentInfo(encoding="GSM-7", units=160, segments=1)
    assert segments("€" * 81) == SegmentInfo(encoding="GSM-7", units=162, segments=2)


def test_an_escape_sequence_is_never_split_across_parts() -> None:
    # 306 septets would be two parts, but the euro sign would straddle the boundary at 153.
    text = "a" * 152 + "€" + "a" * 152
    assert segments(text) == SegmentInfo(encoding="GSM-7", units=306, segments=3)


@pytest.mark.parametrize(("length", "parts"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_is_70_units_in_one_part_then_67_per_part(length: int, parts: int) -> None:
    assert segments("ê" * length) == SegmentInfo(encoding="UCS-2", units=length, segments=parts)


def test_an_emoji_makes_the_whole_message_ucs2_and_counts_two_utf16_units() -> None:
    assert segments("\U0001F600") == SegmentInfo(encoding="UCS-2", units=2, segments=1)
    assert segments("a" * 68 + "\U0001F600") == SegmentInfo(encoding="UCS-2", units=70, segments=1)
    assert segments("a" * 69 + "\U0001F600") == SegmentInfo(encoding="UCS-2", units=71, segments=2)
    # 100 characters: fine as GSM-7, but one emoji makes it two UCS-2 parts.
    assert segments("a" * 100).segments == 1
    assert segments("a" * 98 + "\U0001F600") == SegmentInfo(encoding="UCS-2", units=100, segments=2)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = "a" * 66 + "\U0001F600" + "a" * 66
    assert segments(text) == SegmentInfo(encoding="UCS-2", units=134, segments=3)


def test_to_gsm7_replaces_typography_with_gsm_equivalents() -> None:
    text = "\u201cIt\u2019s over\u201d \u2013 police\u2014council\u2026\u00a0done\u202fnow\t\u2018ok\u2019"
    cleaned = to_gsm7(text)
    assert cleaned == "\"It's over\" - police-council... done now 'ok'"
    assert is_gsm7(cleaned)


def test_to_gsm7_keeps_gsm_text_unchanged_and_is_idempotent() -> None:
    text = "Ça a été vu à 21:40 - €5 [note] {x} ^~|\\ £ @"
    assert to_gsm7(text) == text
    assert to_gsm7(to_gsm7("\u2019\u2026")) == to_gsm7("\u2019\u2026")


def test_to_gsm7_spells_other_accents_and_ligatures_in_gsm() -> None:
    assert to_gsm7("Zo\u00eb, Ch\u00e2teau, \u00e1, \ufb01ne") == "Zoe, Chateau, a, fine"


def test_to_gsm7_keeps_what_has_no_gsm_spelling_so_the_cost_is_visible() -> None:
    assert to_gsm7("Thanks \U0001F64F") == "Thanks \U0001F64F"
    assert segments(to_gsm7("Thanks \U0001F64F")).encoding == "UCS-2"


def test_to_gsm7_normalises_windows_line_endings() -> None:
    assert to_gsm7("a\r\nb") == "a\nb"
