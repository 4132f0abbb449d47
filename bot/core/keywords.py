"""Keyword pre-rules: what is recognised before, and regardless of, the dialogue engine.

This module owns two kinds of rule, both pure functions of the message text:

* Carrier keywords. A message that is nothing but STOP, START, HELP, ... is an opt-out, opt-in or
  help request by messaging-provider convention (Twilio, AWS End User Messaging, Braze), in any
  case, with surrounding whitespace, punctuation and emoji ignored. Local words (AFMELDEN,
  STOPP, ABMELDEN) count the same way.
* Critical phrases. Mentions of self-harm, a death, a lawyer or an insolvency pause automated
  collection and hand the conversation to a person, so these rules favour precision: each phrase
  is specific, bounded by word boundaries, and skipped when negated ("I'm not in an IVA").
  Self-harm is the exception: there a missed mention costs far more than an unneeded
  escalation, so it is never skipped.

Known limits (the engine and the agent cover the rest):
* Natural-language opt-outs ("please stop texting me") are left to the engine, which knows the
  channel an opt-out applies to.
* A rule cannot tell whose death a message reports ("my husband died" may be the debtor, or a
  bereavement); both outcomes hand the conversation to an agent.
* "died"/"gestorven"/"gestorben" after a device or a pet ("my battery died") is not a death.
  Figures of speech that match a phrase literally ("I could kill myself for forgetting") still
  escalate; that is intended for self-harm.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

LANGS = ("en", "nl", "de")


@dataclass(frozen=True)
class PreRuleMatch:
    """What a pre-rule decided about a message, before the engine sees it."""

    # "opt_out" | "opt_in" | "help" | "vulnerability" | "deceased" | "attorney" | "bankruptcy"
    # | "cease_communication"
    intent: str
    rule: str  # stable name of the rule that matched, e.g. "carrier_keyword:STOP", "self_harm:en"
    urgent: bool = False  # self-harm: stop collection, give crisis information, escalate now


# ---------------------------------------------------------------------------------------------
# Carrier keywords
# ---------------------------------------------------------------------------------------------

# Provider defaults: Twilio's opt-out list
# (https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out), AWS's required opt-out
# list, which adds ARRET, OPT-OUT, REMOVE and TD
# (https://docs.aws.amazon.com/sms-voice/latest/userguide/keywords-required.html), and the
# industry opt-in and help lists (Braze keyword processing docs). The carrier acts on these
# itself, so we must agree with it: a bare "CANCEL" is an opt-out even when the debtor may have
# meant the payment plan, because the carrier has already stopped our texts.
#
# YES is deliberately missing from opt-in although the industry list has it: in a collections
# dialogue a bare "yes" answers our last question ("Can you pay 50 on Friday?") and must reach
# the engine as affirm. Re-subscribing takes START or UNSTOP. A caller that holds suppression
# state may still treat YES from a suppressed address as an opt-in; this stateless rule cannot.
CARRIER_KEYWORDS: dict[str, str] = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                     "OPTOUT", "OPT-OUT", "REMOVE", "ARRET", "TD"), "opt_out"),
    **dict.fromkeys(("START", "UNSTOP"), "opt_in"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}
# Dutch and German opt-out words. They apply whatever the conversation language is: a single
# word is unambiguous, and honouring an opt-out is never the wrong side to err on.
LOCAL_KEYWORDS: dict[str, str] = {
    **dict.fromkeys(("AFMELDEN", "UITSCHRIJVEN"), "opt_out"),  # nl (STOP as in English)
    **dict.fromkeys(("STOPP", "ABMELDEN", "ABBESTELLEN"), "opt_out"),  # de
}


def _keyword_key(word: str) -> str:
    """Case, accents and inner hyphens/spaces do not matter: "Opt-out", "opt out", "ARRÊT"."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    without_accents = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[\s\-_]+", "", without_accents)


def _keyword_table() -> dict[str, tuple[str, str]]:
    """Normalised keyword -> (intent, rule name); the first spelling listed names the rule, so
    "opt-out" and "OPTOUT" are both "carrier_keyword:OPTOUT"."""
    table: dict[str, tuple[str, str]] = {}
    for prefix, keywords in (("carrier_keyword", CARRIER_KEYWORDS),
                             ("local_keyword", LOCAL_KEYWORDS)):
        for keyword, intent in keywords.items():
            table.setdefault(_keyword_key(keyword), (intent, f"{prefix}:{keyword}"))
    return table


