"""SMS encoding and segments (channels/sms_encoding.py): Twilio's own test cases, hand cases at
segment boundaries, and properties checked against a port of Twilio's algorithm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.sms_encoding import (
    _SMART_REPLACEMENTS,
    GSM7_ALPHABET,
    GSM7_BASIC,
    GSM7_EXTENSION,
    _twilio_segment_count,
    analyse,
    is_gsm7,
    replace_smart_characters,
)

CASES_FILE = (Path(__file__).resolve().parents[3] / "shared" / "testdata" / "sms_segments"
              / "segment_cases.json")
CASES: dict[str, Any] = json.loads(CASES_FILE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- Twilio's cases


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["testDescription"] for c in CASES["cases"]])
def test_twilio_case(case: dict[str, Any]) -> None:
    result = analyse(case["body"])
    assert result.encoding == case["encoding"]
    assert result.segments == case["segments"]
    assert result.message_size_bits == case["messageSize"]
    assert result.total_size_bits == case["totalSize"]
    # the escape-character cases give no counts
    if "characters" in case:
        assert result.characters == case["characters"]
    if "unicodeScalars" in case:
        assert result.unicode_scalars == case["unicodeScalars"]


@pytest.mark.parametrize("case", CASES["non_gsm_characters_cases"], ids=lambda c: c["body"])
def test_twilio_non_gsm_characters(case: dict[str, Any]) -> None:
    assert list(analyse(case["body"]).non_gsm_characters) == case["expected_non_gsm"]


@pytest.mark.parametrize("char", CASES["gsm7_escape_chars"])
def test_escape_characters_take_two_septets(char: str) -> None:
    result = analyse(char)
    assert (result.encoding, result.message_size_bits) == ("GSM-7", 14)


# --------------------------------------------------------------------------- hand cases


@pytest.mark.parametrize(
    "body, segments",
    [
        pytest.param("a" * 151 + "€" + "a" * 152, 2, id="euro-ends-segment-1-exactly"),
        # 306 septets would fit two segments, but the escape pair does not split: the first
        # segment ends one septet short and the last "a" spills into a third
        pytest.param("a" * 152 + "€" + "a" * 152, 3, id="euro-across-boundary"),
        pytest.param("€" * 80, 1, id="euro-fills-one-segment"),
        pytest.param("€" * 153, 3, id="euro-pairs-never-split"),  # 76 + 76 + 1 pairs, not 2 x 153
        pytest.param("ë" * 65 + "😀" + "ë" * 67, 2, id="emoji-ends-segment-1-exactly"),
        pytest.param("ë" * 66 + "😀" + "ë" * 66, 3, id="emoji-across-boundary"),
        pytest.param("ë" * 65 + "🇮🇹" + "ë" * 64, 3, id="flag-grapheme-stays-whole"),
        pytest.param("😀" + "]" * 68, 1, id="extension-char-is-one-unit-in-ucs2"),
        pytest.param("😀" + "]" * 69, 2, id="extension-char-is-one-unit-in-ucs2-overflow"),
        pytest.param("e\u0301\u0301\u0301" + "a" * 66, 1, id="stacked-accents-one-segment"),
        pytest.param("e\u0301\u0301\u0301" + "a" * 67, 2, id="stacked-accents-two-segments"),
        pytest.param("Á" * 70, 1, id="70-ucs2"),
        pytest.param("Á" * 71, 2, id="71-ucs2"),
        pytest.param("", 1, id="empty"),
    ],
)
def test_segments_at_boundaries(body: str, segments: int) -> None:
    assert analyse(body).segments == segments


def test_twilio_quirk_for_graphemes_longer_than_half_a_segment() -> None:
    # Twilio moves the 66-unit grapheme pushed out by the first segment's header into the
    # second segment, then adds the next one there unchecked: two segments, not three
    long_grapheme = "a" + "\u0301" * 65
    body = "ëë" + long_grapheme * 2
    assert analyse(body).segments == 2


def test_counts() -> None:
    result = analyse("\rabcde\r\n123")
    assert (result.encoding, result.characters, result.unicode_scalars) == ("GSM-7", 11, 11)
    flag = analyse("🇮🇹 ok\r\n")
    assert (flag.encoding, flag.characters, flag.unicode_scalars) == ("UCS-2", 6, 7)
    assert flag.message_size_bits == 16 * 9  # the flag is two surrogate pairs


def test_non_gsm_characters_are_distinct_graphemes_in_order() -> None:
    assert analyse("geïnd, reëel, geïnd’").non_gsm_characters == ("ï", "ë", "’")
    assert analyse("Cafe\u0301 👍🏽").non_gsm_characters == ("e\u0301", "👍🏽")
    assert analyse("[€]").non_gsm_characters == ()


def test_is_gsm7() -> None:
    assert is_gsm7("".join(sorted(GSM7_ALPHABET)))
    assert not is_gsm7("ë")
    assert not is_gsm7("`")  # ASCII, but not in GSM-7


# --------------------------------------------------------------------------- properties


def _twilio_reference(body: str) -> tuple[int, int, int]:
    """Segments, message bits and characters by Twilio's own procedure, step by step."""
    graphemes = [part for g in regex.findall(r"\X", body)
                 for part in ((g,) if g != "\r\n" else ("\r", "\n"))]
    if all(g in GSM7_ALPHABET for g in graphemes):
        bits = [14 if g in GSM7_EXTENSION else 7 for g in graphemes]
    else:
        bits = [16 * (len(g.encode("utf-16-le")) // 2) for g in graphemes]
    return _twilio_segment_count(bits), sum(bits), len(graphemes)


# Characters that exercise every path: escapes, surrogate pairs, joiners, CRLF, Hangul jamo.
_TRICKY = ["a", " ", "ë", "€", "[", "\r", "\n", "😀", "👍", "🏽", "\u0301", "\u200d", "\ufe0f",
           "🇮", "🇹", "\u1100", "\u1161", "한", "क", "\u094d", "ि", "Ж", "’"]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(_TRICKY), max_size=400) | st.text(max_size=300))
