"""Entity normalisation for the Understanding contract: amount, date, installments, frequency.

This module owns turning what a debtor wrote ("€1.234,56", "vijftig euro", "am 25.",
"in drie termijnen", "per maand") into typed values, in English, Dutch and German. It is pure:
no I/O and no clock; "today" is always passed in.

Maintained parsers do the heavy lifting: text2num turns spelled numbers into digits, price-parser
reads number formats (1.234,56 / 1,234.56 / 75,-), dateparser reads dates and relative days, and
babel (CLDR) supplies month and weekday names. Hand-written rules cover only what none of them
does; each says why where it is defined.

The four parsers protect each other: an amount is never read from a date ("15-12"), an installment
count ("3 payments") or a frequency ("every 2 weeks"), and a date is never read from an amount
("50 euro", "£25") or a frequency ("a month"). Languages are "en", "nl" and "de"; any other
raises ValueError.

Known limits:
* Dates are read day first in all three languages (UK/IE English: "05/12" is 5 December).
* Dates prefer the future, as the contract asks, so "I paid on the 3rd" is the next 3rd; an
  action handling already_paid should read such a date with the intent in mind.
* A number without a currency is money only next to a paying word ("I can pay 50",
  "ik kan 50 betalen") or in a reply that is little more than the number ("50?").
* Where a message names two amounts or dates, the first is returned; the engine's spans,
  when present, decide which one is meant.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Generic, TypedDict, TypeVar

from babel.dates import get_day_names, get_month_names
from dateparser.search import search_dates
from price_parser import Price
from text_to_num import alpha2digit, text2num

LANGS = ("en", "nl", "de")
FREQUENCIES = ("weekly", "fortnightly", "monthly")

T = TypeVar("T")


@dataclass(frozen=True)
class Amount:
    """A sum of money as the debtor stated it."""

    value: Decimal  # exact, never float
    currency: str | None  # ISO 4217; None when not stated and no default was given

    def __post_init__(self) -> None:
        # A float here would already have lost cents; refuse it loudly rather than round.
        if not isinstance(self.value, Decimal):
            raise TypeError(f"Amount.value must be a Decimal, got {type(self.value).__name__}")

    def to_json(self) -> dict:
        # The value travels as a string: JSON numbers are floats to most consumers.
        return {"value": format(self.value, "f"), "currency": self.currency}


class Entities(TypedDict, total=False):
    """What normalise_entities returns; only the entities that were found are present."""

    amount: Amount
    date: date
    installments: int
    frequency: str  # one of FREQUENCIES


@dataclass(frozen=True)
class _Found(Generic[T]):
    """A value found in a text, with where it was found (to mask it for the other parsers)."""

    value: T
    start: int
    end: int


# --------------------------------------------------------------------------------------------
# Shared text preparation
# --------------------------------------------------------------------------------------------

# SMS writers drop diacritics that text2num needs to recognise a number word.
_NUMBER_WORD_SPELLING: dict[str, tuple[tuple[str, str], ...]] = {
    "nl": ((r"\b(twee|drie)en(twintig|dertig|veertig|vijftig|zestig|zeventig|tachtig|negentig)",
            r"\1ën\2"),),
    "de": ((r"fu(?:e)?nf", "fünf"), (r"zwo(?:e)?lf", "zwölf"), (r"\bdreissig", "dreißig")),
    "en": (),
}


def _prepare(text: str, lang: str) -> str:
    """Normalise spacing and turn spelled numbers into digits ("vijftig euro" -> "50 euro")."""
    if lang not in LANGS:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGS}")
    text = unicodedata.normalize("NFKC", text)  # NBSP and narrow NBSP become plain spaces
    text = re.sub(r"\s+", " ", text).strip()
    for pattern, replacement in _NUMBER_WORD_SPELLING[lang]:
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    # alpha2digit leaves "one"/"two" alone (threshold 3) so that "one question" stays words;
    # the few places where "two"/"zwei"/"twee" count are handled with _word_number below, and
    # before a unit of time here, where dateparser needs the digit ("over twee weken").
    text = alpha2digit(text, lang)
    return re.sub(_SMALL_NUMBER_BEFORE_UNIT, lambda m: _SMALL_NUMBERS[m[1].lower()] + m[2], text,
                  flags=re.IGNORECASE)


_SMALL_NUMBERS = {"one": "1", "two": "2", "een": "1", "één": "1", "twee": "2", "zwei": "2"}
_SMALL_NUMBER_BEFORE_UNIT = (r"\b(one|two|een|één|twee|zwei)(\s+(?:days?|weeks?|months?|dagen"
                             r"|weken|maanden|tage|tagen|wochen|monate|monaten)\b)")


def _word_number(word: str, lang: str) -> int | None:
    """A single spelled number ("zwei", "twee", "one"), trying the conversation language first."""
    for candidate_lang in (lang, *(other for other in LANGS if other != lang)):
        try:
            return text2num(word.lower(), candidate_lang)
        except ValueError:
            continue
    return None


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """Blank out spans with spaces, keeping every other offset valid."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _spans(found: Iterable[_Found]) -> list[tuple[int, int]]:
    return [(f.start, f.end) for f in found]


