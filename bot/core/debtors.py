"""Debtors: the record a creditor hands over, and the validation of one raw record.

Pure code: no I/O, no clock (every date-dependent check takes ``as_of``).

``parse_debtor(raw, as_of=..., row=...)`` turns one raw record (a CSV row or a JSON
object: column name -> value) into a :class:`Debtor`, or returns the list of
:class:`FieldError` explaining, in words a non-programmer understands, what is wrong
with it. Every error's ``message`` starts with the column name, e.g.
``"phone: '+31 6 123' is not a valid number for NL"``.

Normalisation done here (so the rest of the code can rely on it):

* ``phone``   E.164 (``+31612345678``), parsed with the row's country as the region.
* ``email``   as normalised by email-validator (domain lower-cased).
* ``language`` lower case; ``country``, ``currency`` and ``postcode`` upper case,
  ``postcode`` with single spaces.
* money is an ``int`` in minor units (``balance_minor``), never a float.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, fields
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, Mapping, get_args

import phonenumbers
from babel.numbers import get_currency_precision, list_currencies
from email_validator import EmailNotValidError, validate_email

Language = Literal["en", "nl", "de"]
AgeBand = Literal["18-25", "26-40", "41-65", "65+"]
PaymentHistory = Literal["good", "late", "none", "broken_promise"]
Channel = Literal["sms", "whatsapp", "email"]

LANGUAGES: Final[tuple[str, ...]] = get_args(Language)
AGE_BANDS: Final[tuple[str, ...]] = get_args(AgeBand)
PAYMENT_HISTORIES: Final[tuple[str, ...]] = get_args(PaymentHistory)
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)

#: Every column an import file may have, in the order of the demo portfolio.
COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "first_name",
    "last_name",
    "phone",
    "email",
    "language",
    "country",
    "date_of_birth",
    "postcode",
    "reference",
    "creditor",
    "balance",
    "currency",
    "due_date",
    "age_band",
    "product",
    "payment_history",
    "preferred_channel",
    "whatsapp_opt_in",
    "segment",
)
#: Columns that may be left out of a file entirely (their values may be empty anyway).
OPTIONAL_COLUMNS: Final[frozenset[str]] = frozenset({"phone", "email", "age_band", "segment"})
REQUIRED_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)

MIN_AGE: Final = 18
MAX_AGE: Final = 120

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PLAIN_DECIMAL_RE = re.compile(r"-?\d{1,15}(\.\d+)?")
_POSTCODE_RE = re.compile(r"[A-Z0-9][A-Z0-9 -]{0,11}")
# Per-country postcode shapes, checked after normalisation (upper case, single spaces).
_POSTCODE_BY_COUNTRY: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "NL": (re.compile(r"[1-9]\d{3} ?[A-Z]{2}"), "4 digits and 2 letters, e.g. 1012 AB"),
    "DE": (re.compile(r"\d{5}"), "5 digits, e.g. 10115"),
    "GB": (
        re.compile(r"(GIR ?0AA|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})"),
        "a UK postcode, e.g. SW1A 1AA",
    ),
    "IE": (
        re.compile(r"[A-Z]\d[\dW] ?[0-9AC-FHKNPRTV-Y]{4}"),
        "an Eircode, e.g. D02 X285",
    ),
}
# Two-letter codes CLDR knows that are not ISO 3166-1 countries.
_NOT_ISO_COUNTRIES: Final = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "XK", "ZZ"}
)
_TRUE_WORDS: Final = frozenset({"true", "yes", "y", "1", "ja", "j"})
_FALSE_WORDS: Final = frozenset({"false", "no", "n", "0", "nee", "nein", ""})
_SMS_CAPABLE_TYPES: Final = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


def _iso_countries() -> frozenset[str]:
    from babel import Locale

    return frozenset(
        code
        for code in Locale("en").territories
        if len(code) == 2 and code.isalpha() and code not in _NOT_ISO_COUNTRIES
    )


COUNTRIES: Final[frozenset[str]] = _iso_countries()
CURRENCIES: Final[frozenset[str]] = frozenset(list_currencies())


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of one record.

    ``row`` is counted as in the file: for CSV the header is line 1 and the first
    debtor is row 2; for JSON the first object is row 1. ``field`` is the column name
    (for JSON the importer turns it into a path such as ``debtors[0].phone``; for
    problems with the file itself it is ``"file"``, for the CSV header ``"columns"``).
    ``message`` is a sentence for a person, starting with the column name.
    """

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"


