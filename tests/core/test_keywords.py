"""Tests for bot.core.keywords: carrier keywords and critical-phrase pre-rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.keywords import CARRIER_KEYWORDS, LOCAL_KEYWORDS, PreRuleMatch, match_prerules

SMS_KEYWORDS = Path(__file__).parents[3] / "shared/testdata/sms_keywords/opt_keywords.json"
PROVIDER_LISTS = json.loads(SMS_KEYWORDS.read_text(encoding="utf-8"))

# YES is an industry default opt-in, but for Nudge a bare "yes" is an affirm in the dialogue
# (see the module docstring); every other provider keyword must be honoured as listed.
DELIBERATELY_NOT_OPT_IN = {"YES"}


def _provider_cases() -> list[tuple[str, str | None]]:
    cases: list[tuple[str, str | None]] = []
    for list_name, intent in (("twilio_default_opt_out", "opt_out"),
                              ("aws_required_opt_out", "opt_out"),
                              ("industry_default_opt_in", "opt_in"),
                              ("industry_default_help", "help")):
        for keyword in PROVIDER_LISTS[list_name]:
            cases.append((keyword, None if keyword in DELIBERATELY_NOT_OPT_IN else intent))
    return cases


@pytest.mark.parametrize(("keyword", "intent"), _provider_cases())
@pytest.mark.parametrize("dress",
                         ["{}", "{} ", "  {}\n", "{}.", "{}!!", '"{}"', "{} 🛑", "🙏{}"])
@pytest.mark.parametrize("case", [str.upper, str.lower, str.title])
def test_provider_keyword_lists(keyword: str, intent: str | None, dress: str, case) -> None:
    match = match_prerules(dress.format(case(keyword)), "en")
    if intent is None:
        assert match is None
    else:
        assert match is not None and match.intent == intent and not match.urgent
        assert match.rule.startswith("carrier_keyword:")


def test_provider_file_is_the_one_we_expect() -> None:
    # Guard against the shared data changing under us without the keyword table following.
    assert set(PROVIDER_LISTS["twilio_default_opt_out"]) <= set(CARRIER_KEYWORDS)
    assert set(PROVIDER_LISTS["industry_default_help"]) <= set(CARRIER_KEYWORDS)
    assert set(PROVIDER_LISTS["industry_default_opt_in"]) - DELIBERATELY_NOT_OPT_IN <= set(
        CARRIER_KEYWORDS)
    assert "YES" not in CARRIER_KEYWORDS


KEYWORDS = [
    # text, lang, intent, rule
    ("STOP", "en", "opt_out", "carrier_keyword:STOP"),
    ("stop", "nl", "opt_out", "carrier_keyword:STOP"),
    ("Stop 🛑", "de", "opt_out", "carrier_keyword:STOP"),
    ("🛑STOP🛑", "en", "opt_out", "carrier_keyword:STOP"),
    ("STOPALL", "en", "opt_out", "carrier_keyword:STOPALL"),
    ("Stop all", "en", "opt_out", "carrier_keyword:STOPALL"),
    ("Opt out", "en", "opt_out", "carrier_keyword:OPTOUT"),
    ("OPT-OUT", "en", "opt_out", "carrier_keyword:OPTOUT"),
    ("optout", "en", "opt_out", "carrier_keyword:OPTOUT"),
    ("ARRÊT", "en", "opt_out", "carrier_keyword:ARRET"),
    ("unsubscribe.", "en", "opt_out", "carrier_keyword:UNSUBSCRIBE"),
    ("AFMELDEN", "nl", "opt_out", "local_keyword:AFMELDEN"),
    ("afmelden!", "nl", "opt_out", "local_keyword:AFMELDEN"),
    ("Uitschrijven", "nl", "opt_out", "local_keyword:UITSCHRIJVEN"),
    ("STOPP", "de", "opt_out", "local_keyword:STOPP"),
    ("Abmelden", "de", "opt_out", "local_keyword:ABMELDEN"),
    ("abbestellen", "de", "opt_out", "local_keyword:ABBESTELLEN"),
    ("Stopp", "en", "opt_out", "local_keyword:STOPP"),  # local words work in any conversation
    ("START", "en", "opt_in", "carrier_keyword:START"),
    ("unstop", "en", "opt_in", "carrier_keyword:UNSTOP"),
    ("HELP", "en", "help", "carrier_keyword:HELP"),
    ("Help?", "nl", "help", "carrier_keyword:HELP"),
    ("info", "de", "help", "carrier_keyword:INFO"),
]


@pytest.mark.parametrize(("text", "lang", "intent", "rule"), KEYWORDS)
def test_keywords(text: str, lang: str, intent: str, rule: str) -> None:
    assert match_prerules(text, lang) == PreRuleMatch(intent=intent, rule=rule)


NOT_KEYWORDS = [
    ("yes", "en"), ("YES", "en"), ("Yes!", "en"), ("ja", "nl"), ("ja", "de"),
    ("stop by tomorrow and I'll pay", "en"),
    ("Stop please", "en"),  # natural language: the engine decides (and knows the channel)
    ("can you stop the interest", "en"), ("I need help paying", "en"),
    ("the end", "en"), ("start paying next week", "en"), ("stopped", "en"),
    ("stopping", "en"), ("STOP STOP", "en"), ("stoppen met rente?", "nl"),
    ("🛑", "en"), ("", "en"), ("   ", "en"), ("...", "en"), ("info@example.com", "en"),
]


@pytest.mark.parametrize(("text", "lang"), NOT_KEYWORDS)
def test_not_keywords(text: str, lang: str) -> None:
    assert match_prerules(text, lang) is None


_ALL_KEYWORDS = sorted(set(CARRIER_KEYWORDS) | set(LOCAL_KEYWORDS))
_DECORATION = st.text(alphabet=" \t\n.,!?;:\"'()-*🛑🙏😡👍❤️", max_size=6)


@given(keyword=st.sampled_from(_ALL_KEYWORDS), before=_DECORATION, after=_DECORATION,
       lang=st.sampled_from(["en", "nl", "de"]), lower=st.booleans())
def test_keyword_with_any_decoration(keyword: str, before: str, after: str, lang: str,
                                     lower: bool) -> None:
    text = before + (keyword.lower() if lower else keyword) + after
    match = match_prerules(text, lang)
    expected = CARRIER_KEYWORDS.get(keyword) or LOCAL_KEYWORDS[keyword]
    assert match is not None and match.intent == expected


@given(keyword=st.sampled_from(_ALL_KEYWORDS),
       words=st.lists(st.sampled_from(["please", "now", "me", "texting", "and", "I", "pay"]),
                      min_size=1, max_size=3))
def test_keyword_inside_a_sentence_is_not_a_keyword(keyword: str, words: list[str]) -> None:
    assert match_prerules(" ".join([keyword, *words]), "en") is None


# ---------------------------------------------------------------------------------------------
# Critical phrases
# ---------------------------------------------------------------------------------------------

PHRASES = [
    # self-harm: vulnerability, urgent
    ("I want to kill myself", "en", "vulnerability", "self_harm:en"),
    ("sometimes I think about suicide", "en", "vulnerability", "self_harm:en"),
    ("I feel suicidal", "en", "vulnerability", "self_harm:en"),
    ("I just want to end it all", "en", "vulnerability", "self_harm:en"),
    ("I'm going to take my own life", "en", "vulnerability", "self_harm:en"),
    ("I don’t want to live anymore", "en", "vulnerability", "self_harm:en"),
    ("I want to die", "en", "vulnerability", "self_harm:en"),
    ("they'd be better off if I was dead, better off dead", "en", "vulnerability", "self_harm:en"),
    ("I have been self-harming", "en", "vulnerability", "self_harm:en"),
    ("I could kill myself for forgetting", "en", "vulnerability", "self_harm:en"),
    ("ik denk aan zelfmoord", "nl", "vulnerability", "self_harm:nl"),
    ("ik wil er een eind aan maken", "nl", "vulnerability", "self_harm:nl"),
    ("ik maak er een einde aan", "nl", "vulnerability", "self_harm:nl"),
    ("ik wil niet meer leven", "nl", "vulnerability", "self_harm:nl"),
    ("ik ga mezelf iets aandoen", "nl", "vulnerability", "self_harm:nl"),
    ("ik wil mezelf van kant maken", "nl", "vulnerability", "self_harm:nl"),
    ("ich will mich umbringen", "de", "vulnerability", "self_harm:de"),
    ("Ich will nicht mehr leben", "de", "vulnerability", "self_harm:de"),
    ("ich denke an Selbstmord", "de", "vulnerability", "self_harm:de"),
    ("Suizidgedanken", "de", "vulnerability", "self_harm:de"),
    ("ich bringe mich um", "de", "vulnerability", "self_harm:de"),
    ("ich will mir das Leben nehmen", "de", "vulnerability", "self_harm:de"),
    ("ich möchte einfach sterben", "de", "vulnerability", "self_harm:de"),
    ("ich bin lebensmüde", "de", "vulnerability", "self_harm:de"),
    ("damit kann ich nicht mehr leben", "de", "vulnerability", "self_harm:de"),
    ("Ich habe Angst vor den Schulden von euch, ich will nicht mehr leben", "de", "vulnerability",
     "self_harm:de"),
    # the money sense of "nicht mehr leben" does not hide a second, real mention
    ("Von 900 Euro kann ich nicht mehr leben. Ich will nicht mehr leben.", "de", "vulnerability",
     "self_harm:de"),
    # language of the message differs from the conversation's: still caught
    ("I want to kill myself", "nl", "vulnerability", "self_harm:en"),
    ("zelfmoord", "en", "vulnerability", "self_harm:nl"),
    # deceased
    ("he passed away last month", "en", "deceased", "deceased:en"),
    ("no he passed away in May", "en", "deceased", "deceased:en"),  # "no" answers a question
    ("my husband died in october", "en", "deceased", "deceased:en"),
    ("My mother has sadly died", "en", "deceased", "deceased:en"),
    ("Peter died in March", "en", "deceased", "deceased:en"),
    ("I'm writing about my late father, I have the death certificate", "en", "deceased",
     "deceased:en"),
    ("the account holder is deceased", "en", "deceased", "deceased:en"),
    ("she's dead", "en", "deceased", "deceased:en"),
    ("mijn man is overleden", "nl", "deceased", "deceased:nl"),
    ("hij is vorige week gestorven", "nl", "deceased", "deceased:nl"),
    ("mijn moeder is dood", "nl", "deceased", "deceased:nl"),
    ("mein Vater ist tot", "de", "deceased", "deceased:de"),
    ("mein Mann ist verstorben", "de", "deceased", "deceased:de"),
    ("meine Mutter ist letzte Woche gestorben", "de", "deceased", "deceased:de"),
    ("er ist leider von uns gegangen", "de", "deceased", "deceased:de"),
    # attorney
    ("please contact my solicitor", "en", "attorney", "attorney:en"),
    ("speak to my lawyer", "en", "attorney", "attorney:en"),
    ("I have a lawyer now", "en", "attorney", "attorney:en"),
    ("we have instructed a solicitor", "en", "attorney", "attorney:en"),
    ("I am represented by StepChange", "en", "attorney", "attorney:en"),
    ("my daughter has power of attorney", "en", "attorney", "attorney:en"),
    ("neem contact op met mijn advocaat", "nl", "attorney", "attorney:nl"),
    ("ik heb een advocaat ingeschakeld", "nl", "attorney", "attorney:nl"),
    ("ik sta onder bewind", "nl", "attorney", "attorney:nl"),
    ("mijn bewindvoerder regelt dit", "nl", "attorney", "attorney:nl"),
    ("wenden Sie sich an meinen Anwalt", "de", "attorney", "attorney:de"),
    ("mein Rechtsanwalt meldet sich", "de", "attorney", "attorney:de"),
    ("ich habe einen Anwalt eingeschaltet", "de", "attorney", "attorney:de"),
    ("Ich bin anwaltlich vertreten", "de", "attorney", "attorney:de"),
    ("namens und in Vollmacht unserer Mandantin", "de", "attorney", "attorney:de"),
    # bankruptcy
    ("I am in an IVA", "en", "bankruptcy", "bankruptcy:en"),
    ("I was declared bankrupt in May", "en", "bankruptcy", "bankruptcy:en"),
    ("I filed for bankruptcy", "en", "bankruptcy", "bankruptcy:en"),
    ("I have a debt relief order", "en", "bankruptcy", "bankruptcy:en"),
    ("ik zit in de WSNP", "nl", "bankruptcy", "bankruptcy:nl"),
    ("ik zit in de schuldsanering", "nl", "bankruptcy", "bankruptcy:nl"),
    ("ik ben failliet verklaard", "nl", "bankruptcy", "bankruptcy:nl"),
    ("ik zit in een schuldhulpverleningstraject", "nl", "bankruptcy", "bankruptcy:nl"),
    ("ich bin in der Privatinsolvenz", "de", "bankruptcy", "bankruptcy:de"),
    ("Insolvenzverfahren wurde eröffnet", "de", "bankruptcy", "bankruptcy:de"),
    ("Ich habe Insolvenz angemeldet", "de", "bankruptcy", "bankruptcy:de"),
]


@pytest.mark.parametrize(("text", "lang", "intent", "rule"), PHRASES)
def test_critical_phrases(text: str, lang: str, intent: str, rule: str) -> None:
    match = match_prerules(text, lang)
    assert match == PreRuleMatch(intent=intent, rule=rule, urgent=intent == "vulnerability")


NEAR_MISSES = [
    # self-harm figures of speech and money talk
    ("this debt is killing me", "en"), ("you're killing me with these fees", "en"),
    ("I'd die for a holiday", "en"), ("Von 900 Euro kann ich nicht mehr leben", "de"),
    ("davon kann ich nicht mehr leben", "de"), ("ik kan niet meer leven van mijn uitkering", "nl"),
    ("I'm dying to get this sorted", "en"),
    # deceased false friends
    ("my battery died", "en"), ("My phone died, sorry", "en"), ("Phone died", "en"),
    ("the line died", "en"), ("I nearly died when I saw the bill", "en"),
    ("mein Handy ist gestorben", "de"), ("mijn telefoon is gestorven", "nl"),
    ("my dog died", "en"),  # a bereavement, not a deceased debtor
    ("I passed on your message", "en"), ("he is not dead, he moved", "en"),
    ("He's dead serious about paying", "en"), ("she is dead set on paying it off", "en"),
    ("sorry my phone was dead", "en"), ("we had a death in the family", "en"),
    # attorney: wanting or lacking a lawyer is not having one
    ("I can't afford a solicitor", "en"), ("I don't have a lawyer", "en"),
    ("I'll get a lawyer", "en"), ("ich habe keinen Anwalt", "de"), ("ich gehe zum Anwalt", "de"),
    ("is een advocaat nodig?", "nl"), ("the attorney general", "en"),
    ("my lawyer friend says this is illegal", "en"),
    # bankruptcy: casual or negated
    ("this will bankrupt me", "en"), ("I'm not bankrupt", "en"), ("I'm not in an IVA", "en"),
    ("Iva here, can I pay later", "en"), ("keine Insolvenz", "de"),
    ("I have no IVA or anything", "en"), ("ik heb geen schuldhulp", "nl"),
    ("I have never been declared bankrupt", "en"),
    ("ik zit niet in de WSNP", "nl"), ("I'm basically broke", "en"),
    ("I'll end up bankrupt at this rate", "en"), ("Ich bin pleite", "de"),
    ("I want to end this debt", "en"), ("ik wil een einde maken aan deze schuld", "nl"),
    # ordinary replies
    ("I can pay 50 on friday", "en"), ("wie ben jij?", "nl"), ("Ich zahle morgen", "de"),
    ("stop by tomorrow and I'll pay", "en"), ("", "en"),
]


@pytest.mark.parametrize(("text", "lang"), NEAR_MISSES)
def test_near_misses_do_not_pause_the_bot(text: str, lang: str) -> None:
    assert match_prerules(text, lang) is None


def test_self_harm_wins_over_other_states() -> None:
    match = match_prerules("My husband died and I want to end it all", "en")
    assert match == PreRuleMatch("vulnerability", "self_harm:en", urgent=True)


def test_self_harm_is_not_skipped_when_negated() -> None:
    # A negated mention still goes to a person: a missed one costs far more than a check-in.
    match = match_prerules("I'm not going to kill myself, don't worry", "en")
    assert match is not None and match.urgent


def test_unknown_language_still_checks_every_rule() -> None:
    assert match_prerules("zelfmoord", "fr") == PreRuleMatch("vulnerability", "self_harm:nl",
                                                             urgent=True)
    assert match_prerules("STOP", "fr") == PreRuleMatch("opt_out", "carrier_keyword:STOP")


def test_prerule_match_is_frozen() -> None:
    match = PreRuleMatch("opt_out", "carrier_keyword:STOP")
    with pytest.raises(AttributeError):
        match.intent = "help"  # type: ignore[misc]
