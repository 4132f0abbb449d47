"""Template lint: what a message template may say, checked before and after rendering.

Managers edit the templates, and a collections message that threatens, lacks its opt-out line
or its legal disclosure, or costs six SMS segments must never reach a debtor. So the same rules
run in three places: ``nudge templates lint`` (and later the template editor) on every file,
the renderer once per version of a template file (:func:`lint_template`), and the renderer on
every rendered message (:func:`lint_rendered`), because a variable can bring in what the
template's text does not have.

Static checks (:func:`lint_source`), on the template and every partial it includes or imports:

``syntax``              a Jinja2 syntax error, or an unknown filter (with the line)
``missing_partial``     an included or imported partial does not exist
``undefined_variable``  a variable the key does not receive (``message_templates/catalogue.yml``:
                        the common variables plus the key's own)
``missing_optout``      no ``_optout.j2`` (directly or via ``_footer.j2``) and the key is not exempt
``missing_disclosure``  a ``collection_demand`` key that does not call ``_disclosure.j2``'s macro
``threat_phrase``       a phrase of ``policies/template_lint.yml`` in the literal text
``unknown_key``         a key the catalogue does not list; ``file_name``: not
                        ``<lang>/<key>[.<tone>][.<channel>].j2``; ``missing_template``: a
                        catalogue key without a base template in a language (:func:`lint_all`)

Checks of a rendered message (:func:`lint_rendered`): ``sms_segments`` over the key's budget,
``twilio_length`` (1,600 characters), ``whatsapp_length`` (1,024), ``threat_phrase``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import yaml
from jinja2 import nodes

from bot.core.config_files import read_yaml
from service.templates import (
    CHANNELS,
    LANGUAGES,
    TONES,
    is_gsm7,
    sandbox_environment,
    sms_segments,
)

__all__ = [
    "Catalogue",
    "CatalogueError",
    "KeySpec",
    "LintIssue",
    "StaticLint",
    "ThreatPhrases",
    "default_catalogue",
    "default_threat_phrases",
    "errors_in",
    "lint_all",
    "lint_rendered",
    "lint_source",
    "lint_template",
    "load_catalogue",
    "parse_catalogue",
]

POLICY_PATH = Path(__file__).resolve().parents[1] / "policies" / "template_lint.yml"
CATALOGUE_NAME = "catalogue.yml"
DEFAULT_SMS_SEGMENT_BUDGET = 3
TWILIO_MAX_BODY = 1600  # Twilio refuses longer message bodies (SMS and WhatsApp)
WHATSAPP_MAX_BODY = 1024  # WhatsApp template body plus variables
OPTOUT_PARTIAL = "_optout.j2"
DISCLOSURE_PARTIAL = "_disclosure.j2"
DISCLOSURE_MACRO = "disclosure"

Level = Literal["error", "warning"]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LintIssue:
    """One finding. ``template`` is the file (``en/balance.j2``) or, after rendering, the key."""

    level: Level
    code: str
    message: str
    template: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.template}:{self.line}" if self.line else self.template
        return f"{where}: {self.level} [{self.code}] {self.message}"


def errors_in(issues: Iterable[LintIssue]) -> list[LintIssue]:
    return [issue for issue in issues if issue.level == "error"]


# --------------------------------------------------------------------------- catalogue


class CatalogueError(ValueError):
    """The catalogue cannot be read or is invalid; the message lists every problem found."""


@dataclass(frozen=True)
class KeySpec:
    """What one message key receives and which rules its templates follow."""

    key: str
    variables: Mapping[str, Any]  # name -> sample value
    optional: frozenset[str]
    sms_segment_budget: int
    unsolicited: bool
    exempt_optout: bool
    collection_demand: bool
    note: str = ""


@dataclass(frozen=True)
class Catalogue:
    """Every message key's variables (with samples for previews) and lint rules."""

    common: Mapping[str, Any]
    keys: Mapping[str, KeySpec]
    path: Path | None = None

    @property
    def root(self) -> Path | None:
        """The templates root the catalogue lives in (where partials are found)."""
        return self.path.parent if self.path else None

    def available(self, key: str | None) -> frozenset[str]:
        """Variables a template of ``key`` may use; a partial (``None``) only the common ones."""
        spec = self.keys.get(key) if key else None
        return frozenset(self.common) | frozenset(spec.variables if spec else ())

    def budget(self, key: str) -> int:
        spec = self.keys.get(key)
        return spec.sms_segment_budget if spec else DEFAULT_SMS_SEGMENT_BUDGET

    def samples(self, key: str) -> dict[str, Any]:
        """Sample variables for a preview of ``key``: the common ones and the key's own."""
        return {**self.common, **self.keys[key].variables}


