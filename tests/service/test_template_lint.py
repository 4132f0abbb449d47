"""The template lint (service/template_lint.py), the catalogue, the disclosures, and the lint
inside every render: with the real templates, catalogue and policy files."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from service.template_lint import (
    CatalogueError,
    LintIssue,
    ThreatPhrases,
    default_threat_phrases,
    lint_all,
    lint_rendered,
    lint_source,
    load_catalogue,
    normalise,
    parse_catalogue,
)
from service.templates import CHANNELS, JURISDICTIONS, TemplateError, TemplateRenderer

ROOT = Path(__file__).resolve().parents[2] / "message_templates"
CATALOGUE = load_catalogue(ROOT / "catalogue.yml")
LANGUAGES = ("en", "nl", "de")
KEYS = sorted(CATALOGUE.keys)


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(ROOT)


def samples(key: str, **extra: Any) -> dict[str, Any]:
    return {**CATALOGUE.samples(key), **extra}


def codes(issues: list[LintIssue]) -> list[str]:
    return [issue.code for issue in issues]


def make_root(tmp_path: Path, files: dict[str, str], *, catalogue: bool = True) -> Path:
    """A templates folder: the given files, the shipped partials, and the shipped catalogue."""
    for language in LANGUAGES:
        (tmp_path / language).mkdir(parents=True, exist_ok=True)
        for partial in (ROOT / language).glob("_*.j2"):
            shutil.copy(partial, tmp_path / language / partial.name)
    if catalogue:
        shutil.copy(ROOT / "catalogue.yml", tmp_path / "catalogue.yml")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


# --------------------------------------------------------------------------- shipped templates


def test_the_catalogue_lists_exactly_the_keys_that_have_templates(renderer: TemplateRenderer) -> None:
    assert renderer.catalogue is not None
    assert set(CATALOGUE.keys) == renderer.keys()


def test_every_shipped_template_lints_clean() -> None:
    report = lint_all(ROOT, CATALOGUE)
    assert len(report) == len(list(ROOT.glob("*/*.j2")))
    assert {name: [str(i) for i in issues] for name, issues in report.items() if issues} == {}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", KEYS)
def test_every_key_renders_with_the_catalogue_samples(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    for jurisdiction in JURISDICTIONS:
        for first_contact in (True, False):
            variables = samples(key, jurisdiction=jurisdiction, first_contact=first_contact)
            message = renderer.render(key, channel=channel, language=language, variables=variables)
            assert message.body
            rendered = lint_rendered(message.body, channel=channel, key=key,
                                     sms_segment_budget=CATALOGUE.budget(key))
            assert rendered == []


def test_unsolicited_keys_are_never_exempt_from_the_opt_out_line() -> None:
    unsolicited = {key for key, spec in CATALOGUE.keys.items() if spec.unsolicited}
    assert {"reminder_first", "agent_message"} <= unsolicited
    assert all(not CATALOGUE.keys[key].exempt_optout for key in unsolicited)
    exempt = {key for key, spec in CATALOGUE.keys.items() if spec.exempt_optout}
    # the canned replies are fragments an agent sends inside agent_message, which has the footer
    canned = {"canned_greeting", "canned_looking_into_it", "canned_payment_options", "canned_support"}
    assert exempt == {"optout_confirmation", "wrong_number_ack", "cease_ack"} | canned


def test_samples_are_typed_as_senders_pass_them() -> None:
    balance = CATALOGUE.keys["balance"].variables
    assert balance["amount"] == "1234.56" and balance["due_date"] == "2026-10-01"
    assert {"jurisdiction", "first_contact"} <= set(CATALOGUE.common)
    assert CATALOGUE.common["jurisdiction"] in JURISDICTIONS


# --------------------------------------------------------------------------- static lint: failures

REMINDER_BODY = "Hi {{ first_name }}, this is {{ company }}. Please reply when it suits you.\n"
DISCLOSURE_IMPORT = '{% from "en/_disclosure.j2" import disclosure with context %}\n'
FOOTER = '{% include "en/_footer.j2" %}\n'

STATIC_CASES = [
    pytest.param("en/greet_reply.j2", "Hello {{ first_nam }}!\n" + FOOTER,
                 "undefined_variable", 1, id="undefined-variable"),
    pytest.param("en/reminder_first.j2", "Hi {{ first_name }}, the amount is {{ amount }}.\n"
                 + DISCLOSURE_IMPORT + "{{ disclosure() }}\n" + FOOTER,
                 "undefined_variable", 1, id="debt-detail-before-verification"),
    pytest.param("en/_footer.j2", "{{ creditor }}\n{% include 'en/_optout.j2' %}\n",
                 "undefined_variable", 1, id="partial-uses-a-key-variable"),
    pytest.param("en/reminder_first.j2", DISCLOSURE_IMPORT + REMINDER_BODY + "{{ disclosure() }}\n",
                 "missing_optout", None, id="sms-reminder-without-opt-out"),
    pytest.param("en/greet_reply.j2", "Hello!\n{% include 'en/_signoff.j2' %}\n",
                 "missing_optout", None, id="sign-off-but-no-opt-out"),
    pytest.param("en/reminder_first.j2", REMINDER_BODY + FOOTER,
                 "missing_disclosure", None, id="demand-without-disclosure"),
    pytest.param("en/balance.j2", "{{ creditor }} {{ amount|money(currency) }}\n" + FOOTER,
                 "missing_disclosure", None, id="balance-without-disclosure"),
    pytest.param("en/reminder_first.j2",
                 '{% from "en/_disclosure.j2" import disclosure %}\n' + REMINDER_BODY
                 + "{{ disclosure() }}\n" + FOOTER,
                 "missing_disclosure", None, id="disclosure-imported-without-context"),
    pytest.param("en/reminder_first.j2", DISCLOSURE_IMPORT + REMINDER_BODY + FOOTER,
                 "missing_disclosure", None, id="disclosure-imported-but-not-called"),
    pytest.param("en/greet_reply.j2", "Hello\n\n{{ first_name }\n" + FOOTER,
                 "syntax", 3, id="syntax-error-with-line"),
    pytest.param("en/greet_reply.j2", "Hello\n{{ first_name|shout }}\n" + FOOTER,
                 "syntax", 2, id="unknown-filter"),
    pytest.param("en/greet_reply.j2", "Hello\n{% include 'en/_nope.j2' %}\n" + FOOTER,
                 "missing_partial", 2, id="missing-partial"),
    pytest.param("en/surprise.j2", "Hello\n" + FOOTER, "unknown_key", None, id="key-not-in-catalogue"),
    pytest.param("en/greet_reply.loud.j2", "Hello\n" + FOOTER, "file_name", None, id="bad-suffix"),
    pytest.param("fr/greet_reply.j2", "Bonjour\n" + FOOTER, "file_name", None, id="unknown-language"),
    pytest.param("en/greet_reply.j2", "Hello.\n\nPay today or the police will be informed.\n" + FOOTER,
                 "threat_phrase", 3, id="en-police"),
    pytest.param("en/greet_reply.j2", "We may take you to COURT.\n" + FOOTER,
                 "threat_phrase", 1, id="en-court-upper-case"),
    pytest.param("en/greet_reply.j2", "We will seek wage garnishment.\n" + FOOTER,
                 "threat_phrase", 1, id="en-garnishment"),
    pytest.param("nl/greet_reply.j2", "Anders schakelen we de POLITIE in.\n"
                 '{% include "nl/_footer.j2" %}\n', "threat_phrase", 1, id="nl-politie-upper-case"),
    pytest.param("nl/greet_reply.j2", "Hallo.\nDe deurwaarder legt loonbeslag.\n"
                 '{% include "nl/_footer.j2" %}\n', "threat_phrase", 2, id="nl-deurwaarder-loonbeslag"),
    pytest.param("de/greet_reply.j2", "Sonst kommt der Gerichtsvollzieher.\n"
                 '{% include "de/_footer.j2" %}\n', "threat_phrase", 1, id="de-gerichtsvollzieher"),
    pytest.param("de/greet_reply.j2", "Es droht die Lohnpfändung.\n"
                 '{% include "de/_footer.j2" %}\n', "threat_phrase", 1, id="de-lohnpfaendung-compound"),
    pytest.param("de/greet_reply.j2", "Es droht GEFAENGNIS.\n"
                 '{% include "de/_footer.j2" %}\n', "threat_phrase", 1, id="de-gefaengnis-transliterated"),
    pytest.param("de/greet_reply.j2", "Es droht Gefangnis.\n"
                 '{% include "de/_footer.j2" %}\n', "threat_phrase", 1, id="de-gefangnis-without-umlaut"),
    pytest.param("en/greet_reply.j2", "Hello, this is not a Polizeí matter.\n" + FOOTER,
                 "threat_phrase", 1, id="other-language-with-accent"),
    pytest.param("en/greet_reply.j2", "Hello\n{{ 'you could go to jail' if first_name else '' }}\n"
                 + FOOTER, "threat_phrase", 2, id="threat-in-a-string-constant"),
]


@pytest.mark.parametrize("name, source, code, line", STATIC_CASES)
def test_static_lint_refuses(name: str, source: str, code: str, line: int | None) -> None:
    issues = lint_source(name, source, catalogue=CATALOGUE)
    found = [issue for issue in issues if issue.code == code]
    assert found, [str(issue) for issue in issues]
    assert found[0].level == "error"
    assert found[0].line == line


@pytest.mark.parametrize("name, source", [
    ("en/greet_reply.j2", "Our privacy policy and courtesy: no issue.\n{# police, jail #}\n" + FOOTER),
    ("de/greet_reply.j2", "Die Haftung der Gesellschaft ist beschränkt.\n" '{% include "de/_footer.j2" %}\n'),
    ("nl/greet_reply.j2", "Bedankt voor je bericht, we vinden een goede regeling.\n"
                          '{% include "nl/_footer.j2" %}\n'),
    ("en/unknown_sender.j2", "Call us{% if contact_phone is defined %} on {{ contact_phone }}{% endif %}.\n"
                             + FOOTER),
])
def test_static_lint_accepts(name: str, source: str) -> None:
    assert lint_source(name, source, catalogue=CATALOGUE) == []


def test_a_partial_threat_is_found_from_the_template_that_includes_it(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/_footer.j2": "The bailiff is coming.\n{% include 'en/_optout.j2' %}\n"})
    issues = lint_source("en/greet_reply.j2", "Hello\n" + FOOTER, catalogue=CATALOGUE, root=root)
    assert [(i.code, i.template, i.line) for i in issues] == [("threat_phrase", "en/_footer.j2", 1)]


def test_without_a_catalogue_only_the_catalogue_free_checks_run() -> None:
    source = "Hello {{ anything }}\nNo footer here.\n"
    assert lint_source("en/whatever.j2", source, catalogue=None, root=ROOT) == []
    assert codes(lint_source("en/whatever.j2", source + "Prison!\n", catalogue=None, root=ROOT)) == [
        "threat_phrase"]


def test_lint_all_reports_each_problem_once_under_its_file(tmp_path: Path) -> None:
    root = make_root(tmp_path, {
        "en/greet_reply.j2": "Hello\n" + FOOTER,
        "en/thank_reply.j2": "Thanks\n" + FOOTER,
        "en/_footer.j2": "Arrest!\n{% include 'en/_optout.j2' %}\n",
    })
    report = lint_all(root, CATALOGUE)
    assert [i.code for i in report["en/_footer.j2"]] == ["threat_phrase"]
    assert report["en/greet_reply.j2"] == [] and report["en/thank_reply.j2"] == []
    missing = report["catalogue.yml"]
    assert {i.code for i in missing} == {"missing_template"}
    assert any("nl/greet_reply.j2" in i.message and "de/greet_reply.j2" in i.message for i in missing)


# --------------------------------------------------------------------------- rendered messages

RENDERED_CASES = [
    pytest.param("a" * 459, "sms", 3, [], id="sms-three-segments-within-budget"),
    pytest.param("a" * 460, "sms", 3, ["sms_segments"], id="sms-four-segments-over-budget"),
    pytest.param("ë" * 135, "sms", 2, ["sms_segments"], id="sms-ucs2-over-budget"),
    pytest.param("a" * 1601, "sms", 20, ["twilio_length"], id="sms-over-twilio-limit"),
    pytest.param("a" * 1024, "whatsapp", 3, [], id="whatsapp-at-limit"),
    pytest.param("a" * 1025, "whatsapp", 3, ["whatsapp_length"], id="whatsapp-over-1024"),
    pytest.param("a" * 1601, "whatsapp", 3, ["twilio_length", "whatsapp_length"], id="whatsapp-over-both"),
    pytest.param("a" * 5000, "email", 3, [], id="email-has-no-length-rule"),
    pytest.param("Hello Anna, the Polizei knows.", "email", 3, ["threat_phrase"], id="threat-in-email"),
    pytest.param("Hallo, de deurwaarder komt.", "whatsapp", 3, ["threat_phrase"], id="threat-in-whatsapp"),
]


@pytest.mark.parametrize("body, channel, budget, expected", RENDERED_CASES)
def test_lint_rendered(body: str, channel: str, budget: int, expected: list[str]) -> None:
    issues = lint_rendered(body, channel=channel, key="k", sms_segment_budget=budget)
    assert codes(issues) == expected
    assert all(issue.level == "error" and issue.template == "k" for issue in issues)


# --------------------------------------------------------------------------- the lint in render


def test_a_threat_injected_through_a_variable_is_refused(renderer: TemplateRenderer) -> None:
    variables = samples("balance", creditor="Gerichtsvollzieher Schmidt GmbH", jurisdiction="DE")
    with pytest.raises(TemplateError) as info:
        renderer.render("balance", channel="sms", language="de", variables=variables)
    assert info.value.issues and {i.code for i in info.value.issues} == {"threat_phrase"}
    assert "gerichtsvollzieher" in str(info.value)
    with pytest.raises(TemplateError):
        renderer.render("greet_reply", channel="email", language="en",
                        variables=samples("greet_reply", first_name="Police"))


@pytest.mark.parametrize("first_name", ["Sue", "Lien", "Courtney", "Polly", "Haftom", "Klaas"])
def test_first_names_are_not_threats(renderer: TemplateRenderer, first_name: str) -> None:
    for language in LANGUAGES:
        assert renderer.render("reminder_first", channel="sms", language=language,
                               variables=samples("reminder_first", first_name=first_name)).body


def test_an_agent_message_too_long_for_whatsapp_is_refused(renderer: TemplateRenderer) -> None:
    variables = samples("agent_message", text="Hello Anna. " * 90)
    with pytest.raises(TemplateError) as info:
        renderer.render("agent_message", channel="whatsapp", language="en", variables=variables)
    assert codes(list(info.value.issues)) == ["whatsapp_length"]


def test_an_sms_over_its_budget_is_refused(renderer: TemplateRenderer) -> None:
    schedule = [{"date": "2027-01-20", "amount": "1234.56"}] * 40
    variables = samples("plan_confirmed", schedule=schedule)
    with pytest.raises(TemplateError) as info:
        renderer.render("plan_confirmed", channel="sms", language="de", variables=variables)
    assert codes(list(info.value.issues)) == ["sms_segments"]
    # email has no segments: the same plan goes out there
    renderer.render("plan_confirmed", channel="email", language="de", variables=variables)


def test_a_static_error_makes_render_raise(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/greet_reply.j2": "Hello {{ first_name }}\n"})
    with pytest.raises(TemplateError) as info:
        TemplateRenderer(root).render("greet_reply", channel="sms", language="en",
                                      variables=samples("greet_reply"))
    assert codes(list(info.value.issues)) == ["missing_optout"]
    assert info.value.key == "greet_reply"


def test_the_static_lint_follows_edits_of_the_template_and_its_partials(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/greet_reply.j2": "Hello {{ first_name }}\n" + FOOTER})
    renderer = TemplateRenderer(root)
    variables = samples("greet_reply")

    def edit(name: str, text: str, mtime: int) -> None:
        path = root / name
        path.write_text(text, encoding="utf-8")
        os.utime(path, ns=(mtime, mtime))  # distinct mtimes, however coarse the file system

    edit("en/greet_reply.j2", "Hello {{ first_name }}\n" + FOOTER, 1_000_000_000_000_000_000)
    assert renderer.render("greet_reply", channel="sms", language="en", variables=variables).body
    edit("en/_footer.j2", "See you in court.\n{% include 'en/_optout.j2' %}\n", 1_000_000_001_000_000_000)
    with pytest.raises(TemplateError) as info:
        renderer.render("greet_reply", channel="sms", language="en", variables=variables)
    assert [(i.code, i.template) for i in info.value.issues] == [("threat_phrase", "en/_footer.j2")]
    edit("en/_footer.j2", "{% include 'en/_optout.j2' %}\n", 1_000_000_002_000_000_000)
    assert renderer.render("greet_reply", channel="sms", language="en", variables=variables).body


def test_the_static_lint_runs_once_per_file_version(tmp_path: Path, monkeypatch) -> None:
    root = make_root(tmp_path, {"en/greet_reply.j2": "Hello\n" + FOOTER})
    renderer = TemplateRenderer(root)
    calls = []
    original = renderer._lint.lint_template
    monkeypatch.setattr(renderer._lint, "lint_template",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    for _ in range(5):
        renderer.render("greet_reply", channel="sms", language="en", variables=samples("greet_reply"))
    assert len(calls) == 1


def test_jurisdiction_is_required_and_must_be_known(renderer: TemplateRenderer) -> None:
    variables = samples("reminder_first")
    del variables["jurisdiction"]
    with pytest.raises(TemplateError) as info:
        renderer.render("reminder_first", channel="sms", language="en", variables=variables)
    assert info.value.variable == "jurisdiction"
    with pytest.raises(TemplateError, match="unknown jurisdiction 'FR'"):
        renderer.render("reminder_first", channel="sms", language="en",
                        variables=samples("reminder_first", jurisdiction="FR"))


def test_without_a_catalogue_the_renderer_still_lints_what_it_can(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"en/anything.j2": "Hello {{ who }}\n"}, catalogue=False)
    renderer = TemplateRenderer(root)
    assert renderer.catalogue is None
    assert renderer.render("anything", channel="sms", language="en", variables={"who": "Anna"}).body
    with pytest.raises(TemplateError):
        renderer.render("anything", channel="sms", language="en", variables={"who": "the sheriff"})


# --------------------------------------------------------------------------- disclosures

COMPANY = "Nudge Collections"
CREDITOR = "Energie Direct B.V."

# (jurisdiction, first_contact) -> the English disclosure once the person is verified (balance)
VERIFIED_EN = {
    ("US", True): "This is an attempt to collect a debt by Nudge Collections, a debt collector. "
                  "Any information obtained will be used for that purpose.",
    ("US", False): "This message is from a debt collector.",
    ("UK", True): "Nudge Collections is collecting this debt on behalf of Energie Direct B.V.",
    ("UK", False): "Nudge Collections is collecting this debt on behalf of Energie Direct B.V.",
    ("DE", True): "On behalf of: Energie Direct B.V. Claim for: energy supply. "
                  "Further details of the claim are available on request.",
    ("DE", False): "On behalf of: Energie Direct B.V. Claim for: energy supply. "
                   "Further details of the claim are available on request.",
    ("EU/NL", True): "On behalf of Energie Direct B.V.",
    ("EU/NL", False): "On behalf of Energie Direct B.V.",
}
IDENTITY_SAFE_EN = "Once we've confirmed it's you, we'll tell you who we're contacting you for."


def _disclosure_line(body: str) -> str:
    """The line between the message text and the opt-out line (SMS)."""
    return body.splitlines()[-2]


@pytest.mark.parametrize("jurisdiction, first_contact", sorted(VERIFIED_EN))
def test_the_verified_disclosure_per_jurisdiction(
    renderer: TemplateRenderer, jurisdiction: str, first_contact: bool
) -> None:
    body = renderer.render("balance", channel="sms", language="en", variables=samples(
        "balance", jurisdiction=jurisdiction, first_contact=first_contact)).body
    assert _disclosure_line(body) == VERIFIED_EN[(jurisdiction, first_contact)]


@pytest.mark.parametrize("jurisdiction, first_contact", sorted(VERIFIED_EN))
def test_the_first_reminder_discloses_in_its_identity_safe_form(
    renderer: TemplateRenderer, jurisdiction: str, first_contact: bool
) -> None:
    for channel in CHANNELS:
        message = renderer.render("reminder_first", channel=channel, language="en", variables=samples(
            "reminder_first", jurisdiction=jurisdiction, first_contact=first_contact,
            creditor=CREDITOR, amount="1234.56", product="energy"))
        text = f"{message.subject or ''}\n{message.body}"
        for secret in ("Energie Direct", "1234", "1,234", "energy"):
            assert secret not in text
        expected = VERIFIED_EN[(jurisdiction, first_contact)] if jurisdiction == "US" else IDENTITY_SAFE_EN
        assert expected in message.body


GERMAN_DE_FORM = ("Auftraggeber: Energie Direct B.V. Forderungsgrund: Energieliefervertrag. "
                  "Weitere Angaben zur Forderung erhalten Sie auf Anfrage.")


@pytest.mark.parametrize("language, jurisdiction, expected", [
    ("de", "DE", GERMAN_DE_FORM),
    ("de", "UK", "Nudge Collections zieht diese Forderung im Auftrag von Energie Direct B.V. ein."),
    ("de", "EU/NL", "Im Auftrag von Energie Direct B.V."),
    ("nl", "EU/NL", "Namens Energie Direct B.V."),
    ("nl", "DE", "Opdrachtgever: Energie Direct B.V. Vordering voor: energielevering. "
                 "Meer gegevens over de vordering krijg je op verzoek."),
    ("nl", "US", "Dit bericht komt van een incassobureau."),
    ("de", "US", "Diese Nachricht stammt von einem Inkassounternehmen."),
])
def test_the_disclosure_in_dutch_and_german(
    renderer: TemplateRenderer, language: str, jurisdiction: str, expected: str
) -> None:
    body = renderer.render("balance", channel="sms", language=language, variables=samples(
        "balance", jurisdiction=jurisdiction, first_contact=False)).body
    assert _disclosure_line(body) == expected


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_disclosure_mentions_collection_costs(renderer: TemplateRenderer, language: str) -> None:
    for jurisdiction in JURISDICTIONS:
        for key in ("balance", "reminder_first"):
            body = renderer.render(key, channel="sms", language=language, variables=samples(
                key, jurisdiction=jurisdiction)).body.lower()
            for word in ("cost", "kosten", "fee", "gebühr", "incassokosten"):
                assert word not in body


def test_an_unknown_product_is_named_as_the_creditor_gave_it(renderer: TemplateRenderer) -> None:
    body = renderer.render("balance", channel="sms", language="en", variables=samples(
        "balance", jurisdiction="DE", product="gym membership", creditor="FitCo")).body
    assert "On behalf of: FitCo. Claim for: gym membership." in body


# --------------------------------------------------------------------------- threat matching


@pytest.mark.parametrize("text, found", [
    ("POLITIE", "politie"),
    ("Gerichtsvollzieher", "gerichtsvollzieher"),
    ("the Police", "police"),
    ("Gefängnis", "gefangnis"),
    ("beslaglegging", "beslaglegging"),
    ("Kontopfändung", "kontopfandung"),
    ("we will   sue  you", "sue you"),
    ("ARRESTATIE", "arrestatie"),
])
def test_threat_phrases_ignore_case_accents_and_spacing(text: str, found: str) -> None:
    hits = default_threat_phrases().find(f"Hello, {text}.")
    assert hits and hits[0].found == found


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aeiouprstlcznäöüéß ", max_size=60),
       st.sampled_from(["police", "gefängnis", "deurwaarder", "lohnpfändung", "court action", "jail",
                        "haft", "sue you", "xyz"]),
       st.text(alphabet="aeiouprstlcznäöüéß ", max_size=60))
def test_the_fast_pattern_agrees_with_the_phrase_by_phrase_search(prefix: str, middle: str,
                                                                   suffix: str) -> None:
    """The render path asks one merged pattern; the lint names hits phrase by phrase. They must
    never disagree, or a threat would pass the render unseen."""
    phrases = default_threat_phrases()
    text = normalise(prefix + middle + suffix)
    merged = phrases._any.search(text) is not None
    one_by_one = any(phrase.pattern.search(text) for phrase in phrases._phrases)
    assert merged == one_by_one


def test_a_phrase_list_can_be_built_in_code() -> None:
    phrases = ThreatPhrases([("bad word", "en", "house rule"), ("*suffix", "nl", "r")])
    assert [h.phrase for h in phrases.find("A BAD  word and a longsuffix")] == ["bad word", "*suffix"]
    assert phrases.find("badword suffixes") == []


# --------------------------------------------------------------------------- catalogue validation


def _catalogue(**keys: Any) -> dict[str, Any]:
    return {"defaults": {"sms_segment_budget": 3}, "common": {"first_name": "Anna"},
            "keys": keys or {"k": {"variables": {}}}}


@pytest.mark.parametrize("raw, message", [
    (_catalogue(k={"variables": {"amount": 12.5}}), "is a float"),
    (_catalogue(k={"variables": {"due": __import__("datetime").date(2026, 1, 2)}}), "quote dates"),
    (_catalogue(k={"variables": {}, "unsolicited": True, "exempt_optout": True}), "never be exempt"),
    (_catalogue(k={"variables": {}, "sms_segment_budget": 0}), "sms_segment_budget"),
    (_catalogue(k={"variables": {}, "exempt_optout": "yes"}), "expected true or false"),
    (_catalogue(k={"variables": {"a": "1"}, "optional": ["b"]}), "optional"),
    (_catalogue(k={"vars": {}}), "unknown field 'vars'"),
    (_catalogue(Bad_Key={"variables": {}}), "keys.Bad_Key"),
    ({"common": {}, "keys": {}}, "keys: expected a mapping"),
    ({"common": {}, "keys": {"k": {"variables": {}}}, "extra": 1}, "unknown top-level field"),
    ([1, 2], "expected a mapping"),
])
def test_catalogue_validation_names_the_problem(raw: Any, message: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(message)):
        parse_catalogue(raw)


def test_catalogue_validation_lists_every_problem_at_once() -> None:
    raw = _catalogue(a={"variables": {"x": 1.5}}, b={"variables": {}, "collection_demand": "no"})
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(raw, source="my.yml")
    assert str(info.value).startswith("my.yml: 2 problem(s)")


def test_an_unreadable_catalogue_is_a_catalogue_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("keys: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(tmp_path / "bad.yml")
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(tmp_path / "missing.yml")


# --------------------------------------------------------------------------- CLI


def test_cli_lint_passes_on_the_shipped_templates() -> None:
    from service.cli import app

    result = CliRunner().invoke(app, ["templates", "lint", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output


def test_cli_lint_exits_1_on_a_bad_template_dir(tmp_path: Path) -> None:
    from service.cli import app

    root = make_root(tmp_path, {"en/greet_reply.j2": "Hello {{ first_name }}, or jail.\n"})
    result = CliRunner().invoke(app, ["templates", "lint", "--root", str(root)])
    assert result.exit_code == 1
    assert "threat_phrase" in result.output and "missing_optout" in result.output
    assert "en/greet_reply.j2:1" in result.output


def test_cli_lint_reports_an_invalid_catalogue(tmp_path: Path) -> None:
    from service.cli import app

    root = make_root(tmp_path, {}, catalogue=False)
    (root / "catalogue.yml").write_text("keys: {k: {variables: {amount: 1.5}}}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["templates", "lint", "--root", str(root)])
    assert result.exit_code == 1
    assert "is a float" in result.output