_KEYWORDS = _keyword_table()


def _strip_decoration(text: str) -> str:
    """Drop whitespace, punctuation, symbols and emoji (with their joiners) at both ends."""
    text = unicodedata.normalize("NFKC", text)
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def _match_keyword(text: str) -> PreRuleMatch | None:
    word = _strip_decoration(text)
    if not word or len(word) > 20:  # a keyword message is one short word
        return None
    found = _KEYWORDS.get(_keyword_key(word))
    return PreRuleMatch(intent=found[0], rule=found[1]) if found else None


# ---------------------------------------------------------------------------------------------
# Critical phrases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PhraseRule:
    """One phrase pattern of one category in one language."""

    category: str  # rule-name prefix: "self_harm", "deceased", "attorney", "bankruptcy"
    intent: str
    lang: str
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None = None  # a known false friend containing the match
    negatable: bool = True  # skip when a negation comes just before ("not in an IVA")
    urgent: bool = False
    cased: bool = False  # match the original case ("IVA" the arrangement, not "Iva" the name)


def _rules(category: str, intent: str, lang: str, *patterns: str, unless: str | None = None,
           urgent: bool = False, cased: bool = False,
           negatable: bool | None = None) -> list[_PhraseRule]:
    return [
        _PhraseRule(category, intent, lang, re.compile(pattern, 0 if cased else re.IGNORECASE),
                    re.compile(unless, re.IGNORECASE) if unless else None,
                    negatable=(not urgent) if negatable is None else negatable,
                    urgent=urgent, cased=cased)
        for pattern in patterns
    ]


# Patterns are written for casefolded text (so "ß" is "ss") with apostrophes made straight;
# umlauts also match their "ae/oe/ue" and bare-vowel spellings where SMS writers use them.
_SELF_HARM = [
    *_rules("self_harm", "vulnerability", "en",
            r"\b(?:kill|killing|hurt|hurting|harm|harming|cut|cutting) (?:my ?self|meself)\b",
            r"\bsuicid(?:e|al)\b", r"\bself[- ]?harm(?:ing)?\b",
            r"\bend(?:ing)? (?:it all|my (?:own )?life)\b", r"\btake my (?:own )?life\b",
            r"\b(?:want|wanna|wanting) to die\b", r"\bwish i (?:was|were) dead\b",
            r"\bbetter off dead\b", r"\bnot worth living\b",
            r"\b(?:don't|dont|do not) want to (?:live|be alive|be here any ?more)\b",
            r"\bno (?:reason|point) (?:to live|in living)\b", r"\bcan't go on living\b",
            urgent=True),
    *_rules("self_harm", "vulnerability", "nl",
            r"\bzelfmoord\w*", r"\bsu[iï]cid\w*", r"\bzelfdoding\b", r"\bzelfbeschadiging\b",
            r"\b(?:mezelf|mijzelf|mij|me) van kant\b",
            r"\b(?:mezelf|mijzelf|mij|me) (?:iets|wat) aan(?:doen| te doen| gaan doen)\b",
            r"\b(?:mezelf|mijzelf) (?:ophangen|doden|ombrengen|om te brengen)\b",
            r"\ber een eind(?:e)? aan (?:maken|te maken|gaan maken)\b",
            r"\bmaak er een eind(?:e)? aan\b",
            r"\bniet meer (?:willen )?leven\b(?! van\b)", r"\bik wil dood\b",
            r"\buit het leven (?:stappen|te stappen|gaan)\b",
            urgent=True),
    *_rules("self_harm", "vulnerability", "de",
            r"\bselbstmord\w*", r"\bsuizid\w*", r"\bselbstt(?:ö|oe|o)tung\b",
            r"\bselbstverletz\w*", r"\blebensm(?:ü|ue|u)de\b",
            r"\bmich (?:umbringen|umzubringen|zu t(?:ö|oe|o)ten|t(?:ö|oe|o)ten|erschiessen"
            r"|erh(?:ä|ae|a)ngen|aufh(?:ä|ae|a)ngen|ritzen)\b",
            r"\bbringe? mich um\b",
            r"\bmir (?:das|mein) leben (?:zu )?nehmen\b", r"\bmir (?:etwas|was) an(?:zu)?tun\b",
            r"\b(?:will|m(?:ö|oe|o)chte|wollte) (?:nur noch |einfach )?sterben\b",
            r"\b(?:allem|alles) ein ende (?:zu )?(?:setzen|machen)\b",
            r"\bnicht mehr (?:am )?leben\b",
            # "Von 900 Euro kann ich nicht mehr leben" is about money, not about dying.
            unless=r"\b(?:davon|von [^.!?,]{1,30})"
                   r"(?: (?:kann|k(?:ö|oe|o)nnen|konnte) (?:ich|man|wir))? nicht mehr leben\b",
            urgent=True),
]

