"""The message renderer and every message template, with real Jinja2 and Babel."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
import pytest

from service.templates import (
    CHANNELS,
    RenderedMessage,
    TemplateError,
    TemplateRenderer,
    is_gsm7,
    sms_segments,
)

ROOT = Path(__file__).resolve().parents[2] / "message_templates"
LANGUAGES = ("en", "nl", "de")
UNSUBSCRIBE_URL = "https://nudge.example.com/u/7f3a9c"

SCHEDULE = [
    {"date": (dt.date(2026, 1, 20) + dt.timedelta(days=30 * i)).isoformat(), "amount": "102.88"}
    for i in range(12)
]

# key -> the variables it receives besides the common ones (first_name, company, channel,
# language; unsubscribe_url on email). Exactly what the brief lists: a template that uses
# anything else fails here with StrictUndefined.
SAMPLES: dict[str, dict[str, Any]] = {
    "reminder_first": {},
    "reminder_second": {},
    "reminder_final": {},
    "ask_verification": {"method": "date_of_birth"},
    "verification_retry": {"method": "postcode", "attempts_left": 2},
    "verification_locked": {},
    "balance": {
        "creditor": "Energie Direct B.V.",
        "reference": "AB-123456",
        "amount": "1234.56",
        "currency": "EUR",
        "due_date": "2026-10-01",
    },
    "offer_plan": {
        "installments": 6,
        "instalment_amount": "205.76",
        "last_amount": "205.76",
        "currency": "EUR",
        "frequency": "monthly",
        "first_date": "2026-11-20",
        "total": "1234.56",
    },
    "plan_confirmed": {
        "schedule": SCHEDULE,
        "currency": "EUR",
        "frequency": "monthly",
        "total": "1234.56",
        "payment_link": "https://pay.example.com/p/x7Kq2",
    },
    "offer_full": {
        "amount": "1234.56",
        "currency": "EUR",
        "pay_by": "2026-11-20",
        "payment_link": "https://pay.example.com/p/x7Kq2",
    },
    "offer_settlement": {
        "amount": "1000.00",
        "balance": "1234.56",
        "discount": "234.56",
        "currency": "EUR",
        "pay_by": "2026-11-20",
    },
    "settlement_not_available": {},
    "settlement_confirmed": {
        "amount": "1000.00",
        "currency": "EUR",
        "pay_by": "2026-11-20",
        "payment_link": "https://pay.example.com/p/x7Kq2",
        "balance": "1234.56",
    },
    "payment_link": {
        "amount": "1234.56",
        "currency": "EUR",
        "payment_link": "https://pay.example.com/p/x7Kq2",
    },
    "ask_promise_date": {"amount": "1234.56", "currency": "EUR"},
    "promise_confirmed": {"amount": "1234.56", "currency": "EUR", "date": "2026-11-20"},
    "promise_date_too_late": {"latest_date": "2026-12-18"},
    "payment_methods": {
        "payment_link": "https://pay.example.com/p/x7Kq2",
        "iban": "NL91ABNA0417164300",
        "reference": "AB-123456",
    },
    "who_we_are": {"creditor": "Energie Direct B.V."},
    "greet_reply": {},
    "goodbye_reply": {},
    "thank_reply": {},
    "fallback": {},
    "handoff": {"reason": "dispute"},
    "wrong_number_ack": {},
    "vulnerability_support": {
        "helpline_name": "Samaritans",
        "helpline_phone": "116 123",
        "urgent": True,
    },
    "optout_confirmation": {},
    "optin_confirmation": {},
    "help_reply": {},
    "more_time_offer": {"latest_date": "2026-12-18"},
    "unknown_sender": {},
    "media_received": {},
    # used by bot/actions/payments.py (ActionDeny) after a "no" to an offer
    "ask_affordable_amount": {"currency": "EUR"},
    # a request to cease communication (service/processing.py); what an agent typed
    "cease_ack": {},
    "agent_message": {"text": "Hi, this is Alice. I will check the contract."},
    # the console's canned replies: fragments an agent edits and sends as agent_message
    "canned_greeting": {"agent_name": "Sam"},
    "canned_looking_into_it": {},
    "canned_payment_options": {},
    "canned_support": {},
    # we write first, about an arrangement the debtor agreed after verification
    "instalment_reminder": {
        "amount": "1028.80",
        "currency": "EUR",
        "due_date": "2026-11-20",
        "payment_link": "https://pay.example.com/p/x7Kq2",
        "number": 2,
        "of": 6,
    },
    "instalment_missed": {
        "amount": "1028.80",
        "currency": "EUR",
        "due_date": "2026-11-20",
        "payment_link": "https://pay.example.com/p/x7Kq2",
        "grace_until": "2026-11-27",
    },
    "arrangement_broken": {
        "balance": "1028.80",
        "currency": "EUR",
        "payment_link": "https://pay.example.com/p/x7Kq2",
    },
    "promise_reminder": {
        "amount": "1234.56",
        "currency": "EUR",
        "date": "2026-11-20",
        "payment_link": "https://pay.example.com/p/x7Kq2",
    },
    "promise_broken": {
        "amount": "1234.56",
        "currency": "EUR",
        "date": "2026-11-20",
        "payment_link": "https://pay.example.com/p/x7Kq2",
    },
    # next_amount and next_date are optional: tested with and without below
    "payment_received": {"amount": "1028.80", "currency": "EUR", "remaining": "5144.00"},
    "arrangement_completed": {"total": "1234.56", "currency": "EUR"},
}
KEYS = set(SAMPLES)

# Keys that may be sent before the person is verified (or to someone we do not know):
# they must carry no debt detail at all.
PRE_VERIFICATION = {
    "reminder_first",
    "reminder_second",
    "reminder_final",
    "ask_verification",
    "verification_retry",
    "verification_locked",
    "greet_reply",
    "goodbye_reply",
    "thank_reply",
    "fallback",
    "handoff",
    "wrong_number_ack",
    "vulnerability_support",
    "optout_confirmation",
    "optin_confirmation",
    "help_reply",
    "unknown_sender",
    "media_received",
    "cease_ack",
    "canned_greeting",
    "canned_looking_into_it",
    "canned_payment_options",
    "canned_support",
}
DEBT_VARIABLES = {
    "creditor", "amount", "reference", "due_date", "total", "instalment_amount",
    "installments", "schedule", "iban", "payment_link", "balance",
}
# Keys whose SMS may legitimately run past two segments (a schedule, crisis information, and
# the messages we start about an arrangement: greeting, link, disclosure and opt-out line).
LONG_KEYS = {
    "plan_confirmed", "vulnerability_support", "instalment_reminder", "instalment_missed",
    "arrangement_broken", "promise_reminder", "promise_broken",
    # campaign steps 2 and 3 in Dutch and German: the step's sentence, the identity-safe
    # disclosure and the opt-out line take three segments (the budget the lint holds them to)
    "reminder_second", "reminder_final",
}
# Keys without the opt-out line: the confirmation of an opt-out, and the wrong-number reply
# (we stop writing to that address).
# The console's canned replies are fragments: agent_message, which sends them, adds the footer
# (opt-out line, and the sign-off in email).
CANNED = {"canned_greeting", "canned_looking_into_it", "canned_payment_options", "canned_support"}
NO_OPTOUT_LINE = {"optout_confirmation", "wrong_number_ack", "cease_ack"} | CANNED

OPTOUT_LINE = {
    "en": "Reply STOP to opt out.",
    "nl": "Antwoord STOP om je af te melden.",
    "de": "Antworten Sie STOPP zum Abmelden.",
}
UNSUBSCRIBE_LINE = {
    "en": f"Unsubscribe: {UNSUBSCRIBE_URL}",
    "nl": f"Afmelden: {UNSUBSCRIBE_URL}",
    "de": f"Abmelden: {UNSUBSCRIBE_URL}",
}
SIGN_OFF = {
    "en": "Kind regards,\nNudge Collections",
    "nl": "Met vriendelijke groet,\nNudge Collections",
    "de": "Mit freundlichen Grüßen\nNudge Collections",
}

HANDOFF_REASONS = (
    "dispute", "hardship", "request_human", "attorney", "bankruptcy", "deceased", "complain",
    "request_callback", "request_settlement", "negotiation", "verification", "already_paid",
)
METHODS = ("date_of_birth", "postcode", "reference")

THREAT_WORDS = (
    "arrest", "jail", "prison", "police", "bailiff", "court",
    "arrestatie", "gevangenis", "politie", "deurwaarder", "rechter", "rechtbank",
    "haft", "gefängnis", "polizei", "gerichtsvollzieher", "gericht", "pfändung",
)
URGENCY_WORDS = (
    "immediately", "final notice", "last chance", "final warning",
    "onmiddellijk", "laatste kans", "laatste waarschuwing",
    "unverzüglich", "letzte chance", "letzte mahnung", "letzte warnung",
)


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(ROOT)


def variables_for(key: str, channel: str, **extra: Any) -> dict[str, Any]:
    # jurisdiction and first_contact choose the disclosure partial (service/processing.py)
    variables: dict[str, Any] = {"first_name": "Anna", "jurisdiction": "EU/NL",
                                 "first_contact": key == "reminder_first", "product": "energy",
                                 **SAMPLES[key], **extra}
    if channel == "email":
        variables["unsubscribe_url"] = UNSUBSCRIBE_URL
    return variables


def render(renderer: TemplateRenderer, key: str, channel: str, language: str, **extra: Any):
    return renderer.render(
        key, channel=channel, language=language, variables=variables_for(key, channel, **extra)
    )


def template_files() -> list[Path]:
    return sorted(ROOT.glob("*/*.j2"))


def make_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


# --------------------------------------------------------------------------- inventory


def test_keys_are_exactly_the_message_keys(renderer: TemplateRenderer) -> None:
    assert renderer.keys() == KEYS


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_has_a_base_template_in_every_language(language: str) -> None:
    missing = [key for key in sorted(KEYS) if not (ROOT / language / f"{key}.j2").is_file()]
    assert missing == []


@pytest.mark.parametrize("path", template_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_template_file_compiles(path: Path) -> None:
    env = jinja2.Environment()
    env.parse(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- every key renders


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_key_renders(renderer: TemplateRenderer, key: str, language: str, channel: str) -> None:
    message = render(renderer, key, channel, language)

    assert isinstance(message, RenderedMessage)
    assert (message.key, message.channel, message.language) == (key, channel, language)
    body = message.body
    assert body and body == body.strip()
    assert "None" not in body
    assert "{{" not in body and "{%" not in body and "}}" not in body
    assert "  " not in body, "double spaces"
    assert "\n\n\n" not in body, "more than one blank line"
    assert all(line == line.rstrip() for line in body.splitlines()), "trailing spaces"
    if channel == "email":
        assert message.subject and message.subject == message.subject.strip()
        assert "\n" not in message.subject
        assert body.endswith(UNSUBSCRIBE_LINE[language]) or key in NO_OPTOUT_LINE
        assert SIGN_OFF[language] in body or key in CANNED
    else:
        assert message.subject is None
    if channel == "sms":
        assert is_gsm7(body), f"not GSM-7: {sorted(set(c for c in body if not is_gsm7(c)))}"
        assert sms_segments(body) <= 3
        if key not in LONG_KEYS:
            assert len(body) <= 320


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_key_renders_without_a_first_name(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    for first_name in ("", None):
        body = render(renderer, key, channel, language, first_name=first_name).body
        assert "None" not in body
        assert " ," not in body and "  " not in body


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(k for k in KEYS  # keys with their own tone texts:
                                       # tests/service/test_tone_templates.py
                                       if not (ROOT / "en" / f"{k}.loss_aversion.j2").exists()))
def test_other_tones_fall_back_to_soft(renderer: TemplateRenderer, key: str, language: str) -> None:
    variables = variables_for(key, "sms")
    soft = renderer.render(key, channel="sms", language=language, variables=variables)
    for tone in ("loss_aversion", "social_proof"):
        other = renderer.render(key, channel="sms", language=language, tone=tone, variables=variables)
        assert other == soft


def test_company_name_comes_from_the_renderer(tmp_path: Path) -> None:
    renderer = TemplateRenderer(ROOT, company_name="Acme Inkasso")
    body = render(renderer, "reminder_first", "sms", "de").body
    assert "Acme Inkasso" in body and "Nudge" not in body


# --------------------------------------------------------------------------- per-key content


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_reminder_first_carries_the_opt_out_line(
    renderer: TemplateRenderer, language: str, channel: str
) -> None:
    body = render(renderer, "reminder_first", channel, language).body
    if channel == "email":
        assert body.endswith(UNSUBSCRIBE_LINE[language])
    else:
        assert body.endswith("\n" + OPTOUT_LINE[language])
    assert "Nudge Collections" in body


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(KEYS - NO_OPTOUT_LINE))
def test_every_message_carries_a_way_to_opt_out(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    body = render(renderer, key, channel, language).body
    expected = UNSUBSCRIBE_LINE[language] if channel == "email" else OPTOUT_LINE[language]
    assert body.endswith(expected)


EMAIL_SUBJECTS = {
    "en": "An important matter about your account",
    "nl": "Een belangrijke zaak over je account",
    "de": "Ein wichtiges Anliegen zu Ihrem Kundenkonto",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_reminder_first_email_variant_has_a_subject_and_a_salutation(
    renderer: TemplateRenderer, language: str
) -> None:
    assert (ROOT / language / "reminder_first.email.j2").is_file()
    message = render(renderer, "reminder_first", "email", language)
    assert message.subject == EMAIL_SUBJECTS[language]
    first_line, blank = message.body.splitlines()[:2]
    assert "Anna" in first_line and first_line.endswith(",") and blank == ""
    sms = render(renderer, "reminder_first", "sms", language)
    assert sms.body != message.body  # the email variant, not the SMS text


def test_german_email_continues_in_lower_case_after_the_salutation(renderer: TemplateRenderer) -> None:
    body = render(renderer, "reminder_first", "email", "de").body
    assert body.splitlines()[2][0].islower()


@pytest.mark.parametrize("language", LANGUAGES)
def test_email_without_own_subject_uses_the_default_subject(
    renderer: TemplateRenderer, language: str
) -> None:
    subject = render(renderer, "greet_reply", "email", language).subject
    assert subject and "Nudge Collections" in subject


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_optout_confirmation_is_one_plain_confirmation(
    renderer: TemplateRenderer, language: str, channel: str
) -> None:
    body = render(renderer, "optout_confirmation", channel, language).body
    assert "START" in body
    assert "STOP" not in body.replace("START", "")
    assert UNSUBSCRIBE_URL not in body
    where = {"en": ("address", "number"), "nl": ("adres", "nummer"), "de": ("Adresse", "Nummer")}
    email_word, phone_word = where[language]
    assert (email_word if channel == "email" else phone_word) in body
    for word in ("€", "pay", "betal", "zahl", "Betrag", "bedrag", "account", "Konto"):
        assert word not in body


@pytest.mark.parametrize("language", LANGUAGES)
def test_money_and_dates_in_the_balance(renderer: TemplateRenderer, language: str) -> None:
    body = render(renderer, "balance", "sms", language).body
    expected = {
        "en": ("€1,234.56", "1 October 2026"),
        "nl": ("€ 1.234,56", "1 oktober 2026"),
        "de": ("1.234,56 €", "1. Oktober 2026"),
    }[language]
    for text in expected:
        assert text in body
    assert "Energie Direct B.V." in body and "AB-123456" in body


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("frequency", ("weekly", "fortnightly", "monthly"))
def test_offer_plan_translates_the_frequency(
    renderer: TemplateRenderer, language: str, frequency: str
) -> None:
    body = render(renderer, "offer_plan", "sms", language, frequency=frequency).body
    words = {
        "en": {"weekly": "weekly", "fortnightly": "fortnightly", "monthly": "monthly"},
        "nl": {"weekly": "wekelijkse", "fortnightly": "tweewekelijkse", "monthly": "maandelijkse"},
        "de": {"weekly": "wöchentliche", "fortnightly": "zweiwöchentliche", "monthly": "monatliche"},
    }
    assert f"6 {words[language][frequency]} " in body
    assert frequency not in body or language == "en"
    first_date = {"en": "Friday 20 November 2026", "nl": "vrijdag 20 november 2026",
                  "de": "Freitag, 20. November 2026"}[language]
    assert first_date in body


@pytest.mark.parametrize("language", LANGUAGES)
def test_offer_plan_names_the_last_instalment_only_when_it_differs(
    renderer: TemplateRenderer, language: str
) -> None:
    last = {"en": "the last payment is €205.80", "nl": "de laatste termijn is € 205,80",
            "de": "die letzte Rate beträgt 205,80 €"}[language]
    same = render(renderer, "offer_plan", "sms", language).body
    differs = render(renderer, "offer_plan", "sms", language, last_amount="205.80").body
    assert last not in same and last in differs


@pytest.mark.parametrize("language", LANGUAGES)
def test_offer_plan_accepts_a_proposal_and_is_gentle_in_hardship(
    renderer: TemplateRenderer, language: str
) -> None:
    accept = {"en": "We can accept that", "nl": "Daar gaan we graag mee akkoord",
              "de": "Damit sind wir einverstanden"}[language]
    gentle = {"en": "no pressure", "nl": "geen haast", "de": "ohne Druck"}[language]
    plain = render(renderer, "offer_plan", "sms", language).body
    agreed = render(renderer, "offer_plan", "sms", language, agreed=True).body
    hardship = render(renderer, "offer_plan", "sms", language, hardship=True).body
    both = render(renderer, "offer_plan", "sms", language, agreed=True, hardship=True).body
    assert accept not in plain and gentle not in plain
    assert accept in agreed and gentle not in agreed
    assert accept not in hardship and gentle in hardship
    assert accept in both and gentle in both
    assert render(renderer, "offer_plan", "sms", language, agreed=False, hardship=False).body == plain


@pytest.mark.parametrize("language", LANGUAGES)
def test_payment_received_names_the_next_instalment_when_there_is_one(
    renderer: TemplateRenderer, language: str
) -> None:
    next_date = {"en": "Sunday 20 December 2026", "nl": "zondag 20 december 2026",
                 "de": "Sonntag, 20. Dezember 2026"}[language]
    remaining = {"en": "€5,144.00", "nl": "€ 5.144,00", "de": "5.144,00 €"}[language]
    without = render(renderer, "payment_received", "sms", language).body
    with_next = render(renderer, "payment_received", "sms", language,
                       next_amount="1028.80", next_date="2026-12-20").body
    paid_up = render(renderer, "payment_received", "sms", language, remaining="0.00").body
    assert remaining in without and next_date not in without
    assert remaining in with_next and next_date in with_next
    assert remaining not in paid_up and "0,00" not in paid_up and "0.00" not in paid_up


@pytest.mark.parametrize("language", LANGUAGES)
def test_verification_in_several_steps(renderer: TemplateRenderer, language: str) -> None:
    single = render(renderer, "ask_verification", "sms", language, method="postcode").body
    assert render(renderer, "ask_verification", "sms", language, method="postcode",
                  step=1, steps=1).body == single
    first = render(renderer, "ask_verification", "sms", language, method="postcode",
                   step=1, steps=2).body
    second = render(renderer, "ask_verification", "sms", language, method="postcode",
                    step=2, steps=2).body
    count = {"en": "two quick questions", "nl": "twee korte vragen", "de": "zwei kurzen Fragen"}
    more = {"en": "One more check", "nl": "Nog één vraag", "de": "Noch eine Angabe"}
    privacy = {"en": "privacy", "nl": "privacy", "de": "Schutz Ihrer Daten"}[language]
    assert count[language] in first and privacy in first
    assert more[language] in second and privacy not in second
    postcode = {"en": "postcode", "nl": "postcode", "de": "Postleitzahl"}[language]
    assert all(postcode in body for body in (single, first, second))


@pytest.mark.parametrize("language", LANGUAGES)
def test_unknown_frequency_is_an_error(renderer: TemplateRenderer, language: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(renderer, "offer_plan", "sms", language, frequency="yearly")
    assert info.value.variable == "yearly"


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_plan_confirmed_lists_every_instalment(
    renderer: TemplateRenderer, language: str, channel: str
) -> None:
    body = render(renderer, "plan_confirmed", channel, language).body
    lines = body.splitlines()
    pattern = {"en": r"^\d\d/\d\d/\d{4}: €102\.88$", "nl": r"^\d\d-\d\d-\d{4}: € 102,88$",
               "de": r"^\d\d\.\d\d\.\d{4}: 102,88 €$"}[language]
    schedule_lines = [line for line in lines if re.match(pattern, line)]
    assert len(schedule_lines) == len(SCHEDULE)
    first = {"en": "20/01/2026", "nl": "20-01-2026", "de": "20.01.2026"}[language]
    assert schedule_lines[0].startswith(first)
    assert "12 " in lines[0]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("method", METHODS)
def test_verification_asks_for_each_method(renderer: TemplateRenderer, language: str, method: str) -> None:
    ask = render(renderer, "ask_verification", "sms", language, method=method).body
    retry = render(renderer, "verification_retry", "sms", language, method=method, attempts_left=1).body
    if method == "date_of_birth":
        hint = {"en": "DD-MM-YYYY", "nl": "DD-MM-JJJJ", "de": "TT.MM.JJJJ"}[language]
        assert hint in ask and hint in retry
    privacy = {"en": "privacy", "nl": "privacy", "de": "Schutz Ihrer Daten"}[language]
    assert privacy in ask
    one_left = {"en": "1 try left", "nl": "nog 1 poging.", "de": "noch 1 Versuch."}[language]
    assert one_left in retry


@pytest.mark.parametrize("language", LANGUAGES)
def test_unknown_verification_method_is_an_error(renderer: TemplateRenderer, language: str) -> None:
    with pytest.raises(TemplateError):
        render(renderer, "ask_verification", "sms", language, method="shoe_size")


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_handoff_has_its_own_words_for_every_reason(
    renderer: TemplateRenderer, language: str, channel: str
) -> None:
    generic = render(renderer, "handoff", channel, language, reason="something_else").body
    bodies = {reason: render(renderer, "handoff", channel, language, reason=reason).body
              for reason in HANDOFF_REASONS}
    for reason, body in bodies.items():
        assert body != generic, f"{reason} falls through to the generic acknowledgement"
    assert len(set(bodies.values())) == len(HANDOFF_REASONS)


@pytest.mark.parametrize("language", LANGUAGES)
def test_vulnerability_support_puts_the_crisis_line_first_when_urgent(
    renderer: TemplateRenderer, language: str
) -> None:
    not_alone = {"en": "You are not alone", "nl": "Je staat er niet alleen voor",
                 "de": "Sie sind nicht allein"}[language]
    urgent = render(renderer, "vulnerability_support", "sms", language, urgent=True).body
    first_line = urgent.splitlines()[0]
    assert "Samaritans" in first_line and "116 123" in first_line and not_alone in first_line
    calm = render(renderer, "vulnerability_support", "sms", language, urgent=False).body
    assert "116 123" not in calm.splitlines()[0] and "116 123" in calm
    assert not_alone not in calm


@pytest.mark.parametrize("language", LANGUAGES)
def test_who_we_are_without_creditor_names_none(renderer: TemplateRenderer, language: str) -> None:
    with_creditor = render(renderer, "who_we_are", "sms", language).body
    without = render(renderer, "who_we_are", "sms", language, creditor=None).body
    assert "Energie Direct" in with_creditor
    assert "Energie Direct" not in without and "None" not in without
    assert "Nudge Collections" in without


@pytest.mark.parametrize("language", LANGUAGES)
def test_unknown_sender_may_name_a_phone_number(renderer: TemplateRenderer, language: str) -> None:
    plain = render(renderer, "unknown_sender", "sms", language).body
    with_phone = render(renderer, "unknown_sender", "sms", language, contact_phone="020 123 4567").body
    assert "020 123 4567" in with_phone and "020 123 4567" not in plain


# --------------------------------------------------------------------------- pre-verification


def _referenced_variables(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Variables a template and the partials it includes refer to."""
    seen = seen if seen is not None else set()
    if path in seen:
        return set()
    seen.add(path)
    ast = jinja2.Environment().parse(path.read_text(encoding="utf-8"))
    names = set(jinja2.meta.find_undeclared_variables(ast))
    for included in jinja2.meta.find_referenced_templates(ast):
        assert included is not None, f"{path}: dynamic include"
        names |= _referenced_variables(ROOT / included, seen)
    return names


