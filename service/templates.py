"""Render message templates: message key x tone x channel x language.

Templates live under ``message_templates/<lang>/`` and are plain text Jinja2, rendered in a
sandbox (managers edit them) with ``StrictUndefined`` so a missing variable is an error, never
an empty gap in a message sent to a debtor.

Lookup order for ``render(key, channel=..., language=..., tone=...)``::

    <lang>/<key>.<tone>.<channel>.j2
    <lang>/<key>.<tone>.j2
    <lang>/<key>.<channel>.j2
    <lang>/<key>.j2

Files whose name starts with ``_`` are partials (opt-out line, sign-off...) and are not keys.

An email template sets its subject at top level with ``{% set subject %}...{% endset %}``; when
the template chosen for an email sets none, ``<lang>/_subject.j2`` gives the default subject.

Filters (locale from the language: en -> en_GB, nl -> nl_NL, de -> de_DE):

``money(value, currency)``
    ``value`` is a ``Decimal`` or a decimal string ("1234.56"). Floats and ints are refused:
    no float maths on money, and an int is ambiguous (minor units or not).
    Babel's no-break spaces are replaced by plain spaces: U+00A0 is not in the GSM-7 alphabet,
    and one such character would turn a whole SMS into UCS-2 (70 characters per segment).
``longdate(d)``  "Friday 20 November 2026" / "vrijdag 20 november 2026" / "Freitag, 20. November 2026"
``date(d)``      "20 November 2026" / "20 november 2026" / "20. November 2026"
``shortdate(d)`` "20/11/2026" / "20-11-2026" / "20.11.2026"
    ``d`` is a ``date``, a ``datetime`` or an ISO string.

``sms_segments(text)`` counts the SMS segments a body costs (GSM-7 or UCS-2); ``is_gsm7(text)``
tells whether a body stays in the GSM-7 alphabet.

Templates edited in the console (service/template_versions.py) go live without a restart: the
renderer keeps an *overlay* (template name -> text) consulted before the files, and
:meth:`TemplateRenderer.refresh_live` reloads it when the approved versions changed (the send
path calls it before each render; one Redis GET at most once a second).

Every render runs in the hardened sandbox of service/template_sandbox.py, within its limits
(output size, time, loop steps).

Every render is linted (service/template_lint.py): each template file once per version (syntax,
variables the key does not receive per ``message_templates/catalogue.yml``, opt-out line,
disclosure, threat phrases), and every rendered message (SMS segments over the key's budget,
Twilio's and WhatsApp's length limits, threat phrases a variable brought in). An error-level
issue makes ``render`` raise :class:`TemplateError` with the issues in ``.issues``.

The disclosure partials (``<lang>/_disclosure.j2``) need the common variables ``jurisdiction``
(one of :data:`JURISDICTIONS`) and ``first_contact``; the caller passes them, there is no default.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2.exceptions import SecurityError

from channels import sms_encoding
from service.template_sandbox import hardened_environment, render_limited

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from service.keys import Keys
    from service.template_lint import Catalogue, LintIssue

__all__ = [
    "CHANNELS",
    "JURISDICTIONS",
    "LANGUAGES",
    "TONES",
    "RenderedMessage",
    "TemplateError",
    "TemplateRenderer",
    "is_gsm7",
    "sandbox_environment",
    "sms_segments",
]

CHANNELS = ("sms", "whatsapp", "email")
TONES = ("soft", "loss_aversion", "social_proof")
#: language -> babel locale
LANGUAGES: dict[str, str] = {"en": "en_GB", "nl": "nl_NL", "de": "de_DE"}
#: the jurisdiction packs the disclosure partials know (policies/jurisdictions.yml names them)
JURISDICTIONS = ("EU/NL", "DE", "UK", "US")

# Date patterns per language (CLDR syntax). en_GB's "full" format has a comma after the
# weekday ("Friday, 20 November 2026"); British house style writes it without, so the
# patterns are spelled out rather than taken from the locale's presets.
_DATE_PATTERNS: dict[str, dict[str, str]] = {
    "en": {"long": "EEEE d MMMM y", "date": "d MMMM y", "short": "dd/MM/y"},
    "nl": {"long": "EEEE d MMMM y", "date": "d MMMM y", "short": "dd-MM-y"},
    "de": {"long": "EEEE, d. MMMM y", "date": "d. MMMM y", "short": "dd.MM.y"},
}

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_DECIMAL_RE = re.compile(r"^[+-]?\d+(\.\d+)?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_UNDEFINED_RE = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_NO_ATTR_RE = re.compile(r"has no (?:attribute|element) '?(?P<name>[^']+?)'?$")


class TemplateError(Exception):
    """A message could not be rendered (unknown key or language, undefined variable,
    syntax error, sandbox violation, bad filter input)."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        language: str | None = None,
        variable: str | None = None,
        issues: Sequence[LintIssue] = (),
        content: bool = False,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.language = language
        self.variable = variable
        self.issues: tuple[LintIssue, ...] = tuple(issues)  # when the template lint refused it
        # True when the template is fine but this message is not (a threat phrase or a length
        # that came with its variables, an agent's text): retrying cannot help.
        self.content = content