_RELATIVES = (r"husband|wife|partner|mother|mum|mom|father|dad|son|daughter|brother|sister"
              r"|grand(?:mother|father|ma|pa|ad|dad|mum)|gran|aunt|uncle|fianc[eé]{1,2}|boyfriend"
              r"|girlfriend|spouse|parents?|child|account holder|customer|debtor|tenant")
# Things that "die" in everyday speech; pets are a bereavement, not a deceased debtor.
_NOT_PEOPLE = (r"battery|phone|mobile|car|laptop|computer|tv|engine|it|this|that|signal|line"
               r"|conversation|dog|cat|plant|fridge|printer|charger|wifi|internet|who|i")
_DECEASED = [
    *_rules("deceased", "deceased", "en",
            r"\bpassed away\b", r"\bdeceased\b", r"\bdeath certificate\b",
            r"\b(?:is|are) no longer with us\b",
            rf"\b(?:he|she|they|(?:my|our|his|her|the) (?:late )?(?:{_RELATIVES}))"
            r"(?: has| have| had)?(?: \w+ly| just)? died\b",
            # "dead" as an intensifier is no death: "he's dead serious", "she's dead set on it".
            r"\b(?:he|she)(?: is|'s) dead\b(?! (?:serious|tired|set|wrong|right|sure|certain|broke"
            r"|beat|slow|easy|quiet|on|against|keen|honest|boring|cheap|last|good|funny)\b)"),
    # A name: "Peter died in March". Case-sensitive, so only a capitalised word counts.
    *_rules("deceased", "deceased", "en",
            rf"\b(?!(?i:{_NOT_PEOPLE})\b)[A-Z][a-z]+(?: has| had)?(?: \w+ly| just)? died\b",
            cased=True),
    *_rules("deceased", "deceased", "nl",
            r"\boverl(?:eden|ijden|ijdensakte)\b", r"\bgestorven\b",
            r"\b(?:hij|zij|ze|(?:mijn|onze|zijn|haar) (?:man|vrouw|partner|moeder|vader|zoon"
            r"|dochter|broer|zus|echtgenoot|echtgenote|opa|oma)) is (?:dood|doodgegaan)\b",
            unless=r"\b(?:batterij|accu|telefoon|mobiel|gsm|laptop|computer|auto|hond|kat)\b"
                   r"[^.!?]{0,25}\bgestorven\b"),
    *_rules("deceased", "deceased", "de",
            r"\bverstorben\w*", r"\bgestorben\b", r"\bsterbeurkunde\b",
            r"\b(?:er|sie|(?:mein|meine|unser|unsere|sein|seine|ihr|ihre) (?:mann|frau|partner"
            r"|partnerin|mutter|vater|sohn|tochter|bruder|schwester|opa|oma)) ist (?:leider )?"
            r"(?:tot|von uns gegangen)\b",
            unless=r"\b(?:akku|handy|telefon|laptop|computer|auto|batterie|hund|katze)\b"
                   r"[^.!?]{0,25}\bgestorben\b"),
]