PRE_VERIFICATION_FILES = [
    path for path in template_files() if path.name.split(".", 1)[0] in PRE_VERIFICATION
]


@pytest.mark.parametrize(
    "path", PRE_VERIFICATION_FILES, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_pre_verification_templates_use_no_debt_variable(path: Path) -> None:
    assert _referenced_variables(path) & DEBT_VARIABLES == set()


SENTINELS = {
    "creditor": "SENTINEL CREDITOR",
    "reference": "SENTINEL-REF-42",
    "amount": "9876.54",
    "total": "9876.54",
    "instalment_amount": "4321.09",
    "due_date": "2026-03-15",
    "currency": "EUR",
    "iban": "DE89370400440532013000",
    "payment_link": "https://pay.example.com/SENTINEL",
}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(PRE_VERIFICATION | {"who_we_are"}))
def test_pre_verification_messages_reveal_nothing(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    extra: dict[str, Any] = dict(SENTINELS)
    if key == "who_we_are":
        extra["creditor"] = None  # before verification the creditor is not named
    message = render(renderer, key, channel, language, **extra)
    text = f"{message.subject or ''}\n{message.body}"
    for value in ("SENTINEL", "9876", "4321", "DE89", "2026", "€", "AB-123456", "Energie Direct"):
        assert value not in text, f"{key} leaks {value!r}"


# --------------------------------------------------------------------------- we write first

# Sent unprompted about an arrangement the debtor agreed after verification: they may state
# its amounts and dates, never the creditor or the reference (someone else may read them).
ARRANGEMENT_UNSOLICITED = {
    "instalment_reminder", "instalment_missed", "arrangement_broken", "promise_reminder",
    "promise_broken", "payment_received", "arrangement_completed",
}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(ARRANGEMENT_UNSOLICITED))
def test_arrangement_messages_never_name_the_creditor(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    for jurisdiction in ("EU/NL", "DE", "UK", "US"):
        message = render(renderer, key, channel, language, jurisdiction=jurisdiction,
                         creditor="SENTINEL CREDITOR", reference="SENTINEL-REF-42",
                         product="SENTINEL product")
        text = f"{message.subject or ''}\n{message.body}"
        assert "SENTINEL" not in text
        assert "Nudge Collections" in message.body  # says who writes


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", sorted(ARRANGEMENT_UNSOLICITED))
def test_arrangement_messages_write_dates_out(renderer: TemplateRenderer, key: str,
                                             language: str) -> None:
    # sending may be deferred to the next contact window: "tomorrow" could be wrong by then
    body = render(renderer, key, "sms", language).body.lower()
    for word in ("tomorrow", "today", "morgen", "vandaag", "heute"):
        assert not re.search(rf"\b{word}\b", body), f"{key} says {word!r}"


# --------------------------------------------------------------------------- language rules


def _template_texts(language: str) -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted((ROOT / language).glob("*.j2"))]


