"""SMS encoding and segment count of a body, as Twilio computes them.

:func:`analyse` reproduces Twilio's message-segment-calculator
(github.com/TwilioDevEd/message-segment-calculator): the encoding (GSM-7 when every character
is in the GSM 03.38 alphabet, else UCS-2), the segments, the bit sizes and the character counts.
A segment carries 140 octets (1120 bits); once a message needs more than one, each segment
also carries a 6-octet user data header, leaving 153 septets (GSM-7) or 67 UTF-16 units
(UCS-2). Twilio never splits a grapheme across segments, so a GSM-7 escape pair (``€``,
``[``...) or an emoji can push a segment boundary forward and cost an extra segment.

:func:`replace_smart_characters` swaps typographic characters (curly quotes, dashes, the
ellipsis, unusual spaces) for GSM-7 look-alikes, as Twilio's Smart Encoding does, so that
one pasted ``’`` does not turn a whole message into UCS-2.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# regex, not re: re has no grapheme clusters (\X) nor Unicode property classes
import regex

__all__ = [
    "GSM7_ALPHABET",
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "SmsEncoding",
    "analyse",
    "is_gsm7",
    "replace_smart_characters",
]

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38: the basic table (one septet each) and the extension table (an escape septet plus
# one). Exactly the characters of Twilio's UnicodeToGSM map.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7_ALPHABET = GSM7_BASIC | GSM7_EXTENSION

_SEGMENT_BITS = 1120  # 140 octets
_HEADER_BITS = 48  # the concatenation header, in every segment of a multi-segment message
_UNIT_BITS: dict[Encoding, int] = {"GSM-7": 7, "UCS-2": 16}

# A character class runs in the regex engine: analyse() runs on every outbound SMS, and most
# bodies are plain GSM-7 that one search settles without a Python loop.
_NOT_GSM7_BASIC_RE = re.compile("[^" + re.escape("".join(sorted(GSM7_BASIC))) + "]")
_NOT_GSM7_RE = re.compile("[^" + re.escape("".join(sorted(GSM7_ALPHABET))) + "]")
_GSM7_EXTENSION_RE = re.compile("[" + re.escape("".join(sorted(GSM7_EXTENSION))) + "]")
_ASTRAL_RE = re.compile("[\U00010000-\U0010ffff]")  # a surrogate pair in UTF-16
_GRAPHEME_RE = regex.compile(r"\X")
# Characters that can join a neighbour into one grapheme (UAX #29): combining marks, ZWJ,
# regional indicators, Hangul jamo, CR of CRLF... A body without any is one grapheme per code
# point, and its layout needs no grapheme split. See _joining_bmp_re for the fast form.
_JOINING_RE = regex.compile(
    r"[\r\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}\p{GCB=Prepend}"
    r"\p{GCB=Regional_Indicator}\p{GCB=L}\p{GCB=V}\p{GCB=T}]"
)

# Twilio moves the characters that the first segment's header pushes out, and the one that did
# not fit, into the second segment without checking that they fit there. With graphemes of at
# most 32 UTF-16 units they always do (what the header pushes out is under 3 + 32 units, plus
# at most 32: within the 67 of a segment), so filling each segment greedily gives Twilio's
# count; longer graphemes (stacked combining marks) take the port, _twilio_segment_count.
_LONGEST_GREEDY_GRAPHEME = 32


@dataclass(frozen=True)
class SmsEncoding:
    """What an SMS body costs, as Twilio's calculator reports it."""

    encoding: Encoding
    segments: int
    message_size_bits: int  # the characters alone
    total_size_bits: int  # including the 48-bit header of each segment, when more than one
    characters: int  # graphemes; Twilio counts CRLF as two
    unicode_scalars: int  # code points
    non_gsm_characters: tuple[str, ...]  # distinct graphemes forcing UCS-2, in order of appearance


def is_gsm7(body: str) -> bool:
    """True when every character of ``body`` is in the GSM-7 alphabet (basic or extension)."""
    return _NOT_GSM7_RE.search(body) is None


def analyse(body: str) -> SmsEncoding:
    """The encoding, segments and sizes Twilio computes for ``body``."""
    if _NOT_GSM7_BASIC_RE.search(body) is None:  # the usual body: one septet per character
        return _layout(body, "GSM-7", len(body), (), ())
    if is_gsm7(body):
        escapes = [(m.start(), 1) for m in _GSM7_EXTENSION_RE.finditer(body)]
        return _layout(body, "GSM-7", len(body), escapes, ())
    surrogate_pairs = [(m.start(), 1) for m in _ASTRAL_RE.finditer(body)]
    if _one_grapheme_per_code_point(body, surrogate_pairs):
        non_gsm = tuple(dict.fromkeys(_NOT_GSM7_RE.findall(body)))
        return _layout(body, "UCS-2", len(body), surrogate_pairs, non_gsm)
    return _layout_graphemes(body)


