"""What a template edit would send: previews with sample debtors, and the check every draft
passes before it is stored or goes live (service/template_versions.py).

The functions here are plain and synchronous; the callers run them in a child process
(service/template_sandbox.run_isolated_async), since the draft is untrusted.

* :func:`sample_debtor` — one made-up debtor per segment of ``policies/segments.yml``, built
  from the segment's conditions (days past due, balance band, product, history, creditor), so a
  manager sees the wording the way that segment's debtors would read it. No real debtor's data
  is ever shown in the editor.
* :func:`preview` — one render of a draft (or of a key template that uses a draft partial) for a
  channel, with its SMS encoding and segments and every lint issue, without refusing anything.
* :func:`check_draft` — the static lint of the draft, then a render of every file it affects
  (itself, and for a partial or a parent template every key template that includes, imports or
  extends it), for each channel that file serves, in each jurisdiction, with the catalogue's
  samples (with and without the optional variables).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from bot.core.segments import Segment
from channels import sms_encoding
from service import template_lint as lint
from service.template_lint import Catalogue, LintIssue
from service.templates import (
    CHANNELS,
    JURISDICTIONS,
    LANGUAGES,
    TONES,
    TemplateError,
    TemplateRenderer,
    sandbox_environment,
)

__all__ = [
    "DraftReport",
    "RenderCheck",
    "SampleDebtor",
    "TemplateName",
    "check_draft",
    "dependents",
    "preview",
    "sample_debtor",
    "sample_variables",
    "served_by",
]

#: The country and jurisdiction pack a sample debtor of each language lives in.
SAMPLE_HOME = {"en": ("GB", "UK", "GBP"), "nl": ("NL", "EU/NL", "EUR"), "de": ("DE", "DE", "EUR")}


class UnknownTemplate(LookupError):
    """Not an editable template file name (``<lang>/<file>.j2`` that exists)."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class TemplateName:
    """``en/reminder_first.soft.email.j2`` -> language en, key reminder_first, tone soft,
    channel email; a partial (``en/_footer.j2``) has no key."""

    name: str
    language: str
    key: str | None
    tone: str | None
    channel: str | None

    @property
    def partial(self) -> bool:
        return self.key is None

    @classmethod
    def parse(cls, name: str) -> TemplateName:
        parts = name.split("/")
        if len(parts) != 2 or parts[0] not in LANGUAGES or not parts[1].endswith(".j2") \
                or parts[1].startswith("."):
            raise UnknownTemplate(f"{name!r} is not a template name (<lang>/<file>.j2)")
        language, stem = parts[0], parts[1][:-3]
        if stem.startswith("_"):
            return cls(name, language, None, None, None)
        key, *rest = stem.split(".")
        tone = rest.pop(0) if rest and rest[0] in TONES else None
        channel = rest.pop(0) if rest and rest[0] in CHANNELS else None
        if rest or not key:
            raise UnknownTemplate(f"{name!r}: expected <lang>/<key>[.<tone>][.<channel>].j2")
        return cls(name, language, key, tone, channel)


def template_files(root: Path) -> list[str]:
    """Every editable template file: ``<lang>/*.j2`` for our languages, partials included."""
    return sorted(path.relative_to(root).as_posix() for language in LANGUAGES
                  for path in (root / language).glob("*.j2"))


def served_by(name: str, existing: Iterable[str]) -> list[tuple[str, str]]:
    """(tone, channel) pairs whose lookup (service/templates.py) picks this file."""
    parsed = TemplateName.parse(name)
    if parsed.partial:
        return []
    present = set(existing)
    pairs = []
    for tone in TONES:
        for channel in CHANNELS:
            chosen = next((c for c in TemplateRenderer.candidates(parsed.key, channel=channel,
                                                                  language=parsed.language, tone=tone)
                           if c in present), None)
            if chosen == name:
                pairs.append((tone, channel))
    return pairs