def test_no_threats_and_no_false_urgency_in_any_template() -> None:
    offenders = []
    for path in template_files():
        text = path.read_text(encoding="utf-8").lower()
        for word in THREAT_WORDS + URGENCY_WORDS:
            if re.search(rf"\b{re.escape(word)}", text):
                offenders.append((f"{path.parent.name}/{path.name}", word))
    assert offenders == []


def test_dutch_templates_use_informal_je() -> None:
    formal = re.compile(r"\b(u|uw|kunt u|heeft u)\b", re.IGNORECASE)
    assert [name for name, text in _template_texts("nl") if formal.search(text)] == []


def test_german_templates_use_formal_sie() -> None:
    informal = re.compile(r"\b(du|dich|dir|dein\w*|antworte|schreib)\b", re.IGNORECASE)
    assert [name for name, text in _template_texts("de") if informal.search(text)] == []


def test_templates_stay_in_the_gsm7_alphabet() -> None:
    # Literal text only (template code is ASCII); one UCS-2 character would cut an SMS
    # segment from 160 to 70 characters.
    bad = {
        f"{path.parent.name}/{path.name}": sorted({c for c in path.read_text(encoding="utf-8")
                                                   if not is_gsm7(c)})
        for path in template_files()
    }
    assert {name: chars for name, chars in bad.items() if chars} == {}


