"""The three tones (soft, loss_aversion, social_proof) of the collection workflow's steps
(reminder_first, reminder_second, reminder_final) and of the persuasive replies (offer_full,
offer_plan, payment_link), in every language and channel, with the real templates, catalogue
and renderer (no Redis)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest

from service.template_lint import load_catalogue
from service.templates import (
    CHANNELS,
    JURISDICTIONS,
    TONES,
    RenderedMessage,
    TemplateRenderer,
    is_gsm7,
    sandbox_environment,
    sms_segments,
)

ROOT = Path(__file__).resolve().parents[2] / "message_templates"
CATALOGUE = load_catalogue(ROOT / "catalogue.yml")
LANGUAGES = ("en", "nl", "de")

STEPS = ("reminder_first", "reminder_second", "reminder_final")
REPLIES = ("offer_full", "offer_plan", "payment_link")
KEYS = STEPS + REPLIES
PROOF = ("proof_percent", "proof_days")

OPTOUT_LINE = {
    "en": "Reply STOP to opt out.",
    "nl": "Antwoord STOP om je af te melden.",
    "de": "Antworten Sie STOPP zum Abmelden.",
}
UNSUBSCRIBE_LABEL = {"en": "Unsubscribe: ", "nl": "Afmelden: ", "de": "Abmelden: "}
# the identity-safe disclosure every step carries (EU/NL, DE and UK before verification)
IDENTITY_SAFE = {
    "en": "Once we've confirmed it's you, we'll tell you who we're contacting you for.",
    "nl": "Zodra we weten dat je het echt bent, vertellen we je namens wie we contact opnemen.",
    "de": "Sobald Sie sich identifiziert haben, nennen wir Ihnen unseren Auftraggeber und alle Einzelheiten.",
}
# the gentle words of offer_plan in hardship (the base template's own)
GENTLE = {"en": "no pressure", "nl": "geen haast", "de": "ohne Druck"}


def proof_sentence(language: str, percent: int, days: int) -> str:
    """The measured social-proof sentence, exactly as the debtor must read it."""
    if language == "en":
        return (f"{percent} out of 100 people in a similar situation sorted this out within "
                f"{days} {'day' if days == 1 else 'days'} of a message like this.")
    if language == "nl":
        return (f"{percent} van de 100 mensen in een vergelijkbare situatie "
                f"{'had' if percent == 1 else 'hadden'} dit binnen {days} "
                f"{'dag' if days == 1 else 'dagen'} na een bericht als dit geregeld.")
    return (f"{percent} von 100 Menschen in ähnlicher Lage {'hat' if percent == 1 else 'haben'} "
            f"das binnen {days} {'Tag' if days == 1 else 'Tagen'} nach einer solchen Nachricht "
            "geklärt.")


# Debt details a step message must never show, whatever a sender passes by mistake: distinctive
# values that cannot occur in the text by chance.
SENTINELS: dict[str, Any] = {
    "creditor": "SENTINEL CREDITOR",
    "reference": "SENTINEL-REF-42",
    "amount": "9876.54",
    "balance": "9876.54",
    "total": "9876.54",
    "instalment_amount": "4321.09",
    "currency": "EUR",
    "due_date": "2031-03-15",
    "pay_by": "2031-03-15",
    "payment_link": "https://pay.example.com/SENTINEL",
    "product": "SENTINEL product",
}
LEAKS = ("SENTINEL", "9876", "9.876", "4321", "4.321", "2031", "€", "EUR")


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(ROOT)


def samples(key: str, *, proof: bool = True, **extra: Any) -> dict[str, Any]:
    """The catalogue's samples for ``key`` (with the common ones); without the proof
    variables when ``proof`` is false."""
    variables = CATALOGUE.samples(key)
    if not proof:
        for name in PROOF:
            variables.pop(name, None)
    return {**variables, **extra}


def render(renderer: TemplateRenderer, key: str, tone: str, channel: str, language: str,
           *, proof: bool = True, **extra: Any) -> RenderedMessage:
    return renderer.render(key, channel=channel, language=language, tone=tone,
                           variables=samples(key, proof=proof, **extra))


def environment(language: str) -> jinja2.Environment:
    """The renderer's environment, to render a template file directly (a tone-less base)."""
    return sandbox_environment(jinja2.FileSystemLoader(str(ROOT)), language)


def text_of(message: RenderedMessage) -> str:
    return f"{message.subject or ''}\n{message.body}"