@lru_cache(maxsize=None)
def _month_names(lang: str) -> tuple[str, ...]:
    """Month names and abbreviations from CLDR (babel), longest first for regex alternation."""
    names: set[str] = set()
    for width in ("wide", "abbreviated"):
        for name in get_month_names(width, locale=lang).values():
            names.add(name.lower().rstrip("."))
    names |= {"sept", "maerz", "marz"} if lang == "de" else {"sept"}
    return tuple(sorted(names, key=len, reverse=True))


@lru_cache(maxsize=None)
def _weekdays(lang: str) -> dict[str, int]:
    """Weekday name -> Monday-based index (date.weekday()), from CLDR (babel)."""
    return {name.lower(): index for index, name in get_day_names("wide", locale=lang).items()}


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


# --------------------------------------------------------------------------------------------
# Frequency
# --------------------------------------------------------------------------------------------

_TWO = r"(?:2|two|twee|zwei|other|second|andere|tweede|zweite|2\.)"
_MONEY_BEFORE = (r"(?:\d[\d.,]*(?:,-)?\s*(?:euros?|eur|€|£|pounds?|quid|pond|pfund|dollars?|\$)?"
                 r"\s+)")
# "in a month", "for a week" and "a week ago" are dates or durations, not how often to pay.
_NOT_AFTER = r"(?<!\bin )(?<!\bwithin )(?<!\bfor )(?<!\bthan )(?<!\babout )(?<!\bjust )"
_NOT_BEFORE = r"(?!\s+(?:ago|from|later|or so|before|after|time))"

# Checked in this order: "bi-weekly" and "zweiwöchentlich" contain the weekly words.
_FREQUENCY_RULES: tuple[tuple[str, str], ...] = (
    ("fortnightly", r"\bfortnightly\b|\b(?:every|each|per|once a) fortnight\b"
                    r"|\bbi-?weekly\b|\bsemi-?monthly\b|\btwice (?:a |per |each )?month(?:ly)?\b"
                    rf"|\bevery {_TWO} weeks?\b|\bevery 14 days\b"
                    r"|\b(?:2|two) ?(?:x|times) (?:a|per|each) month\b"),
    # "om de week" is Dutch for every other week (as "om de dag" is every other day); where it
    # is meant as weekly, the plan is read back to the debtor before it is booked.
    ("fortnightly", r"\btwee-?wekelijks\b|\bom de week\b"
                    r"|\bom de (?:andere|2|twee) (?:week|weken)\b"
                    rf"|\b(?:elke|iedere|per) {_TWO} (?:week|weken)\b"
                    r"|\b(?:om de|elke|iedere) 14 dagen\b"
                    r"|\b(?:2|twee) ?(?:x|keer|maal) (?:per|in de|p/) ?maand\b"),
    ("fortnightly", r"\bzwei-?w(?:ö|oe|o)chentlich\b|\bzweiw(?:ö|oe|o)chig\b"
                    r"|\b14-?t(?:ä|ae|a)gig\b|\bvierzehnt(?:ä|ae|a)gig\b"
                    r"|\balle (?:2|zwei) wochen\b|\balle 14 tage\b"
                    r"|\bjede (?:zweite|2\.) woche\b|\bhalbmonatlich\b"
                    r"|\b(?:2 ?(?:x|mal)|zweimal|zwei mal) (?:im|pro|den|je) monat\b"),
    ("weekly", rf"\bweekly\b|\b(?:every|each|per|once a) week\b"
               rf"|{_NOT_AFTER}\ba week\b{_NOT_BEFORE}|(?<=\d) ?(?:/ ?(?:week|wk)\b|p/w\b)"),
    ("weekly", r"\bwekelijkse?\b|\b(?:elke|iedere|per) week\b|\been keer per week\b"),
    ("weekly", r"\bw(?:ö|oe|o)chentlich\w*|\bw(?:ö|oe)chentl\.|\b(?:jede|jeder|pro|je) woche\b"
               r"|\beinmal (?:die|pro|in der|je) woche\b"),
    ("monthly", rf"\bmonthly\b|\b(?:every|each|per|once a) (?:calendar )?month\b"
                rf"|{_NOT_AFTER}\ba month\b{_NOT_BEFORE}|\bpcm\b"
                r"|(?<=\d) ?(?:/ ?(?:month|mo|mth)\b|p/m\b)"),
    ("monthly", r"\bmaandelijkse?\b|\b(?:elke|iedere|per) maand\b|\bmaandtermijn(?:en)?\b"
                r"|(?<=\d) ?p\.m\.|\been keer per maand\b"),
    ("monthly", r"\bmonatlich\w*|\bmonatl\.|\bmtl\.|\b(?:jeden|pro|je) monat\b|\bmonatsraten?\b"
                r"|\bim monat\b(?! (?:januar|februar|märz|april|mai|juni|juli|august|september"
                r"|oktober|november|dezember))"),
)
# Weak forms ("50 in de week", "50 Euro den Monat") also mean "during the week" or "the month"
# on their own, so they only count right after a sum of money.
_WEAK_FREQUENCY_RULES: tuple[tuple[str, str], ...] = (
    ("weekly", rf"{_MONEY_BEFORE}(?P<f>(?:in de|in der|die|the) week|(?:in der|die) woche)\b"),
    ("monthly", rf"{_MONEY_BEFORE}(?P<f>in de maand|den monat|the month)\b"),
)