@dataclass(frozen=True)
class Debtor:
    """One debtor and their case, as handed over by the creditor (validated, normalised)."""

    id: str
    first_name: str
    last_name: str
    phone: str | None  # E.164
    email: str | None
    language: Language
    country: str  # ISO 3166-1 alpha-2, upper case
    date_of_birth: date
    postcode: str  # upper case, single spaces
    reference: str
    creditor: str
    balance_minor: int  # amount in minor units of ``currency`` (cents, pence)
    currency: str  # ISO 4217, upper case
    due_date: date
    age_band: AgeBand
    product: str
    payment_history: PaymentHistory
    preferred_channel: Channel
    whatsapp_opt_in: bool
    segment: str | None = None

    # --- derived -----------------------------------------------------------------
    @property
    def balance(self) -> Decimal:
        """The balance in major units, e.g. ``Decimal('1234.56')`` for 123456 cents."""
        return minor_to_decimal(self.balance_minor, self.currency)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def days_past_due(self, as_of: date) -> int:
        """Whole days between ``due_date`` and ``as_of``; 0 when not yet due."""
        return max(0, (as_of - self.due_date).days)

    def age(self, as_of: date) -> int:
        return age_on(self.date_of_birth, as_of)

    def addresses(self) -> dict[str, str]:
        """The debtor's contact addresses by kind (``phone``/``email``), as indexed."""
        found: dict[str, str] = {}
        if self.phone:
            found["phone"] = self.phone
        if self.email:
            found["email"] = self.email.lower()
        return found

    # --- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict: dates as ISO strings, money as the minor-unit int."""
        data = asdict(self)
        data["date_of_birth"] = self.date_of_birth.isoformat()
        data["due_date"] = self.due_date.isoformat()
        return data

    def to_json(self) -> str:
        """Compact JSON with sorted keys: the same debtor always gives the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Debtor:
        """Inverse of :meth:`to_dict`. Unknown keys are ignored (forward compatibility)."""
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - {"segment"} if n not in data)
        if missing:
            raise ValueError(f"debtor document lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        values["date_of_birth"] = date.fromisoformat(values["date_of_birth"])
        values["due_date"] = date.fromisoformat(values["due_date"])
        if isinstance(values["balance_minor"], bool) or not isinstance(values["balance_minor"], int):
            raise ValueError("balance_minor must be an integer")
        values["whatsapp_opt_in"] = bool(values["whatsapp_opt_in"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> Debtor:
        return cls.from_dict(json.loads(text))


# --- helpers other code may use ----------------------------------------------------


def minor_digits(currency: str) -> int:
    """Number of minor-unit digits of a currency (2 for EUR/GBP, 0 for JPY)."""
    return int(get_currency_precision(currency))


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    digits = minor_digits(currency)
    return Decimal(amount_minor).scaleb(-digits) if digits else Decimal(amount_minor)


def age_on(date_of_birth: date, as_of: date) -> int:
    years = as_of.year - date_of_birth.year
    if (as_of.month, as_of.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


def age_band_for(date_of_birth: date, as_of: date) -> AgeBand:
    """Band of the age on ``as_of``: 18-25, 26-40, 41-64 -> "41-65", 65 and older -> "65+"."""
    age = age_on(date_of_birth, as_of)
    if age <= 25:
        return "18-25"
    if age <= 40:
        return "26-40"
    if age < 65:
        return "41-65"
    return "65+"


# --- validation of one raw record --------------------------------------------------


class _Errors:
    def __init__(self, row: int) -> None:
        self.row = row
        self.items: list[FieldError] = []

    def add(self, field: str, text: str) -> None:
        self.items.append(FieldError(self.row, field, f"{field}: {text}"))


def _show(value: Any) -> str:
    """A value quoted for a message, shortened if long."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"'{text}'"