def optout_line(channel: str, language: str) -> str:
    if channel == "email":
        return UNSUBSCRIBE_LABEL[language] + CATALOGUE.common["unsubscribe_url"]
    return OPTOUT_LINE[language]


# --------------------------------------------------------------------------- inventory


def test_the_catalogue_lists_the_tone_keys_with_optional_proof_variables() -> None:
    for key in KEYS:
        spec = CATALOGUE.keys[key]
        assert set(PROOF) <= set(spec.variables)
        assert set(PROOF) <= spec.optional
        assert isinstance(spec.variables["proof_percent"], int)
        assert isinstance(spec.variables["proof_days"], int)
        assert spec.note
    for key in STEPS:
        spec = CATALOGUE.keys[key]
        assert spec.unsolicited and spec.collection_demand and not spec.exempt_optout
        # before verification: nothing about the debt is even available to the template
        assert set(spec.variables) == set(PROOF)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_tone_has_its_templates(language: str) -> None:
    folder = ROOT / language
    missing = [f"{key}.{tone}.j2" for key in KEYS for tone in TONES
               if not (folder / f"{key}.{tone}.j2").is_file()]
    missing += [f"{key}.{tone}.email.j2" for key in STEPS for tone in TONES
                if not (folder / f"{key}.{tone}.email.j2").is_file()]
    missing += [f"{key}.j2" for key in KEYS if not (folder / f"{key}.j2").is_file()]
    assert missing == []