def _find_frequency(text: str) -> _Found[str] | None:
    for value, pattern in _FREQUENCY_RULES:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return _Found(value, match.start(), match.end())
    for value, pattern in _WEAK_FREQUENCY_RULES:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return _Found(value, match.start("f"), match.end("f"))
    return None


def parse_frequency(text: str, lang: str) -> str | None:
    """How often the debtor proposes to pay: "weekly", "fortnightly" or "monthly".

    Intervals the payment policy has no name for ("every 4 weeks", "quarterly") give None.
    """
    found = _find_frequency(_prepare(text, lang))
    return found.value if found else None


# --------------------------------------------------------------------------------------------
# Amounts
# --------------------------------------------------------------------------------------------

# Symbols as CLDR renders them for en_GB / nl_NL / de_DE (checked by the round-trip property
# test), plus the words people type. "bucks" marks money without saying which.
_CURRENCY_WORDS: dict[str, str | None] = {
    "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR",
    "£": "GBP", "gbp": "GBP", "pound": "GBP", "pounds": "GBP", "quid": "GBP",
    "pond": "GBP", "ponden": "GBP", "pfund": "GBP",
    "us$": "USD", "$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD",
    "chf": "CHF", "franken": "CHF",
    "bucks": None,
}
_PREFIX_CURRENCY = r"(?P<pre>us\$|€|£|\$|\b(?:eur|euro|gbp|usd|chf)\b\.?)"
_SUFFIX_CURRENCY = r"(?P<post>€|£|\$|(?<![^\W\d_])(?:" + _alternation(
    word for word in _CURRENCY_WORDS if word.isalpha()) + r")\b)"
# Grouped thousands ("1.234", "1,234,567") or plain digits, optional 1-2 decimals, optional
# Dutch/German ",-" for whole amounts. price-parser decides which separator is the decimal one.
_NUMBER = (r"(?P<num>(?<![\w.,])(?:\d{1,3}(?:[.,'’]\d{3})+(?!\d)|\d+)(?:[.,]\d{1,2}(?!\d))?"
           r"(?:[.,][-–]{1,2})?(?![.,]?\d))")
# "15 euro 50" / "one pound fifty": cents after the currency word, only where nothing follows
# that could make the trailing number something else ("50 euro 12 december").
_CENTS = r"(?: (?P<cents>\d{2})(?: ?(?:cents?|ct|p|pence)\b|(?=\s*(?:$|[.!?;)]))))?"

_CURRENCY_AMOUNTS = (re.compile(rf"{_NUMBER} ?{_SUFFIX_CURRENCY}{_CENTS}", re.IGNORECASE),
                     re.compile(rf"{_PREFIX_CURRENCY} ?{_NUMBER}", re.IGNORECASE))
_WORD_CURRENCY_AMOUNT = re.compile(
    rf"(?<![\w])(?P<word>[^\W\d_]+) {_SUFFIX_CURRENCY}{_CENTS}", re.IGNORECASE)


def _decimal(number_text: str) -> Decimal | None:
    # price-parser trips over apostrophe grouping (Swiss "1'234.56"), so drop it first.
    price = Price.fromstring(re.sub(r"['’]", "", number_text))
    return price.amount


def _with_cents(value: Decimal, cents: str | None) -> Decimal:
    # scaleb keeps the exponent: 15 + 0.50 is Decimal("15.50"), as the debtor wrote it.
    if cents and value == value.to_integral_value():
        return value + Decimal(cents).scaleb(-2)
    return value


def _currency_amounts(text: str, lang: str) -> list[_Found[Amount]]:
    """Amounts that carry a currency symbol or word, in order of appearance."""
    found: list[_Found[Amount]] = []

    def add(value: Decimal, match: re.Match[str]) -> None:
        if any(f.start < match.end() and match.start() < f.end for f in found):
            return  # "€ 50 euro": one amount, whichever form read it first
        groups = match.groupdict()
        token = (groups.get("pre") or groups["post"]).lower().rstrip(".")
        value = _with_cents(value, groups.get("cents"))
        found.append(_Found(Amount(value, _CURRENCY_WORDS[token]), match.start(), match.end()))

    for pattern in _CURRENCY_AMOUNTS:
        for match in pattern.finditer(text):
            value = _decimal(match["num"])
            if value is not None:
                add(value, match)
    for match in _WORD_CURRENCY_AMOUNT.finditer(text):
        # alpha2digit keeps "one"/"two" as words; "zwei Euro" still names an amount.
        number = _word_number(match["word"], lang)
        if number is not None:
            add(Decimal(number), match)
    return sorted(found, key=lambda f: f.start)


_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MONTH = r"(?:0?[1-9]|1[0-2])"