def _text(raw: Mapping[str, Any], name: str, errors: _Errors) -> str | None:
    """The stripped text of a field; '' when absent/empty; None when not text at all."""
    value = raw.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal, float)):
        errors.add(name, f"{_show(value)} should be text")
        return None
    if not isinstance(value, str):
        if name in {"balance"}:
            return str(value)
        errors.add(name, f"{_show(value)} should be text, in quotes")
        return None
    return value.strip()


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in text)


def _required_text(
    raw: Mapping[str, Any], name: str, errors: _Errors, *, max_len: int, label: str
) -> str | None:
    text = _text(raw, name, errors)
    if text is None:
        return None
    text = " ".join(text.split())
    if not text:
        errors.add(name, f"is empty; every debtor needs {label}")
        return None
    if len(text) > max_len:
        errors.add(name, f"is {len(text)} characters long; at most {max_len} are allowed")
        return None
    if _has_control_chars(text):
        errors.add(name, f"{_show(text)} contains invisible control characters")
        return None
    return text


def _choice(
    raw: Mapping[str, Any], name: str, errors: _Errors, choices: tuple[str, ...]
) -> str | None:
    text = _text(raw, name, errors)
    if text is None:
        return None
    value = text.lower()
    if value not in choices:
        allowed = ", ".join(choices)
        if not value:
            errors.add(name, f"is empty; it must be one of: {allowed}")
        else:
            errors.add(name, f"{_show(text)} is not one of: {allowed}")
        return None
    return value


def _iso_date(raw: Mapping[str, Any], name: str, errors: _Errors) -> date | None:
    text = _text(raw, name, errors)
    if text is None:
        return None
    if not text:
        errors.add(name, "is empty; write the date as YYYY-MM-DD, e.g. 1980-04-23")
        return None
    if not _ISO_DATE_RE.fullmatch(text):
        errors.add(name, f"{_show(text)} is not a date written as YYYY-MM-DD, e.g. 1980-04-23")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.add(name, f"{_show(text)} is not a real calendar date")
        return None


