"""Tests for bot.core.entities: amount, date, installments and frequency normalisation."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.entities import FREQUENCIES as FREQUENCIES_NAMED
from bot.core.entities import (
    Amount,
    normalise_entities,
    parse_amount,
    parse_date,
    parse_frequency,
    parse_installments,
)

TODAY = date(2026, 11, 18)  # a Wednesday


# ---------------------------------------------------------------------------------------------
# Amount
# ---------------------------------------------------------------------------------------------

AMOUNTS = [
    # text, lang, default currency, expected value, expected currency
    ("€1.234,56", "nl", None, "1234.56", "EUR"),
    ("50 euro", "en", None, "50", "EUR"),
    ("fünfzig Euro", "de", None, "50", "EUR"),
    ("£25", "en", None, "25", "GBP"),
    ("75,-", "nl", "EUR", "75", "EUR"),
    ("$1,234.56", "en", None, "1234.56", "USD"),
    ("1.234", "de", "EUR", "1234", "EUR"),
    ("1.234", "nl", "EUR", "1234", "EUR"),
    ("20 quid", "en", None, "20", "GBP"),
    ("vijftig euro", "nl", None, "50", "EUR"),
    # more formats
    ("€ 1.234,56", "nl", None, "1234.56", "EUR"),
    ("1.234,56 €", "de", None, "1234.56", "EUR"),
    ("1.234,56\u00a0€", "de", None, "1234.56", "EUR"),
    ("EUR 50", "en", None, "50", "EUR"),
    ("50 EUR", "de", None, "50", "EUR"),
    ("50€", "de", None, "50", "EUR"),
    ("50,- euro", "nl", None, "50", "EUR"),
    ("€ 75,-", "nl", None, "75", "EUR"),
    ("12,50 euro", "nl", None, "12.50", "EUR"),
    ("£1,234.56", "en", None, "1234.56", "GBP"),
    ("US$ 1.234,56", "nl", None, "1234.56", "USD"),
    ("100 dollars", "en", None, "100", "USD"),
    ("50 pond", "nl", None, "50", "GBP"),
    ("50 Pfund", "de", None, "50", "GBP"),
    ("CHF 30", "de", None, "30", "CHF"),
    ("20 bucks", "en", "USD", "20", "USD"),  # money, but which money the word does not say
    ("20 bucks", "en", None, "20", None),
    ("1.234.567,89 €", "de", None, "1234567.89", "EUR"),
    ("£0.05", "en", None, "0.05", "GBP"),
    # spelled numbers
    ("tweehonderdvijftig euro", "nl", None, "250", "EUR"),
    ("zweihundertfünfzig Euro", "de", None, "250", "EUR"),
    ("one hundred and fifty pounds", "en", None, "150", "GBP"),
    ("twenty quid", "en", None, "20", "GBP"),
    ("zwei Euro", "de", None, "2", "EUR"),
    ("twee euro", "nl", None, "2", "EUR"),
    ("tweeentwintig euro", "nl", None, "22", "EUR"),  # diaeresis dropped, as in SMS
    ("funfzig Euro", "de", None, "50", "EUR"),
    ("vijftien euro vijftig", "nl", None, "15.50", "EUR"),
    ("one pound fifty", "en", None, "1.50", "GBP"),
    # amounts inside a sentence
    ("I can pay 50 euro on friday", "en", None, "50", "EUR"),
    ("ik kan 50 betalen", "nl", "EUR", "50", "EUR"),
    ("Ich kann 12,50 € am 1.12. zahlen", "de", None, "12.50", "EUR"),
    ("I can pay 50 on 15-12", "en", "GBP", "50", "GBP"),
    ("can I do 3 payments of £40", "en", None, "40", "GBP"),
    ("ik kan 6x 50 euro betalen", "nl", None, "50", "EUR"),
    ("my reference is 12345678, I can pay 30", "en", "GBP", "30", "GBP"),
    ("how about 40?", "en", "GBP", "40", "GBP"),
    ("50", "en", "GBP", "50", "GBP"),
    ("50?", "nl", "EUR", "50", "EUR"),
    ("50", "en", None, "50", None),
]


@pytest.mark.parametrize(("text", "lang", "default", "value", "currency"), AMOUNTS)
def test_parse_amount(text: str, lang: str, default: str | None, value: str,
                      currency: str | None) -> None:
    amount = parse_amount(text, lang, default)
    assert amount == Amount(Decimal(value), currency)
    assert str(amount.value) == value  # exact digits, trailing zeros included


NOT_AMOUNTS = [
    ("15-12", "en"), ("15.12.", "de"), ("15/12", "en"), ("the 28th", "en"), ("am 25.", "de"),
    ("3 payments", "en"), ("in drie termijnen", "nl"), ("zwei Raten", "de"), ("6x", "en"),
    ("every 2 weeks", "en"), ("alle 14 Tage", "de"), ("om de 2 weken", "nl"),
    ("in 2 weeks", "en"), ("over 3 dagen", "nl"), ("um 10 Uhr", "de"), ("at 5pm", "en"),
    ("I have 2 kids", "en"), ("ich habe 3 Kinder", "de"), ("call me at 10", "en"),
    ("my reference is 12345678", "en"), ("+31 6 12345678", "nl"), ("1 december", "en"),
    ("am 1. Dezember", "de"), ("20%", "en"), ("who are you?", "en"), ("", "en"),
    ("I lost my job in 2025 and my wife is ill", "en"),
    ("I have 2 jobs and still can't pay", "en"),  # the paying word is too far from the number
    ("my daughter is 3 and I can not pay", "en"),
]


@pytest.mark.parametrize(("text", "lang"), NOT_AMOUNTS)
def test_parse_amount_ignores_numbers_that_are_not_money(text: str, lang: str) -> None:
    assert parse_amount(text, lang, "EUR") is None


def test_amount_to_json_keeps_exactness() -> None:
    assert Amount(Decimal("1234.50"), "EUR").to_json() == {"value": "1234.50", "currency": "EUR"}
    assert Amount(Decimal("1E+3"), None).to_json() == {"value": "1000", "currency": None}


def test_amount_refuses_floats() -> None:
    with pytest.raises(TypeError):
        Amount(12.5, "EUR")  # type: ignore[arg-type]


def test_amount_is_frozen() -> None:
    amount = Amount(Decimal("1"), "EUR")
    with pytest.raises(AttributeError):
        amount.value = Decimal("2")  # type: ignore[misc]


LOCALE_LANG = {"en_GB": "en", "nl_NL": "nl", "de_DE": "de"}


@settings(max_examples=300, deadline=None)
@given(
    value=st.decimals(min_value=0, max_value=Decimal("9999999.99"), places=2,
                      allow_nan=False, allow_infinity=False),
    locale=st.sampled_from(sorted(LOCALE_LANG)),
    currency=st.sampled_from(["EUR", "GBP", "USD"]),
)
def test_babel_formatted_amounts_round_trip(value: Decimal, locale: str, currency: str) -> None:
    text = format_currency(value, currency, locale=locale)
    amount = parse_amount(text, LOCALE_LANG[locale])
    assert amount is not None, text
    assert amount.value == value, text
    assert amount.currency == currency, text


# ---------------------------------------------------------------------------------------------
# Date
# ---------------------------------------------------------------------------------------------

DATES = [
    ("friday", "en", date(2026, 11, 20)),
    ("the 28th", "en", date(2026, 11, 28)),
    ("volgende week maandag", "nl", date(2026, 11, 23)),
    ("am 25.", "de", date(2026, 11, 25)),
    ("end of the month", "en", date(2026, 11, 30)),
    ("eind van de maand", "nl", date(2026, 11, 30)),
    ("ende des monats", "de", date(2026, 11, 30)),
    ("tomorrow", "en", date(2026, 11, 19)),
    ("morgen", "nl", date(2026, 11, 19)),
    ("morgen", "de", date(2026, 11, 19)),
    ("15/12", "en", date(2026, 12, 15)),
    ("15-12", "nl", date(2026, 12, 15)),
    ("15.12.", "de", date(2026, 12, 15)),
    ("the 3rd", "en", date(2026, 12, 3)),  # already past this month
    # weekdays and relative days
    ("vrijdag", "nl", date(2026, 11, 20)),
    ("Freitag", "de", date(2026, 11, 20)),
    ("next friday", "en", date(2026, 11, 20)),
    ("nächsten Freitag", "de", date(2026, 11, 20)),
    ("volgende vrijdag", "nl", date(2026, 11, 20)),
    ("today", "en", date(2026, 11, 18)),
    ("vandaag", "nl", date(2026, 11, 18)),
    ("heute", "de", date(2026, 11, 18)),
    ("übermorgen", "de", date(2026, 11, 20)),
    ("overmorgen", "nl", date(2026, 11, 20)),
    ("the day after tomorrow", "en", date(2026, 11, 20)),
    ("in 2 weeks", "en", date(2026, 12, 2)),
    ("over twee weken", "nl", date(2026, 12, 2)),
    ("in zwei Wochen", "de", date(2026, 12, 2)),
    ("I paid yesterday", "en", date(2026, 11, 17)),  # a past reference stays in the past
    ("ich habe gestern bezahlt", "de", date(2026, 11, 17)),
    # next week + weekday, both orders
    ("maandag volgende week", "nl", date(2026, 11, 23)),
    ("next week monday", "en", date(2026, 11, 23)),
    ("monday next week", "en", date(2026, 11, 23)),
    ("nächste Woche Montag", "de", date(2026, 11, 23)),
    ("Montag nächste Woche", "de", date(2026, 11, 23)),
    ("volgende week vrijdag", "nl", date(2026, 11, 27)),
    # day of the month
    ("the 18th", "en", date(2026, 11, 18)),  # today counts
    ("the 31st", "en", date(2026, 12, 31)),  # November has no 31st
    ("am 31.", "de", date(2026, 12, 31)),
    ("de 28e", "nl", date(2026, 11, 28)),
    ("op de 28ste", "nl", date(2026, 11, 28)),
    ("on the 28", "en", date(2026, 11, 28)),
    ("I get paid on the 25th", "en", date(2026, 11, 25)),
    ("Ich zahle am 25.", "de", date(2026, 11, 25)),
    ("bis zum 5.", "de", date(2026, 12, 5)),
    ("the twenty eighth", "en", date(2026, 11, 28)),
    ("am fünfundzwanzigsten", "de", date(2026, 11, 25)),
    ("op de achtentwintigste", "nl", date(2026, 11, 28)),
    # explicit dates
    ("1 december", "en", date(2026, 12, 1)),
    ("on the 1st of december", "en", date(2026, 12, 1)),
    ("kan ik op 1 december betalen", "nl", date(2026, 12, 1)),
    ("kann ich am 1. Dezember zahlen", "de", date(2026, 12, 1)),
    ("20. Dezember", "de", date(2026, 12, 20)),
    ("15/10", "en", date(2027, 10, 15)),  # no year and already past: next year
    ("05/12", "en", date(2026, 12, 5)),  # day first, as in the UK
    ("15-12-2027", "nl", date(2027, 12, 15)),
    ("01.11.2026", "de", date(2026, 11, 1)),  # an explicit year is kept, even in the past
    ("2026-12-24", "en", date(2026, 12, 24)),
    # end of month variants
    ("at the end of the month", "en", date(2026, 11, 30)),
    ("end of next month", "en", date(2026, 12, 31)),
    ("end of december", "en", date(2026, 12, 31)),
    ("end of october", "en", date(2027, 10, 31)),
    ("aan het einde van de maand", "nl", date(2026, 11, 30)),
    ("eind deze maand", "nl", date(2026, 11, 30)),
    ("eind volgende maand", "nl", date(2026, 12, 31)),
    ("eind december", "nl", date(2026, 12, 31)),
    ("zum Monatsende", "de", date(2026, 11, 30)),
    ("Ende nächsten Monats", "de", date(2026, 12, 31)),
    ("Ende November", "de", date(2026, 11, 30)),
    ("ultimo", "nl", date(2026, 11, 30)),
    # dates next to other entities
    ("I can pay 50 euro on friday", "en", date(2026, 11, 20)),
    ("ik betaal 50 euro op vrijdag", "nl", date(2026, 11, 20)),
    ("ich zahle 50 Euro am Freitag", "de", date(2026, 11, 20)),
    ("I can pay 12.50 on friday", "en", date(2026, 11, 20)),
    ("Ich kann 12,50 € am 1.12. zahlen", "de", date(2026, 12, 1)),
    ("3 payments of 50 starting friday", "en", date(2026, 11, 20)),
    ("€ 75,- op de 28e", "nl", date(2026, 11, 28)),
    ("Ich kann ab dem 15. monatlich 50 € zahlen", "de", date(2026, 12, 15)),
    ("pay £150 now and the rest in 2 weeks", "en", date(2026, 12, 2)),
    ("I'll pay half now and half next friday", "en", date(2026, 11, 20)),
    ("binnen een week", "nl", date(2026, 11, 25)),
    ("in einer Woche", "de", date(2026, 11, 25)),
    ("I can pay in 3 months", "en", date(2027, 2, 18)),
    ("ik betaal elke maand 25 euro vanaf volgende week vrijdag", "nl", date(2026, 11, 27)),
]


@pytest.mark.parametrize(("text", "lang", "expected"), DATES)
def test_parse_date(text: str, lang: str, expected: date) -> None:
    assert parse_date(text, lang, TODAY) == expected


NOT_DATES = [
    ("50 euro", "en"), ("£25", "en"), ("€1.234,56", "nl"), ("1.234", "de"), ("75,-", "nl"),
    ("fünfzig Euro", "de"), ("3 payments", "en"), ("in drie termijnen", "nl"), ("6x", "en"),
    ("50 a month", "en"), ("per maand", "nl"), ("im Monat", "de"),
    ("I may pay", "en"),  # "may" the verb, not the month
    ("in december", "en"),  # a month without a day is no promise
    ("So geht das nicht", "de"), ("ich zahle Mo", "de"),  # abbreviations that are words
    ("I cannot pay right now", "en"), ("ik kan nu niet betalen", "nl"),
    ("ich kann jetzt nicht zahlen", "de"), ("I will pay at 5pm", "en"), ("om 10 uur", "nl"),
    ("um 10 Uhr", "de"), ("the 3rd payment", "en"), ("de 2e termijn", "nl"),
    ("31/02", "en"), ("12.50", "en"), ("I pay 1.5k", "en"), ("I can pay 20% now", "en"),
    ("I could pay 50 a week for 10 weeks", "en"), ("who are you?", "en"), ("wie ben jij", "nl"),
    ("das ist nicht meine Schuld", "de"), ("", "en"), ("I can pay 75", "en"),
    ("I'm 45 years old", "en"),  # a duration without "in" is no date
    ("Ich bin seit 3 Monaten arbeitslos", "de"), ("Sorry I was in hospital for 2 weeks", "en"),
    ("call me back after 6", "en"), ("my number is 07700 900123", "en"),
]


@pytest.mark.parametrize(("text", "lang"), NOT_DATES)
def test_parse_date_finds_no_date(text: str, lang: str) -> None:
    assert parse_date(text, lang, TODAY) is None


@pytest.mark.parametrize("text", ["friday", "the 28th", "15-12", "end of the month", "tomorrow"])
def test_parse_date_returns_a_date(text: str) -> None:
    assert type(parse_date(text, "en", TODAY)) is date  # a date, never a datetime


def test_weekday_on_the_same_weekday_is_not_in_the_past() -> None:
    # TODAY is a Wednesday; dateparser picks next week's, which is still not in the past.
    assert parse_date("wednesday", "en", TODAY) >= TODAY


@settings(max_examples=200, deadline=None)
@given(today=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
       day=st.integers(min_value=1, max_value=31))
def test_day_of_month_is_the_next_such_day(today: date, day: int) -> None:
    result = parse_date(f"the {day}{_suffix(day)}", "en", today)
    assert result is not None and result.day == day and result >= today
    # No earlier date has that day of the month.
    assert all((today + timedelta(days=n)).day != day for n in range((result - today).days))


@settings(max_examples=100, deadline=None)
@given(today=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
       name=st.sampled_from([("friday", "en"), ("maandag", "nl"), ("Sonntag", "de"),
                             ("tuesday", "en"), ("woensdag", "nl"), ("Samstag", "de")]))
def test_weekday_names_are_never_in_the_past(today: date, name: tuple[str, str]) -> None:
    result = parse_date(name[0], name[1], today)
    assert result is not None and today <= result <= today + timedelta(days=7)


@settings(max_examples=100, deadline=None)
@given(today=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
       phrase=st.sampled_from([("end of the month", "en"), ("eind van de maand", "nl"),
                               ("Ende des Monats", "de")]))
def test_end_of_month_is_the_last_day_of_this_month(today: date, phrase: tuple[str, str]) -> None:
    expected = today.replace(day=calendar.monthrange(today.year, today.month)[1])
    assert parse_date(phrase[0], phrase[1], today) == expected


def _suffix(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


# ---------------------------------------------------------------------------------------------
# Installments
# ---------------------------------------------------------------------------------------------

INSTALLMENTS = [
    ("3 payments", "en", 3),
    ("in drie termijnen", "nl", 3),
    ("zwei Raten", "de", 2),
    ("6x", "en", 6),
    ("two payments", "en", 2),
    ("twee termijnen", "nl", 2),
    ("in 3 Monatsraten", "de", 3),
    ("3 monthly payments of 50", "en", 3),
    ("can I pay in 4 instalments", "en", 4),
    ("in 12 installments", "en", 12),
    ("ik kan 6x 50 euro betalen", "nl", 6),
    ("in 5 keer betalen", "nl", 5),
    ("in 3 delen", "nl", 3),
    ("ich zahle in 3 Raten à 100 Euro", "de", 3),
    ("drei monatliche Raten", "de", 3),
    ("kann ich 4 mal zahlen", "de", 4),
    ("3 x 50 euro", "nl", 3),
    ("in een keer", "nl", 1),
]


@pytest.mark.parametrize(("text", "lang", "expected"), INSTALLMENTS)
def test_parse_installments(text: str, lang: str, expected: int) -> None:
    assert parse_installments(text, lang) == expected


NOT_INSTALLMENTS = [
    ("I called 3 times", "en"),  # "times" needs a payment context
    ("ik heb al 3 keer gebeld", "nl"), ("ich habe 3 mal angerufen", "de"),
    ("2x per maand", "nl"),  # a frequency, not two payments
    ("zweimal im Monat", "de"),
    ("I missed 2 payments", "en"), ("ik heb 2 betalingen gemist", "nl"),
    ("the 3rd payment", "en"), ("50 euro", "en"), ("in 3 months", "en"), ("Ratenzahlung", "de"),
    ("0 payments", "en"), ("who are you?", "en"),
]


@pytest.mark.parametrize(("text", "lang"), NOT_INSTALLMENTS)
def test_parse_installments_finds_none(text: str, lang: str) -> None:
    assert parse_installments(text, lang) is None


# ---------------------------------------------------------------------------------------------
# Frequency
# ---------------------------------------------------------------------------------------------

FREQUENCIES = [
    ("a month", "en", "monthly"), ("per maand", "nl", "monthly"), ("monatlich", "de", "monthly"),
    ("im monat", "de", "monthly"),
    ("weekly", "en", "weekly"), ("per week", "nl", "weekly"), ("wöchentlich", "de", "weekly"),
    ("every 2 weeks", "en", "fortnightly"), ("alle zwei wochen", "de", "fortnightly"),
    # Decision: Dutch "om de week" is every other week, as "om de dag" is every other day.
    ("om de week", "nl", "fortnightly"),
    ("monthly", "en", "monthly"), ("every month", "en", "monthly"),
    ("50 per month", "en", "monthly"),
    ("I can pay 50 a month", "en", "monthly"), ("once a month", "en", "monthly"),
    ("maandelijks", "nl", "monthly"), ("elke maand", "nl", "monthly"),
    ("50 euro in de maand", "nl", "monthly"), ("jeden Monat", "de", "monthly"),
    ("pro Monat", "de", "monthly"), ("50 Euro den Monat", "de", "monthly"),
    ("3 monatliche Raten", "de", "monthly"),
    ("every week", "en", "weekly"), ("£20 a week", "en", "weekly"), ("wekelijks", "nl", "weekly"),
    ("elke week", "nl", "weekly"), ("50 euro in de week", "nl", "weekly"),
    ("jede Woche", "de", "weekly"), ("pro Woche", "de", "weekly"), ("woechentlich", "de", "weekly"),
    ("fortnightly", "en", "fortnightly"), ("every two weeks", "en", "fortnightly"),
    ("every other week", "en", "fortnightly"), ("bi-weekly", "en", "fortnightly"),
    ("twice a month", "en", "fortnightly"), ("om de twee weken", "nl", "fortnightly"),
    ("om de andere week", "nl", "fortnightly"), ("tweewekelijks", "nl", "fortnightly"),
    ("elke 2 weken", "nl", "fortnightly"), ("2x per maand", "nl", "fortnightly"),
    ("alle 14 Tage", "de", "fortnightly"), ("alle vierzehn Tage", "de", "fortnightly"),
    ("zweiwöchentlich", "de", "fortnightly"), ("14-tägig", "de", "fortnightly"),
    ("zweimal im Monat", "de", "fortnightly"),
]


@pytest.mark.parametrize(("text", "lang", "expected"), FREQUENCIES)
def test_parse_frequency(text: str, lang: str, expected: str) -> None:
    assert expected in FREQUENCIES_NAMED
    assert parse_frequency(text, lang) == expected


NOT_FREQUENCIES = [
    ("in a month", "en"), ("within a week", "en"), ("I've been ill for a week", "en"),
    ("a week ago", "en"), ("in de week kan ik niet", "nl"), ("in der Woche", "de"),
    ("im Monat Dezember", "de"), ("every 4 weeks", "en"), ("quarterly", "en"),
    ("every other month", "en"), ("om de maand", "nl"), ("jeden zweiten Monat", "de"),
    ("next month", "en"), ("50 euro", "nl"), ("", "de"),
]


@pytest.mark.parametrize(("text", "lang"), NOT_FREQUENCIES)
def test_parse_frequency_finds_none(text: str, lang: str) -> None:
    assert parse_frequency(text, lang) is None


# ---------------------------------------------------------------------------------------------
# normalise_entities
# ---------------------------------------------------------------------------------------------

def _span(text: str, entity: str, part: str, value: str | None = None) -> dict:
    start = text.index(part)
    return {"entity": entity, "value": value or part, "start": start, "end": start + len(part)}


def test_whole_text_fallback_finds_every_entity() -> None:
    text = "can I do 3 payments of £40 every 2 weeks starting the 28th?"
    assert normalise_entities(text, "en", [], TODAY) == {
        "amount": Amount(Decimal("40"), "GBP"),
        "date": date(2026, 11, 28),
        "installments": 3,
        "frequency": "fortnightly",
    }


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("Ik kan 50 euro per maand betalen vanaf 1 december", "nl",
     {"amount": Amount(Decimal("50"), "EUR"), "date": date(2026, 12, 1), "frequency": "monthly"}),
    ("Ich zahle 3 Raten à 100 Euro, monatlich, ab dem 1.", "de",
     {"amount": Amount(Decimal("100"), "EUR"), "date": date(2026, 12, 1), "installments": 3,
      "frequency": "monthly"}),
    ("I can pay 50 on 15-12", "en",
     {"amount": Amount(Decimal("50"), "GBP"), "date": date(2026, 12, 15)}),
    ("ik betaal 20 per week", "nl",
     {"amount": Amount(Decimal("20"), "GBP"), "frequency": "weekly"}),
    ("Ich überweise 250,- am 25.", "de",
     {"amount": Amount(Decimal("250"), "GBP"), "date": date(2026, 11, 25)}),
    ("ik kan 2x per maand 50 euro betalen", "nl",
     {"amount": Amount(Decimal("50"), "EUR"), "frequency": "fortnightly"}),
    ("I could pay 50 a week for 10 weeks", "en",
     {"amount": Amount(Decimal("50"), "GBP"), "frequency": "weekly"}),
    ("3 payments", "en", {"installments": 3}),
    ("15-12", "nl", {"date": date(2026, 12, 15)}),
    ("I have 2 kids and lost my job", "en", {}),
    ("who are you?", "en", {}),
    ("STOP", "en", {}),
])
def test_normalise_entities_from_whole_text(text: str, lang: str, expected: dict) -> None:
    assert normalise_entities(text, lang, [], TODAY, default_currency="GBP") == expected


def test_engine_spans_come_first() -> None:
    text = "I can pay 50 euro on friday or 60 euro on the 28th"
    spans = [_span(text, "amount", "60 euro"), _span(text, "date", "the 28th")]
    assert normalise_entities(text, "en", spans, TODAY) == {
        "amount": Amount(Decimal("60"), "EUR"),
        "date": date(2026, 11, 28),
    }


def test_amount_span_takes_the_adjacent_currency() -> None:
    text = "I can pay 50 euro on friday"
    spans = [_span(text, "amount", "50")]
    assert normalise_entities(text, "en", spans, TODAY, "GBP")["amount"] == Amount(
        Decimal("50"), "EUR")


def test_amount_span_without_currency_uses_the_default() -> None:
    text = "ik kan 50 missen"
    spans = [_span(text, "amount", "50")]
    assert normalise_entities(text, "nl", spans, TODAY, "EUR") == {
        "amount": Amount(Decimal("50"), "EUR")}


def test_a_tagged_date_is_not_taken_for_an_amount() -> None:
    text = "I will pay on 15-12"
    spans = [_span(text, "date", "15-12")]
    assert normalise_entities(text, "en", spans, TODAY, "GBP") == {"date": date(2026, 12, 15)}


def test_a_tagged_amount_is_not_taken_for_a_date() -> None:
    # The engine tagged "25" as money (it is a reply to "how much?"), so no "25th" date.
    text = "25 on monday"
    spans = [_span(text, "amount", "25")]
    assert normalise_entities(text, "en", spans, TODAY, "GBP") == {
        "amount": Amount(Decimal("25"), "GBP"), "date": date(2026, 11, 23)}


def test_bare_count_and_day_spans_are_trusted() -> None:
    text = "in 3, on the 28"
    spans = [_span(text, "installments", "3"), _span(text, "date", "28")]
    assert normalise_entities(text, "en", spans, TODAY) == {
        "installments": 3, "date": date(2026, 11, 28)}


def test_synonym_value_is_used_when_the_span_text_does_not_parse() -> None:
    text = "elke vier weken"  # the engine mapped it to a synonym
    spans = [{"entity": "frequency", "value": "monthly", "start": 0, "end": len(text)}]
    assert normalise_entities(text, "nl", spans, TODAY) == {"frequency": "monthly"}


def test_unparseable_span_falls_back_to_whole_text() -> None:
    text = "the 3rd please, 40 quid"
    spans = [{"entity": "amount", "value": "please", "start": 9, "end": 15}]
    assert normalise_entities(text, "en", spans, TODAY)["amount"] == Amount(Decimal("40"), "GBP")


def test_unknown_entities_are_ignored() -> None:
    text = "my name is Jan"
    spans = [{"entity": "name", "value": "Jan", "start": 11, "end": 14}]
    assert normalise_entities(text, "en", spans, TODAY) == {}


def test_unsupported_language_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_amount("50 euro", "fr")