@lru_cache(maxsize=None)
def _not_an_amount(lang: str) -> tuple[re.Pattern[str], ...]:
    """Numbers that are dates, times, durations, percentages or references, never money.

    Separate patterns, not one alternation, so that overlapping phrases ("am 1.12.") are each
    found whole.
    """
    months = _alternation(_month_names(lang))
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
        rf"(?<![\d.,]){_DAY}[./-]{_MONTH}(?:[./-]\d{{2,4}})?\.?(?![\w])",  # 15-12, 15.12., 15/12/26
        r"\b\d{4}-\d{2}-\d{2}\b",
        r"\b\d{1,2}(?:st|nd|rd|th|e|de|ste|ten|sten)\b",                  # 28th, 28e, 28sten
        rf"\b\d{{1,2}}\.? (?:of )?(?:{months})\b",                        # 1 december, 1. Dez
        rf"\b(?:{months}) (?:the )?\d{{1,2}}\b",                          # december 1
        r"\b(?:am|den|zum|vom|ab dem|vor dem|op de|on the|by the|before the) \d{1,2}\b\.?",
        r"\b\d+ ?(?:days?|weeks?|months?|years?|yrs?|hours?|minutes?|mins?|dagen|dag|weken"
        r"|maanden|maand|jaar|jaren|uur|minuten|tage|tagen|tag|wochen|woche|monate|monaten|monat"
        r"|jahre|jahren|jahr|stunden?)\b",
        r"\b\d{1,2}(?:[:.]\d{2})? ?(?:am|pm|uur|uhr|u|h)\b|\b\d{1,2}:\d{2}\b",
        r"\d+(?:[.,]\d+)? ?(?:%|percent\b|procent\b|prozent\b)",
        r"\b(?:in|since|sinds|seit|year|jaar|jahr) (?:19|20)\d{2}\b",
        r"(?:#|\b(?:ref|reference|referentie|kenmerk|dossier\w*|klantnummer|kundennummer"
        r"|account|nummer|number|nr|no|aktenzeichen|rechnung\w*|invoice|factuur\w*|iban)\b)"
        r"\W{0,3}(?:(?:is|was|ist|lautet)\W{1,3})?[\w-]*\d[\w-]*",
        r"\+?\d[\d -]{7,}\d|\b\d{7,}\b",                                # phone numbers and ids
    ))


def _not_an_amount_spans(text: str, lang: str) -> list[tuple[int, int]]:
    return [m.span() for pattern in _not_an_amount(lang) for m in pattern.finditer(text)]


# A bare number is only money when the message is about paying or is little more than it.
_PAY_CONTEXT = re.compile(
    r"\b(?:pay|paying|paid|afford|offer|send|transfer|manage|give|how about|what about|max\w*"
    r"|betal\w*|betaal\w*|overmaken|maak\w* over|stort\w*|bied\w*|missen|maximaal"
    r"|zahl\w*|bezahl\w*|überweis\w*|ueberweis\w*|leisten|aufbringen|anbieten|höchstens"
    r"|schicken|maximal)\b", re.IGNORECASE)
_BARE_NUMBER = re.compile(_NUMBER + r"(?![^\W\d_])", re.IGNORECASE)


def _bare_amount(masked: str) -> _Found[Decimal] | None:
    match = _BARE_NUMBER.search(masked)
    if match is None:
        return None
    before = re.sub(r"[\W\d_]+", " ", masked[:match.start()]).split()
    after = re.sub(r"[\W\d_]+", " ", masked[match.end():]).split()
    # A paying word near the number ("I can pay 50", "ik kan 50 betalen"), or hardly any words
    # at all ("50?", "ok 50"); "I have 2 jobs and still can't pay" is not an offer of 2.
    near = " ".join(before[-3:] + after[:3])
    if len(before) + len(after) > 2 and not _PAY_CONTEXT.search(near):
        return None
    value = _decimal(match["num"])
    return _Found(value, match.start(), match.end()) if value is not None else None


def _blocked_for_amounts(text: str, lang: str) -> list[tuple[int, int]]:
    frequency = _find_frequency(text)
    blocked = _spans([frequency]) if frequency else []
    blocked += _spans(_find_installments(text, lang, frequency))
    blocked += _not_an_amount_spans(text, lang)
    return blocked


def parse_amount(text: str, lang: str, default_currency: str | None = None) -> Amount | None:
    """The first sum of money in the text; default_currency when the debtor named none."""
    prepared = _prepare(text, lang)
    stated = _currency_amounts(prepared, lang)
    if stated:
        amount = stated[0].value
        return amount if amount.currency else Amount(amount.value, default_currency)
    bare = _bare_amount(_mask(prepared, _blocked_for_amounts(prepared, lang)))
    return Amount(bare.value, default_currency) if bare else None


# --------------------------------------------------------------------------------------------
# Installments
# --------------------------------------------------------------------------------------------

_INSTALLMENT_NOUNS = (r"payments?|instal{1,2}ments?|parts?|chunks?|transfers?"
                      r"|termijnen|termijn|betalingen|betaling|delen|stortingen|maandtermijnen"
                      r"|raten|rate|teilzahlungen|zahlungen|zahlung|monatsraten|teilbeträgen?"
                      r"|teilen|tranchen")
_INSTALLMENT_ADJECTIVES = (r"monthly|weekly|fortnightly|equal|separate|maandelijkse|wekelijkse"
                           r"|gelijke|aparte|losse|monatliche|monatlichen|wöchentliche|gleiche"
                           r"|gleichen")