_LAWYER_EN = r"lawyers?|attorneys?|solicitors?|barristers?"
_ATTORNEY = [
    *_rules("attorney", "attorney", "en",
            rf"\b(?:my|our) (?:{_LAWYER_EN}|legal (?:representative|adviser|advisor|counsel|team)"
            r"|counsel)\b(?! (?:friend|mate|buddy|neighbou?r)s?\b)",
            rf"\b(?:i|we)(?:'ve| have)(?: got)? (?:a |an )?(?:{_LAWYER_EN})\b",
            rf"\b(?:hired|instructed|retained|appointed|engaged) (?:a |an |my )?(?:{_LAWYER_EN})\b",
            r"\brepresented by\b", r"\bpower of attorney\b", r"\b(?:our|my) client\b"),
    *_rules("attorney", "attorney", "nl",
            r"\b(?:mijn|onze) (?:advocaat|advocate|advocaten|jurist|juriste|raadsman|raadsvrouw"
            r"|bewindvoerder|curator|gemachtigde|rechtsbijstand)\b",
            r"\badvocaat (?:ingeschakeld|in de arm genomen|genomen)\b",
            r"\bonder (?:beschermings)?(?:bewind|curatele)\b", r"\bvertegenwoordigd door\b",
            r"\b(?:mijn|onze) cli[eë]nte?\b"),
    *_rules("attorney", "attorney", "de",
            r"\b(?:mein|meine|meinen|meinem|unser|unsere|unseren|unserem) "
            r"(?:rechts)?anw(?:ä|ae|a)lt(?:in|s)?\b",
            r"\b(?:habe|haben|hab) (?:einen|eine|nen) (?:rechts)?anw(?:ä|ae|a)lt(?:in)?\b",
            r"\b(?:rechts)?anw(?:ä|ae|a)lt(?:in)? "
            r"(?:eingeschaltet|beauftragt|genommen|mandatiert)\b",
            r"\banwaltlich vertreten\b", r"\bvertreten durch\b", r"\bin vollmacht\b",
            r"\b(?:gesetzliche[rn]?|rechtliche[rn]?) betreuer(?:in)?\b", r"\bunter betreuung\b",
            r"\b(?:mein|meine|meinen|unser|unsere|unseren)e? mandant(?:in|en)?\b"),
]

_BANKRUPTCY = [
    *_rules("bankruptcy", "bankruptcy", "en",
            r"\bbankruptcy\b",
            r"\b(?:declared|made|gone|went|am|i'm|im|was|were|been|are|we're|is|he's|she's)"
            r"(?: now| officially| already)? bankrupt\b",
            r"\bindividual voluntary arrangement\b", r"\bdebt relief order\b",
            r"\btrust deed\b", r"\bsequestration\b", r"\bchapter (?:7|13)\b",
            r"\binsolvency (?:practitioner|proceedings|order)\b", r"\bofficial receiver\b",
            r"\bdeclared insolvent\b"),
    # Acronyms only in capitals: "Iva" is a first name, "dro" nothing at all.
    *_rules("bankruptcy", "bankruptcy", "en", r"\b(?:IVA|DRO)s?\b", cased=True),
    *_rules("bankruptcy", "bankruptcy", "nl",
            r"\bwsnp\b", r"\bschuldsanering\w*", r"\bschuldregeling\w*", r"\bschuldhulp\w*",
            r"\bfailliet verklaard\b", r"\bfaillissement\w*", r"\bminnelijk (?:traject|akkoord)\b"),
    *_rules("bankruptcy", "bankruptcy", "de",
            r"\b(?:privat|verbraucher|regel)?insolvenz\w*", r"\binsolvent\b",
            r"\brestschuldbefreiung\b", r"\bkonkurs\w*", r"\bwohlverhaltensphase\b",
            r"\bschuldenbereinigungsplan\b"),
]

# A request to stop all communication (FDCPA 805(c)), broader than an opt-out of one channel
# ("stop texting me", which the engine reads as opt_out). The phrases carry their own negation
# ("do not contact me again"), so they are not skipped when negated.
_CEASE = [
    *_rules("cease", "cease_communication", "en",
            r"\bcease (?:all |any )?(?:further )?(?:communications?|contact)\b",
            r"\bcease and desist\b",
            r"\bstop (?:all|any) (?:further )?(?:communications?|contact)\b",
            r"\bno further (?:communications?|contact)\b",
            r"\b(?:never|do not|don't|dont) (?:contact|write to|message) me (?:ever )?again\b",
            negatable=False),
    *_rules("cease", "cease_communication", "nl",
            r"\bneem (?:nooit )?geen contact meer (?:met mij |met me )?op\b",
            r"\bstop (?:alle|elke|ieder) (?:vorm van )?(?:communicatie|contact)\b",
            r"\b(?:elk|ieder|alle) contact (?:stoppen|staken|beeindigen|beëindigen)\b",
            r"\bgeen (?:enkel )?contact meer\b",
            negatable=False),
    *_rules("cease", "cease_communication", "de",
            r"\bstellen sie (?:jegliche|alle|die|jede) (?:kommunikation|kontaktaufnahme) ein\b",
            r"\b(?:kein|keinen|keinerlei) (?:weiteren )?kontakt mehr\b",
            r"\bkontaktieren sie mich (?:nie|nicht) mehr\b",
            r"\b(?:jegliche|jede) (?:weitere )?(?:kommunikation|kontaktaufnahme) "
            r"(?:einstellen|unterlassen)\b",
            negatable=False),
]

