from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.debtors import (
    AGE_BANDS,
    COLUMNS,
    Debtor,
    FieldError,
    age_band_for,
    parse_amount_minor,
    parse_bool,
    parse_debtor,
)

AS_OF = date(2026, 11, 22)


def good_row(**changes: str) -> dict[str, str]:
    row = {
        "id": "D-NL-900",
        "first_name": "Sanne",
        "last_name": "de Vries",
        "phone": "06 12345001",
        "email": "Sanne.deVries@Example.ORG",
        "language": "nl",
        "country": "nl",
        "date_of_birth": "1991-03-10",
        "postcode": " 1012   ab ",
        "reference": "PLE-2026-80833",
        "creditor": "Polderlicht Energie",
        "balance": "612.35",
        "currency": "eur",
        "due_date": "2026-11-17",
        "age_band": "",
        "product": "Energy",
        "payment_history": "none",
        "preferred_channel": "WhatsApp",
        "whatsapp_opt_in": "true",
        "segment": "early",
    }
    row.update(changes)
    return row


def parse_ok(**changes: str) -> Debtor:
    result = parse_debtor(good_row(**changes), as_of=AS_OF, row=7)
    assert isinstance(result, Debtor), result
    return result


def parse_bad(**changes: str) -> list[FieldError]:
    result = parse_debtor(good_row(**changes), as_of=AS_OF, row=7)
    assert isinstance(result, list), f"expected errors, got {result}"
    return result


def test_good_row_is_normalised() -> None:
    d = parse_ok()
    assert d.id == "D-NL-900"
    assert d.phone == "+31612345001"
    assert d.email == "Sanne.deVries@example.org"  # domain lower-cased, local part kept
    assert d.language == "nl" and d.country == "NL" and d.currency == "EUR"
    assert d.postcode == "1012 AB"
    assert d.balance_minor == 61235
    assert d.balance == Decimal("612.35")
    assert d.age_band == "26-40"  # derived: 35 on AS_OF
    assert d.product == "energy"
    assert d.preferred_channel == "whatsapp" and d.whatsapp_opt_in is True
    assert d.segment == "early"
    assert d.days_past_due(AS_OF) == 5
    assert d.days_past_due(date(2026, 11, 1)) == 0  # not yet due -> 0
    assert d.addresses() == {"phone": "+31612345001", "email": "sanne.devries@example.org"}


def test_json_round_trip() -> None:
    d = parse_ok()
    text = d.to_json()
    assert '"balance_minor":61235' in text and '"due_date":"2026-11-17"' in text
    assert Debtor.from_json(text) == d
    assert Debtor.from_json(text.encode()) == d
    assert Debtor.from_dict(d.to_dict()) == d
    assert d.to_json() == Debtor.from_json(text).to_json()  # deterministic


def test_from_dict_ignores_unknown_keys_and_rejects_missing() -> None:
    data = parse_ok().to_dict()
    assert Debtor.from_dict({**data, "future_field": 1}) == parse_ok()
    del data["currency"]
    with pytest.raises(ValueError, match="currency"):
        Debtor.from_dict(data)


def test_phone_is_optional_when_email_given_and_vice_versa() -> None:
    d = parse_ok(phone="", preferred_channel="email")
    assert d.phone is None
    d = parse_ok(email="  ", preferred_channel="sms")
    assert d.email is None


