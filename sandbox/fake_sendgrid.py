"""A working fake of SendGrid's v3 Mail Send endpoint (``POST /v3/mail/send``) for tests.

It checks what the real API checks and answers as it does: Bearer key (401), the request's
shape (400 with ``{"errors": [{"message", "field", "help"}]}``), reserved headers, body size
(413); an accepted request gets 202 with an ``X-Message-Id``. Failures can be scripted with
``fail_next`` and every accepted-or-refused request is recorded (without its key).

The rules follow SendGrid's v3 reference: personalizations 1..1000, each with ``to[].email``;
at most 1000 recipients in all; ``from.email``; a subject at the top or in every
personalization; ``content[]`` of ``{type, value}`` with text/plain first; ``reply_to`` and
``reply_to_list`` not both; custom_args under 10,000 bytes.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

MAX_BODY = 30 * 1024 * 1024   # "the total size of your email ... must be less than 30MB"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
#: Headers SendGrid does not let a request set: they come from the request's own fields.
RESERVED_HEADERS = frozenset({
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
})
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass(frozen=True)
class RecordedRequest:
    body: Any                    # the parsed JSON (None when it was not JSON)
    status: int                  # what the fake answered


class _Refusal(Exception):
    def __init__(self, status: int, errors: list[dict[str, Any]]):
        super().__init__(status)
        self.status = status
        self.errors = errors


def _bad(message: str, field: str | None = None) -> _Refusal:
    return _Refusal(400, [{"message": message, "field": field, "help": None}])


class FakeSendGrid:
    """The fake's state; ``create_app(fake)`` serves it."""

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._failures: list[tuple[int, list[dict[str, Any]]]] = []

    @property
    def accepted(self) -> list[Any]:
        return [r.body for r in self.requests if r.status == 202]

    def fail_next(self, n: int, status: int = 500, message: str | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (after the key check)."""
        errors = [{"message": message or f"scripted failure {status}", "field": None,
                   "help": None}]
        self._failures.extend([(status, errors)] * n)

    def check_key(self, authorization: str) -> None:
        scheme, _, key = authorization.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise _Refusal(401, [{"message": "The provided authorization grant is invalid, "
                                  "expired, or revoked", "field": None, "help": None}])

    def take_failure(self) -> None:
        if self._failures:
            status, errors = self._failures.pop(0)
            raise _Refusal(status, errors)


FAKE = web.AppKey("fake_sendgrid", FakeSendGrid)


def create_app(fake: FakeSendGrid) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[FAKE] = fake
    app.router.add_post("/v3/mail/send", mail_send)
    return app


async def mail_send(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    body: Any = None
    try:
        fake.check_key(request.headers.get("Authorization", ""))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise _bad("Bad Request") from None
        fake.take_failure()
        check_mail(body)
    except _Refusal as refusal:
        fake.requests.append(RecordedRequest(body, refusal.status))
        return web.json_response({"errors": refusal.errors}, status=refusal.status)
    fake.requests.append(RecordedRequest(body, 202))
    # SendGrid's ids are 22 url-safe characters; the fake's are random too.
    return web.Response(status=202, headers={"X-Message-Id": secrets.token_urlsafe(16)})


# --- the request's shape --------------------------------------------------------------------


def check_mail(body: Any) -> None:
    """Raise a 400 ``_Refusal`` naming the first field SendGrid would refuse."""
    if not isinstance(body, dict):
        raise _bad("Bad Request")
    _check_personalizations(body.get("personalizations"), top_subject=body.get("subject"),
                            templated="template_id" in body)
    _check_address(body.get("from"), "from")
    if "reply_to" in body and "reply_to_list" in body:
        raise _bad("reply_to and reply_to_list cannot both be set", "reply_to")
    if "reply_to" in body:
        _check_address(body["reply_to"], "reply_to")
    if "template_id" not in body:
        _check_content(body.get("content"))
    _check_headers(body.get("headers", {}), "headers")
    _check_custom_args(body.get("custom_args", {}), "custom_args")


def _check_address(value: Any, field: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        raise _bad(f"The {field} object must be provided and include an email.", f"{field}.email")
    if not _EMAIL.match(value["email"]):
        raise _bad("Does not contain a valid address.", f"{field}.email")
    if "name" in value and not isinstance(value["name"], str):
        raise _bad("Invalid type. Expected: string", f"{field}.name")


def _check_personalizations(value: Any, *, top_subject: Any, templated: bool) -> None:
    if not isinstance(value, list) or not value:
        raise _bad("The personalizations field is required and must have at least one "
                   "personalization.", "personalizations")
    if len(value) > MAX_PERSONALIZATIONS:
        raise _bad("The personalizations field must have no more than 1000 items.",
                   "personalizations")
    recipients = 0
    for i, personalization in enumerate(value):
        field = f"personalizations.{i}"
        if not isinstance(personalization, dict):
            raise _bad("Invalid type. Expected: object", field)
        to = personalization.get("to")
        if not isinstance(to, list) or not to:
            raise _bad("The to array is required for all personalization objects, and must "
                       "have at least one email object with a valid email address.",
                       f"{field}.to")
        for kind in ("to", "cc", "bcc"):
            for j, address in enumerate(personalization.get(kind, [])):
                _check_address(address, f"{field}.{kind}.{j}")
                recipients += 1
        subject = personalization.get("subject", top_subject)
        if not templated and (not isinstance(subject, str) or not subject):
            raise _bad("The subject is required. You can get around this requirement if you "
                       "use a template with a subject defined or if every personalization has "
                       "a subject defined.", "subject")
        _check_headers(personalization.get("headers", {}), f"{field}.headers")
        _check_custom_args(personalization.get("custom_args", {}), f"{field}.custom_args")
    if recipients > MAX_RECIPIENTS:
        raise _bad("The total number of recipients must be no more than 1000.",
                   "personalizations")


def _check_content(value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise _bad("Unless a valid template_id is provided, the content parameter is required. "
                   "There must be at least one defined content block.", "content")
    for i, block in enumerate(value):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad("Content types must be a string.", f"content.{i}.type")
        if not isinstance(block.get("value"), str) or not block["value"]:
            raise _bad("The content value must be a string at least one character in length.",
                       f"content.{i}.value")
    types = [block["type"] for block in value]
    if "text/plain" in types and types.index("text/plain") != 0:
        raise _bad("If present, text/plain content must be first, followed by any other "
                   "content.", "content")


def _check_headers(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise _bad("Invalid type. Expected: object", field)
    for name, header in value.items():
        if name.lower() in RESERVED_HEADERS:
            raise _bad(f"The {name} header is a reserved header and cannot be set.", field)
        if not isinstance(header, str):
            raise _bad("Invalid type. Expected: string", f"{field}.{name}")
        if not name.isascii() or not header.isascii():
            raise _bad("Header names and values must be ASCII; encode anything else.",
                       f"{field}.{name}")


def _check_custom_args(value: Any, field: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad("custom_args values must be strings.", field)
    if len(json.dumps(value).encode()) >= MAX_CUSTOM_ARGS_BYTES:
        raise _bad("The total length of custom arguments must be less than 10000 bytes.",
                   field)