def dependents(root: Path, texts: Mapping[str, str], name: str) -> list[str]:
    """Files that include, import or extend ``name``, directly or not (``texts`` replace the
    files on disk: the live versions and the draft)."""
    env = sandbox_environment()
    language = name.split("/", 1)[0]
    users: dict[str, set[str]] = {}
    for other in template_files(root):
        if not other.startswith(f"{language}/") or other == name:
            continue
        source = texts.get(other)
        if source is None:
            source = (root / other).read_text(encoding="utf-8")
        try:
            referenced = jinja2.meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
        for target in referenced:
            if target:
                users.setdefault(target, set()).add(other)
    found: list[str] = []
    pending = [name]
    while pending:
        for user in sorted(users.get(pending.pop(0), ())):
            if user not in found:
                found.append(user)
                pending.append(user)
    return sorted(found)


# --------------------------------------------------------------------------- sample debtors


@dataclass(frozen=True)
class SampleDebtor:
    """A made-up debtor of one segment, for previews."""

    segment: str
    description: str
    first_name: str
    country: str
    jurisdiction: str
    days_past_due: int
    amount: str
    currency: str
    due_date: str
    product: str
    payment_history: str
    creditor: str
    reference: str

    def variables(self) -> dict[str, Any]:
        """What the sender would pass for such a debtor (where a key takes it)."""
        return {"first_name": self.first_name, "jurisdiction": self.jurisdiction,
                "amount": self.amount, "total": self.amount, "currency": self.currency,
                "due_date": self.due_date, "product": self.product, "creditor": self.creditor,
                "reference": self.reference}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_debtor(segment: Segment, language: str, catalogue: Catalogue,
                  today: date) -> SampleDebtor:
    """A debtor the segment's rules would place in it: the middle of its days-past-due band,
    the bottom of its balance band, its first product, history and creditor."""
    when = segment.when
    low, high = when.days_past_due
    if low is not None and high is not None:
        days = (low + high) // 2
    elif low is not None:
        days = low + 14
    elif high is not None:
        days = max(0, high - 10)
    else:
        days = 45
    low_b, high_b = when.balance
    samples = {**catalogue.common, **(catalogue.keys["balance"].variables
                                      if "balance" in catalogue.keys else {})}
    if low_b is not None:
        amount = Decimal(low_b) * Decimal("1.25")
    elif high_b is not None:
        amount = Decimal(high_b) / 2
    else:
        amount = Decimal(str(samples.get("amount", "248.50")))
    country, jurisdiction, currency = SAMPLE_HOME[language]

    def first(values: frozenset[str] | None, default: str) -> str:
        return sorted(values)[0] if values else default

    return SampleDebtor(
        segment=segment.name, description=segment.description,
        first_name=str(catalogue.common.get("first_name", "Anna")), country=country,
        jurisdiction=jurisdiction, days_past_due=days, amount=f"{amount.quantize(Decimal('0.01'))}",
        currency=currency, due_date=(today - timedelta(days=days)).isoformat(),
        product=first(when.product, str(samples.get("product", "energy"))),
        payment_history=first(when.payment_history, "none"),
        creditor=first(when.creditor, str(samples.get("creditor", "Energie Direct B.V."))),
        reference=str(samples.get("reference", "AB-123456")))


def sample_variables(catalogue: Catalogue, key: str, *, debtor: SampleDebtor | None = None,
                     jurisdiction: str | None = None, optional: bool = True) -> dict[str, Any]:
    """The catalogue's samples for ``key`` (common ones included), with a sample debtor's
    values where the key takes them; ``optional=False`` leaves the optional variables out."""
    variables = catalogue.samples(key) if key in catalogue.keys else dict(catalogue.common)
    if debtor is not None:
        variables.update({name: value for name, value in debtor.variables().items()
                          if name in variables})
    if jurisdiction is not None:
        variables["jurisdiction"] = jurisdiction
    variables["first_contact"] = key == "reminder_first"
    if not optional and key in catalogue.keys:
        for name in catalogue.keys[key].optional:
            variables.pop(name, None)
    return variables


