"""Outbound email: one rendered message in, one MIME message (or SendGrid request) out.

This module owns how a Nudge email looks on the wire — headers, the HTML alternative made
from the plain text, the deterministic Message-ID — and the two transports that hand it over:
``SmtpTransport`` (any relay, aiosmtplib) and ``SendGridTransport`` (the v3 Web API, aiohttp).
Both raise :class:`EmailSendError` with ``kind="retry"`` or ``kind="permanent"``; the retry
policy itself (back-off, caps) belongs to the caller (house style 9).

Nothing here logs or puts into an error a body or an address: provider replies are redacted
before they become ``EmailSendError.detail``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal, Self

import aiohttp
import aiosmtplib
import jinja2
from markupsafe import Markup, escape

__all__ = [
    "EmailSendError",
    "OutboundEmail",
    "SendGridTransport",
    "SendResult",
    "SmtpTransport",
    "build_mime",
    "email_message_id",
    "extra_headers",
    "render_html",
    "sendgrid_payload",
]

TEMPLATES = Path(__file__).resolve().parents[1] / "message_templates"
LAYOUT = "_email_layout.html.j2"

#: Built with a 7-bit policy so the body parts are quoted-printable or base64 (whichever is
#: shorter), never raw 8-bit: the message then crosses any relay, with or without 8BITMIME.
#: Non-ASCII headers are RFC 2047 encoded (utf8=False); lines end in CRLF, as on the wire.
MESSAGE_POLICY = policy.SMTP.clone(cte_type="7bit")

_MSG_ID = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_URL = re.compile(r"https?://[^\s<>\"']+")
_HEADER_URI = re.compile(r"^[!-;=?-~]+$")  # printable ASCII without space, < and >
_ADDRESS_LIKE = re.compile(r"[^\s<>@\"']+@[^\s<>@\"']+")


@dataclass(frozen=True)
class OutboundEmail:
    message_id: str                  # our idempotency key ("in123:0"); no personal data
    to_address: str
    from_address: str
    from_name: str
    reply_to: str                    # the per-conversation reply address
    subject: str
    text: str                        # plain text body, already rendered
    language: str                    # en | nl | de
    in_reply_to: str | None          # RFC 5322 msg-id without brackets
    references: tuple[str, ...]
    unsubscribe_url: str             # https URL for RFC 8058 one-click; "" when there is none
    domain: str                      # right-hand side of our Message-ID
    unsubscribe_mailto: str | None = None
    # False for a message a person (an agent) wrote: then it is not marked auto-generated.
    automated: bool = True


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    accepted_at: float               # epoch seconds, like InboundMessage.received_at


class EmailSendError(Exception):
    """The email was not handed over. ``kind`` says whether trying again can help.

    ``status`` is the SMTP reply code or HTTP status when there was one, so a caller can tell
    a message problem (550 mailbox unavailable) from a configuration problem (535, 401) that
    fails every message alike.
    """

    def __init__(self, kind: Literal["retry", "permanent"], detail: str,
                 status: int | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status


# --- headers --------------------------------------------------------------------------------


def email_message_id(message_id: str, domain: str) -> str:
    """The Message-ID for our idempotency key: a retry of the same message carries the same
    header, so receivers that dedupe by Message-ID drop the copy. Only a hash of the key
    appears, never the key itself or anything about the debtor."""
    if not _DOMAIN.match(domain):
        raise ValueError("domain must be a plain host name")
    digest = hashlib.sha256(message_id.encode("utf-8")).digest()
    token = base64.b32encode(digest).decode("ascii").lower()[:26]  # 130 bits
    return f"<nudge.{token}@{domain}>"


def _msg_id(value: str | None) -> str | None:
    """A msg-id from the debtor's mail client, without brackets, or None if it is not one.

    These come from outside (the Message-ID of the email we answer): a malformed one is left
    out of the threading headers rather than stopping the reply — a reply that does not
    thread is better than none. A pair of brackets left on by mistake is taken off."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value if _MSG_ID.match(value) else None


def _one_line(value: str, what: str) -> str:
    # The email library refuses these too, but the SendGrid request would pass them on.
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must be one line")
    return value


def _ascii_header_value(value: str, what: str) -> str:
    # Goes into a header unencoded (SMTP and SendGrid alike): ASCII, one line.
    if not value.isascii():
        raise ValueError(f"{what} must be ASCII")
    return _one_line(value, what)