# "x", "keer", "mal" and "times" also count other things ("I called 3 times"), so they need a
# payment context; the nouns above do not.
_TIMES_WORDS = r"x|×|keer|maal|mal|times"
# "I missed 2 payments" talks about the past, not a proposed plan.
_PAST_PAYMENTS = re.compile(
    r"\b(?:missed|miss|made|paid|last|previous|first|gemist|betaald|gedaan|laatste|vorige"
    r"|eerste|verpasst|bezahlt|geleistet|letzten|vorigen|ersten)\b(?:\W+\w+)?\W*$", re.IGNORECASE)
# Dutch and German put the participle last: "ik heb 2 betalingen gemist".
_PAST_PARTICIPLE_AFTER = re.compile(
    r"^\W*(?:\w+\W+){0,2}?(?:gemist|betaald|gedaan|overgeslagen|verpasst|bezahlt|geleistet"
    r"|vers(?:ä|ae)umt|missed)\b", re.IGNORECASE)


def _find_installments(text: str, lang: str, frequency: _Found[str] | None) -> list[_Found[int]]:
    """Installment counts; `frequency` is masked for the "6x" forms only ("2x per maand" is a
    frequency), while "3 Monatsraten" keeps its noun even though it also says "monthly"."""
    count = r"(?P<count>\d{1,2}|[^\W\d_]+)"
    noun_rule = re.compile(
        rf"(?<![\w.,]){count}\s+(?:(?:{_INSTALLMENT_ADJECTIVES})\s+)?(?:{_INSTALLMENT_NOUNS})\b",
        re.IGNORECASE)
    times_rule = re.compile(rf"(?<![\w.,]){count} ?(?:{_TIMES_WORDS})(?![^\W\d_])", re.IGNORECASE)
    times_text = _mask(text, _spans([frequency])) if frequency else text
    whole_message = re.sub(r"[\W_]+", "", text)
    found: list[_Found[int]] = []
    for rule, searched, needs_context in ((noun_rule, text, False), (times_rule, times_text, True)):
        for match in rule.finditer(searched):
            raw = match["count"]
            number = int(raw) if raw.isdigit() else _word_number(raw, lang)
            if number is None or not 1 <= number <= 99:
                continue
            if (_PAST_PAYMENTS.search(text[:match.start()])
                    or _PAST_PARTICIPLE_AFTER.search(text[match.end():])):
                continue
            in_context = (_PAY_CONTEXT.search(text) or re.search(r"\bin\W*$", text[:match.start()])
                          or re.sub(r"[\W_]+", "", match.group()) == whole_message)
            if needs_context and not in_context:
                continue
            if not any(f.start < match.end() and match.start() < f.end for f in found):
                found.append(_Found(number, match.start(), match.end()))
    return sorted(found, key=lambda f: f.start)


def parse_installments(text: str, lang: str) -> int | None:
    """How many payments the debtor proposes: "3 payments", "in drie termijnen", "6x"."""
    prepared = _prepare(text, lang)
    masked = _mask(prepared, _spans(_currency_amounts(prepared, lang)))
    found = _find_installments(masked, lang, _find_frequency(masked))
    return found[0].value if found else None


# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------

# Day first for English too: Nudge's English-speaking debtors are in the UK and Ireland, where
# "05/12" is the 5th of December (dateparser's English default would read the 12th of May).
_DATE_ORDER = "DMY"