def _one_grapheme_per_code_point(body: str, surrogate_pairs: Sequence[tuple[int, int]]) -> bool:
    """True when no character of ``body`` can join a neighbour into one grapheme."""
    if _joining_bmp_re().search(body):
        return False
    return not any(_JOINING_RE.match(body, index) for index, _ in surrogate_pairs)


@functools.cache
def _joining_bmp_re() -> re.Pattern[str]:
    """_JOINING_RE's characters of the Basic Multilingual Plane, as a re class.

    re checks a BMP-only class with one table look-up per character, several times faster than
    regex's Unicode property look-ups; building it takes some 20 ms, once, on the first UCS-2
    body. (With astral characters in the class, re would test them range by range instead.)
    """
    bmp = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x10000)))
    return re.compile("[" + re.escape("".join(_JOINING_RE.findall(bmp))) + "]")


def _layout(body: str, encoding: Encoding, atoms: int, heavy: Sequence[tuple[int, int]],
            non_gsm: tuple[str, ...]) -> SmsEncoding:
    """``atoms`` indivisible characters of one unit (septet or UTF-16 unit) each, except the
    ``heavy`` ones: (index, units beyond one)."""
    units = atoms + sum(extra for _, extra in heavy)
    unit_bits = _UNIT_BITS[encoding]
    if units * unit_bits <= _SEGMENT_BITS:
        segments = 1
    else:
        segments = _fill_segments(atoms, heavy, (_SEGMENT_BITS - _HEADER_BITS) // unit_bits)
    return _result(body, encoding, segments, units * unit_bits, atoms, non_gsm)


def _layout_graphemes(body: str) -> SmsEncoding:
    """UCS-2 layout of a body with multi-code-point graphemes (accents as combining marks,
    flags, emoji sequences): each grapheme stays whole within one segment."""
    graphemes = _GRAPHEME_RE.findall(body)
    if "\r\n" in graphemes:  # Twilio counts CRLF as two characters
        graphemes = [part for g in graphemes for part in (("\r", "\n") if g == "\r\n" else (g,))]
    # a multi-character string is never in the alphabet: each grapheme is checked whole
    non_gsm = tuple(dict.fromkeys(g for g in graphemes if g not in GSM7_ALPHABET))
    heavy = [(index, _utf16_units(g) - 1) for index, g in enumerate(graphemes)
             if len(g) > 1 or g > "\uffff"]
    if all(extra < _LONGEST_GREEDY_GRAPHEME for _, extra in heavy):
        return _layout(body, "UCS-2", len(graphemes), heavy, non_gsm)
    units = [_utf16_units(g) for g in graphemes]
    segments = _twilio_segment_count([16 * n for n in units])
    return _result(body, "UCS-2", segments, 16 * sum(units), len(graphemes), non_gsm)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _result(body: str, encoding: Encoding, segments: int, message_bits: int, characters: int,
            non_gsm: tuple[str, ...]) -> SmsEncoding:
    header_bits = _HEADER_BITS * segments if segments > 1 else 0
    return SmsEncoding(encoding, segments, message_bits, message_bits + header_bits,
                       characters, len(body), non_gsm)


def _fill_segments(atoms: int, heavy: Sequence[tuple[int, int]], capacity: int) -> int:
    """Segments of ``capacity`` units filled greedily with ``atoms`` indivisible characters.

    Only the heavy characters can leave a gap at a segment's end, so the walk visits those and
    the segments, never each character: a body full of plain characters costs nothing extra.
    """
    if not heavy:
        return -(-atoms // capacity)
    segments = start = taken = 0  # taken: heavy characters placed so far
    while start < atoms:
        segments += 1
        extra = 0  # units beyond one of the heavy characters in this segment
        while taken < len(heavy):
            index, more = heavy[taken]
            if (index - start) + extra + 1 + more > capacity:
                break
            extra += more
            taken += 1
        end = start + capacity - extra  # the segment full, if plain characters follow
        if taken < len(heavy):
            end = min(end, heavy[taken][0])  # or cut before the heavy one that does not fit
        start = min(end, atoms)
    return segments


def _twilio_segment_count(atom_bits: Sequence[int]) -> int:
    """A port of Twilio's SegmentedMessage._buildSegments and Segment.addHeader, quirks
    included: the first segment gets its header only when a second one starts, and what that
    header pushes out moves to the second segment unchecked."""
    first: list[int] = []
    used = [0]  # bits per segment, header included
    for bits in atom_bits:
        if _SEGMENT_BITS - used[-1] < bits:
            used.append(_HEADER_BITS)
            if len(used) == 2:
                used[0] += _HEADER_BITS
                while used[0] > _SEGMENT_BITS:
                    moved = first.pop()
                    used[0] -= moved
                    used[1] += moved
        if len(used) == 1:
            first.append(bits)
        used[-1] += bits
    return len(used)


# --------------------------------------------------------------------------- smart characters

# Characters that word processors and phone keyboards substitute for plain ones, each with its
# GSM-7 look-alike. Only characters outside GSM-7 are keys (so a GSM-7 body never changes) and
# every replacement is GSM-7 (so replacing twice changes nothing). Characters with no faithful
# look-alike (emoji, letters of other scripts, the middle dot of Catalan "l·l", ZWJ and ZWNJ,
# which shape emoji and scripts) are left alone.
_SMART_REPLACEMENTS: dict[str, str] = {
    # single quotes and apostrophes
    "\u2018": "'",  # ‘ left single quotation mark
    "\u2019": "'",  # ’ right single quotation mark, the curly apostrophe
    "\u201a": "'",  # ‚ single low-9 quotation mark, opens a German or Dutch quote
    "\u201b": "'",  # ‛ single high-reversed-9 quotation mark
    "\u2039": "'",  # ‹ single left-pointing angle quotation mark
    "\u203a": "'",  # › single right-pointing angle quotation mark
    "\u2032": "'",  # ′ prime
    "\u02bc": "'",  # ʼ modifier letter apostrophe, what some keyboards type for '
    "\u00b4": "'",  # ´ acute accent, typed for an apostrophe ("don´t")
    "\u0060": "'",  # ` grave accent, ASCII but not GSM-7, typed for an apostrophe
    # double quotes
    "\u201c": '"',  # “ left double quotation mark
    "\u201d": '"',  # ” right double quotation mark
    "\u201e": '"',  # „ double low-9 quotation mark, opens a German or Dutch quote
    "\u201f": '"',  # ‟ double high-reversed-9 quotation mark
    "\u00ab": '"',  # « left-pointing double angle quotation mark
    "\u00bb": '"',  # » right-pointing double angle quotation mark
    "\u2033": '"',  # ″ double prime
    # hyphens and dashes
    "\u2010": "-",  # ‐ hyphen
    "\u2011": "-",  # ‑ non-breaking hyphen
    "\u2012": "-",  # ‒ figure dash
    "\u2013": "-",  # – en dash
    "\u2014": "-",  # — em dash
    "\u2015": "-",  # ― horizontal bar
    "\u2212": "-",  # − minus sign
    # list bullets
    "\u2022": "-",  # • bullet
    "\u2023": "-",  # ‣ triangular bullet
    "\u2043": "-",  # ⁃ hyphen bullet
    "\u2219": "-",  # ∙ bullet operator
    "\u25e6": "-",  # ◦ white bullet
    "\u2026": "...",  # … horizontal ellipsis
    # spaces of other widths or that do not break; Babel puts U+00A0 and U+202F in amounts
    "\u00a0": " ",  # no-break space
    "\u2000": " ",  # en quad
    "\u2001": " ",  # em quad
    "\u2002": " ",  # en space
    "\u2003": " ",  # em space
    "\u2004": " ",  # three-per-em space
    "\u2005": " ",  # four-per-em space
    "\u2006": " ",  # six-per-em space
    "\u2007": " ",  # figure space
    "\u2008": " ",  # punctuation space
    "\u2009": " ",  # thin space
    "\u200a": " ",  # hair space
    "\u202f": " ",  # narrow no-break space
    "\u205f": " ",  # medium mathematical space
    "\u3000": " ",  # ideographic space
    "\u2028": "\n",  # line separator
    "\u2029": "\n",  # paragraph separator
    # invisible characters: nothing to show, so nothing to send
    "\u00ad": "",  # soft hyphen
    "\u200b": "",  # zero width space
    "\u2060": "",  # word joiner
    "\ufeff": "",  # zero width no-break space (byte order mark)
}
_SMART_TABLE = str.maketrans(_SMART_REPLACEMENTS)
_SMART_RE = re.compile("[" + re.escape("".join(_SMART_REPLACEMENTS)) + "]")


def replace_smart_characters(body: str) -> str:
    """``body`` with typographic characters replaced by their GSM-7 look-alikes.

    Like Twilio's Smart Encoding it replaces them even when another character keeps the body
    in UCS-2; a GSM-7 body comes back unchanged.
    """
    if _SMART_RE.search(body) is None:
        return body
    return body.translate(_SMART_TABLE)