# --------------------------------------------------------------------------- renders


@dataclass(frozen=True)
class RenderCheck:
    """One render of a template for a channel, as the debtor would get it, and its issues."""

    template: str            # the file rendered
    key: str
    channel: str
    jurisdiction: str
    optional: bool           # rendered with the key's optional variables
    body: str | None         # None when it did not render
    subject: str | None
    error: str | None        # why it did not render
    issues: tuple[LintIssue, ...] = ()
    encoding: str | None = None       # SMS: GSM-7 | UCS-2
    segments: int | None = None
    characters: int | None = None
    non_gsm: tuple[str, ...] = ()
    serves: tuple[tuple[str, str], ...] = ()  # (tone, channel) pairs the lookup picks it for

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["issues"] = [issue_dict(issue) for issue in self.issues]
        return data


def issue_dict(issue: LintIssue) -> dict[str, Any]:
    return {"level": issue.level, "code": issue.code, "message": issue.message,
            "template": issue.template, "line": issue.line, "text": str(issue)}


def _renderer(root: Path, catalogue: Catalogue | None, texts: Mapping[str, str],
              company: str) -> TemplateRenderer:
    return TemplateRenderer(root, catalogue=catalogue, overlay=texts, company_name=company)


def _render(renderer: TemplateRenderer, template: str, key: str, channel: str,
            variables: Mapping[str, Any], *, replace_smart: bool = True,
            serves: tuple[tuple[str, str], ...] = (), optional: bool = True) -> RenderCheck:
    language = template.split("/", 1)[0]
    jurisdiction = str(variables.get("jurisdiction", ""))
    try:
        message = renderer.render(key, channel=channel, language=language, variables=variables,
                                  template=template, lint=False)
    except TemplateError as error:
        reason = str(error).split(": ", 1)[-1]
        issue = LintIssue("error", "render", reason, template)
        return RenderCheck(template, key, channel, jurisdiction, optional, None, None, reason,
                           (issue,), serves=serves)
    body = message.body
    if channel == "sms" and replace_smart:
        body = sms_encoding.replace_smart_characters(body)
    sent = body if message.subject is None else f"{message.subject}\n{body}"
    budget = renderer.catalogue.budget(key) if renderer.catalogue else lint.DEFAULT_SMS_SEGMENT_BUDGET
    issues = tuple(lint.lint_rendered(sent, channel=channel, key=key, sms_segment_budget=budget))
    encoding = sms_encoding.analyse(body) if channel == "sms" else None
    return RenderCheck(template, key, channel, jurisdiction, optional, body, message.subject, None,
                       issues, encoding=encoding.encoding if encoding else None,
                       segments=encoding.segments if encoding else None,
                       characters=len(body), non_gsm=encoding.non_gsm_characters if encoding else (),
                       serves=serves)


def preview(root: Path, catalogue: Catalogue | None, texts: Mapping[str, str], name: str,
            text: str, *, channel: str, variables: Mapping[str, Any] | None = None,
            debtor: SampleDebtor | None = None, jurisdiction: str | None = None,
            via: str | None = None, company: str = "Nudge Collections",
            replace_smart: bool = True) -> dict[str, Any]:
    """The draft ``text`` of ``name`` rendered for ``channel``: its static lint and one render,
    of the file itself or through ``via``, a key template that includes, imports or extends it
    (for a partial, by default the first such template)."""
    texts = {**texts, name: text}
    parsed = TemplateName.parse(name)
    static = lint.lint_template(name, text, catalogue=catalogue, root=root, overrides=texts).issues
    users = dependents(root, texts, name) if parsed.partial or via else []
    keyed = [u for u in users if not TemplateName.parse(u).partial]
    if via not in keyed:
        # a partial is seen through a key template that uses it; a key template as itself
        via = (keyed[0] if keyed else None) if parsed.partial else None
    if parsed.partial and via is None:
        return {"static": [issue_dict(i) for i in static], "render": None, "via": None,
                "users": users}
    target = via or name
    key = TemplateName.parse(target).key
    assert key is not None
    values = dict(variables) if variables is not None else sample_variables(
        catalogue, key, debtor=debtor, jurisdiction=jurisdiction) if catalogue else {}
    renderer = _renderer(root, catalogue, texts, company)
    existing = set(template_files(root))
    check = _render(renderer, target, key, channel, values, replace_smart=replace_smart,
                    serves=tuple(served_by(target, existing)))
    return {"static": [issue_dict(i) for i in static], "render": check.to_dict(), "via": via,
            "users": users}