# In priority order: self-harm first (urgent), then the states that end contact outright;
# a cease request names no reason, so it comes after the states that do.
_PHRASE_RULES: tuple[_PhraseRule, ...] = (*_SELF_HARM, *_DECEASED, *_BANKRUPTCY, *_ATTORNEY,
                                          *_CEASE)
_CATEGORY_ORDER = ("self_harm", "deceased", "bankruptcy", "attorney", "cease")

_NEGATION = re.compile(
    r"\b(?:not|never|don't|dont|doesn't|isn't|aren't|wasn't|haven't|hasn't|niet|nooit|nicht|nie"
    r"|niemals)\b", re.IGNORECASE)
# "no", "geen", "kein" negate the next word only; an opening "No" answers a question
# ("No he passed away in May").
_NEGATING_DETERMINER = re.compile(r"\b(?:no|geen|kein\w*)$", re.IGNORECASE)


def _negated(text: str, start: int) -> bool:
    """A negation among the three words before the match, in the same clause."""
    clause = re.split(r"[.!?;,]", text[:start])[-1]
    words = clause.split()
    return bool(_NEGATION.search(" ".join(words[-3:]))
                or (words and _NEGATING_DETERMINER.search(words[-1])))


def _inside_false_friend(unless: re.Pattern[str], text: str, match: re.Match[str]) -> bool:
    """Only the mention inside the false friend is skipped, not a second, real one."""
    return any(friend.start() <= match.start() and match.end() <= friend.end()
               for friend in unless.finditer(text))


def _rules_in_order(lang: str) -> Iterator[_PhraseRule]:
    """Every language's rules, the conversation's language first: debtors switch languages
    (many Dutch and German speakers reply in English), and the language metadata can be wrong."""
    lang_rank = {code: (0 if code == lang else 1) for code in LANGS}
    for category in _CATEGORY_ORDER:
        in_category = [rule for rule in _PHRASE_RULES if rule.category == category]
        yield from sorted(in_category, key=lambda rule: lang_rank[rule.lang])


def _match_phrase(text: str, lang: str) -> PreRuleMatch | None:
    straight = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")
    cased = " ".join(straight.split())
    casefolded = cased.casefold()
    for rule in _rules_in_order(lang):
        subject = cased if rule.cased else casefolded
        for match in rule.pattern.finditer(subject):
            if rule.unless and _inside_false_friend(rule.unless, subject, match):
                continue
            if rule.negatable and _negated(subject, match.start()):
                continue
            return PreRuleMatch(intent=rule.intent, rule=f"{rule.category}:{rule.lang}",
                                urgent=rule.urgent)
    return None


def match_prerules(text: str, lang: str) -> PreRuleMatch | None:
    """The pre-rule a debtor's message triggers, or None to let the engine decide.

    `lang` only sets which language's phrases are tried first; an unexpected value does not
    switch any rule off, since these rules guard debtors and the law.
    """
    return _match_keyword(text) or _match_phrase(text, lang)


# Which channel a natural-language opt-out names: "stop emailing me" sent by text is about
# email. A message that names no channel applies to the channel it came on.
_CHANNEL_WORDS = {
    "email": re.compile(r"\b(?:e-?mail\w*|mails?|mailen|mailtjes?)\b", re.IGNORECASE),
    "sms": re.compile(r"\b(?:texts?|texting|sms\w*|smsjes?|smsen|messages? to my phone)\b",
                      re.IGNORECASE),
    "whatsapp": re.compile(r"\b(?:whats ?app\w*|appen|appjes?)\b", re.IGNORECASE),
}


def opt_out_channels(text: str, channel: str) -> set[str]:
    """The channels an opt-out in words applies to: those it names, else the one it came on."""
    named = {name for name, pattern in _CHANNEL_WORDS.items() if pattern.search(text)}
    return named or {channel}