def test_international_number_from_another_country_is_accepted() -> None:
    assert parse_ok(phone="+49 1512 3456001").phone == "+4915123456001"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("id", "", "is empty"),
        ("id", "D NL 1", "may only contain"),
        ("id", "D/1", "may only contain"),
        ("first_name", "  ", "is empty"),
        ("last_name", "x" * 101, "at most 100"),
        ("first_name", "Sanne\x00", "control characters"),
        ("phone", "+31 6 123", "'+31 6 123' is not a valid number for NL"),
        ("phone", "call me", "is not a phone number"),
        ("email", "sanne@", "is not a valid email address"),
        ("email", "sanne.example.org", "is not a valid email address"),
        ("language", "fr", "'fr' is not one of: en, nl, de"),
        ("language", "", "is empty"),
        ("country", "XX", "is not a two-letter country code"),
        ("country", "NLD", "is not a two-letter country code"),
        ("country", "EU", "is not a two-letter country code"),
        ("date_of_birth", "10-03-1991", "YYYY-MM-DD"),
        ("date_of_birth", "1991-02-30", "not a real calendar date"),
        ("date_of_birth", "2027-01-01", "in the future"),
        ("date_of_birth", "2010-01-01", "under 18"),
        ("date_of_birth", "1890-01-01", "check the year"),
        ("postcode", "", "is empty"),
        ("postcode", "12345", "not a postcode for NL"),
        ("postcode", "#1", "is not a postcode"),
        ("reference", "", "is empty"),
        ("creditor", "", "is empty"),
        ("balance", "1.234,56", "uses a comma"),
        ("balance", "612,35", "uses a comma"),
        ("balance", "12.345", "more than 2 decimals"),
        ("balance", "-10.00", "negative"),
        ("balance", "EUR 10", "is not an amount"),
        ("balance", "1e3", "is not an amount"),
        ("balance", "", "is empty"),
        ("currency", "EURO", "not a known currency"),
        ("currency", "", "is empty"),
        ("due_date", "2026/11/17", "YYYY-MM-DD"),
        ("due_date", "2026-12-01", "not overdue yet"),
        ("age_band", "40-50", "is not one of"),
        ("product", "", "is empty"),
        ("payment_history", "bad", "is not one of: good, late, none, broken_promise"),
        ("preferred_channel", "fax", "is not one of: sms, whatsapp, email"),
        ("whatsapp_opt_in", "maybe", "is not yes or no"),
        ("segment", "s" * 41, "at most 40"),
    ],
)
def test_bad_values_name_row_field_and_value(field: str, value: str, expected: str) -> None:
    # a national phone number needs a valid country to be read; keep the error single
    extra = {"phone": "+31 6 12345001"} if field == "country" else {}
    errors = parse_bad(**{field: value}, **extra)
    assert [e.field for e in errors] == [field], errors
    (error,) = errors
    assert error.row == 7
    assert error.message.startswith(f"{field}: ")
    assert expected in error.message
    assert str(error).startswith(f"row 7: {field}: ")


def test_all_errors_of_a_row_are_reported_together() -> None:
    errors = parse_bad(language="fr", balance="abc", due_date="", currency="XYZ")
    assert {e.field for e in errors} == {"language", "balance", "due_date", "currency"}


def test_phone_or_email_required() -> None:
    errors = parse_bad(phone="", email="", preferred_channel="sms")
    fields = [e.field for e in errors]
    assert "phone" in fields
    assert any("phone number or an email address" in e.message for e in errors)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"phone": "", "preferred_channel": "sms"}, "is sms, but the phone number is empty"),
        ({"phone": "", "preferred_channel": "whatsapp"}, "is whatsapp, but the phone number is empty"),
        ({"email": "", "preferred_channel": "email"}, "is email, but the email address is empty"),
        ({"phone": "020 123 4567", "preferred_channel": "sms"}, "is not a mobile number"),
    ],
)
def test_preferred_channel_needs_its_address(changes: dict[str, str], expected: str) -> None:
    errors = parse_bad(**changes)
    assert [e.field for e in errors] == ["preferred_channel"]
    assert expected in errors[0].message


def test_phone_without_country_cannot_be_read() -> None:
    errors = parse_bad(country="", phone="06 12345001")
    assert {e.field for e in errors} == {"country", "phone"}