@dataclass(frozen=True)
class DraftReport:
    """Everything :func:`check_draft` found. ``errors`` stop a draft; ``warnings`` are kept
    with the version."""

    name: str
    static: tuple[LintIssue, ...]
    renders: tuple[RenderCheck, ...]
    problems: tuple[LintIssue, ...] = field(default=())  # render issues that count as errors
    notes: tuple[LintIssue, ...] = field(default=())     # render issues of files no message uses

    @property
    def errors(self) -> list[LintIssue]:
        return [i for i in self.static if i.level == "error"] + list(self.problems)

    @property
    def warnings(self) -> list[LintIssue]:
        return [i for i in self.static if i.level == "warning"] + list(self.notes)


def check_draft(root: Path, catalogue: Catalogue | None, texts: Mapping[str, str], name: str,
                text: str, *, company: str = "Nudge Collections",
                jurisdictions: Iterable[str] = JURISDICTIONS) -> DraftReport:
    """The static lint of the draft, then every affected file rendered for every channel it
    serves, in every jurisdiction, with the samples (with and without optional variables).

    A file no (tone, channel) pair picks (a base shadowed by its tone files) is still rendered
    for its channels, but what its renders find is a warning: no message uses it as it is."""
    texts = {**texts, name: text}
    static = tuple(lint.lint_template(name, text, catalogue=catalogue, root=root,
                                      overrides=texts).issues)
    if any(i.level == "error" and i.code in ("syntax", "file_name") for i in static):
        return DraftReport(name, static, ())
    renderer = _renderer(root, catalogue, texts, company)
    existing = set(template_files(root))
    affected = [f for f in [name, *dependents(root, texts, name)] if not TemplateName.parse(f).partial]
    renders: list[RenderCheck] = []
    problems: list[LintIssue] = []
    notes: list[LintIssue] = []
    for target in affected:
        parsed = TemplateName.parse(target)
        assert parsed.key is not None
        serves = tuple(served_by(target, existing))
        channels = sorted({channel for _, channel in serves}) or (
            [parsed.channel] if parsed.channel else list(CHANNELS))
        spec = catalogue.keys.get(parsed.key) if catalogue else None
        variants = (True, False) if spec is not None and spec.optional else (True,)
        for channel in channels:
            for jurisdiction in jurisdictions:
                for optional in variants:
                    variables = (sample_variables(catalogue, parsed.key, jurisdiction=jurisdiction,
                                                  optional=optional) if catalogue
                                 else {"jurisdiction": jurisdiction})
                    check = _render(renderer, target, parsed.key, channel, variables,
                                    serves=serves, optional=optional)
                    renders.append(check)
                    where = f"{target} as {channel}, {jurisdiction}" + ("" if optional else
                                                                         ", without optional variables")
                    for issue in check.issues:
                        found = LintIssue(issue.level if serves else "warning", issue.code,
                                          f"{where}: {issue.message}", target, issue.line)
                        if found not in problems and found not in notes:
                            (problems if found.level == "error" else notes).append(found)
    return DraftReport(name, static, tuple(renders), tuple(problems), tuple(notes))
