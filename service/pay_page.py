"""The payment page: a small landing page behind each debtor's signed, expiring link.

Routes (all under ``/pay``; the token is a :mod:`service.pay_links` token)::

    GET  /pay/{token}          the verification form, or (verified) the balance with the agreed
                               schedule or the plan options
    POST /pay/{token}/verify   one answer to the current verification question
    POST /pay/{token}/choose   the plan the person chose (recorded as an accepted arrangement)
    POST /pay/{token}/go       the pay button: 303 to the creditor's payment page
    GET  /pay-assets/pay.css   the page's only asset

A forged or damaged token gets a 404 page, an expired one (older than the portfolio's
``payment_page.link_valid_days``) a 410 page. Nothing about the debt, not even the debtor's
name, is shown before the person answered every verification method of their portfolio.
Answers go through :class:`service.identity.IdentityChecks`, so wrong answers on the page and
in the chat count against one limit, and a lock in either locks both.

The browser session is a random id in a cookie signed with itsdangerous (HttpOnly,
SameSite=Strict, Path=/pay, Secure unless ``NUDGE_SECURE_COOKIES`` is off); the verification is
remembered for the scope ``page:<session id>``. A new session id is issued the moment the
person is verified, so a session id planted before (fixation) is worth nothing. Every form
carries a CSRF token, an HMAC of the session id, checked on every POST (403 when missing or
wrong).

Every open, verification, lock, choice and click is a business event (creditor = the debtor's
creditor) and a transcript event, so creditors and agents see what happened. The token and the
answers are never logged.

``pay_link_opened`` is recorded for each visit that starts unverified (a new browser session,
or one whose verification lapsed): the page the person sees after verifying, choosing a plan or
reloading a verified page is not counted as another open.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
from aiohttp import web
from babel.dates import format_date
from babel.numbers import format_currency
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import LockError

from bot.core.arrangement_lifecycle import OPEN_STATES, Arrangement
from bot.core.arrangement_policy import ArrangementPolicy, PolicyBook, load_policy_book
from bot.core.contact_windows import candidate_zones
from bot.core.debtors import Debtor, minor_to_decimal
from bot.core.negotiation import Negotiation, Offer, offer_inside_policy, open_plan
from bot.core.plans import build_plan, most_installments_allowed, nearest_first_date
from service import appkeys as K
from service.arrangements import CONFIRMATION_JOB, ArrangementBook, money
from service.business_events import BusinessEvents
from service.identity import CheckResult, IdentityChecks
from service.logs import get_logger
from service.pay_links import PayLinkError, PayLinks
from service.templates import LANGUAGES

log = get_logger("pay_page")

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "web_templates"
CSS = HERE / "static" / "pay.css"

COOKIE = "nudge_pay"
COOKIE_PATH = "/pay"
SESSION_SALT = "nudge.pay-session.v1"
CSRF_CONTEXT = b"nudge.pay-csrf.v1:"
#: A session cookie older than this is ignored (a new session starts); the verification itself
#: lapses sooner, after the portfolio's verification.valid_for_minutes.
SESSION_MAX_AGE = 24 * 3600
#: The longest link_valid_days the policy schema allows: older tokens are expired for everyone.
LONGEST_LINK_DAYS = 90
#: At most this many plan options on the page.
MAX_PLAN_OPTIONS = 3
#: How long a choice waits for the conversation's lock (the worker may be answering a message).
CHOICE_LOCK_WAIT = 10.0
CHOICE_LOCK_TTL = 30.0

TEMPLATES = web.AppKey("pay_templates", jinja2.Environment)
POLICIES = web.AppKey("pay_policies", PolicyBook)
LINKS = web.AppKey("pay_links", object)          # PayLinks, or None without a secret
IDENTITY = web.AppKey("pay_identity", IdentityChecks)
BOOK = web.AppKey("pay_book", ArrangementBook)
EVENTS = web.AppKey("pay_events", BusinessEvents)
SESSIONS = web.AppKey("pay_sessions", object)    # URLSafeTimedSerializer, or None

_DIGITS = re.compile(r"\d{1,4}")


# --- page text in the three languages ---------------------------------------------------------
TEXT: dict[str, dict[str, str]] = {
    "en": {
        "page_title": "Your payment page",
        "invalid_title": "This link is not valid",
        "invalid_body": "Please check that you opened the whole link from our message. "
                        "If it still does not work, reply to our message and we will help.",
        "expired_title": "This link has expired",
        "expired_body": "For your security our payment links only work for a limited time. "
                        "Reply to our message and we will send you a new link.",
        "locked_title": "This page is locked",
        "locked_body": "Some answers did not match our records, so we have locked this page "
                       "for now to protect your account. A colleague will contact you.",
        "forbidden_title": "This form has expired",
        "forbidden_body": "Please open the link from our message again and try once more.",
        "unavailable_title": "The payment page is not available",
        "unavailable_body": "Please try again later, or reply to our message.",
        "busy_title": "Please try again",
        "busy_body": "We are just updating your account. Please go back and try again in a "
                     "moment.",
        "verify_title": "First, let us check it is you",
        "verify_intro": "Before we show anything about your account, please answer a security "
                        "question.",
        "verify_step": "Question {step} of {steps}",
        "q_date_of_birth": "What is your date of birth?",
        "q_date_of_birth_hint": "For example 31 3 1985",
        "q_postcode": "What is your postcode?",
        "q_postcode_hint": "The postcode of the address we have for you",
        "q_reference": "What is your reference number?",
        "q_reference_hint": "It is in our letter or message, for example NWM-2026-12345",
        "day": "Day", "month": "Month", "year": "Year",
        "continue": "Continue",
        "wrong_one": "That does not match our records. You have 1 more try.",
        "wrong_many": "That does not match our records. You have {n} more tries.",
        "empty_answer": "Please fill in your answer.",
        "bad_date": "Please enter a real date: day, month and a four-digit year.",
        "balance": "Amount to pay",
        "creditor": "Creditor",
        "reference": "Reference",
        "nothing_due": "There is nothing left to pay on this account. Thank you!",
        "options_title": "How would you like to pay?",
        "pay_full_title": "Pay in full",
        "pay_full_body": "Pay the whole amount now and the matter is settled.",
        "pay_full_button": "Pay {amount} now",
        "plans_title": "Or pay in instalments",
        "plan_detail": "{frequency}, first payment on {date}",
        "plan_last": "the last payment is {amount}",
        "plan_total": "{count} payments, {total} in total",
        "choose": "Choose this plan",
        "choose_missing": "Please choose one of the plans.",
        "no_plans": "This amount can only be paid in one go. If that is hard for you, reply "
                    "to our message and we will look at it together.",
        "schedule_title_plan": "Your payment plan",
        "schedule_title_promise": "Your promise to pay",
        "schedule_title_settlement": "Your settlement",
        "col_number": "No.", "col_date": "Date", "col_amount": "Amount", "col_status": "Status",
        "status_paid": "Paid", "status_partial": "Part paid", "status_due": "To pay",
        "status_missed": "Missed",
        "pay_next": "Pay {amount}",
        "pay_next_note": "Payment number {number}, due on {date}.",
        "pay_rest": "Pay the whole amount ({amount})",
        "weekly": "weekly", "fortnightly": "every two weeks", "monthly": "monthly",
        "footer": "Questions? Just reply to our message. Please do not share this link.",
    },
    "nl": {
        "page_title": "Uw betaalpagina",
        "invalid_title": "Deze link is niet geldig",
        "invalid_body": "Controleer of u de hele link uit ons bericht hebt geopend. Werkt het "
                        "nog steeds niet? Beantwoord dan ons bericht, dan helpen wij u.",
        "expired_title": "Deze link is verlopen",
        "expired_body": "Voor uw veiligheid werken onze betaallinks maar een beperkte tijd. "
                        "Beantwoord ons bericht, dan sturen wij u een nieuwe link.",
        "locked_title": "Deze pagina is geblokkeerd",
        "locked_body": "Enkele antwoorden kwamen niet overeen met onze gegevens. Om uw "
                       "gegevens te beschermen is deze pagina voorlopig geblokkeerd. Een "
                       "collega neemt contact met u op.",
        "forbidden_title": "Dit formulier is verlopen",
        "forbidden_body": "Open de link uit ons bericht opnieuw en probeer het nog eens.",
        "unavailable_title": "De betaalpagina is niet beschikbaar",
        "unavailable_body": "Probeer het later nog eens, of beantwoord ons bericht.",
        "busy_title": "Probeer het nog eens",
        "busy_body": "We werken uw gegevens net bij. Ga terug en probeer het zo nog eens.",
        "verify_title": "Eerst controleren we of u het bent",
        "verify_intro": "Voordat we iets over uw dossier laten zien, vragen we u een "
                        "controlevraag te beantwoorden.",
        "verify_step": "Vraag {step} van {steps}",
        "q_date_of_birth": "Wat is uw geboortedatum?",
        "q_date_of_birth_hint": "Bijvoorbeeld 31 3 1985",
        "q_postcode": "Wat is uw postcode?",
        "q_postcode_hint": "De postcode van het adres dat wij van u hebben",
        "q_reference": "Wat is uw dossiernummer?",
        "q_reference_hint": "Dit staat in onze brief of ons bericht, bijvoorbeeld "
                            "NWM-2026-12345",
        "day": "Dag", "month": "Maand", "year": "Jaar",
        "continue": "Verder",
        "wrong_one": "Dat komt niet overeen met onze gegevens. U kunt het nog 1 keer proberen.",
        "wrong_many": "Dat komt niet overeen met onze gegevens. U kunt het nog {n} keer "
                      "proberen.",
        "empty_answer": "Vul uw antwoord in.",
        "bad_date": "Vul een bestaande datum in: dag, maand en een jaartal van vier cijfers.",
        "balance": "Te betalen",
        "creditor": "Schuldeiser",
        "reference": "Dossiernummer",
        "nothing_due": "Er staat niets meer open op dit dossier. Dank u wel!",
        "options_title": "Hoe wilt u betalen?",
        "pay_full_title": "In één keer betalen",
        "pay_full_body": "Betaal het hele bedrag nu en de zaak is afgehandeld.",
        "pay_full_button": "Nu {amount} betalen",
        "plans_title": "Of betaal in termijnen",
        "plan_detail": "{frequency}, eerste betaling op {date}",
        "plan_last": "de laatste termijn is {amount}",
        "plan_total": "{count} termijnen, in totaal {total}",
        "choose": "Deze regeling kiezen",
        "choose_missing": "Kies een van de regelingen.",
        "no_plans": "Dit bedrag kan alleen in één keer worden betaald. Is dat lastig voor u? "
                    "Beantwoord ons bericht, dan kijken we samen naar een oplossing.",
        "schedule_title_plan": "Uw betalingsregeling",
        "schedule_title_promise": "Uw betaalbelofte",
        "schedule_title_settlement": "Uw schikking",
        "col_number": "Nr.", "col_date": "Datum", "col_amount": "Bedrag", "col_status": "Status",
        "status_paid": "Betaald", "status_partial": "Deels betaald", "status_due": "Te betalen",
        "status_missed": "Gemist",
        "pay_next": "{amount} betalen",
        "pay_next_note": "Termijn {number}, te betalen op {date}.",
        "pay_rest": "Het hele bedrag betalen ({amount})",
        "weekly": "per week", "fortnightly": "per twee weken", "monthly": "per maand",
        "footer": "Vragen? Beantwoord gewoon ons bericht. Deel deze link met niemand.",
    },
    "de": {
        "page_title": "Ihre Zahlungsseite",
        "invalid_title": "Dieser Link ist ungültig",
        "invalid_body": "Bitte prüfen Sie, ob Sie den vollständigen Link aus unserer Nachricht "
                        "geöffnet haben. Falls es weiterhin nicht klappt, antworten Sie auf "
                        "unsere Nachricht, wir helfen Ihnen gern.",
        "expired_title": "Dieser Link ist abgelaufen",
        "expired_body": "Zu Ihrer Sicherheit gelten unsere Zahlungslinks nur für begrenzte "
                        "Zeit. Antworten Sie auf unsere Nachricht, dann senden wir Ihnen einen "
                        "neuen Link.",
        "locked_title": "Diese Seite ist gesperrt",
        "locked_body": "Einige Antworten stimmten nicht mit unseren Daten überein. Zum Schutz "
                       "Ihres Kontos haben wir diese Seite vorerst gesperrt. Eine Kollegin oder "
                       "ein Kollege wird sich bei Ihnen melden.",
        "forbidden_title": "Dieses Formular ist abgelaufen",
        "forbidden_body": "Bitte öffnen Sie den Link aus unserer Nachricht erneut und versuchen "
                          "Sie es noch einmal.",
        "unavailable_title": "Die Zahlungsseite ist nicht verfügbar",
        "unavailable_body": "Bitte versuchen Sie es später erneut oder antworten Sie auf "
                            "unsere Nachricht.",
        "busy_title": "Bitte versuchen Sie es erneut",
        "busy_body": "Wir aktualisieren gerade Ihr Konto. Bitte gehen Sie zurück und "
                     "versuchen Sie es gleich noch einmal.",
        "verify_title": "Zuerst prüfen wir, ob Sie es sind",
        "verify_intro": "Bevor wir etwas zu Ihrem Konto anzeigen, beantworten Sie bitte eine "
                        "Sicherheitsfrage.",
        "verify_step": "Frage {step} von {steps}",
        "q_date_of_birth": "Wie lautet Ihr Geburtsdatum?",
        "q_date_of_birth_hint": "Zum Beispiel 31 3 1985",
        "q_postcode": "Wie lautet Ihre Postleitzahl?",
        "q_postcode_hint": "Die Postleitzahl der Adresse, die wir von Ihnen haben",
        "q_reference": "Wie lautet Ihr Aktenzeichen?",
        "q_reference_hint": "Es steht in unserem Brief oder unserer Nachricht, zum Beispiel "
                            "NWM-2026-12345",
        "day": "Tag", "month": "Monat", "year": "Jahr",
        "continue": "Weiter",
        "wrong_one": "Das stimmt nicht mit unseren Daten überein. Sie haben noch 1 Versuch.",
        "wrong_many": "Das stimmt nicht mit unseren Daten überein. Sie haben noch {n} "
                      "Versuche.",
        "empty_answer": "Bitte geben Sie Ihre Antwort ein.",
        "bad_date": "Bitte geben Sie ein gültiges Datum ein: Tag, Monat und ein vierstelliges "
                    "Jahr.",
        "balance": "Offener Betrag",
        "creditor": "Gläubiger",
        "reference": "Aktenzeichen",
        "nothing_due": "Auf diesem Konto ist nichts mehr offen. Vielen Dank!",
        "options_title": "Wie möchten Sie bezahlen?",
        "pay_full_title": "Alles auf einmal bezahlen",
        "pay_full_body": "Zahlen Sie jetzt den ganzen Betrag und die Sache ist erledigt.",
        "pay_full_button": "Jetzt {amount} bezahlen",
        "plans_title": "Oder in Raten zahlen",
        "plan_detail": "{frequency}, erste Zahlung am {date}",
        "plan_last": "die letzte Rate beträgt {amount}",
        "plan_total": "{count} Raten, insgesamt {total}",
        "choose": "Diesen Plan wählen",
        "choose_missing": "Bitte wählen Sie einen der Pläne.",
        "no_plans": "Dieser Betrag kann nur auf einmal bezahlt werden. Wenn das schwierig für "
                    "Sie ist, antworten Sie auf unsere Nachricht, dann finden wir gemeinsam "
                    "eine Lösung.",
        "schedule_title_plan": "Ihr Ratenplan",
        "schedule_title_promise": "Ihr Zahlungsversprechen",
        "schedule_title_settlement": "Ihr Vergleich",
        "col_number": "Nr.", "col_date": "Datum", "col_amount": "Betrag", "col_status": "Status",
        "status_paid": "Bezahlt", "status_partial": "Teilweise bezahlt", "status_due": "Offen",
        "status_missed": "Verpasst",
        "pay_next": "{amount} bezahlen",
        "pay_next_note": "Rate {number}, fällig am {date}.",
        "pay_rest": "Den ganzen Betrag bezahlen ({amount})",
        "weekly": "wöchentlich", "fortnightly": "alle zwei Wochen", "monthly": "monatlich",
        "footer": "Fragen? Antworten Sie einfach auf unsere Nachricht. Bitte geben Sie diesen "
                  "Link nicht weiter.",
    },
}


# --- set-up -----------------------------------------------------------------------------------
def add_routes(app: web.Application) -> None:
    """The page's routes and what they need (after the gateway's Redis set-up)."""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                         app_key=TEMPLATES, autoescape=True,
                         undefined=jinja2.StrictUndefined)
    app.router.add_get("/pay-assets/pay.css", stylesheet)
    # No HEAD: link scanners and previews send it, and it must not count as an opening.
    app.router.add_get("/pay/{token}", show_page, allow_head=False)
    app.router.add_post("/pay/{token}/verify", verify)
    app.router.add_post("/pay/{token}/choose", choose)
    app.router.add_post("/pay/{token}/go", go)
    app.cleanup_ctx.append(_services)


async def _services(app: web.Application):
    settings = app[K.SETTINGS]
    redis, keys = app[K.REDIS], app[K.KEYS]
    app[POLICIES] = load_policy_book(settings.policies_dir / "arrangements.yml")
    if settings.pay_link_secret:
        app[LINKS] = PayLinks(settings.pay_link_secret, settings.public_url)
        app[SESSIONS] = URLSafeTimedSerializer(settings.pay_link_secret, salt=SESSION_SALT)
    else:
        log.warning("pay_page.disabled", reason="NUDGE_PAY_LINK_SECRET is not set")
        app[LINKS] = None
        app[SESSIONS] = None
    app[EVENTS] = BusinessEvents(redis, keys)
    app[IDENTITY] = IdentityChecks(redis, keys)
    app[BOOK] = ArrangementBook(redis, keys, app[EVENTS])
    yield


# --- formatting -------------------------------------------------------------------------------
def format_money(amount_minor: int, currency: str, language: str) -> str:
    return format_currency(minor_to_decimal(amount_minor, currency), currency,
                           locale=LANGUAGES[language])


def format_day(day: date, language: str, style: str = "long") -> str:
    return format_date(day, style, locale=LANGUAGES[language])


def local_today(debtor: Debtor, now: float) -> date:
    """The debtor's own date (the zone the contact rules count their days in)."""
    zone = candidate_zones(debtor.country, debtor.phone)[0]
    return datetime.fromtimestamp(now, ZoneInfo(zone)).date()