def test_balance_decimals_follow_the_currency() -> None:
    assert parse_ok(balance="1200", currency="JPY").balance_minor == 1200
    assert parse_ok(balance="12.5").balance_minor == 1250
    assert parse_ok(balance="12.50").balance_minor == 1250
    assert parse_ok(balance="12.500").balance_minor == 1250  # trailing zero is harmless
    assert parse_ok(balance="0").balance_minor == 0
    assert parse_ok(balance="1.234", currency="BHD").balance_minor == 1234
    errors = parse_bad(balance="1200.5", currency="JPY")
    assert "JPY amounts are whole numbers" in errors[0].message
    assert parse_ok(balance="1200", currency="JPY").balance == Decimal(1200)


def test_json_values_balance_number_and_boolean_opt_in() -> None:
    raw: dict[str, object] = dict(good_row())
    raw["balance"] = Decimal("612.35")
    raw["whatsapp_opt_in"] = False
    raw["segment"] = None
    d = parse_debtor(raw, as_of=AS_OF, row=1)
    assert isinstance(d, Debtor)
    assert d.balance_minor == 61235 and d.whatsapp_opt_in is False and d.segment is None
    raw["balance"] = 612.35  # a binary float: refused, never guessed
    errors = parse_debtor(raw, as_of=AS_OF, row=1)
    assert isinstance(errors, list) and errors[0].field == "balance"
    raw["balance"] = "612.35"
    raw["postcode"] = 1012
    errors = parse_debtor(raw, as_of=AS_OF, row=1)
    assert isinstance(errors, list) and errors[0].field == "postcode"


@pytest.mark.parametrize(
    ("dob", "band"),
    [
        ("2008-11-22", "18-25"),  # 18 today
        ("2000-11-23", "18-25"),  # 25
        ("2000-11-22", "26-40"),  # 26 today
        ("1985-11-23", "26-40"),  # 40
        ("1985-11-22", "41-65"),  # 41
        ("1961-11-23", "41-65"),  # 64
        ("1961-11-22", "65+"),  # 65 today
        ("1930-01-01", "65+"),
    ],
)
def test_age_band_derived_from_date_of_birth(dob: str, band: str) -> None:
    assert age_band_for(date.fromisoformat(dob), AS_OF) == band
    assert parse_ok(date_of_birth=dob, age_band="").age_band == band


def test_given_age_band_is_kept() -> None:
    assert parse_ok(age_band="41-65").age_band == "41-65"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("yes", True), ("1", True), ("ja", True),
     ("false", False), ("No", False), ("0", False), ("", False), (None, False),
     (True, True), (False, False), ("maybe", None), (2, None)],
)
def test_parse_bool(value: object, expected: bool | None) -> None:
    assert parse_bool(value) is expected


@pytest.mark.parametrize(
    ("country", "postcode", "normalised"),
    [("GB", "sw1a 1aa", "SW1A 1AA"), ("GB", "M1 1AE", "M1 1AE"), ("IE", "d02  x285", "D02 X285"),
     ("DE", "01067", "01067"), ("NL", "1012ab", "1012AB"), ("FR", "75001", "75001")],
)
def test_postcodes_per_country(country: str, postcode: str, normalised: str) -> None:
    phone = {"GB": "+44 7400 123001", "IE": "+353 85 012 3001", "DE": "+49 1512 3456001"}.get(
        country, "+31 6 12345001"
    )
    assert parse_ok(country=country, postcode=postcode, phone=phone).postcode == normalised


def test_columns_cover_every_debtor_field_but_money_and_derived() -> None:
    from dataclasses import fields

    names = {f.name for f in fields(Debtor)}
    assert names - set(COLUMNS) == {"balance_minor"}
    assert set(COLUMNS) - names == {"balance"}
    assert set(AGE_BANDS) == {"18-25", "26-40", "41-65", "65+"}


@given(st.integers(min_value=0, max_value=10**13))
def test_amount_text_round_trips_through_minor_units(minor: int) -> None:
    text = f"{Decimal(minor).scaleb(-2):f}"
    assert parse_amount_minor(text, "EUR") == (minor, None)