@dataclass(frozen=True)
class RenderedMessage:
    key: str
    channel: str
    language: str
    body: str
    subject: str | None  # only for email


class _FilterError(ValueError):
    """Bad input to one of our filters; wrapped into TemplateError by render()."""


# --------------------------------------------------------------------------- filters


def _fail_if_undefined(value: Any) -> None:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # raises UndefinedError naming the variable


def _to_decimal(value: Any) -> Decimal:
    _fail_if_undefined(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _FilterError(f"money: not a finite amount: {value!r}")
        return value
    if isinstance(value, str) and _DECIMAL_RE.match(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the regex already rules this out
            pass
    raise _FilterError(
        f"money: expected a Decimal or a decimal string like '1234.56', got {value!r}"
    )


def _to_date(value: Any) -> dt.date:
    _fail_if_undefined(value)
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            try:
                return dt.datetime.fromisoformat(text).date()
            except ValueError:
                pass
    raise _FilterError(f"expected a date or an ISO date string, got {value!r}")


def _plain_spaces(text: str) -> str:
    # no-break and narrow no-break spaces are not GSM-7
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def _make_filters(language: str) -> dict[str, Any]:
    locale = LANGUAGES[language]
    patterns = _DATE_PATTERNS[language]

    def money(value: Any, currency: Any) -> str:
        amount = _to_decimal(value)
        _fail_if_undefined(currency)
        if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
            raise _FilterError(f"money: expected an ISO 4217 currency code, got {currency!r}")
        return _plain_spaces(format_currency(amount, currency, locale=locale))

    def longdate(value: Any) -> str:
        return _plain_spaces(format_date(_to_date(value), patterns["long"], locale=locale))

    def date(value: Any) -> str:
        return _plain_spaces(format_date(_to_date(value), patterns["date"], locale=locale))

    def shortdate(value: Any) -> str:
        return format_date(_to_date(value), patterns["short"], locale=locale)

    return {"money": money, "longdate": longdate, "date": date, "shortdate": shortdate}


# --------------------------------------------------------------------------- whitespace

_MULTI_SPACE_RE = re.compile(r"(?<=\S) {2,}")
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def _tidy(text: str) -> str:
    """Strip trailing spaces, squeeze runs of inner spaces, keep at most one blank line."""
    lines = [_MULTI_SPACE_RE.sub(" ", line.rstrip()) for line in text.splitlines()]
    return _BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- SMS segments

def is_gsm7(text: str) -> bool:
    """True when ``text`` fits the GSM-7 alphabet (basic table plus extension table)."""
    return sms_encoding.is_gsm7(text)


def sms_segments(text: str) -> int:
    """How many SMS segments ``text`` costs, as Twilio counts them: GSM-7 160/153 septets
    (extension-table characters count two), otherwise UCS-2 70/67 UTF-16 units; a character
    never straddles two segments (channels/sms_encoding.py)."""
    return sms_encoding.analyse(text).segments


# --------------------------------------------------------------------------- renderer


def sandbox_environment(loader: jinja2.BaseLoader | None = None, language: str = "en") -> jinja2.Environment:
    """The environment templates are rendered in (and linted with, so both agree on what is a
    syntax error): the hardened sandbox (service/template_sandbox.py), since managers edit
    templates; strict about undefined variables."""
    env = hardened_environment(loader)
    env.filters.update(_make_filters(language))
    return env


class TemplateRenderer:
    """Renders ``message_templates/<lang>/<key>[.<tone>][.<channel>].j2``.

    ``catalogue`` (service/template_lint.py) tells the variables and rules of each key; by
    default ``<root>/catalogue.yml`` when it exists. Without one, the lint checks only what
    needs no catalogue (syntax, partials, threat phrases, lengths with a budget of 3 segments).
    """

    def __init__(self, root: Path, *, company_name: str = "Nudge Collections",
                 catalogue: Catalogue | None = None, overlay: Mapping[str, str] | None = None,
                 live_check_seconds: float = 1.0) -> None:
        # imported here: template_lint builds on this module (sms_segments, sandbox_environment)
        from service import template_lint

        self.root = Path(root)
        self.company_name = company_name
        self._lint = template_lint
        self.catalogue = catalogue if catalogue is not None else template_lint.default_catalogue(self.root)
        self._envs: dict[str, jinja2.Environment] = {}
        # template name -> (mtimes of it and its partials, its static issues)
        self._static: dict[str, tuple[tuple[tuple[str, int], ...], tuple[LintIssue, ...]]] = {}
        # template name -> text that replaces the file (the console's approved versions)
        self.overlay: dict[str, str] = dict(overlay or {})
        self.live_check_seconds = live_check_seconds
        self._generation: int | None = None
        self._live_checked = float("-inf")

    # one environment per language: the filters close over the locale
    def _env(self, language: str) -> jinja2.Environment:
        env = self._envs.get(language)
        if env is None:
            files = jinja2.FileSystemLoader(str(self.root))
            loader = jinja2.ChoiceLoader([jinja2.DictLoader(self.overlay), files]) if self.overlay else files
            env = sandbox_environment(loader, language)
            self._envs[language] = env
        return env

    def set_overlay(self, overlay: Mapping[str, str], generation: int | None = None) -> None:
        """Replace the texts consulted before the files. Compiled templates and lint results
        are dropped: a cached file template would otherwise hide a new override."""
        self.overlay = dict(overlay)
        self._generation = generation
        self._envs.clear()
        self._static.clear()

    async def refresh_live(self, redis: Redis, keys: Keys) -> bool:
        """Load the console's live template versions when they changed (the generation counter
        moved). One GET at most every ``live_check_seconds``; True when the overlay changed."""
        now = time.monotonic()
        if now - self._live_checked < self.live_check_seconds:
            return False
        self._live_checked = now
        raw = await redis.get(keys.template_generation)
        if int(raw or 0) == self._generation:
            return False
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.template_generation)
            pipe.hgetall(keys.template_overrides)
            raw, overrides = await pipe.execute()
        self.set_overlay({_text(name): _text(text) for name, text in overrides.items()}, int(raw or 0))
        return True

    def keys(self) -> set[str]:
        """Every message key that has a template in at least one language."""
        found: set[str] = set()
        for language in LANGUAGES:
            folder = self.root / language
            if not folder.is_dir():
                continue
            for path in folder.glob("*.j2"):
                if not path.name.startswith("_"):
                    found.add(path.name.split(".", 1)[0])
        return found

    @staticmethod
    def candidates(key: str, *, channel: str, language: str, tone: str = "soft") -> list[str]:
        """Template names tried for this key, most specific first."""
        return [
            f"{language}/{key}.{tone}.{channel}.j2",
            f"{language}/{key}.{tone}.j2",
            f"{language}/{key}.{channel}.j2",
            f"{language}/{key}.j2",
        ]

    def render(
        self,
        key: str,
        *,
        channel: str,
        language: str,
        tone: str = "soft",
        variables: Mapping[str, Any],
        template: str | None = None,
        lint: bool = True,
    ) -> RenderedMessage:
        """``template``: render this file (``en/reminder_first.j2``) instead of the one the
        lookup order picks; ``lint=False``: do not refuse on lint issues. Both for the template
        editor, which checks a draft for each channel it serves and lists the issues itself."""
        def fail(message: str, variable: str | None = None,
                 issues: Sequence[LintIssue] = (), content: bool = False) -> TemplateError:
            return TemplateError(
                f"{key} [{language}/{channel}]: {message}",
                key=key,
                language=language,
                variable=variable,
                issues=issues,
                content=content,
            )

        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise fail(f"invalid template key {key!r}")
        if language not in LANGUAGES:
            raise fail(f"unknown language {language!r}; expected one of {sorted(LANGUAGES)}")
        if channel not in CHANNELS:
            raise fail(f"unknown channel {channel!r}; expected one of {list(CHANNELS)}")
        if tone not in TONES:
            raise fail(f"unknown tone {tone!r}; expected one of {list(TONES)}")
        if "jurisdiction" in variables and variables["jurisdiction"] not in JURISDICTIONS:
            raise fail(f"unknown jurisdiction {variables['jurisdiction']!r}; "
                       f"the disclosures know {list(JURISDICTIONS)}", variable="jurisdiction")

        env = self._env(language)
        names = [template] if template else self.candidates(key, channel=channel,
                                                            language=language, tone=tone)
        context: dict[str, Any] = {"company": self.company_name, **variables}
        context["channel"] = channel
        context["language"] = language

        try:
            chosen = env.select_template(names)
        except jinja2.TemplatesNotFound:
            raise fail(f"unknown template key (tried {', '.join(names)})") from None
        except jinja2.TemplateSyntaxError as e:
            raise fail(f"syntax error in {e.filename or e.name} line {e.lineno}: {e.message}") from e
        if lint:
            self._refuse_errors(self._static_issues(chosen), fail)

        try:
            rendered = render_limited(chosen, context)
            body = _tidy(rendered.text)
            subject: str | None = None
            if channel == "email":
                subject = rendered.exported.get("subject")
                if subject is None or not str(subject).strip():
                    default = env.get_template(f"{language}/_subject.j2")
                    subject = render_limited(default, context).text
                subject = " ".join(str(subject).split())
        except jinja2.UndefinedError as e:
            name = _undefined_name(e.message or "")
            raise fail(f"undefined variable {name!r} ({e.message})", variable=name) from e
        except SecurityError as e:
            raise fail(f"refused by the template sandbox: {e.message}") from e
        except jinja2.TemplateSyntaxError as e:
            raise fail(f"syntax error in {e.filename or e.name} line {e.lineno}: {e.message}") from e
        except jinja2.TemplateNotFound as e:
            raise fail(f"missing partial template {e.name!r}") from e
        except _FilterError as e:
            raise fail(str(e)) from e
        except jinja2.TemplateError as e:
            raise fail(f"{type(e).__name__}: {e}") from e

        if lint:
            # an email subject is checked with the body (threat phrases; email has no length rule)
            sent = body if subject is None else f"{subject}\n{body}"
            budget = self.catalogue.budget(key) if self.catalogue else self._lint.DEFAULT_SMS_SEGMENT_BUDGET
            self._refuse_errors(self._lint.lint_rendered(sent, channel=channel, key=key,
                                                         sms_segment_budget=budget),
                                functools.partial(fail, content=True))
        return RenderedMessage(
            key=key, channel=channel, language=language, body=body, subject=subject
        )

    def _static_issues(self, template: jinja2.Template) -> tuple[LintIssue, ...]:
        """The lint of the template file and its partials, computed once per version of those
        files (the key is their mtimes; a new overlay clears the cache): a manager's edit is
        linted at its first render."""
        if template.name is None:
            return ()
        cached = self._static.get(template.name)
        if cached is not None and cached[0] == _mtimes(path for path, _ in cached[0]):
            return cached[1]
        result = self._lint.lint_template(template.name, catalogue=self.catalogue, root=self.root,
                                          overrides=self.overlay)
        stamp = _mtimes(str(self.root / name) for name in result.files if name not in self.overlay)
        self._static[template.name] = (stamp, result.issues)
        return result.issues

    @staticmethod
    def _refuse_errors(issues: Sequence[LintIssue], fail: Callable[..., TemplateError]) -> None:
        errors = [issue for issue in issues if issue.level == "error"]
        if errors:
            raise fail("refused by the template lint: " + "; ".join(map(str, errors)), issues=errors)


def _mtimes(paths: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """(path, mtime in ns) per file; -1 for a file that is gone, so the stamp changes."""
    stamp = []
    for path in paths:
        try:
            stamp.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            stamp.append((path, -1))
    return tuple(stamp)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _undefined_name(message: str) -> str | None:
    for pattern in (_UNDEFINED_RE, _NO_ATTR_RE):
        m = pattern.search(message)
        if m:
            return m.group("name")
    return None