def test_matches_twilio_procedure(body: str) -> None:
    result = analyse(body)
    assert (result.segments, result.message_size_bits, result.characters) == _twilio_reference(body)
    assert result.segments >= 1
    assert result.unicode_scalars == len(body)
    header_bits = 48 * result.segments if result.segments > 1 else 0
    assert result.total_size_bits == result.message_size_bits + header_bits


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=sorted(GSM7_BASIC), max_size=1600))
def test_gsm7_basic_body_follows_the_ceil_rule(body: str) -> None:
    septets = len(body)
    expected = 1 if septets <= 160 else -(-septets // 153)
    assert analyse(body).segments == expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=sorted(GSM7_ALPHABET), max_size=1600))
def test_escape_pairs_can_only_add_segments(body: str) -> None:
    result = analyse(body)
    septets = len(body) + sum(body.count(c) for c in GSM7_EXTENSION)
    assert result.message_size_bits == 7 * septets
    if septets <= 160:
        assert result.segments == 1
    else:
        assert result.segments >= -(-septets // 153)


# --------------------------------------------------------------------------- smart characters


def test_smart_table_maps_non_gsm_to_gsm() -> None:
    for char, replacement in _SMART_REPLACEMENTS.items():
        assert not is_gsm7(char), repr(char)
        assert is_gsm7(replacement), repr(char)


def test_replace_smart_characters() -> None:
    body = "It\u2019s due \u2013 pay \u201enow\u201c\u2026 \u2022 \u20ac\u00a012,50"
    replaced = replace_smart_characters(body)
    assert replaced == 'It\'s due - pay "now"... - €\u002012,50'
    assert analyse(replaced).encoding == "GSM-7"


@pytest.mark.parametrize("body", ["Привет 😀", "👍🏽 a\u200db", "l·l", "ë"])
def test_replace_smart_characters_leaves_what_has_no_look_alike(body: str) -> None:
    assert replace_smart_characters(body) == body


@given(st.text(alphabet=sorted(GSM7_ALPHABET)))
def test_replace_smart_characters_keeps_gsm7_body(body: str) -> None:
    assert replace_smart_characters(body) == body


@given(st.text(alphabet=st.sampled_from(sorted(_SMART_REPLACEMENTS) + _TRICKY)) | st.text())
def test_replace_smart_characters_is_idempotent(body: str) -> None:
    once = replace_smart_characters(body)
    assert replace_smart_characters(once) == once