def _end_of_month(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _add_months(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


def _next_day_of_month(day: int, today: date) -> date | None:
    """The next date (today included) whose day of the month is `day`; skips short months."""
    for months_ahead in range(0, 13):
        year, month = _add_months(today.replace(day=1), months_ahead)
        if day <= calendar.monthrange(year, month)[1]:
            candidate = date(year, month, day)
            if candidate >= today:
                return candidate
    return None


def _next_day_and_month(day: int, month: int, today: date) -> date | None:
    for year in (today.year, today.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate >= today:
            return candidate
    return None


def _month_number(name: str, lang: str) -> int | None:
    name = name.lower().rstrip(".")
    for width in ("wide", "abbreviated"):
        for number, candidate in get_month_names(width, locale=lang).items():
            if candidate.lower().rstrip(".") == name:
                return number
    return {"sept": 9, "maerz": 3, "marz": 3}.get(name)


# Nouns an ordinal can count ("the 3rd payment"); whole words only, so "ab dem 15. monatlich"
# is still a day of the month.
_ORDINAL_FOLLOWERS = (r"payments?|instal{1,2}ments?|termijn(?:en)?|betaling(?:en)?|raten?"
                      r"|zahlung(?:en)?|times?|keer|mal|weeks?|wochen?|months?|maand(?:en)?"
                      r"|monat(?:e|en|s)?|days?|dag(?:en)?|tag(?:e|en)?|years?|jaar|jahr(?:e|en)?"
                      r"|reminders?|herinnering(?:en)?|mahnung(?:en)?|letters?|brief(?:e|en)?"
                      r"|attempts?|poging(?:en)?|versuch(?:e)?|floor|etage|verdieping|child"
                      r"|kind(?:er|eren)?|uhr|uur|euro|eur")


@lru_cache(maxsize=None)
def _ordinal_not_a_date(lang: str) -> re.Pattern[str]:
    """ "the 3rd payment", "de 2e termijn": an ordinal that counts something else."""
    return re.compile(rf"\b(?:the |de |am |den |zum )?\d{{1,2}}"
                      rf"(?:st|nd|rd|th|e|de|ste|\.|ten|sten) (?:{_ORDINAL_FOLLOWERS})\b",
                      re.IGNORECASE)


_Resolver = Callable[[re.Match[str], date], "date | None"]


@lru_cache(maxsize=None)
def _date_rules(lang: str) -> tuple[tuple[re.Pattern[str], _Resolver], ...]:
    """Date phrases dateparser does not read, each with its resolver."""
    months = _alternation(_month_names(lang))
    weekdays = _weekdays(lang)
    weekday_names = _alternation(weekdays)
    not_a_day_of_month = rf"(?! ?(?:of )?(?:{months})\b)(?! (?:{_ORDINAL_FOLLOWERS})\b)"

    def this_month_end(_: re.Match[str], today: date) -> date:
        return _end_of_month(today.year, today.month)

    def next_month_end(_: re.Match[str], today: date) -> date:
        return _end_of_month(*_add_months(today, 1))

    def named_month_end(match: re.Match[str], today: date) -> date | None:
        month = _month_number(match["month"], lang)
        if month is None:
            return None
        year = today.year if month >= today.month else today.year + 1
        return _end_of_month(year, month)

    def weekday_next_week(match: re.Match[str], today: date) -> date:
        # ISO weeks: "volgende week maandag" is the Monday of the coming Monday-to-Sunday week.
        monday = today - timedelta(days=today.weekday()) + timedelta(weeks=1)
        return monday + timedelta(days=weekdays[match["weekday"].lower()])

    def numeric(match: re.Match[str], today: date) -> date | None:
        day, month, year = int(match["d"]), int(match["m"]), match["y"]
        if year is None:
            return _next_day_and_month(day, month, today)
        full_year = int(year) + 2000 if len(year) == 2 else int(year)
        try:
            return date(full_year, month, day)
        except ValueError:
            return None

    def iso(match: re.Match[str], _: date) -> date | None:
        try:
            return date.fromisoformat(match.group())
        except ValueError:
            return None

    def day_of_month(match: re.Match[str], today: date) -> date | None:
        day = int(match["day"])
        return _next_day_of_month(day, today) if 1 <= day <= 31 else None

    def days_ahead(days: int) -> _Resolver:
        return lambda _, today: today + timedelta(days=days)

    end = {
        "en": (r"\b(?:the )?end of (?:the |this )?month\b|\bmonth[- ]?end\b",
               r"\bend of next month\b", rf"\bend of (?P<month>{months})\b"),
        "nl": (r"\beinde? (?:van |v/d |vd )?(?:de |deze )?maand\b|\bultimo\b",
               r"\beinde? (?:van )?volgende maand\b", rf"\beinde? (?:van )?(?P<month>{months})\b"),
        "de": (r"\bende (?:des |dieses )?monats?\b|\bmonatsende\b|\bultimo\b",
               r"\bende (?:des )?(?:nächsten|naechsten|kommenden) monats\b",
               rf"\bende (?P<month>{months})\b"),
    }[lang]
    next_week = {"en": r"next week", "nl": r"volgende week|komende week",
                 "de": r"nächste[nr]? woche|naechste[nr]? woche|kommende[nr]? woche"}[lang]
    # Two spellings per language (suffix, or preposition + number); both capture "day".
    ordinals = {
        "en": (r"\b(?:the )?(?P<day>\d{1,2})(?:st|nd|rd|th)\b",
               r"\b(?:on|by|before) the (?P<day>\d{1,2})\b(?![.,]\d)"),
        "nl": (r"\b(?:de )?(?P<day>\d{1,2})(?:e|de|ste)\b",
               r"\bop de (?P<day>\d{1,2})\b(?![.,]\d)"),
        # A bare "25." ends many German sentences about money, so a preposition must come first.
        "de": (r"\b(?:am|den|zum|bis zum|bis spätestens zum|spätestens am|ab dem|vor dem) "
               r"(?P<day>\d{1,2})(?:\.|ten|sten)?(?![.,]?\d)",),
    }[lang]
    flags = re.IGNORECASE
    rules: list[tuple[re.Pattern[str], _Resolver]] = [
        # dateparser 1.5 reads "the day after tomorrow" as tomorrow.
        (re.compile(r"\b(?:the )?day after tomorrow\b", flags), days_ahead(2)),
        (re.compile(end[1], flags), next_month_end),
        (re.compile(end[0], flags), this_month_end),
        (re.compile(end[2], flags), named_month_end),
        (re.compile(rf"\b(?:{next_week}) (?:on |op |am )?(?P<weekday>{weekday_names})\b", flags),
         weekday_next_week),
        (re.compile(rf"\b(?P<weekday>{weekday_names}),? (?:of |van )?(?:{next_week})\b", flags),
         weekday_next_week),
        (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), iso),
        # dateparser reads "15.12" as the time 15:12, so numeric day-month is done here.
        (re.compile(rf"(?<![\d.,/-])(?P<d>{_DAY})(?P<sep>[./-])(?P<m>{_MONTH})"
                    r"(?:(?P=sep)(?P<y>\d{4}|\d{2}))?\.?(?![\w/-]|[.,]\d)"), numeric),
    ]
    # "the 28th", "am 25.": dateparser keeps these in the current month even when the day has
    # passed; a promise is always about the next such day.
    rules += [(re.compile(rf"{ordinal}{not_a_day_of_month}", flags), day_of_month)
              for ordinal in ordinals]
    return tuple(rules)


def _rule_dates(text: str, lang: str, today: date) -> list[_Found[date]]:
    found: list[_Found[date]] = []
    for pattern, resolve in _date_rules(lang):
        for match in pattern.finditer(text):
            if any(f.start < match.end() and match.start() < f.end for f in found):
                continue
            value = resolve(match, today)
            if value is not None:
                found.append(_Found(value, match.start(), match.end()))
    return found


_PREPOSITIONS = r"(?:on|by|in|at|of|before|op|om|voor|uiterlijk|am|im|um|bis|zum|vor|ab)"
_NOW_WORDS = {"now", "right", "nu", "jetzt", "gleich", "meteen", "direct"}
# dateparser's matches drag connecting words along ("now and the").
_FILLER_WORDS = {"and", "the", "or", "then", "en", "de", "het", "of", "dan", "und", "der", "die",
                 "das", "oder", "dann"}
# "3 months" is a date only as "in 3 months"; "45 years old" and "seit 3 Monaten" are not.
_BARE_DURATION = re.compile(
    r"(?:\d+|an?|een|one|eine[nmr]?) (?:days?|weeks?|months?|years?|dag(?:en)?|weken|week"
    r"|maand(?:en)?|jaar|jaren|tage?n?|wochen|woche|monate?n?|monat|jahre?n?)", re.IGNORECASE)
_INTO_THE_FUTURE = re.compile(r"\b(?:in|within|over|binnen|innerhalb|after|na|nach)\W*$",
                              re.IGNORECASE)
_TIME_ONLY = re.compile(r"(?:at |om |um )?\d{1,2}(?:[:.]\d{2})? ?(?:am|pm|uur|uhr|u|h)?",
                        re.IGNORECASE)


def _is_noise(matched: str, before: str, lang: str) -> bool:
    """dateparser finds dates in words that are not dates in a reply; drop those."""
    core = re.sub(rf"^(?:{_PREPOSITIONS} )+", "", matched.strip().lower()).strip(" .,")
    words = set(re.sub(r"[\d\W_]+", " ", core).split()) - _FILLER_WORDS
    if words <= _NOW_WORDS or core in _month_names(lang):
        return True  # "I can't pay now", "I may pay", "in december" (no day: not a promise)
    if _BARE_DURATION.fullmatch(core) and not (
            _INTO_THE_FUTURE.search(before) or _INTO_THE_FUTURE.search(matched[:-len(core)])):
        return True
    if re.fullmatch(r"[^\W\d_]{1,3}", core):
        return True  # abbreviations that are also words: German "so", Dutch "ma", "sun"
    if re.fullmatch(r"[\d\W]+", core):
        return True  # a bare number ("75") is a year to dateparser, never a date to us
    return bool(_TIME_ONLY.fullmatch(matched.strip()))  # a time of day alone


def _dateparser_dates(text: str, lang: str, today: date) -> list[_Found[date]]:
    settings = {
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": datetime.combine(today, datetime.min.time()),
        "DATE_ORDER": _DATE_ORDER,
    }
    results = search_dates(text, languages=[lang], settings=settings) or []
    found: list[_Found[date]] = []
    cursor = 0
    for matched, when in results:
        start = text.find(matched, cursor)
        if start < 0:
            continue
        cursor = start + len(matched)
        if not _is_noise(matched, text[:start], lang):
            found.append(_Found(when.date(), start, cursor))
    return found


def _find_date(text: str, lang: str, today: date) -> _Found[date] | None:
    rule_found = _rule_dates(text, lang, today)
    library_found = _dateparser_dates(_mask(text, _spans(rule_found)), lang, today)
    # The earliest mention wins; on a tie the hand-written rule, which read the longer phrase.
    candidates = [(f.start, 0, f) for f in rule_found] + [(f.start, 1, f) for f in library_found]
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


# "for 10 weeks" says how long, not when.
_DURATION = re.compile(
    r"\b(?:for|voor|gedurende|für|fuer|während|waehrend) "
    r"(?:the next |de komende |die n(?:ä|ae)chsten )?"
    r"\d+ (?:days|weeks|months|years|dagen|weken|maanden|jaar|tage|wochen|monate|jahre)\b",
    re.IGNORECASE)


def _free_numbers(text: str, lang: str) -> list[tuple[int, int]]:
    """Numbers outside any date-like phrase: dateparser would turn "12.50 on friday" into 2050."""
    date_like = _not_an_amount_spans(text, lang)
    return [m.span() for m in re.finditer(r"\d+(?:[.,:]\d+)*", text)
            if not any(s <= m.start() and m.end() <= e for s, e in date_like)]


def parse_date(text: str, lang: str, today: date) -> date | None:
    """The date the debtor names, relative to `today`.

    Weekday names and days of the month always resolve to today or later; explicit past
    references ("yesterday", "15-10-2026") keep their past date ("I paid yesterday").
    """
    prepared = _prepare(text, lang)
    masked = _mask(prepared, _spans(_currency_amounts(prepared, lang)))
    frequency = _find_frequency(masked)  # "50 a month" is not a date a month from now
    blocked = _spans([frequency]) if frequency else []
    blocked += _spans(_find_installments(masked, lang, frequency))
    blocked += [m.span() for m in _ordinal_not_a_date(lang).finditer(masked)]
    blocked += [m.span() for m in _DURATION.finditer(masked)]
    blocked += _free_numbers(masked, lang)
    found = _find_date(_mask(masked, blocked), lang, today)
    return found.value if found else None


# --------------------------------------------------------------------------------------------
# Engine spans
# --------------------------------------------------------------------------------------------

_ENTITY_ORDER = ("amount", "date", "installments", "frequency")


def _offsets(text: str, span: dict) -> tuple[int, int] | None:
    """The span's offsets when they fit the text; engine dicts are trusted for nothing else."""
    start, end = span.get("start"), span.get("end")
    if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text):
        return start, end
    return None


def _span_texts(text: str, span: dict) -> list[str]:
    """The span as written, then the engine's value (which may be a synonym like "monthly")."""
    offsets = _offsets(text, span)
    texts = [text[offsets[0]:offsets[1]]] if offsets else []
    value = span.get("value")
    if isinstance(value, str) and value not in texts:
        texts.append(value)
    return texts


def _widen_to_currency(text: str, span: dict) -> str | None:
    """The engine often tags "50" in "50 euro"; take the adjacent currency along."""
    offsets = _offsets(text, span)
    if offsets is None:
        return None
    start, end = offsets
    after = re.match(rf"\s?{_SUFFIX_CURRENCY}", text[end:], re.IGNORECASE)
    if after:
        return text[start:end + after.end()]
    before = re.search(rf"{_PREFIX_CURRENCY}\s?$", text[:start], re.IGNORECASE)
    return text[before.start():end] if before else None


def _day_of_month_only(candidate: str, today: date) -> date | None:
    """The engine already decided a lone "28" is a date: read it as a day of the month."""
    if not re.fullmatch(r"\d{1,2}", candidate.strip()):
        return None
    day = int(candidate)
    return _next_day_of_month(day, today) if 1 <= day <= 31 else None


def _count_only(candidate: str, lang: str) -> int | None:
    """The engine already decided a lone "3" or "drie" is an installment count."""
    word = candidate.strip()
    if word.isdigit():
        return int(word)
    return _word_number(word, lang) if re.fullmatch(r"[^\W\d_]+", word) else None


def _parse_span(entity: str, text: str, span: dict, lang: str, today: date,
                default_currency: str | None) -> object | None:
    if entity == "amount":
        widened = _widen_to_currency(text, span)
        candidates = ([widened] if widened else []) + _span_texts(text, span)
        return next((a for c in candidates
                     if (a := parse_amount(c, lang, default_currency)) is not None), None)
    for candidate in _span_texts(text, span):
        if entity == "date":
            value = parse_date(candidate, lang, today) or _day_of_month_only(candidate, today)
        elif entity == "installments":
            value = parse_installments(candidate, lang) or _count_only(candidate, lang)
        else:
            value = parse_frequency(candidate, lang)
        if value is not None:
            return value
    return None


def _parse_text(entity: str, text: str, lang: str, today: date,
                default_currency: str | None) -> object | None:
    if entity == "amount":
        return parse_amount(text, lang, default_currency)
    if entity == "date":
        return parse_date(text, lang, today)
    if entity == "installments":
        return parse_installments(text, lang)
    return parse_frequency(text, lang)


def normalise_entities(text: str, lang: str, spans: list[dict], today: date,
                       default_currency: str | None = None) -> Entities:
    """Typed entities for one message: {"amount": Amount, "date": date, "installments": int,
    "frequency": str}, only those found.

    The engine's spans come first; an entity the engine did not find (or found in a form no
    parser reads) is looked for in the whole message, with the other entities' spans blanked
    so that, for example, a tagged date "15-12" cannot come back as an amount.
    """
    by_entity: dict[str, list[dict]] = {name: [] for name in _ENTITY_ORDER}
    for span in spans:
        if span.get("entity") in by_entity:
            by_entity[span["entity"]].append(span)
    result: dict[str, object] = {}
    for entity in _ENTITY_ORDER:
        value = next((v for span in by_entity[entity]
                      if (v := _parse_span(entity, text, span, lang, today, default_currency))
                      is not None), None)
        if value is None:
            others = [offsets for name, group in by_entity.items() if name != entity
                      for span in group if (offsets := _offsets(text, span))]
            value = _parse_text(entity, _mask(text, others), lang, today, default_currency)
        if value is not None:
            result[entity] = value
    return Entities(**result)  # type: ignore[typeddict-item]