_TOP_FIELDS = {"defaults", "common", "keys"}
_FLAGS = ("unsolicited", "exempt_optout", "collection_demand")
_DEFAULT_FIELDS = {"sms_segment_budget", *_FLAGS}
_KEY_FIELDS = {"variables", "optional", "note", *_DEFAULT_FIELDS}
_BUILTIN_DEFAULTS: dict[str, Any] = {
    "sms_segment_budget": DEFAULT_SMS_SEGMENT_BUDGET,
    "unsolicited": False,
    "exempt_optout": False,
    "collection_demand": False,
}


def default_catalogue(root: Path) -> Catalogue | None:
    """``<root>/catalogue.yml`` if there is one (the renderer's default), else None."""
    path = Path(root) / CATALOGUE_NAME
    return load_catalogue(path) if path.is_file() else None


def load_catalogue(path: Path | str) -> Catalogue:
    """Read and validate a catalogue file; :class:`CatalogueError` names every problem."""
    path = Path(path)
    return parse_catalogue(read_yaml(path, CatalogueError), source=str(path), path=path)


def parse_catalogue(raw: Any, *, source: str = CATALOGUE_NAME, path: Path | None = None) -> Catalogue:
    """Validate an already parsed catalogue (collecting every problem before failing)."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"{source}: expected a mapping with `common` and `keys`")
    problems += [f"unknown top-level field {name!r} (expected {sorted(_TOP_FIELDS)})"
                 for name in raw if name not in _TOP_FIELDS]
    defaults = _parse_defaults(raw.get("defaults") or {}, problems)
    common = _parse_variables(raw.get("common"), "common", problems)
    keys_raw = raw.get("keys")
    if not isinstance(keys_raw, Mapping) or not keys_raw:
        problems.append("keys: expected a mapping of message key -> its entry")
        keys_raw = {}
    keys = {key: _parse_key(key, body, defaults, problems) for key, body in keys_raw.items()}
    if problems:
        raise CatalogueError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return Catalogue(common=common, keys=keys, path=path)


def _parse_defaults(raw: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        problems.append("defaults: expected a mapping")
        return dict(_BUILTIN_DEFAULTS)
    problems += [f"defaults: unknown field {name!r} (expected {sorted(_DEFAULT_FIELDS)})"
                 for name in raw if name not in _DEFAULT_FIELDS]
    merged = {**_BUILTIN_DEFAULTS, **{k: v for k, v in raw.items() if k in _DEFAULT_FIELDS}}
    _check_rules(merged, "defaults", problems)
    return merged


def _parse_key(key: Any, body: Any, defaults: Mapping[str, Any], problems: list[str]) -> KeySpec:
    where = f"keys.{key}"
    if not isinstance(key, str) or not _NAME_RE.match(key):
        problems.append(f"{where}: a key is lower case letters, digits and _ (like reminder_first)")
    if not isinstance(body, Mapping):
        problems.append(f"{where}: expected a mapping with at least `variables:`")
        body = {"variables": {}}
    problems += [f"{where}: unknown field {name!r} (expected {sorted(_KEY_FIELDS)})"
                 for name in body if name not in _KEY_FIELDS]
    if "variables" not in body:
        problems.append(f"{where}: `variables:` is missing (write `variables: {{}}` for none)")
    variables = _parse_variables(body.get("variables", {}), f"{where}.variables", problems)
    optional = body.get("optional") or []
    if not isinstance(optional, list) or not all(name in variables for name in optional):
        problems.append(f"{where}.optional: expected a list of names listed under variables")
        optional = []
    rules = {**defaults, **{k: body[k] for k in _DEFAULT_FIELDS if k in body}}
    _check_rules(rules, where, problems)
    if rules["unsolicited"] is True and rules["exempt_optout"] is True:
        problems.append(f"{where}: an unsolicited message can never be exempt from the opt-out line")
    note = body.get("note", "")
    if not isinstance(note, str):
        problems.append(f"{where}.note: expected text")
    return KeySpec(key=str(key), variables=variables, optional=frozenset(optional),
                   sms_segment_budget=rules["sms_segment_budget"],
                   unsolicited=rules["unsolicited"], exempt_optout=rules["exempt_optout"],
                   collection_demand=rules["collection_demand"], note=str(note))


def _check_rules(rules: Mapping[str, Any], where: str, problems: list[str]) -> None:
    budget = rules["sms_segment_budget"]
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= 10:
        problems.append(f"{where}.sms_segment_budget: expected a whole number from 1 to 10, "
                        f"got {budget!r}")
    problems += [f"{where}.{flag}: expected true or false, got {rules[flag]!r}"
                 for flag in _FLAGS if not isinstance(rules[flag], bool)]


def _parse_variables(raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping of variable name -> sample value")
        return {}
    for name, sample in raw.items():
        if not isinstance(name, str) or not _VARIABLE_RE.match(name):
            problems.append(f"{where}: {name!r} is not a variable name")
        problems += [f"{where}.{name}: {problem}" for problem in _sample_problems(sample)]
    return dict(raw)


def _sample_problems(sample: Any) -> Iterator[str]:
    """Samples must be what senders really pass: no floats for money, dates as ISO text."""
    if isinstance(sample, float):
        yield f"{sample!r} is a float: write amounts as decimal strings, e.g. \"248.50\""
    elif isinstance(sample, date):
        yield f"quote dates as ISO text, e.g. \"{sample.isoformat()}\""
    elif isinstance(sample, Mapping):
        for value in sample.values():
            yield from _sample_problems(value)
    elif isinstance(sample, list):
        for value in sample:
            yield from _sample_problems(value)


# --------------------------------------------------------------------------- threat phrases

_COMBINING_RE = re.compile(r"[\u0300-\u036f]")
_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def normalise(text: str) -> str:
    """Lower case without accents ("Gefängnis" -> "gefangnis", "Straße" -> "strasse"); keeps
    every line break, so offsets in it still tell the line."""
    return _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text)).casefold()


@dataclass(frozen=True)
class ThreatHit:
    phrase: str  # as listed in the policy
    found: str  # the word(s) in the text, normalised
    language: str
    rule: str
    start: int  # offset in normalise(text)


@dataclass(frozen=True)
class _Spelling:
    """One spelling of a phrase: its normalised words, and whether the match may start or end
    inside a word (the policy's leading or trailing ``*``)."""

    words: tuple[str, ...]
    starts_inside: bool
    ends_inside: bool

    def regex(self) -> str:
        body = r"\s+".join(map(re.escape, self.words))
        return ("" if self.starts_inside else r"(?<!\w)") + body + ("" if self.ends_inside else r"(?!\w)")


@dataclass(frozen=True)
class _Phrase:
    phrase: str
    language: str
    rule: str
    spelling: _Spelling
    pattern: re.Pattern[str]


class ThreatPhrases:
    """Finds the policy's phrases in a text, whatever its language, case or accents."""

    def __init__(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """``entries``: (phrase, language, rule) with the policy's ``*`` wildcards."""
        self._phrases = [_Phrase(phrase, language, rule, spelling, re.compile(spelling.regex()))
                         for phrase, language, rule in entries
                         for spelling in _spellings(phrase)]
        # Every render asks "any of them?" of a clean text: one pattern shaped as a trie
        # answers in microseconds (an alternation of ~100 phrases takes half a millisecond).
        # The single patterns only name what was found.
        self._any = _trie_regex([p.spelling for p in self._phrases])

    @classmethod
    def from_file(cls, path: Path) -> ThreatPhrases:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        groups = raw.get("threat_phrases") if isinstance(raw, Mapping) else None
        if not isinstance(groups, list):
            raise ValueError(f"{path}: expected `threat_phrases:`, a list of groups")
        entries = []
        for group in groups:
            rule = str(group.get("rule", group.get("group", "")))
            for language in LANGUAGES:
                entries += [(str(phrase), language, rule) for phrase in group.get(language) or []]
        return cls(entries)

    def find(self, text: str) -> list[ThreatHit]:
        folded = normalise(text)
        if self._any is None or not self._any.search(folded):
            return []
        hits: dict[int, ThreatHit] = {}  # by where it starts: one hit per place
        for phrase in self._phrases:
            for match in phrase.pattern.finditer(folded):
                hits.setdefault(match.start(), ThreatHit(
                    phrase.phrase, _whole_words(folded, match), phrase.language, phrase.rule,
                    match.start()))
        return [hits[start] for start in sorted(hits)]


def _spellings(phrase: str) -> set[_Spelling]:
    """A phrase's spellings: normalised, with German umlauts both as the plain vowel (what
    normalising gives) and as ae/oe/ue."""
    phrase = phrase.strip()
    core = phrase.strip("*")
    return {_Spelling(tuple(text.split()), phrase.startswith("*"), phrase.endswith("*"))
            for text in {normalise(core), normalise(core.translate(_TRANSLITERATION))}}


def _trie_regex(spellings: Iterable[_Spelling]) -> re.Pattern[str] | None:
    """One regex matching any spelling, its alternatives merged by common prefix ("arrest",
    "arrestatie" -> ``a...rrest(?:atie...)``), so the engine tries few branches per position.
    The whole-word check comes after the first character (``p(?<!\\w.)olice``): a pattern
    that starts with a plain character lets the engine skip positions that cannot match."""
    tries: dict[tuple[str, bool], dict] = {}  # (first character, whole-word start) -> the rest
    for spelling in spellings:
        text = " ".join(spelling.words)
        node = tries.setdefault((text[0], not spelling.starts_inside), {})
        for char in text[1:]:
            node = node.setdefault(char, {})
        node.setdefault(None, set()).add(spelling.ends_inside)
    branches = [re.escape(first) + (r"(?<!\w.)" if word_start else "") + _trie_body(rest)
                for (first, word_start), rest in sorted(tries.items())]
    return re.compile("|".join(branches)) if branches else None


def _trie_body(node: dict) -> str:
    branches = [(r"\s+" if char == " " else re.escape(char)) + _trie_body(child)
                for char, child in sorted((k, v) for k, v in node.items() if k is not None)]
    ends = node.get(None, set())
    if True in ends:  # a phrase may end here, inside a word or not
        branches.append("")
    elif False in ends:  # a phrase ends here at the end of a word
        branches.append(r"(?!\w)")
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _whole_words(text: str, match: re.Match[str]) -> str:
    start, end = match.span()
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return " ".join(text[start:end].split())


@functools.lru_cache(maxsize=4)
def default_threat_phrases(path: Path = POLICY_PATH) -> ThreatPhrases:
    """The project's ``policies/template_lint.yml``, loaded once."""
    return ThreatPhrases.from_file(path)


def _threat_issues(text: str, template: str, line: int | None,
                   phrases: ThreatPhrases) -> list[LintIssue]:
    """``line``: where ``text`` starts in the template (None for a rendered message)."""
    issues = []
    for hit in phrases.find(text):
        at = None if line is None else line + normalise(text)[:hit.start].count("\n")
        issues.append(LintIssue(
            "error", "threat_phrase",
            f"{hit.found!r} matches the {hit.language} threat phrase {hit.phrase!r} ({hit.rule})",
            template, at))
    return issues


# --------------------------------------------------------------------------- rendered messages


def lint_rendered(rendered_body: str, *, channel: str, key: str, sms_segment_budget: int,
                  phrases: ThreatPhrases | None = None) -> list[LintIssue]:
    """Checks on a message as it would be sent: what a template alone cannot tell (its length
    with real variables, and a threat phrase a variable brought in)."""
    body = rendered_body
    issues: list[LintIssue] = []  # each check below is independent: report them all
    if channel == "sms":
        segments = sms_segments(body)
        if segments > sms_segment_budget:
            encoding = "GSM-7" if is_gsm7(body) else "UCS-2 (a character outside GSM-7)"
            issues.append(LintIssue(
                "error", "sms_segments",
                f"{segments} SMS segments ({len(body)} characters, {encoding}); "
                f"the budget of {key!r} is {sms_segment_budget}", key))
    if channel in ("sms", "whatsapp") and len(body) > TWILIO_MAX_BODY:
        issues.append(LintIssue("error", "twilio_length",
                                f"{len(body)} characters; Twilio refuses bodies over "
                                f"{TWILIO_MAX_BODY}", key))
    if channel == "whatsapp" and len(body) > WHATSAPP_MAX_BODY:
        issues.append(LintIssue("error", "whatsapp_length",
                                f"{len(body)} characters; WhatsApp allows {WHATSAPP_MAX_BODY}", key))
    issues += _threat_issues(body, key, None, phrases or default_threat_phrases())
    return issues


# --------------------------------------------------------------------------- one file's facts


@dataclass(frozen=True)
class _Reference:
    name: str | None  # None: a dynamic include the lint cannot follow
    line: int


@dataclass(frozen=True)
class _FileFacts:
    """What the lint needs to know about one template file, parsed once."""

    name: str
    issues: tuple[LintIssue, ...]  # the file's own: syntax, threat phrases
    undeclared: Mapping[str, int]  # variable -> first line using it
    assigned: frozenset[str]
    references: tuple[_Reference, ...]
    calls_disclosure: bool
    disclosure_without_context: bool
    parsed: bool = True  # False after a syntax error: nothing else is known


@functools.lru_cache(maxsize=1)
def _lint_environment() -> jinja2.Environment:
    # the renderer's environment, so unknown filters are syntax errors here as they are there
    return sandbox_environment()


def _file_facts(name: str, source: str, phrases: ThreatPhrases) -> _FileFacts:
    env = _lint_environment()
    try:
        ast = env.parse(source, name=name)
        env.compile(ast, name=name)  # unknown filters and tests fail here, not in parse
    except jinja2.TemplateSyntaxError as error:
        issue = LintIssue("error", "syntax", f"syntax error: {error.message}", name, error.lineno)
        return _FileFacts(name, (issue,), {}, frozenset(), (), False, False, parsed=False)
    calls, without_context = _disclosure_use(ast)
    return _FileFacts(
        name=name,
        issues=tuple(_literal_threats(ast, name, phrases)),
        undeclared=_undeclared(ast, env),
        assigned=frozenset(node.target.name for node in ast.find_all((nodes.Assign, nodes.AssignBlock))
                           if isinstance(node.target, nodes.Name)),
        references=tuple(_references(ast)),
        calls_disclosure=calls,
        disclosure_without_context=without_context,
    )


def _undeclared(ast: nodes.Template, env: jinja2.Environment) -> dict[str, int]:
    names = jinja2.meta.find_undeclared_variables(ast) - set(env.globals)
    lines: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in names and node.ctx == "load":
            lines.setdefault(node.name, node.lineno)
    return lines


def _literal_threats(ast: nodes.Template, name: str, phrases: ThreatPhrases) -> Iterator[LintIssue]:
    """Threat phrases in the text a template sends: its literal text and its string constants
    (``{{ "..." if x }}``, ``{% set ask = {...} %}``); comments are not sent and not checked."""
    for node in ast.find_all(nodes.TemplateData):
        yield from _threat_issues(node.data, name, node.lineno, phrases)
    for node in ast.find_all(nodes.Const):
        for text in _strings_in(node.value):
            yield from _threat_issues(text, name, node.lineno, phrases)


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in (*value.keys(), *value.values()):
            yield from _strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings_in(item)


def _references(ast: nodes.Template) -> Iterator[_Reference]:
    for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        template = node.template
        constant = isinstance(template, nodes.Const) and isinstance(template.value, str)
        yield _Reference(template.value if constant else None, node.lineno)


def _is_disclosure(template: nodes.Expr) -> bool:
    return (isinstance(template, nodes.Const) and isinstance(template.value, str)
            and template.value.rsplit("/", 1)[-1] == DISCLOSURE_PARTIAL)


def _disclosure_use(ast: nodes.Template) -> tuple[bool, bool]:
    """(calls the disclosure macro, imports it without context). The macro reads the common
    variables jurisdiction and first_contact, which it only sees when imported with context."""
    names: set[str] = set()
    modules: set[str] = set()
    without_context = False
    for node in ast.find_all(nodes.FromImport):
        if _is_disclosure(node.template):
            for entry in node.names:
                name, alias = entry if isinstance(entry, tuple) else (entry, entry)
                if name == DISCLOSURE_MACRO:
                    names.add(alias)
                    without_context |= not node.with_context
    for node in ast.find_all(nodes.Import):
        if _is_disclosure(node.template):
            modules.add(node.target)
            without_context |= not node.with_context
    calls = any(
        (isinstance(call.node, nodes.Name) and call.node.name in names)
        or (isinstance(call.node, nodes.Getattr) and call.node.attr == DISCLOSURE_MACRO
            and isinstance(call.node.node, nodes.Name) and call.node.node.name in modules)
        for call in ast.find_all(nodes.Call))
    return calls, without_context


# --------------------------------------------------------------------------- files and names


class _Library:
    """Template files by name (``en/_footer.j2``), parsed once per lint run. ``overrides``
    holds sources not saved yet (the template being edited)."""

    def __init__(self, root: Path | None, phrases: ThreatPhrases,
                 overrides: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.phrases = phrases
        self.overrides = dict(overrides or {})
        self._facts: dict[str, _FileFacts | None] = {}

    def facts(self, name: str) -> _FileFacts | None:
        """The file's facts; None when there is no such file."""
        if name not in self._facts:
            source = self._source(name)
            self._facts[name] = None if source is None else _file_facts(name, source, self.phrases)
        return self._facts[name]

    def _source(self, name: str) -> str | None:
        if name in self.overrides:
            return self.overrides[name]
        if self.root is None or ".." in Path(name).parts:
            return None
        path = self.root / name
        return path.read_text(encoding="utf-8") if path.is_file() else None


@dataclass(frozen=True)
class _TemplateName:
    language: str
    key: str | None  # None for a partial
    tone: str | None
    channel: str | None


def _parse_name(name: str) -> _TemplateName | None:
    """``en/reminder_first.email.j2`` -> (en, reminder_first, None, email); None if malformed."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] not in LANGUAGES or not parts[1].endswith(".j2"):
        return None
    language, stem = parts[0], parts[1][: -len(".j2")]
    if stem.startswith("_"):
        return _TemplateName(language, None, None, None)
    key, *suffixes = stem.split(".")
    tone = suffixes.pop(0) if suffixes and suffixes[0] in TONES else None
    channel = suffixes.pop(0) if suffixes and suffixes[0] in CHANNELS else None
    if suffixes or not _NAME_RE.match(key):
        return None
    return _TemplateName(language, key, tone, channel)


# --------------------------------------------------------------------------- static lint


@dataclass(frozen=True)
class StaticLint:
    """The issues of a template, and every file they depend on (for caching by mtime)."""

    issues: tuple[LintIssue, ...]
    files: tuple[str, ...]


def lint_source(name: str, source: str, *, catalogue: Catalogue | None,
                root: Path | None = None) -> list[LintIssue]:
    """Static checks on one template's source (``name`` like ``en/balance.j2``), its partials
    included. Partials are read from ``root`` (default: the catalogue's folder). Without a
    catalogue only the checks that need none run (syntax, partials, threat phrases)."""
    return list(lint_template(name, source, catalogue=catalogue, root=root).issues)


def lint_template(name: str, source: str | None = None, *, catalogue: Catalogue | None,
                  root: Path | None = None, phrases: ThreatPhrases | None = None,
                  overrides: Mapping[str, str] | None = None) -> StaticLint:
    """:func:`lint_source` with the files it read; ``source`` None reads ``name`` from root
    (or ``overrides``: texts that replace files, such as the console's live versions)."""
    texts = {**(overrides or {}), **({name: source} if source is not None else {})}
    library = _Library(root or (catalogue.root if catalogue else None),
                       phrases or default_threat_phrases(), texts)
    return _lint_in(library, name, catalogue)


def _lint_in(library: _Library, name: str, catalogue: Catalogue | None) -> StaticLint:
    parsed = _parse_name(name)
    if parsed is None:
        return StaticLint((LintIssue("error", "file_name",
                                     "expected <lang>/<key>[.<tone>][.<channel>].j2 or "
                                     "<lang>/_<partial>.j2 with lang in " + ", ".join(LANGUAGES),
                                     name),), (name,))
    files, issues = _reachable(library, name)
    if not files:
        return StaticLint((LintIssue("error", "missing_partial", "no such template", name),), (name,))
    issues += _partial_language_issues(files, parsed.language, name)
    if catalogue is not None and files[0].parsed:
        issues += _catalogue_issues(files, parsed, catalogue, name)
    return StaticLint(tuple(issues), tuple(facts.name for facts in files))


def _reachable(library: _Library, name: str) -> tuple[list[_FileFacts], list[LintIssue]]:
    """The file and every partial it includes or imports, transitively, with their own issues
    and those of references that cannot be followed."""
    files: list[_FileFacts] = []
    issues: list[LintIssue] = []
    pending, seen = [name], {name}
    while pending:
        facts = library.facts(pending.pop(0))
        if facts is None:
            continue
        files.append(facts)
        issues += facts.issues
        for reference in facts.references:
            if reference.name is None:
                issues.append(LintIssue("warning", "dynamic_include",
                                        "a partial named by an expression cannot be checked",
                                        facts.name, reference.line))
            elif library.facts(reference.name) is None:
                issues.append(LintIssue("error", "missing_partial",
                                        f"missing partial template {reference.name!r}",
                                        facts.name, reference.line))
            elif reference.name not in seen:
                seen.add(reference.name)
                pending.append(reference.name)
    return files, issues


def _partial_language_issues(files: list[_FileFacts], language: str, name: str) -> list[LintIssue]:
    return [LintIssue("warning", "partial_language",
                      f"uses {facts.name}, a partial of another language", name)
            for facts in files[1:] if not facts.name.startswith(f"{language}/")]


def _catalogue_issues(files: list[_FileFacts], parsed: _TemplateName, catalogue: Catalogue,
                      name: str) -> list[LintIssue]:
    if parsed.key is not None and parsed.key not in catalogue.keys:
        return [LintIssue("error", "unknown_key",
                          f"{parsed.key!r} is not in the catalogue: add it with its variables",
                          name)]
    issues = _variable_issues(files, parsed.key, catalogue)
    if parsed.key is not None:
        spec = catalogue.keys[parsed.key]
        issues += _optout_issues(files, spec, name)
        issues += _disclosure_issues(files, spec, name)
    return issues


def _variable_issues(files: list[_FileFacts], key: str | None, catalogue: Catalogue) -> list[LintIssue]:
    available = catalogue.available(key)
    assigned = frozenset().union(*(facts.assigned for facts in files))
    receiver = f"{key!r} does not receive it" if key else "a partial only gets the common variables"
    return [LintIssue("error", "undefined_variable",
                      f"variable {variable!r} is not available ({receiver}; see catalogue.yml)",
                      facts.name, line)
            for facts in files
            for variable, line in sorted(facts.undeclared.items())
            if variable not in available and variable not in assigned]


def _optout_issues(files: list[_FileFacts], spec: KeySpec, name: str) -> list[LintIssue]:
    if spec.exempt_optout or any(f.name.rsplit("/", 1)[-1] == OPTOUT_PARTIAL for f in files):
        return []
    return [LintIssue("error", "missing_optout",
                      f"every message carries a way to opt out: include {OPTOUT_PARTIAL} "
                      "(usually through _footer.j2)", name)]


def _disclosure_issues(files: list[_FileFacts], spec: KeySpec, name: str) -> list[LintIssue]:
    if not spec.collection_demand:
        return []
    if not any(facts.calls_disclosure for facts in files):
        return [LintIssue("error", "missing_disclosure",
                          f"{spec.key!r} is a collection demand: import and call the disclosure, "
                          f'{{% from "<lang>/{DISCLOSURE_PARTIAL}" import {DISCLOSURE_MACRO} '
                          f"with context %}} ... {{{{ {DISCLOSURE_MACRO}() }}}}", name)]
    if any(facts.disclosure_without_context for facts in files):
        return [LintIssue("error", "missing_disclosure",
                          f"import {DISCLOSURE_PARTIAL} `with context`: the disclosure needs "
                          "jurisdiction and first_contact", name)]
    return []


# --------------------------------------------------------------------------- every file


def lint_all(root: Path, catalogue: Catalogue | None) -> dict[str, list[LintIssue]]:
    """Every template file under ``root`` -> its issues (each issue listed once, under the file
    it is in), plus ``catalogue.yml`` for keys without a base template in some language."""
    root = Path(root)
    library = _Library(root, default_threat_phrases())
    names = sorted(path.relative_to(root).as_posix() for path in root.glob("*/*.j2"))
    report: dict[str, list[LintIssue]] = {name: [] for name in names}
    for name in names:
        for issue in _lint_in(library, name, catalogue).issues:
            found = report.setdefault(issue.template, [])
            if issue not in found:
                found.append(issue)
    if catalogue is not None:
        for issue in _missing_templates(root, catalogue):
            report.setdefault(issue.template, []).append(issue)
    return report


def _missing_templates(root: Path, catalogue: Catalogue) -> Iterator[LintIssue]:
    """A key needs ``<lang>/<key>.j2`` in every language: the renderer falls back to it."""
    for key in sorted(catalogue.keys):
        missing = [f"{language}/{key}.j2" for language in LANGUAGES
                   if not (root / language / f"{key}.j2").is_file()]
        if missing:
            yield LintIssue("error", "missing_template",
                            f"catalogue key {key!r} has no {', '.join(missing)}", CATALOGUE_NAME)