def _language_of(request: web.Request, debtor: Debtor | None) -> str:
    if debtor is not None and debtor.language in TEXT:
        return debtor.language
    # No debtor to ask: the browser's first language we speak.
    for part in request.headers.get("Accept-Language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in TEXT:
            return code
    return "en"


# --- responses --------------------------------------------------------------------------------
def _secure(response: web.StreamResponse, form_targets: tuple[str, ...] = ()) -> None:
    """Headers for every response of the page: no script at all, no framing, no referrer (the
    token is in the URL), nothing cached."""
    form_action = " ".join(("'self'",) + form_targets)
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"


def _render(request: web.Request, template: str, language: str, *, status: int = 200,
            form_targets: tuple[str, ...] = (), **context: Any) -> web.Response:
    settings = request.app[K.SETTINGS]
    response = aiohttp_jinja2.render_template(
        template, request,
        {"t": TEXT[language], "lang": language, "company": settings.company_name, **context},
        app_key=TEMPLATES, status=status)
    _secure(response, form_targets)
    return response


def _message(request: web.Request, language: str, kind: str, status: int) -> web.Response:
    text = TEXT[language]
    return _render(request, "pay_message.html", language, status=status, kind=kind,
                   title=text[f"{kind}_title"], body=text[f"{kind}_body"])


class _Stop(Exception):
    """A request ends early with this (already rendered) response."""

    def __init__(self, response: web.StreamResponse):
        super().__init__("stop")
        self.response = response


def _see_other(location: str, *, cookie: str | None = None, request: web.Request | None = None,
               form_targets: tuple[str, ...] = ()) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    if cookie is not None and request is not None:
        _set_cookie(request, response, cookie)
    _secure(response, form_targets)
    return response


def _handled(handler):
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Stop as stop:
            return stop.response
    return wrapper


# --- the link, the debtor, the session ---------------------------------------------------------
@dataclass
class Visit:
    """One request to a valid link: who it is for, their policy, the browser session."""

    token: str
    debtor: Debtor
    policy: ArrangementPolicy
    language: str
    session: str | None          # from the cookie, when it was valid
    now: float

    @property
    def scope(self) -> str:
        return f"page:{self.session}"

    @property
    def path(self) -> str:
        return f"/pay/{self.token}"


async def _visit(request: web.Request) -> Visit:
    links: PayLinks | None = request.app[LINKS]  # type: ignore[assignment]
    if links is None:
        raise _Stop(_message(request, _language_of(request, None), "unavailable", 503))
    token = request.match_info["token"]
    try:
        debtor_id = links.debtor_id(token, max_age_seconds=LONGEST_LINK_DAYS * 86400)
    except PayLinkError as error:
        kind, status = ("expired", 410) if error.expired else ("invalid", 404)
        raise _Stop(_message(request, _language_of(request, None), kind, status)) from None
    debtor = await request.app[K.DEBTORS].get(debtor_id)
    if debtor is None:  # erased since the link was sent: the link says nothing more
        raise _Stop(_message(request, _language_of(request, None), "invalid", 404))
    language = _language_of(request, debtor)
    policy = request.app[POLICIES].for_debtor(debtor.creditor, debtor.segment)
    try:
        links.debtor_id(token, max_age_seconds=policy.payment_page.link_valid_days * 86400)
    except PayLinkError as error:
        kind, status = ("expired", 410) if error.expired else ("invalid", 404)
        raise _Stop(_message(request, language, kind, status)) from None
    return Visit(token, debtor, policy, language, _session_of(request), time.time())


def _session_of(request: web.Request) -> str | None:
    serializer: URLSafeTimedSerializer | None = request.app[SESSIONS]  # type: ignore[assignment]
    raw = request.cookies.get(COOKIE)
    if not raw or serializer is None:
        return None
    try:
        sid = serializer.loads(raw, max_age=SESSION_MAX_AGE)
    except BadSignature:
        return None
    return sid if isinstance(sid, str) and sid else None


def _new_session() -> str:
    return secrets.token_urlsafe(24)


def _set_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    settings = request.app[K.SETTINGS]
    serializer: URLSafeTimedSerializer = request.app[SESSIONS]  # type: ignore[assignment]
    response.set_cookie(COOKIE, serializer.dumps(sid), path=COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=settings.secure_cookies)


def csrf_token(secret: str, sid: str) -> str:
    digest = hmac.new(secret.encode(), CSRF_CONTEXT + sid.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def _form(request: web.Request, visit: Visit) -> dict[str, str]:
    """The POSTed form, after its CSRF token was checked against the session (403 if not)."""
    form = await request.post()
    sent = form.get("csrf")
    secret = request.app[K.SETTINGS].pay_link_secret
    if (visit.session is None or not isinstance(sent, str)
            or not hmac.compare_digest(sent.encode(), csrf_token(secret, visit.session).encode())):
        log.warning("pay_page.csrf_refused", debtor_id=visit.debtor.id)
        raise _Stop(_message(request, visit.language, "forbidden", 403))
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _csrf(request: web.Request, visit: Visit) -> str:
    assert visit.session is not None
    return csrf_token(request.app[K.SETTINGS].pay_link_secret, visit.session)


# --- events -----------------------------------------------------------------------------------
async def _event(request: web.Request, visit: Visit, name: str, data: dict[str, Any]) -> None:
    debtor = visit.debtor
    await request.app[EVENTS].append(name, debtor.id, data, creditor=debtor.creditor)
    await request.app[K.CONVERSATIONS].add_event(debtor.id, name, {"via": "payment_page", **data})
    log.info(f"pay_page.{name}", debtor_id=debtor.id)


# --- GET /pay/{token} -------------------------------------------------------------------------
@_handled
async def show_page(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    identity: IdentityChecks = request.app[IDENTITY]
    debtor = visit.debtor
    fresh = visit.session is None
    if fresh:
        visit.session = _new_session()
    verified = not fresh and await identity.is_verified(debtor.id, visit.scope, visit.now)
    if verified:
        response = await _account_view(request, visit)
    else:
        question = await identity.next_question(debtor.id, visit.scope,
                                                visit.policy.verification, visit.now)
        links: PayLinks = request.app[LINKS]  # type: ignore[assignment]
        issued = links.issued_at(visit.token)
        await _event(request, visit, "pay_link_opened", {
            "locked": question.outcome == "locked",
            "link_issued_at": datetime.fromtimestamp(issued, UTC).isoformat(
                timespec="seconds").replace("+00:00", "Z") if issued else None})
        if question.outcome == "locked":
            response = _message(request, visit.language, "locked", 200)
        else:
            response = _verify_form(request, visit, question)
    if fresh:
        _set_cookie(request, response, visit.session)  # type: ignore[arg-type]
    return response


def _verify_form(request: web.Request, visit: Visit, question: CheckResult, *,
                 error: str | None = None, status: int = 200,
                 values: dict[str, str] | None = None) -> web.Response:
    return _render(request, "pay_verify.html", visit.language, status=status,
                   action=f"{visit.path}/verify", csrf=_csrf(request, visit),
                   method=question.method, step=question.step, steps=question.steps,
                   error=error, values=values or {})


# --- POST /pay/{token}/verify ------------------------------------------------------------------
def _answer_text(method: str, form: dict[str, str]) -> tuple[str | None, str | None]:
    """(answer, problem): the answer as the matcher reads it, or what to tell the person
    without counting an attempt (nothing filled in, an impossible date)."""
    if method == "date_of_birth":
        parts = [form.get(name, "").strip() for name in ("day", "month", "year")]
        if not any(parts):
            return None, "empty_answer"
        if not all(_DIGITS.fullmatch(p) for p in parts) or len(parts[2]) != 4:
            return None, "bad_date"
        try:
            day = date(int(parts[2]), int(parts[1]), int(parts[0]))
        except ValueError:
            return None, "bad_date"
        return day.strftime("%d-%m-%Y"), None
    answer = form.get("answer", "").strip()
    if not answer:
        return None, "empty_answer"
    return answer[:100], None


@_handled
async def verify(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    form = await _form(request, visit)
    identity: IdentityChecks = request.app[IDENTITY]
    debtor, policy = visit.debtor, visit.policy.verification
    if await identity.is_verified(debtor.id, visit.scope, visit.now):
        return _see_other(visit.path)
    question = await identity.next_question(debtor.id, visit.scope, policy, visit.now)
    if question.outcome == "locked":
        return _message(request, visit.language, "locked", 200)
    if form.get("method") != question.method:
        # A stale form (another tab moved on): ask the current question, count nothing.
        return _verify_form(request, visit, question)
    answer, problem = _answer_text(question.method or "", form)
    if answer is None:
        keep = {k: form.get(k, "") for k in ("day", "month", "year")}
        return _verify_form(request, visit, question, error=TEXT[visit.language][problem or "empty_answer"],
                            status=422, values=keep)
    result = await identity.answer(debtor, visit.scope, policy, answer, visit.now)
    text = TEXT[visit.language]
    if result.outcome == "wrong":
        message = (text["wrong_one"] if result.attempts_left == 1
                   else text["wrong_many"].format(n=result.attempts_left))
        return _verify_form(request, visit, result, error=message, status=422)
    if result.outcome == "next":
        return _verify_form(request, visit, result)
    if result.outcome == "locked":
        until = await identity.locked_until(debtor.id, visit.now)
        await _event(request, visit, "verification_locked", {
            "where": "payment_page",
            "locked_until": datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
            .replace("+00:00", "Z") if until else None})
        await request.app[K.CONVERSATIONS].escalate(debtor.id, "verification")
        return _message(request, visit.language, "locked", 200)
    # Verified: a new session id from here on, so one planted before is worth nothing.
    new = await _renew_session(request, visit)
    await _event(request, visit, "pay_link_verified",
                 {"methods": list(policy.methods)})
    return _see_other(visit.path, cookie=new, request=request)


async def _renew_session(request: web.Request, visit: Visit) -> str:
    """Move the verification from the old session's scope to a new session's."""
    new = _new_session()
    identity: IdentityChecks = request.app[IDENTITY]
    await identity.move_scope(visit.debtor.id, visit.scope, f"page:{new}", visit.now)
    return new


# --- the verified view ------------------------------------------------------------------------
def _pay_target(visit: Visit) -> tuple[str, ...]:
    """The creditor's payment site, for the CSP's form-action (the pay button's POST is
    answered with a redirect there)."""
    debtor = visit.debtor
    url = visit.policy.payment_page.url_for(reference=debtor.reference, amount_minor=1,
                                            currency=debtor.currency, debtor_id=debtor.id)
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return (f"{parts.scheme}://{parts.netloc}",)
    return ()


async def _require_verified(request: web.Request, visit: Visit) -> None:
    identity: IdentityChecks = request.app[IDENTITY]
    if not await identity.is_verified(visit.debtor.id, visit.scope, visit.now):
        raise _Stop(_see_other(visit.path))  # the page asks again


def plan_options(debtor: Debtor, policy: ArrangementPolicy, today: date, *,
                 hardship: bool = False) -> list[Offer]:
    """Two or three plans inside policy: the chat's opening plan (in hardship the most
    affordable one), then the next rungs of the portfolio's ladder, each capped to what the
    plan rules allow for the balance."""
    balance, currency, rules = debtor.balance_minor, debtor.currency, policy.plans
    if balance <= 0:
        return []
    options: list[Offer] = []
    opening = open_plan(Negotiation(hardship=hardship), balance, policy, today, currency).offer
    if opening is not None and opening.kind == "plan":
        options.append(opening)
    most = most_installments_allowed(balance, rules, currency)
    first = nearest_first_date(None, today, rules)
    for rung, count in enumerate(policy.negotiation.ladder):
        count = min(count, most)
        if count < 2 or any(o.installments == count for o in options):
            continue
        plan = build_plan(balance, count, rules.default_frequency, first, rules.weekend)
        options.append(Offer("plan", plan.total_minor, plan.amounts_minor, plan.dates,
                             plan.frequency, rung=rung))
    inside = [o for o in options
              if not offer_inside_policy(o, balance, policy, today, currency)]
    inside.sort(key=lambda o: o.installments, reverse=hardship)
    return inside[:MAX_PLAN_OPTIONS]


def option_key(offer: Offer) -> str:
    return f"{offer.installments}-{offer.frequency}"


def _option_view(offer: Offer, debtor: Debtor, language: str) -> dict[str, Any]:
    text, currency = TEXT[language], debtor.currency
    regular, last = offer.amounts_minor[0], offer.amounts_minor[-1]
    return {
        "key": option_key(offer),
        "headline": f"{offer.installments} × {format_money(regular, currency, language)}",
        "detail": text["plan_detail"].format(frequency=text[offer.frequency or "monthly"],
                                             date=format_day(offer.dates[0], language)),
        "last": (text["plan_last"].format(amount=format_money(last, currency, language))
                 if last != regular else None),
        "total": text["plan_total"].format(count=offer.installments,
                                           total=format_money(offer.total_minor, currency,
                                                              language)),
    }


def _summary(visit: Visit) -> dict[str, str]:
    debtor = visit.debtor
    return {"balance": format_money(debtor.balance_minor, debtor.currency, visit.language),
            "creditor": debtor.creditor, "reference": debtor.reference}


def _schedule_view(arr: Arrangement, visit: Visit, today: date) -> dict[str, Any]:
    language, currency = visit.language, visit.debtor.currency
    text = TEXT[language]
    rows = []
    for inst in arr.instalments:
        state = inst.state(today)
        rows.append({"number": inst.number, "date": format_day(inst.due, language, "medium"),
                     "amount": format_money(inst.amount_minor, currency, language),
                     "state": state, "status": text[f"status_{state}"]})
    nxt = arr.next_unpaid()
    return {
        "title": text[f"schedule_title_{arr.kind}"],
        "rows": rows,
        "next": None if nxt is None else {
            "button": text["pay_next"].format(amount=format_money(nxt.outstanding_minor,
                                                                  currency, language)),
            "note": text["pay_next_note"].format(number=nxt.number,
                                                 date=format_day(nxt.due, language))},
    }


def _open_arrangement(arr: Arrangement | None) -> Arrangement | None:
    return arr if arr is not None and arr.state in OPEN_STATES else None


async def _account_view(request: web.Request, visit: Visit, *, error: str | None = None,
                        status: int = 200) -> web.Response:
    debtor, language = visit.debtor, visit.language
    today = local_today(debtor, visit.now)
    book: ArrangementBook = request.app[BOOK]
    arr = _open_arrangement(await book.current(debtor.id))
    common = {"summary": _summary(visit), "csrf": _csrf(request, visit),
              "go_action": f"{visit.path}/go", "error": error,
              "full_button": TEXT[language]["pay_full_button"].format(
                  amount=format_money(debtor.balance_minor, debtor.currency, language)),
              "rest_button": TEXT[language]["pay_rest"].format(
                  amount=format_money(debtor.balance_minor, debtor.currency, language)),
              "nothing_due": debtor.balance_minor <= 0}
    targets = _pay_target(visit)
    if arr is not None and debtor.balance_minor > 0:
        return _render(request, "pay_schedule.html", language, status=status,
                       form_targets=targets,
                       schedule=_schedule_view(arr, visit, today),
                       **common)
    hardship = await book.hardship_noted(debtor.id)
    options = [_option_view(o, debtor, language)
               for o in plan_options(debtor, visit.policy, today, hardship=hardship)]
    return _render(request, "pay_options.html", language, status=status, form_targets=targets,
                   options=options, choose_action=f"{visit.path}/choose", **common)


# --- POST /pay/{token}/choose ------------------------------------------------------------------
@_handled
async def choose(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    form = await _form(request, visit)
    await _require_verified(request, visit)
    debtor, policy = visit.debtor, visit.policy
    book: ArrangementBook = request.app[BOOK]
    today = local_today(debtor, visit.now)
    redis, keys = request.app[K.REDIS], request.app[K.KEYS]
    # The chat may be agreeing something at this very moment: one at a time per debtor.
    lock = redis.lock(keys.conversation_lock(debtor.id), timeout=CHOICE_LOCK_TTL,
                      blocking_timeout=CHOICE_LOCK_WAIT)
    if not await lock.acquire():
        return _message(request, visit.language, "busy", 503)
    try:
        if _open_arrangement(await book.current(debtor.id)) is not None or debtor.balance_minor <= 0:
            return _see_other(visit.path)  # already agreed (another tab, a reload)
        hardship = await book.hardship_noted(debtor.id)
        options = {option_key(o): o for o in plan_options(debtor, policy, today,
                                                          hardship=hardship)}
        offer = options.get(form.get("option", ""))
        if offer is None:
            return await _account_view(request, visit,
                                       error=TEXT[visit.language]["choose_missing"], status=422)
        currency = debtor.currency
        await _event(request, visit, "pay_option_chosen", {
            "option": "plan", "installments": offer.installments,
            "frequency": offer.frequency, "instalment": money(offer.amounts_minor[0], currency),
            "last_instalment": money(offer.amounts_minor[-1], currency),
            "total": money(offer.total_minor, currency), "currency": currency,
            "first_date": offer.dates[0].isoformat()})
        await book.propose(debtor, offer, today, grace_days=policy.follow_up.grace_days,
                           reminder_days_before=policy.follow_up.instalment_reminder_days_before)
        accepted = await book.accept(debtor, today)
        # The same plain-language confirmation with the whole schedule as in the chat, on the
        # debtor's channel (the worker sends it through the contact rules).
        await redis.enqueue_job(CONFIRMATION_JOB, debtor.id, accepted.id,
                                _job_id=f"confirm:{accepted.id}",
                                _queue_name=request.app[K.SETTINGS].queue_name)
    finally:
        try:
            await lock.release()
        except LockError:  # it lapsed meanwhile; nothing of ours to release
            pass
    return _see_other(visit.path)


# --- POST /pay/{token}/go ---------------------------------------------------------------------
@_handled
async def go(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    form = await _form(request, visit)
    await _require_verified(request, visit)
    debtor = visit.debtor
    option = form.get("option", "")
    arrangement_id = None
    if option == "next":
        arr = _open_arrangement(await request.app[BOOK].current(debtor.id))
        nxt = arr.next_unpaid() if arr is not None else None
        if nxt is None:
            return _see_other(visit.path)
        amount, arrangement_id = nxt.outstanding_minor, arr.id  # type: ignore[union-attr]
    elif option == "full":
        amount = debtor.balance_minor
    else:
        return _see_other(visit.path)
    if amount <= 0:
        return _see_other(visit.path)
    await _event(request, visit, "pay_clicked", {
        "option": option, "amount": money(amount, debtor.currency), "currency": debtor.currency,
        "arrangement_id": arrangement_id})
    url = visit.policy.payment_page.url_for(reference=debtor.reference, amount_minor=amount,
                                            currency=debtor.currency, debtor_id=debtor.id)
    return _see_other(url, form_targets=_pay_target(visit))


# --- the stylesheet ---------------------------------------------------------------------------
async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(CSS, headers={"Cache-Control": "public, max-age=3600",
                                          "Content-Type": "text/css; charset=utf-8",
                                          "X-Content-Type-Options": "nosniff"})