def _referenced_variables(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Variables a template and every partial it includes, imports or extends refer to."""
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


STEP_FILES = sorted(path for language in LANGUAGES for path in (ROOT / language).glob("*.j2")
                    if path.name.split(".", 1)[0] in STEPS)


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_step_templates_use_no_debt_variable(path: Path) -> None:
    allowed = set(CATALOGUE.common) | set(PROOF)
    assert _referenced_variables(path) - allowed == set()


# --------------------------------------------------------------------------- every combination


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("tone", TONES)
@pytest.mark.parametrize("key", KEYS)
def test_every_tone_renders_with_the_catalogue_samples(
    renderer: TemplateRenderer, key: str, tone: str, language: str, channel: str
) -> None:
    line = optout_line(channel, language)
    budget = CATALOGUE.budget(key)
    for proof in (True, False):
        for jurisdiction in JURISDICTIONS:
            for first_contact in (True, False):
                message = render(renderer, key, tone, channel, language, proof=proof,
                                 jurisdiction=jurisdiction, first_contact=first_contact)
                body = message.body
                assert body and body == body.strip()
                assert "None" not in body
                assert "{{" not in body and "{%" not in body and "}}" not in body
                assert "  " not in body and "\n\n\n" not in body
                assert body.count(line) == 1, "the opt-out line exactly once"
                assert body.endswith(line)
                assert "STOP" not in body.replace(line, "")
                if channel == "email":
                    assert message.subject and "\n" not in message.subject
                else:
                    assert message.subject is None
                if channel == "sms":
                    assert is_gsm7(body), sorted({c for c in body if not is_gsm7(c)})
                    assert sms_segments(body) <= budget


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", KEYS)
def test_the_tones_say_different_things(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    for proof in (True, False):
        bodies = {tone: render(renderer, key, tone, channel, language, proof=proof).body
                  for tone in TONES}
        assert len(set(bodies.values())) == len(TONES)


# --------------------------------------------------------------------------- steps: no debt detail


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("tone", TONES)
@pytest.mark.parametrize("key", STEPS)
def test_steps_reveal_nothing_about_the_debt(
    renderer: TemplateRenderer, key: str, tone: str, language: str, channel: str
) -> None:
    for jurisdiction in JURISDICTIONS:
        for proof in (True, False):
            message = render(renderer, key, tone, channel, language, proof=proof,
                             jurisdiction=jurisdiction, first_contact=key == "reminder_first",
                             **SENTINELS)
            text = text_of(message)
            for value in LEAKS:
                assert value not in text, f"{key}.{tone} leaks {value!r}"
            assert "Nudge Collections" in message.body  # says who writes
            if jurisdiction != "US":
                assert message.body.count(IDENTITY_SAFE[language]) == 1
    if channel == "email":
        subject = render(renderer, key, tone, channel, language).subject or ""
        assert not re.search(r"\d", subject)


@pytest.mark.parametrize("tone", TONES)
@pytest.mark.parametrize("key", STEPS)
def test_english_steps_fit_two_segments_without_a_figure(
    renderer: TemplateRenderer, key: str, tone: str
) -> None:
    # with the identity-safe disclosure and the opt-out line; the measured figure may cost a
    # third segment in the last step
    body = render(renderer, key, tone, "sms", "en", proof=False, jurisdiction="EU/NL").body
    assert sms_segments(body) <= 2


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_first_step_in_the_soft_tone_keeps_the_original_subject(
    renderer: TemplateRenderer, language: str
) -> None:
    # soft is the default tone: what went out before the tones existed keeps its subject
    original = environment(language).get_template(f"{language}/reminder_first.email.j2")
    expected = " ".join(str(original.make_module(samples("reminder_first")).subject).split())
    assert render(renderer, "reminder_first", "soft", "email", language).subject == expected


# --------------------------------------------------------------------------- social proof


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", KEYS)
def test_social_proof_states_the_measured_figure_exactly(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    # as given, never rounded (67 stays 67), singular and plural, up to 100 out of 100
    for percent, days in ((83, 11), (70, 7), (67, 9), (1, 1), (100, 30)):
        body = render(renderer, key, "social_proof", channel, language,
                      proof_percent=percent, proof_days=days).body
        assert body.count(proof_sentence(language, percent, days)) == 1


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", KEYS)
def test_social_proof_without_a_figure_says_no_number(
    renderer: TemplateRenderer, key: str, language: str, channel: str
) -> None:
    soft = render(renderer, key, "soft", channel, language, proof=False).body
    # without both variables (or with one only) the sentence without a number
    for extra in ({}, {"proof_percent": 83}, {"proof_days": 11}):
        body = render(renderer, key, "social_proof", channel, language, proof=False,
                      **extra).body
        assert "%" not in body
        # the only numbers are those of the facts every tone shares (amounts, dates, link)
        assert re.findall(r"\d+", body) == re.findall(r"\d+", soft)
        assert body != soft


# --------------------------------------------------------------------------- hardship


def _tone_lines(renderer: TemplateRenderer, channel: str, language: str, proof: bool,
                **extra: Any) -> dict[str, set[str]]:
    """Per tone, the lines only that tone's offer_plan has: its persuasion sentence."""
    lines = {tone: set(render(renderer, "offer_plan", tone, channel, language, proof=proof,
                              **extra).body.splitlines()) for tone in TONES}
    return {tone: lines[tone] - set().union(*(lines[t] for t in TONES if t != tone))
            for tone in TONES}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_hardship_gets_the_same_gentle_offer_in_every_tone(
    renderer: TemplateRenderer, language: str, channel: str
) -> None:
    for proof in (True, False):
        for agreed in (False, True):
            own = _tone_lines(renderer, channel, language, proof, agreed=agreed)
            assert all(own.values()), "each tone adds its own sentence outside hardship"
            hardship = {tone: render(renderer, "offer_plan", tone, channel, language,
                                     proof=proof, agreed=agreed, hardship=True).body
                        for tone in TONES}
            assert len(set(hardship.values())) == 1, "every tone says the same in hardship"
            body = hardship["soft"]
            assert GENTLE[language] in body
            assert "%" not in body and proof_sentence(language, 70, 7) not in body
            for tone, sentences in own.items():
                for sentence in sentences:
                    assert sentence not in body, f"{tone} persuades in hardship: {sentence!r}"
            # hardship=False is the same as no hardship flag at all
            for tone in TONES:
                assert (render(renderer, "offer_plan", tone, channel, language, proof=proof,
                               agreed=agreed, hardship=False).body
                        == render(renderer, "offer_plan", tone, channel, language, proof=proof,
                                  agreed=agreed).body)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("tone", TONES)
@pytest.mark.parametrize("key", REPLIES)
def test_replies_keep_the_facts_of_the_base_template(
    renderer: TemplateRenderer, key: str, tone: str, language: str
) -> None:
    # a tone adds one sentence; every line of the tone-less text is still there, in order
    base = environment(language).get_template(f"{language}/{key}.j2")
    variables = {**samples(key), "channel": "sms", "language": language}
    expected = [line for line in str(base.make_module(variables)).strip().splitlines() if line]
    lines = render(renderer, key, tone, "sms", language).body.splitlines()
    extra = [line for line in lines if line not in expected]
    assert [line for line in lines if line in expected] == expected
    assert len(extra) == 1