# --------------------------------------------------------------------------- errors


def test_undefined_variable_is_a_template_error_naming_it(renderer: TemplateRenderer) -> None:
    variables = variables_for("balance", "sms")
    del variables["amount"]
    with pytest.raises(TemplateError) as info:
        renderer.render("balance", channel="sms", language="nl", variables=variables)
    assert info.value.variable == "amount"
    assert info.value.key == "balance"
    assert "'amount'" in str(info.value) and "balance" in str(info.value)
    assert isinstance(info.value.__cause__, jinja2.UndefinedError)


def test_email_needs_an_unsubscribe_url_but_sms_does_not(renderer: TemplateRenderer) -> None:
    renderer.render("greet_reply", channel="sms", language="en", variables={"first_name": "Anna"})
    with pytest.raises(TemplateError) as info:
        renderer.render("greet_reply", channel="email", language="en", variables={"first_name": "Anna"})
    assert info.value.variable == "unsubscribe_url"


def test_missing_field_of_a_schedule_item_is_named(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateError) as info:
        render(renderer, "plan_confirmed", "sms", "en", schedule=[{"date": "2026-01-20"}])
    assert info.value.variable == "amount"


@pytest.mark.parametrize(
    "key, language, channel, tone",
    [
        ("no_such_key", "en", "sms", "soft"),
        ("balance", "fr", "sms", "soft"),
        ("balance", "en", "fax", "soft"),
        ("balance", "en", "sms", "shouty"),
        ("../en/balance", "en", "sms", "soft"),
        ("_optout", "en", "sms", "soft"),
        ("Balance", "en", "sms", "soft"),
    ],
)
def test_unknown_key_language_channel_or_tone(
    renderer: TemplateRenderer, key: str, language: str, channel: str, tone: str
) -> None:
    with pytest.raises(TemplateError) as info:
        renderer.render(key, channel=channel, language=language, tone=tone,
                        variables=variables_for("balance", "sms"))
    assert info.value.key == key