def _header_uri(value: str, what: str) -> str:
    # Sits between < and > in List-Unsubscribe: nothing that could end it early.
    if not _HEADER_URI.match(value):
        raise ValueError(f"{what} must be a URI in printable ASCII")
    return value


def extra_headers(email: OutboundEmail) -> dict[str, str]:
    """Headers beyond From/To/Reply-To/Subject/Date, shared by the MIME message and the
    SendGrid request so both transports put out the same email.

    Raises ValueError for what is ours to get right: a subject or sender name of more than
    one line, a domain that is not a host name, a non-ASCII unsubscribe address."""
    _one_line(email.subject, "subject")
    _one_line(email.from_name, "from_name")
    headers = {"Message-ID": email_message_id(email.message_id, email.domain)}
    parent = _msg_id(email.in_reply_to)
    if parent:
        headers["In-Reply-To"] = f"<{parent}>"
    references = [ref for ref in map(_msg_id, email.references) if ref]
    if parent and (not references or references[-1] != parent):
        # RFC 5322 3.6.4: References is the parent's References plus the parent itself;
        # clients that thread by References alone (Gmail among them) need the parent there.
        references.append(parent)
    if references:
        headers["References"] = " ".join(f"<{ref}>" for ref in references)
    if email.unsubscribe_url.startswith("https://"):
        # RFC 8058 wants an https URI for one-click; an http link (a local run) gets no
        # header at all rather than one a mailbox provider would flag. The body keeps its link.
        targets = [f"<{_header_uri(email.unsubscribe_url, 'unsubscribe_url')}>"]
        if email.unsubscribe_mailto:
            mailto = email.unsubscribe_mailto
            if not mailto.startswith("mailto:"):
                mailto = f"mailto:{mailto}"
            targets.append(f"<{_header_uri(mailto, 'unsubscribe_mailto')}>")
        headers["List-Unsubscribe"] = ", ".join(targets)
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if email.automated:
        # RFC 3834 5.1: mail made by a process carries Auto-Submitted. It is addressed to
        # automatic responders, not to people: the debtor can still reply as to any email.
        # What it buys: vacation notices stay out of the conversation, where they would be
        # read as the debtor's answer (and answered in turn: a loop). Exchange's own signal
        # for the same is X-Auto-Response-Suppress (out-of-office and other auto-replies);
        # delivery and non-delivery reports stay on, bounces matter to us.
        headers["Auto-Submitted"] = "auto-generated"
        headers["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    headers["X-Nudge-Message-Id"] = _ascii_header_value(email.message_id, "message_id")
    return headers


# --- HTML alternative -----------------------------------------------------------------------


def _paragraphs(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return [block.strip("\n") for block in re.split(r"\n[ \t]*\n", text) if block.strip()]


def _split_url(match: str) -> tuple[str, str]:
    """A URL found in prose, and the punctuation after it that ends the sentence."""
    url = match.rstrip(".,;:!?")
    if url.endswith(")") and url.count("(") < url.count(")"):
        url = url[:-1]
    return url, match[len(url):]


def _linkify(paragraph: str) -> Markup:
    """Escape the paragraph and make its http(s) URLs links, keeping line breaks.

    The URLs are found in the raw text, then every piece — text and URL alike — is escaped
    before our markup goes round it: ``<script>`` shows as text and ``&`` in a URL becomes
    ``&amp;`` in the href, as HTML requires."""
    out: list[str] = []
    position = 0
    for found in _URL.finditer(paragraph):
        url, trailing = _split_url(found.group(0))
        out.append(escape(paragraph[position:found.start()]))
        out.append(Markup('<a href="{0}" style="color:#1a5fb4; text-decoration:underline;">{0}</a>')
                   .format(url))
        out.append(escape(trailing))
        position = found.end()
    out.append(escape(paragraph[position:]))
    return Markup("").join(out).replace("\n", Markup("<br>\n"))


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["paragraphs"] = _paragraphs
    env.filters["linkify"] = _linkify
    return env


def render_html(text: str, language: str) -> str:
    """The HTML alternative of a plain-text body: paragraphs from blank-line-separated blocks,
    line breaks kept, URLs as links, everything escaped."""
    if not _LANGUAGE.match(language):
        raise ValueError("language must be a language tag such as en, nl or de")
    return _environment().get_template(LAYOUT).render(text=text, language=language)


# --- MIME -----------------------------------------------------------------------------------


def build_mime(email: OutboundEmail) -> EmailMessage:
    """multipart/alternative: the plain text first, the HTML second (clients show the last
    part they can). Raises ValueError as :func:`extra_headers` does."""
    message = EmailMessage(policy=MESSAGE_POLICY)
    message["From"] = Address(display_name=email.from_name, addr_spec=email.from_address)
    message["To"] = Address(addr_spec=email.to_address)
    message["Reply-To"] = Address(addr_spec=email.reply_to)
    message["Subject"] = email.subject
    message["Date"] = format_datetime(datetime.now(UTC))  # "+0000"
    for name, value in extra_headers(email).items():
        message[name] = value
    message["MIME-Version"] = "1.0"
    message.make_alternative()
    message.attach(_part(email.text, "plain"))
    message.attach(_part(render_html(email.text, email.language), "html"))
    return message


def _part(content: str, subtype: str) -> MIMEPart:
    # MIMEPart, not EmailMessage: a part made by add_alternative would carry its own
    # MIME-Version header, which belongs on the message only.
    part = MIMEPart(policy=MESSAGE_POLICY)
    part.set_content(content, subtype=subtype, charset="utf-8")
    return part


def _redact(text: str) -> str:
    # Provider replies often echo the recipient ("550 <jan@example.nl> unknown").
    return _ADDRESS_LIKE.sub("<address>", text)[:500]


# --- SMTP -----------------------------------------------------------------------------------


StartTls = Literal["auto", "always", "never"]
_START_TLS: dict[str, bool | None] = {"auto": None, "always": True, "never": False}


class SmtpTransport:
    """Sends through an SMTP relay.

    Used bare, each ``send`` opens and closes its own connection. Inside ``async with`` the
    transport keeps one connection for all sends and closes it at the end; a failed send
    drops that connection (its state is unknown) and the next send opens a new one.

    4xx replies, lost connections and timeouts are ``retry``; 5xx replies are ``permanent``.
    """

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, *, starttls: StartTls = "auto",
                 use_tls: bool = False, timeout: float = 30, validate_certs: bool = True,
                 tls_context: ssl.SSLContext | None = None):
        if starttls not in _START_TLS:
            raise ValueError("starttls must be auto, always or never")
        if use_tls and starttls == "always":
            raise ValueError("use_tls (implicit TLS) and starttls=always exclude each other")
        if username is not None and not use_tls and starttls == "never":
            raise ValueError("credentials are never sent over an unencrypted connection")
        start_tls = False if use_tls else _START_TLS[starttls]
        if username is not None and not use_tls:
            # "auto" would send the password in clear to a server (or a man in the middle)
            # that does not offer STARTTLS; with credentials, TLS is required.
            start_tls = True
        self._options: dict[str, Any] = {
            "hostname": host, "port": port, "username": username, "password": password,
            "use_tls": use_tls, "start_tls": start_tls, "timeout": timeout,
            "validate_certs": validate_certs, "tls_context": tls_context,
        }
        self._lock = asyncio.Lock()
        self._keep_open = False
        self._smtp: aiosmtplib.SMTP | None = None

    def __repr__(self) -> str:
        return f"SmtpTransport({self._options['hostname']}:{self._options['port']})"

    async def __aenter__(self) -> Self:
        self._keep_open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._keep_open = False
        async with self._lock:
            await self._disconnect()

    async def send(self, email: OutboundEmail) -> SendResult:
        message = build_mime(email)
        async with self._lock:
            try:
                smtp = await self._connection()
                await smtp.send_message(message, sender=email.from_address,
                                        recipients=[email.to_address])
            except aiosmtplib.SMTPRecipientsRefused as e:
                self._drop()
                refused = e.recipients[0]
                raise _reply_error(refused.code, refused.message) from e
            except aiosmtplib.SMTPResponseException as e:
                self._drop()
                raise _reply_error(e.code, e.message) from e
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as e:
                self._drop()
                raise EmailSendError("retry", f"SMTP connection failed: {type(e).__name__}") from e
            except asyncio.CancelledError:
                self._drop()  # cancelled mid-conversation: the connection's state is unknown
                raise
            if not self._keep_open:
                await self._disconnect()
        return SendResult(provider_message_id=message["Message-ID"], accepted_at=time.time())

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            smtp = aiosmtplib.SMTP(**self._options)
            await smtp.connect()
            self._smtp = smtp
        return self._smtp

    async def _disconnect(self) -> None:
        """Say QUIT politely; a server that is already gone is fine."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def _reply_error(code: int, message: str) -> EmailSendError:
    # 4xx: the server may take it later (greylisting, full queue). 5xx: it will not.
    # Anything else is not a reply a server should give; a retry may meet a saner server.
    kind: Literal["retry", "permanent"] = "permanent" if 500 <= code < 600 else "retry"
    return EmailSendError(kind, f"SMTP {code} {_redact(message)}", status=code)


# --- SendGrid -------------------------------------------------------------------------------


class SendGridTransport:
    """Sends through SendGrid's v3 Mail Send API (``POST /v3/mail/send``).

    Headers: SendGrid refuses to have these set in ``headers`` — x-sg-id, x-sg-eid, received,
    dkim-signature, Content-Type, Content-Transfer-Encoding, To, From, Subject, Reply-To, CC,
    BCC — they come from the request's own fields. Everything in :func:`extra_headers`
    (Message-ID, In-Reply-To, References, List-Unsubscribe, List-Unsubscribe-Post,
    Auto-Submitted, X-*) is outside that list and is passed as is; Date is SendGrid's.
    SendGrid still gives every message its own id (``X-Message-Id`` of the answer, the
    ``sg_message_id`` of its events): that is the provider id returned.

    Click and open tracking and SendGrid's subscription footer are switched off: rewritten
    links would hide our domain (and our own unsubscribe link) behind SendGrid's, an open
    pixel collects data collection does not need, and the one way to opt out is ours.

    202 is accepted; 408, 429, 5xx and network errors are ``retry``; any other status
    (400, 401, 403, 413...) is ``permanent`` with SendGrid's error messages. SendGrid has no
    idempotency key: a timeout after it accepted can lead to a second copy on retry, which
    carries the same Message-ID.
    """

    def __init__(self, api_key: str, api_base_url: str = "https://api.sendgrid.com",
                 session: aiohttp.ClientSession | None = None, *, timeout: float = 30):
        self._api_key = api_key
        self._url = api_base_url.rstrip("/") + "/v3/mail/send"
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"SendGridTransport({self._url})"  # never the key

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the session this transport opened itself; an injected one is the caller's."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, email: OutboundEmail) -> SendResult:
        payload = sendgrid_payload(email)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            async with self._session.post(self._url, json=payload, headers=headers,
                                          timeout=self._timeout) as response:
                if response.status == 202:
                    provider_id = response.headers.get("X-Message-Id", "")
                    return SendResult(provider_message_id=provider_id, accepted_at=time.time())
                raise await _sendgrid_error(response)
        except (TimeoutError, aiohttp.ClientError) as e:
            raise EmailSendError("retry", f"SendGrid unreachable: {type(e).__name__}") from e


def sendgrid_payload(email: OutboundEmail) -> dict[str, Any]:
    """The v3 Mail Send request for one email (text/plain must come before text/html)."""
    return {
        "personalizations": [{"to": [{"email": email.to_address}]}],
        "from": ({"email": email.from_address, "name": email.from_name} if email.from_name
                 else {"email": email.from_address}),
        "reply_to": {"email": email.reply_to},
        "subject": email.subject,
        "content": [
            {"type": "text/plain", "value": email.text},
            {"type": "text/html", "value": render_html(email.text, email.language)},
        ],
        "headers": extra_headers(email),
        "custom_args": {"nudge_message_id": email.message_id},
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
            "subscription_tracking": {"enable": False},
        },
    }


async def _sendgrid_error(response: aiohttp.ClientResponse) -> EmailSendError:
    status = response.status
    kind: Literal["retry", "permanent"] = (
        "retry" if status in (408, 429) or status >= 500 else "permanent")
    return EmailSendError(kind, f"SendGrid {status}: {await _error_messages(response)}",
                          status=status)


async def _error_messages(response: aiohttp.ClientResponse) -> str:
    """SendGrid's ``{"errors": [{"message", "field"}]}``, or the reason phrase."""
    try:
        body = await response.json(content_type=None)
        errors = body["errors"]
        parts = [f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"])
                 for e in errors]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return response.reason or "no details"
    return _redact("; ".join(parts)) or (response.reason or "no details")