def parse_bool(value: Any) -> bool | None:
    """``true/false``, ``yes/no``, ``1/0`` (any case; NL/DE words too); empty is False."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def parse_amount_minor(text: str, currency: str | None) -> tuple[int | None, str | None]:
    """``"1234.56"`` in EUR -> ``(123456, None)``; on failure ``(None, reason)``.

    Only a plain decimal with ``.`` as the decimal mark: no thousands separators, no
    currency symbols, no exponent. Parsed with Decimal, never float. With no (valid)
    currency only the shape is checked and ``(None, None)`` comes back for a good shape.
    """
    if not text:
        return None, "is empty; write the amount owed like 1234.56"
    if "," in text:
        return None, (
            f"{_show(text)} uses a comma; write the amount with a dot for the decimals "
            "and no thousands separators, like 1234.56"
        )
    if not _PLAIN_DECIMAL_RE.fullmatch(text):
        return None, f"{_show(text)} is not an amount; write it like 1234.56"
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex already rules this out
        return None, f"{_show(text)} is not an amount; write it like 1234.56"
    if amount < 0:
        return None, f"{_show(text)} is negative; the amount owed cannot be below 0"
    if currency is None:
        return None, None
    digits = minor_digits(currency)
    scaled = amount.scaleb(digits)
    if scaled != scaled.to_integral_value():
        if digits == 0:
            return None, f"{_show(text)} has decimals, but {currency} amounts are whole numbers"
        return None, f"{_show(text)} has more than {digits} decimals, too many for {currency}"
    return int(scaled), None


def parse_debtor(
    raw: Mapping[str, Any], *, as_of: date, row: int
) -> Debtor | list[FieldError]:
    """Validate one raw record (column -> value) into a Debtor, or say what is wrong.

    Values may be strings (CSV) or JSON values (strings, numbers for ``balance``,
    booleans for ``whatsapp_opt_in``, null for empty). Unknown and missing columns
    are the importer's business; missing ones are treated as empty here.
    """
    errors = _Errors(row)

    debtor_id = _text(raw, "id", errors)
    if debtor_id is not None:
        if not debtor_id:
            errors.add("id", "is empty; every debtor needs the creditor's debtor or case id")
            debtor_id = None
        elif not _ID_RE.fullmatch(debtor_id):
            errors.add(
                "id",
                f"{_show(debtor_id)} may only contain letters A-Z, digits, '-' and '_' "
                "(at most 64)",
            )
            debtor_id = None

    first_name = _required_text(raw, "first_name", errors, max_len=100, label="a first name")
    last_name = _required_text(raw, "last_name", errors, max_len=100, label="a last name")
    language = _choice(raw, "language", errors, LANGUAGES)

    country = _text(raw, "country", errors)
    if country is not None:
        country = country.upper()
        if not country:
            errors.add("country", "is empty; use the two-letter country code, e.g. NL, DE, GB, IE")
            country = None
        elif country not in COUNTRIES:
            errors.add(
                "country", f"{_show(country)} is not a two-letter country code such as NL, DE, GB, IE"
            )
            country = None

    # phone: E.164, parsed with the row's country as the region
    phone: str | None = None
    phone_type = None
    phone_text = _text(raw, "phone", errors)
    phone_failed = phone_text is None
    if phone_text:
        region = country or None
        try:
            number = phonenumbers.parse(phone_text, region)
        except phonenumbers.NumberParseException:
            number = None
        if number is None:
            phone_failed = True
            if region is None and not phone_text.startswith("+"):
                errors.add(
                    "phone",
                    f"{_show(phone_text)} cannot be read without a valid country; "
                    "write it with the country code, e.g. +31 6 1234 5678",
                )
            else:
                errors.add("phone", f"{_show(phone_text)} is not a phone number")
        elif not phonenumbers.is_valid_number(number):
            phone_failed = True
            where = region or phonenumbers.region_code_for_number(number) or "its country code"
            errors.add("phone", f"{_show(phone_text)} is not a valid number for {where}")
        else:
            phone = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            phone_type = phonenumbers.number_type(number)

    email: str | None = None
    email_text = _text(raw, "email", errors)
    email_failed = email_text is None
    if email_text:
        try:
            email = validate_email(email_text, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            email_failed = True
            errors.add("email", f"{_show(email_text)} is not a valid email address ({exc})")

    if phone is None and email is None and not phone_failed and not email_failed:
        errors.add(
            "phone",
            "is empty and so is email; every debtor needs a phone number or an email address",
        )

    date_of_birth = _iso_date(raw, "date_of_birth", errors)
    if date_of_birth is not None:
        age = age_on(date_of_birth, as_of)
        if date_of_birth > as_of:
            errors.add("date_of_birth", f"{date_of_birth.isoformat()} is in the future")
            date_of_birth = None
        elif age < MIN_AGE:
            errors.add(
                "date_of_birth",
                f"{date_of_birth.isoformat()} makes the debtor {age}, under {MIN_AGE}; "
                "minors are not contacted",
            )
            date_of_birth = None
        elif age > MAX_AGE:
            errors.add(
                "date_of_birth", f"{date_of_birth.isoformat()} makes the debtor {age}; check the year"
            )
            date_of_birth = None

    postcode = _text(raw, "postcode", errors)
    if postcode is not None:
        postcode = " ".join(postcode.upper().split())
        if not postcode:
            errors.add("postcode", "is empty; it is needed to verify who we are talking to")
            postcode = None
        elif not _POSTCODE_RE.fullmatch(postcode):
            errors.add("postcode", f"{_show(postcode)} is not a postcode")
            postcode = None
        elif country in _POSTCODE_BY_COUNTRY:
            pattern, shape = _POSTCODE_BY_COUNTRY[country]
            if not pattern.fullmatch(postcode):
                errors.add("postcode", f"{_show(postcode)} is not a postcode for {country}; expected {shape}")
                postcode = None

    reference = _required_text(raw, "reference", errors, max_len=64, label="a case reference")
    creditor = _required_text(raw, "creditor", errors, max_len=100, label="a creditor name")

    currency = _text(raw, "currency", errors)
    if currency is not None:
        currency = currency.upper()
        if not currency:
            errors.add("currency", "is empty; use the three-letter code, e.g. EUR or GBP")
            currency = None
        elif currency not in CURRENCIES:
            errors.add("currency", f"{_show(currency)} is not a known currency code such as EUR or GBP")
            currency = None

    balance_minor: int | None = None
    balance_raw = raw.get("balance")
    if isinstance(balance_raw, float):
        # Only reachable when a caller parsed JSON with floats; refuse to guess.
        errors.add("balance", f"{_show(balance_raw)} was read as a binary float; pass it as text")
    else:
        balance_text = _text(raw, "balance", errors)
        if balance_text is not None:
            balance_minor, problem = parse_amount_minor(balance_text, currency)
            if problem:
                errors.add("balance", problem)

    due_date = _iso_date(raw, "due_date", errors)
    if due_date is not None and due_date > as_of:
        errors.add(
            "due_date",
            f"{due_date.isoformat()} is after {as_of.isoformat()}; the debt is not overdue yet",
        )
        due_date = None

    age_band: str | None
    age_band_text = _text(raw, "age_band", errors)
    if age_band_text is None:
        age_band = None
    elif not age_band_text:
        age_band = age_band_for(date_of_birth, as_of) if date_of_birth else None
    elif age_band_text in AGE_BANDS:
        age_band = age_band_text
    else:
        errors.add(
            "age_band",
            f"{_show(age_band_text)} is not one of: {', '.join(AGE_BANDS)} "
            "(or leave it empty to derive it from the date of birth)",
        )
        age_band = None

    product = _required_text(raw, "product", errors, max_len=40, label="a product")
    if product is not None:
        product = product.lower()

    payment_history = _choice(raw, "payment_history", errors, PAYMENT_HISTORIES)
    preferred_channel = _choice(raw, "preferred_channel", errors, CHANNELS)
    if preferred_channel in ("sms", "whatsapp"):
        if phone is None and not phone_failed:
            errors.add("preferred_channel", f"is {preferred_channel}, but the phone number is empty")
        elif phone_type is not None and phone_type not in _SMS_CAPABLE_TYPES:
            errors.add(
                "preferred_channel",
                f"is {preferred_channel}, but {phone} is not a mobile number",
            )
    elif preferred_channel == "email" and email is None and not email_failed:
        errors.add("preferred_channel", "is email, but the email address is empty")

    whatsapp_opt_in = parse_bool(raw.get("whatsapp_opt_in"))
    if whatsapp_opt_in is None:
        errors.add(
            "whatsapp_opt_in",
            f"{_show(raw.get('whatsapp_opt_in'))} is not yes or no; write true or false",
        )

    segment_text = _text(raw, "segment", errors)
    segment: str | None = None
    if segment_text:
        segment = " ".join(segment_text.split())
        if len(segment) > 40:
            errors.add("segment", f"is {len(segment)} characters long; at most 40 are allowed")
        elif _has_control_chars(segment):
            errors.add("segment", f"{_show(segment)} contains invisible control characters")

    if errors.items:
        return errors.items
    assert debtor_id and first_name and last_name and language and country  # for type checkers
    assert date_of_birth and postcode and reference and creditor and currency and due_date
    assert balance_minor is not None and age_band and product and payment_history
    assert preferred_channel and whatsapp_opt_in is not None
    return Debtor(
        id=debtor_id,
        first_name=first_name,
        last_name=last_name,
        phone=phone,
        email=email,
        language=language,  # type: ignore[arg-type]
        country=country,
        date_of_birth=date_of_birth,
        postcode=postcode,
        reference=reference,
        creditor=creditor,
        balance_minor=balance_minor,
        currency=currency,
        due_date=due_date,
        age_band=age_band,  # type: ignore[arg-type]
        product=product,
        payment_history=payment_history,  # type: ignore[arg-type]
        preferred_channel=preferred_channel,  # type: ignore[arg-type]
        whatsapp_opt_in=whatsapp_opt_in,
        segment=segment,
    )