def test_syntax_error_is_a_template_error(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/broken.j2": "Hello {% if first_name %}{{ first_name }\n"})
    with pytest.raises(TemplateError, match="syntax error"):
        TemplateRenderer(root).render("broken", channel="sms", language="en", variables={})


def test_missing_partial_is_a_template_error(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/k.j2": 'Hi\n{% include "en/_nope.j2" %}\n'})
    with pytest.raises(TemplateError, match="_nope"):
        TemplateRenderer(root).render("k", channel="sms", language="en", variables={})


# --------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_refuses_python_internals(tmp_path: Path, source: str) -> None:
    root = make_root(tmp_path, {"en/evil.j2": source + "\n"})
    with pytest.raises(TemplateError) as info:
        TemplateRenderer(root).render("evil", channel="sms", language="en",
                                      variables={"first_name": "Anna"})
    assert isinstance(info.value.__cause__, (SecurityError, jinja2.UndefinedError))


def test_sandbox_refuses_to_change_the_variables(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/evil.j2": "{{ schedule.append(1) }}\n"})
    schedule: list[Any] = []
    with pytest.raises(TemplateError):
        TemplateRenderer(root).render("evil", channel="sms", language="en",
                                      variables={"schedule": schedule})
    assert schedule == []


def test_output_is_not_html_escaped(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/k.j2": "{{ first_name }} & <co>\n"})
    body = TemplateRenderer(root).render("k", channel="sms", language="en",
                                         variables={"first_name": "Anne-Marie O'Neil"}).body
    assert body == "Anne-Marie O'Neil & <co>"


# --------------------------------------------------------------------------- lookup order

LOOKUP_FILES = {
    "en/k.soft.sms.j2": "tone+channel\n",
    "en/k.soft.j2": "tone\n",
    "en/k.email.j2": "{% set subject %}S{% endset %}channel\n",
    "en/k.j2": "base\n",
    "en/k.social_proof.whatsapp.j2": "social whatsapp\n",
    "en/_subject.j2": "Default subject\n",
}


@pytest.mark.parametrize(
    "channel, tone, expected",
    [
        ("sms", "soft", "tone+channel"),
        ("whatsapp", "soft", "tone"),
        ("email", "soft", "tone"),  # <key>.<tone>.j2 comes before <key>.<channel>.j2
        ("email", "loss_aversion", "channel"),
        ("sms", "loss_aversion", "base"),
        ("whatsapp", "social_proof", "social whatsapp"),
        ("sms", "social_proof", "base"),
    ],
)
def test_lookup_order(tmp_path: Path, channel: str, tone: str, expected: str) -> None:
    renderer = TemplateRenderer(make_root(tmp_path, LOOKUP_FILES))
    message = renderer.render("k", channel=channel, language="en", tone=tone, variables={})
    assert message.body == expected
    assert renderer.keys() == {"k"}


def test_email_subject_from_the_template_or_the_default(tmp_path: Path) -> None:
    renderer = TemplateRenderer(make_root(tmp_path, LOOKUP_FILES))
    own = renderer.render("k", channel="email", language="en", tone="loss_aversion", variables={})
    assert own.subject == "S" and own.body == "channel"
    default = renderer.render("k", channel="email", language="en", variables={})
    assert default.subject == "Default subject"
    assert renderer.render("k", channel="sms", language="en", variables={}).subject is None


def test_subject_is_read_with_the_variables(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "nl/k.email.j2": "{% set subject %}  Hoi\n {{ first_name }} {% endset %}\nTekst\n",
    })
    message = TemplateRenderer(root).render("k", channel="email", language="nl",
                                            variables={"first_name": "Anna"})
    assert message.subject == "Hoi Anna"
    assert message.body == "Tekst"


def test_body_whitespace_is_tidied(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "en/k.j2": "\n\nLine one   \n\n\n\n{% if x %}\nLine  two\t\n{% endif %}\n\n\nLine three\n\n",
    })
    body = TemplateRenderer(root).render("k", channel="sms", language="en",
                                         variables={"x": True}).body
    assert body == "Line one\n\nLine two\n\nLine three"


# --------------------------------------------------------------------------- filters


def render_expr(tmp_path: Path, language: str, expression: str, **variables: Any) -> str:
    root = make_root(tmp_path, {f"{language}/expr.j2": "{{ " + expression + " }}\n"})
    return TemplateRenderer(root).render(
        "expr", channel="sms", language=language, variables=variables
    ).body


@pytest.mark.parametrize(
    "language, value, currency, expected",
    [
        ("nl", "1234.56", "EUR", "€ 1.234,56"),
        ("de", "1234.56", "EUR", "1.234,56 €"),
        ("en", "1234.56", "GBP", "£1,234.56"),
        ("en", "1234.56", "EUR", "€1,234.56"),
        ("nl", Decimal("1234.56"), "EUR", "€ 1.234,56"),
        ("de", Decimal("0.5"), "EUR", "0,50 €"),
        ("en", "50", "EUR", "€50.00"),
        ("nl", "-12.30", "EUR", "€ -12,30"),
        ("de", "1234567.8", "EUR", "1.234.567,80 €"),
    ],
)
def test_money_filter(tmp_path: Path, language: str, value: Any, currency: str, expected: str) -> None:
    result = render_expr(tmp_path, language, "v|money(c)", v=value, c=currency)
    assert result == expected
    assert "\u00a0" not in result and is_gsm7(result)


@pytest.mark.parametrize("value", [123456, 1234.56, True, "1e3", "12,50", "", "NaN", None])
def test_money_refuses_anything_but_decimals(tmp_path: Path, value: Any) -> None:
    with pytest.raises(TemplateError, match="money"):
        render_expr(tmp_path, "en", "v|money('EUR')", v=value)


def test_money_refuses_a_bad_currency(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="currency"):
        render_expr(tmp_path, "en", "'12.00'|money('euro')")


def test_money_names_an_undefined_amount(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_expr(tmp_path, "en", "amount|money('EUR')")
    assert info.value.variable == "amount"


@pytest.mark.parametrize(
    "language, longdate, date, shortdate",
    [
        ("en", "Friday 20 November 2026", "20 November 2026", "20/11/2026"),
        ("nl", "vrijdag 20 november 2026", "20 november 2026", "20-11-2026"),
        ("de", "Freitag, 20. November 2026", "20. November 2026", "20.11.2026"),
    ],
)
@pytest.mark.parametrize(
    "value", ["2026-11-20", dt.date(2026, 11, 20), dt.datetime(2026, 11, 20, 9, 30),
              "2026-11-20T09:30:00+01:00"],
)
def test_date_filters(tmp_path: Path, language: str, longdate: str, date: str, shortdate: str,
                      value: Any) -> None:
    assert render_expr(tmp_path, language, "d|longdate", d=value) == longdate
    assert render_expr(tmp_path, language, "d|date", d=value) == date
    assert render_expr(tmp_path, language, "d|shortdate", d=value) == shortdate


@pytest.mark.parametrize("value", ["20-11-2026", "tomorrow", 20261120])
def test_date_filters_refuse_non_dates(tmp_path: Path, value: Any) -> None:
    with pytest.raises(TemplateError, match="date"):
        render_expr(tmp_path, "en", "d|longdate", d=value)


# --------------------------------------------------------------------------- SMS segments


@pytest.mark.parametrize(
    "text, segments",
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension table: two septets each
        ("€" * 81, 2),
        ("ä" * 160, 1),  # in the GSM-7 basic table
        ("ë" * 70, 1),  # not GSM-7: UCS-2
        ("ë" * 71, 2),
        ("a" * 159 + "’", 3),  # one curly quote turns the whole message into UCS-2
    ],
)
def test_sms_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments
