"""A working fake of Twilio's Messaging REST API (2010-04-01) for tests and the local demo.

The real twilio SDK talks to it (`channels.twilio_api.make_twilio_client(..., api_base_url=)`).
Every request is checked against Twilio's own OpenAPI description (twilio-oai's
twilio_api_v2010.json) in the order Twilio would: a path and method the spec does not have is a
404 (405 for a known path with an unknown method), then HTTP Basic auth (401, 20003), then the
parameters (unknown ones, types, patterns, enums: 400). The Messages resource is implemented
(create, list with filters and paging, fetch, update, delete); other paths of the spec answer
501. Errors use Twilio's JSON shape and, where known, Twilio's own codes.

A created message moves through Twilio's statuses in the background and, when it names a
StatusCallback, each status is POSTed there signed with X-Twilio-Signature, as Twilio does.
Failures are scripted through `FakeTwilio` (in-process) or the same operations under
``/_fake/...`` (for a fake in another process): 5xx, 429, hangs (with or without the message
having been created), outage windows, per-number errors at create or at delivery, shuffled
callbacks.

Run on its own: ``python -m sandbox.fake_twilio --port 8765 --account-sid AC... --auth-token ...``
(the token may come from TWILIO_AUTH_TOKEN instead, so it does not show in `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hmac
import json
import logging
import math
import os
import random
import re
import secrets
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

try:
    from channels.sms_encoding import analyse as _analyse_sms
except ImportError:  # the product's encoder is optional here; the fallback below is simpler
    _analyse_sms = None

log = logging.getLogger("sandbox.fake_twilio")

DEFAULT_SPEC = (Path(__file__).resolve().parents[2]
                / "shared" / "testdata" / "twilio" / "twilio_api_v2010.json")
API_VERSION = "2010-04-01"
MAX_BODY = 1600
CALLBACK_ATTEMPTS = 3
CALLBACK_TIMEOUT = 15.0  # Twilio waits this long for a webhook answer
KEEP_RECORDS = 10_000    # requests and callback attempts kept for inspection
#: The number a Messaging Service "picks" when a message names no From (Twilio's magic
#: test number).
SERVICE_SENDER = "+15005550006"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")

#: Messages for the errors a number can be scripted to give at create.
CREATE_ERRORS = {
    21211: "Invalid 'To' Phone Number: {to}",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
           "'To' number: {to}",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
           "number via SMS.",
    21614: "'To' number is not a valid mobile number",
}
#: Delivery errors: the resource's error_message once the message failed.
DELIVERY_ERRORS = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    63016: "Failed to send freeform message because you are outside the allowed window. "
           "If you are using WhatsApp, please use a Message Template.",
}
#: Errors reported by the carrier after the message was sent: status "undelivered". Any other
#: delivery error fails the message before it is sent: status "failed".
UNDELIVERED_CODES = frozenset({30003, 30004, 30005, 30006, 30007, 30008})
#: Outage and scripted-failure codes by HTTP status.
STATUS_CODES = {429: 20429, 500: 20500, 503: 20503}
FINAL_STATUSES = frozenset({"sent", "delivered", "undelivered", "failed", "read", "canceled",
                            "received"})


# --- Twilio-style errors ---------------------------------------------------------------------

class ApiError(Exception):
    """An error answer in Twilio's JSON shape."""

    def __init__(self, status: int, code: int | None, message: str, *,
                 detail: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.detail, self.headers = detail, headers or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "code": self.code, "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}" if self.code else None,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        return web.json_response(body, status=self.status, headers=self.headers)


def bad_request(code: int, message: str) -> ApiError:
    return ApiError(400, code, message)


def not_found(path: str) -> ApiError:
    return ApiError(404, 20404, f"The requested resource {path} was not found")


# --- the OpenAPI description -----------------------------------------------------------------

@dataclass(frozen=True)
class Operation:
    method: str
    operation_id: str
    path_params: dict[str, dict]
    query_params: dict[str, dict]
    form: dict | None            # the x-www-form-urlencoded body schema, when there is one


@dataclass(frozen=True)
class Route:
    template: str
    regex: re.Pattern
    operations: dict[str, Operation]


class OpenApiSpec:
    """The paths, operations and schemas of an OpenAPI 3 document, for matching requests."""

    def __init__(self, document: dict):
        self._schemas: dict = document.get("components", {}).get("schemas", {})
        routes = [_route(template, item) for template, item in document["paths"].items()]
        # A literal segment beats a parameter where both could match.
        self.routes = sorted(routes, key=lambda r: -len(re.sub(r"{\w+}", "", r.template)))

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.regex.fullmatch(path)
            if found:
                return route, found.groupdict()
        return None

    def resolve(self, schema: dict) -> dict:
        """The schema a `$ref` points to (only local component references occur)."""
        while "$ref" in schema:
            schema = self._schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema


def _route(template: str, item: dict) -> Route:
    pattern = "".join(f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
                      for part in re.split(r"({\w+})", template) if part)
    operations = {
        method.upper(): _operation(method.upper(), body)
        for method, body in item.items() if method in ("get", "post", "put", "delete", "patch")
    }
    return Route(template, re.compile(pattern), operations)


def _operation(method: str, body: dict) -> Operation:
    params = body.get("parameters", [])
    form = (body.get("requestBody", {}).get("content", {})
            .get("application/x-www-form-urlencoded", {}).get("schema"))
    return Operation(
        method, body.get("operationId", ""),
        {p["name"]: p.get("schema", {}) for p in params if p.get("in") == "path"},
        {p["name"]: p.get("schema", {}) for p in params if p.get("in") == "query"},
        form,
    )


@functools.lru_cache(maxsize=4)
def load_spec(path: Path) -> OpenApiSpec:
    """Parsed once per process: the document is 1.8 MB and never changes."""
    return OpenApiSpec(json.loads(Path(path).read_text(encoding="utf-8")))


# --- checking parameters against their schemas -----------------------------------------------

Params = dict[str, list[str]]


def problem_with(spec: OpenApiSpec, name: str, values: list[str], schema: dict) -> str | None:
    """Why `values` do not fit `schema`, or None when they do."""
    schema = spec.resolve(schema)
    if schema.get("type") == "array":
        item = spec.resolve(schema.get("items", {}))
        return next((p for v in values if (p := _scalar_problem(name, v, item))), None)
    if len(values) > 1:
        return f"{name} may be given only once"
    return _scalar_problem(name, values[0], schema)


def _scalar_problem(name: str, value: str, schema: dict) -> str | None:
    if "enum" in schema and value not in schema["enum"]:
        return f"{name} must be one of {', '.join(schema['enum'])}, not {value!r}"
    check = _TYPE_CHECKS.get(schema.get("type", "string"), _string_problem)
    return check(name, value, schema)


def _number_problem(name: str, value: str, schema: dict) -> str | None:
    try:
        number = int(value) if schema.get("type") == "integer" else float(value)
    except ValueError:
        return f"{name} must be a {schema.get('type')}, not {value!r}"
    if "minimum" in schema and number < schema["minimum"]:
        return f"{name} must be at least {schema['minimum']}"
    if "maximum" in schema and number > schema["maximum"]:
        return f"{name} must be at most {schema['maximum']}"
    return None


def _boolean_problem(name: str, value: str, schema: dict) -> str | None:
    return None if value.lower() in ("true", "false") else f"{name} must be true or false"


def _string_problem(name: str, value: str, schema: dict) -> str | None:
    if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", math.inf):
        return f"{name} has the wrong length"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{name} is malformed: {value!r}"
    fmt = schema.get("format")
    ignore_format = schema.get("x-twilio", {}).get("ignoreFormat", False)
    if fmt == "uri" and not ignore_format and not _is_http_url(value):
        return f"{name} must be an http(s) URL"
    if fmt == "date-time" and parse_when(value) is None:
        return f"{name} is not a date: {value!r}"
    return None


_TYPE_CHECKS: dict[str, Callable[[str, str, dict], str | None]] = {
    "integer": _number_problem, "number": _number_problem, "boolean": _boolean_problem,
    "string": _string_problem,
}


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_when(value: str) -> datetime | None:
    """A date or time in the forms Twilio's examples use (ISO 8601 with or without a time,
    RFC 2822), in UTC; naive values are taken as UTC. None when unreadable."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- message helpers ---------------------------------------------------------------------------

def count_segments(body: str, channel: str) -> int:
    """Twilio's num_segments: WhatsApp is always one; SMS per GSM-7 / UCS-2 segmenting."""
    if channel == "whatsapp":
        return 1
    if _analyse_sms is not None:
        return _analyse_sms(body).segments
    return _simple_segments(body)


_GSM7 = frozenset("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def _simple_segments(body: str) -> int:
    """Fallback without channels.sms_encoding: ignores Twilio's rule that a character is
    never split across segments, so it can be one short at a boundary."""
    if all(c in _GSM7 or c in _GSM7_EXTENSION for c in body):
        units, single, part = sum(1 + (c in _GSM7_EXTENSION) for c in body), 160, 153
    else:
        units, single, part = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


def rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment.replace(microsecond=0)) if moment else None


def split_channel(address: str) -> tuple[str, str]:
    """("whatsapp", "+31...") for "whatsapp:+31...", ("sms", address) for a bare address."""
    prefix, colon, rest = address.partition(":")
    return (prefix, rest) if colon else ("sms", address)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class StoredMessage:
    """One message the fake accepted; `resource` is its JSON as the API shows it."""
    seq: int
    resource: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None
    status_callback: str | None
    content_sid: str | None
    delivery_error: int | None
    send_at: datetime | None = None
    deleted: bool = False
    progress: asyncio.Task | None = field(default=None, repr=False)   # statuses and callbacks

    @property
    def sid(self) -> str:
        return self.resource["sid"]

    @property
    def channel(self) -> str:
        return split_channel(self.resource["to"])[0]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str | list[str]]   # query and form together; repeated names as lists


@dataclass(frozen=True)
class CallbackAttempt:
    url: str
    params: dict[str, str]
    attempt: int
    status: int | None          # the receiver's HTTP status, None when it could not be reached
    error: str | None = None


@dataclass(frozen=True)
class _Fault:
    status: int
    code: int
    message: str
    hang_seconds: float = 0.0      # > 0: hold the request this long
    process_first: bool = False    # carry the request out before failing / hanging
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _NumberBehaviour:
    error_code: int
    at: Literal["create", "callback"]


# --- the fake itself -------------------------------------------------------------------------

class FakeTwilio:
    """State and scripting of one fake: created messages, recorded requests and callbacks,
    and the failures to play next. Tests reach it as `app[FAKE_TWILIO]`."""

    def __init__(self, spec: OpenApiSpec, auth_tokens: dict[str, str], *,
                 callback_delay: float = 0.05):
        self.spec = spec
        self.auth_tokens = dict(auth_tokens)
        self.callback_delay = callback_delay
        self.session: aiohttp.ClientSession | None = None   # set by the app while it runs
        self._tasks: set[asyncio.Task] = set()
        self._task_errors: list[BaseException] = []
        self._release: asyncio.Event | None = None
        # Called with each message as it is created (load benchmarks time the API call by it).
        self.on_create: Callable[[StoredMessage], None] | None = None
        self._handlers: dict[str, Callable[..., Awaitable[web.Response]]] = {
            "CreateMessage": self._create_message, "ListMessage": self._list_messages,
            "FetchMessage": self._fetch_message, "UpdateMessage": self._update_message,
            "DeleteMessage": self._delete_message,
        }
        self._clear()

    def _clear(self) -> None:
        self._messages: dict[str, StoredMessage] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=KEEP_RECORDS)
        self._callbacks: deque[CallbackAttempt] = deque(maxlen=KEEP_RECORDS)
        self._faults: deque[_Fault] = deque()
        self._outage: tuple[float, _Fault] | None = None
        self._numbers: dict[str, _NumberBehaviour] = {}
        self._contents: dict[str, str] = {}
        self._shuffle = False
        self._rng = random.Random()

    # --- what tests look at -------------------------------------------------------------
    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message created, in order, deleted ones included (a ledger: "sent once")."""
        return [dict(m.resource) for m in self._messages.values()]

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    @property
    def callbacks(self) -> list[CallbackAttempt]:
        return list(self._callbacks)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every message has reached its final status and its callbacks went out
        (scheduled messages wait for their SendAt); re-raise what went wrong in between."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        if self._task_errors:
            raise self._task_errors[0]

    async def close(self) -> None:
        """Stop pending statuses and callbacks and end hangs (the app does this on exit)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.release_hangs()

    # --- scripting ----------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, code: int = 20500, *,
                  create_then_fail: bool = False) -> None:
        """The next `n` API requests answer `status` with Twilio error `code`; with
        create_then_fail, each is carried out first (the message exists after all)."""
        self._script(n, _Fault(status, code, _reason(status), process_first=create_then_fail))

    def throttle_next(self, n: int = 1, *, retry_after: int = 1) -> None:
        """The next `n` API requests answer 429 with code 20429 (nothing is created)."""
        self._script(n, _Fault(429, 20429, "Too Many Requests",
                               headers=(("Retry-After", str(retry_after)),)))

    def hang_next(self, n: int = 1, seconds: float = 30.0, *,
                  create_then_hang: bool = False) -> None:
        """The next `n` API requests get no answer for `seconds`. Without create_then_hang a
        request whose client gave up meanwhile is dropped unprocessed (nothing created); one
        still waiting is then carried out (a slow answer). With create_then_hang it is carried
        out at once and only the answer is held back: the client times out, the message exists."""
        self._script(n, _Fault(503, 20503, "Service Unavailable", hang_seconds=seconds,
                               process_first=create_then_hang))

    def fail_for(self, seconds: float, status: int = 503, code: int | None = None) -> None:
        """An outage: every API request in the next `seconds` answers `status`."""
        fault = _Fault(status, code or STATUS_CODES.get(status, 20500), _reason(status))
        self._outage = (asyncio.get_running_loop().time() + seconds, fault)

    def set_number_behaviour(self, to: str, error_code: int,
                             at: Literal["create", "callback"] | None = None) -> None:
        """Messages to `to` (with or without a "whatsapp:" prefix) fail with `error_code`:
        at create (a 400, e.g. 21610, 21211, 21614) or in the delivery callbacks (e.g.
        30003..30008 undelivered, 63016 failed). `at` defaults by the code: 2xxxx at create."""
        where = at or ("create" if error_code < 30000 else "callback")
        if where not in ("create", "callback"):
            raise ValueError(f"at must be 'create' or 'callback', not {at!r}")
        self._numbers[split_channel(to)[1]] = _NumberBehaviour(int(error_code), where)

    def shuffle_callbacks(self, enabled: bool = True, seed: int | None = None) -> None:
        """Deliver each message's status callbacks out of order (never in the true order)."""
        self._shuffle = enabled
        self._rng = random.Random(seed)

    def register_content(self, content_sid: str, body: str) -> None:
        """A Content template: messages with this ContentSid get `body` with {{n}} filled in."""
        self._contents[content_sid] = body

    def reset(self) -> None:
        """Forget messages, records and scripts; stop pending callbacks; end hangs."""
        for task in list(self._tasks):
            task.cancel()
        self.release_hangs()
        self._task_errors.clear()
        self._clear()

    def release_hangs(self) -> None:
        if self._release is not None:
            self._release.set()
        self._release = None

    def _script(self, n: int, fault: _Fault) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        self._faults.extend([fault] * n)

    # --- the request pipeline -----------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        params = await _read_params(request)
        self._requests.append(RecordedRequest(request.method, request.path, _flat(params)))
        try:
            operation, path_params = self._resolve(request)
            account = self._authenticate(request, path_params)
            fault = self._next_fault()
            run = functools.partial(self._carry_out, request, operation, account, path_params,
                                    params)
            return await (self._play(fault, request, run) if fault else run())
        except ApiError as error:
            return error.response()

    def _resolve(self, request: web.Request) -> tuple[Operation, dict[str, str]]:
        found = self.spec.match(request.path)
        if found is None:
            raise not_found(request.path)
        route, path_params = found
        operation = route.operations.get(request.method)
        if operation is None:
            raise ApiError(405, 20004, "Method not allowed")
        for name, value in path_params.items():
            if problem_with(self.spec, name, [value], operation.path_params.get(name, {})):
                raise not_found(request.path)
        return operation, path_params

    def _authenticate(self, request: web.Request, path_params: dict[str, str]) -> str:
        refused = ApiError(401, 20003, "Authenticate",
                           detail="Your AccountSid or AuthToken was incorrect.",
                           headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        login, password = _basic_credentials(request.headers.get("Authorization", ""))
        expected = self.auth_tokens.get(login)
        account = path_params.get("AccountSid", login)
        if expected is None or account != login or not hmac.compare_digest(
                expected.encode(), password.encode()):
            raise refused
        return account

    def _next_fault(self) -> _Fault | None:
        if self._outage is not None:
            until, fault = self._outage
            if asyncio.get_running_loop().time() < until:
                return fault
            self._outage = None
        return self._faults.popleft() if self._faults else None

    async def _play(self, fault: _Fault, request: web.Request,
                    run: Callable[[], Awaitable[web.Response]]) -> web.Response:
        failure = ApiError(fault.status, fault.code, fault.message, headers=dict(fault.headers))
        if fault.hang_seconds <= 0:
            if fault.process_first:
                await _answer_of(run)
            raise failure
        if fault.process_first:
            answer = await _answer_of(run)
            await self._hold(fault.hang_seconds)
            return answer
        await self._hold(fault.hang_seconds)
        if request.transport is None or request.transport.is_closing():
            raise failure    # the client gave up: nobody reads this, nothing was done
        return await run()

    async def _hold(self, seconds: float) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        try:
            await asyncio.wait_for(self._release.wait(), seconds)
        except TimeoutError:
            pass    # the hang simply ran its course

    async def _carry_out(self, request: web.Request, operation: Operation, account: str,
                         path_params: dict[str, str], params: Params) -> web.Response:
        if operation.form is not None:
            self._check_form(operation, params)
        else:
            self._check_query(operation, params)
        handler = self._handlers.get(operation.operation_id)
        if handler is None:
            raise ApiError(501, None, f"{operation.operation_id} is not implemented by the "
                                      "fake Twilio (only Messages are)")
        return await handler(request, account, path_params, params)

    def _check_form(self, operation: Operation, params: Params) -> None:
        schema = self.spec.resolve(operation.form or {})
        properties = schema.get("properties", {})
        for name, values in params.items():
            if name not in properties:
                raise bad_request(20001, f"Unknown parameter: {name}")
            problem = problem_with(self.spec, name, values, properties[name])
            if problem:
                raise bad_request(20001, f"Invalid parameter: {problem}")
        for name in schema.get("required", []):
            if name not in params:
                code, message = _MISSING.get((operation.operation_id, name),
                                             (20001, f"Missing required parameter {name}"))
                raise bad_request(code, message)

    def _check_query(self, operation: Operation, params: Params) -> None:
        # Twilio ignores query parameters it does not know; known ones must fit their schema.
        for name, values in params.items():
            if name in operation.query_params:
                problem = problem_with(self.spec, name, values, operation.query_params[name])
                if problem:
                    raise bad_request(20001, f"Invalid parameter: {problem}")

    # --- Messages: create ---------------------------------------------------------------
    async def _create_message(self, request: web.Request, account: str,
                              path_params: dict[str, str], params: Params) -> web.Response:
        form = {name: values[-1] for name, values in params.items()}
        to, sender = _check_addresses(form)
        behaviour = self._numbers.get(split_channel(to)[1])
        if behaviour is not None and behaviour.at == "create":
            text = CREATE_ERRORS.get(behaviour.error_code, "Error {code}")
            raise bad_request(behaviour.error_code, text.format(to=to, code=behaviour.error_code))
        body = self._body_of(form, params)
        _check_schedule(form)
        message = self._store(account, form, params, to, sender, body,
                              behaviour.error_code if behaviour else None)
        self._start(message)
        return web.json_response(message.resource, status=201)

    def _body_of(self, form: dict[str, str], params: Params) -> str:
        content_sid = form.get("ContentSid")
        if content_sid:
            return self._render_content(content_sid, form.get("ContentVariables"))
        if "Body" not in form and not params.get("MediaUrl"):
            raise bad_request(21619, "A text message body or media urls must be specified.")
        body = form.get("Body", "")
        if not body and not params.get("MediaUrl"):
            raise bad_request(21602, "Message body is required.")
        if len(body) > MAX_BODY:
            raise bad_request(21617, "The concatenated message body exceeds the 1600 "
                                     "character limit.")
        return body

    def _render_content(self, content_sid: str, raw_variables: str | None) -> str:
        try:
            variables = json.loads(raw_variables) if raw_variables else {}
        except ValueError:
            variables = None
        if not isinstance(variables, dict):
            raise bad_request(21656, "The Content Variables parameter is invalid.")
        body = self._contents.get(content_sid, "")
        for key, value in variables.items():
            body = body.replace("{{" + str(key) + "}}", str(value))
        return body

    def _store(self, account: str, form: dict[str, str], params: Params, to: str,
               sender: str | None, body: str, error_code: int | None) -> StoredMessage:
        now = datetime.now(UTC)
        channel = split_channel(to)[0]
        media = params.get("MediaUrl", [])
        sid = new_sid("MM" if media else "SM")
        service = form.get("MessagingServiceSid")
        send_at = parse_when(form["SendAt"]) if form.get("ScheduleType") == "fixed" else None
        status = "scheduled" if send_at else ("accepted" if service else "queued")
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}"
        resource = {
            "account_sid": account, "api_version": API_VERSION, "body": body,
            "date_created": rfc2822(now), "date_sent": None if send_at else rfc2822(now),
            "date_updated": rfc2822(now), "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": sender,
            "messaging_service_sid": service, "num_media": str(len(media)),
            "num_segments": str(count_segments(body, channel)), "price": None,
            "price_unit": None, "sid": sid, "status": status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": to, "uri": f"{uri}.json",
        }
        content_sid = form.get("ContentSid")
        if error_code == 63016 and content_sid:
            error_code = None   # templates may be sent outside the 24-hour window
        message = StoredMessage(len(self._messages), resource, now, None if send_at else now,
                                form.get("StatusCallback"), content_sid, error_code, send_at)
        self._messages[sid] = message
        if self.on_create is not None:
            self.on_create(message)
        return message

    # --- Messages: read, update, delete -------------------------------------------------
    async def _fetch_message(self, request: web.Request, account: str,
                             path_params: dict[str, str], params: Params) -> web.Response:
        return web.json_response(self._find(request, account, path_params["Sid"]).resource)

    async def _update_message(self, request: web.Request, account: str,
                              path_params: dict[str, str], params: Params) -> web.Response:
        message = self._find(request, account, path_params["Sid"])
        form = {name: values[-1] for name, values in params.items()}
        if form.get("Status") == "canceled":
            if message.resource["status"] != "scheduled":
                raise bad_request(20001, "Only a scheduled message can be canceled")
            _stop(message)
            self._set_status(message, "canceled")
        if "Body" in form:
            if form["Body"] != "":
                raise bad_request(20001, "Body can only be set to an empty string (redaction)")
            if message.resource["status"] not in FINAL_STATUSES:
                raise bad_request(20001, "A message can be redacted once it is no longer "
                                         "in progress")
            message.resource["body"] = ""
        return web.json_response(message.resource)

    async def _delete_message(self, request: web.Request, account: str,
                              path_params: dict[str, str], params: Params) -> web.Response:
        message = self._find(request, account, path_params["Sid"])
        message.deleted = True
        _stop(message)
        return web.Response(status=204)

    def _find(self, request: web.Request, account: str, sid: str) -> StoredMessage:
        message = self._messages.get(sid)
        if message is None or message.deleted or message.resource["account_sid"] != account:
            raise not_found(request.path)
        return message

    async def _list_messages(self, request: web.Request, account: str,
                             path_params: dict[str, str], params: Params) -> web.Response:
        query = {name: values[-1] for name, values in params.items()}
        filters = [(name, query[name]) for name in _LIST_FILTERS if name in query]
        listed = sorted((m for m in self._messages.values()
                         if m.resource["account_sid"] == account and not m.deleted
                         and _matches(m, query)),
                        key=lambda m: (m.sent_at or m.created_at, m.seq), reverse=True)
        return web.json_response(_page(request.path, filters, listed, query))

    # --- statuses and callbacks ---------------------------------------------------------
    def _start(self, message: StoredMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._progress(message))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        message.progress = task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Kept for settle() to raise: a bug here must fail the test, not vanish.
            self._task_errors.append(task.exception())
            log.error("message progress failed", exc_info=task.exception())

    async def _progress(self, message: StoredMessage) -> None:
        """Walk the message through its statuses; announce each one to its StatusCallback."""
        if message.send_at is not None:
            await asyncio.sleep((message.send_at - datetime.now(UTC)).total_seconds())
            message.sent_at = datetime.now(UTC)
            message.resource["date_sent"] = rfc2822(message.sent_at)
        held: list[dict[str, str]] = []
        for status, error_code in _lifecycle(message):
            await asyncio.sleep(self.callback_delay)
            self._set_status(message, status, error_code)
            if message.status_callback:
                params = _callback_params(message)
                if self._shuffle:
                    held.append(params)
                else:
                    await self._deliver(message, params)
        for params in self._out_of_order(held):
            await self._deliver(message, params)

    def _set_status(self, message: StoredMessage, status: str,
                    error_code: int | None = None) -> None:
        resource = message.resource
        resource["status"] = status
        resource["date_updated"] = rfc2822(datetime.now(UTC))
        if status == "sent" and resource["from"] is None:
            channel = message.channel
            resource["from"] = SERVICE_SENDER if channel == "sms" else f"{channel}:{SERVICE_SENDER}"
        if error_code is not None:
            resource["error_code"] = error_code
            resource["error_message"] = DELIVERY_ERRORS.get(error_code)

    def _out_of_order(self, held: list[dict[str, str]]) -> list[dict[str, str]]:
        if len(held) < 2:
            return held
        order = held[:]
        while order == held:
            self._rng.shuffle(order)
        return order

    async def _deliver(self, message: StoredMessage, params: dict[str, str]) -> None:
        """POST one signed callback; retried with back-off while the receiver is down or 5xx."""
        url = message.status_callback
        assert url is not None and self.session is not None
        token = self.auth_tokens[message.resource["account_sid"]]
        headers = {
            "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
            "I-Twilio-Idempotency-Token": f"{message.sid}-{params['MessageStatus']}",
            "User-Agent": "TwilioProxy/1.1",
        }
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            status, error = await self._post(url, params, headers)
            self._callbacks.append(CallbackAttempt(url, params, attempt, status, error))
            if status is not None and status < 500:
                return
            await asyncio.sleep(self.callback_delay * 2 ** attempt)

    async def _post(self, url: str, params: dict[str, str],
                    headers: dict[str, str]) -> tuple[int | None, str | None]:
        assert self.session is not None
        try:
            async with self.session.post(url, data=params, headers=headers) as answer:
                await answer.read()
                return answer.status, None
        except (TimeoutError, aiohttp.ClientError) as error:
            return None, f"{type(error).__name__}: {error}"


# --- pure helpers of the Messages resource ---------------------------------------------------

_MISSING = {("CreateMessage", "To"): (21604, "A 'To' phone number is required.")}
_LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


def _stop(message: StoredMessage) -> None:
    if message.progress is not None:
        message.progress.cancel()


def _reason(status: int) -> str:
    return {429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}.get(status, f"HTTP {status}")


def _check_addresses(form: dict[str, str]) -> tuple[str, str | None]:
    """The To address and the From (None with a Messaging Service), or the 400 Twilio gives."""
    to = form.get("To", "")
    if not to:
        raise bad_request(21604, "A 'To' phone number is required.")
    to_channel, to_address = split_channel(to)
    if to_channel not in ("sms", "whatsapp") or not _E164.match(to_address):
        raise bad_request(21211, f"Invalid 'To' Phone Number: {to}")
    sender = form.get("From") or None
    if sender is None:
        if not form.get("MessagingServiceSid"):
            raise bad_request(21603, "A 'From' phone number is required.")
        return to, None
    from_channel, from_address = split_channel(sender)
    if not (_E164.match(from_address) or (from_channel == "sms" and (
            _SHORT_CODE.match(from_address) or _ALPHANUMERIC_ID.match(from_address)))):
        raise bad_request(21212, f"Invalid From Number (caller ID): {sender}")
    if from_channel != to_channel:
        raise bad_request(21910, "Invalid From and To pair. From and To should be of the "
                                 "same channel")
    return to, sender


def _check_schedule(form: dict[str, str]) -> None:
    """Scheduling needs a SendAt and a Messaging Service (codes chosen by the fake)."""
    if form.get("ScheduleType") != "fixed":
        return
    if "SendAt" not in form:
        raise bad_request(20001, "SendAt is required when ScheduleType is fixed")
    if not form.get("MessagingServiceSid"):
        raise bad_request(20001, "A MessagingServiceSid is required to schedule a message")


def _lifecycle(message: StoredMessage) -> list[tuple[str, int | None]]:
    """The statuses a message goes through after it was created, with the error code of a
    failed one: queued, sent, delivered (+ read on WhatsApp)."""
    steps: list[tuple[str, int | None]] = []
    if message.resource["status"] == "accepted":
        steps.append(("accepted", None))
    steps.append(("queued", None))
    error = message.delivery_error
    if error is None:
        steps += [("sent", None), ("delivered", None)]
        if message.channel == "whatsapp":
            steps.append(("read", None))
    elif error in UNDELIVERED_CODES:
        steps += [("sent", None), ("undelivered", error)]
    else:
        steps.append(("failed", error))
    return steps


def _callback_params(message: StoredMessage) -> dict[str, str]:
    """The form Twilio POSTs to a StatusCallback for the message's current status."""
    resource = message.resource
    status = resource["status"]
    params = {
        "AccountSid": resource["account_sid"], "ApiVersion": API_VERSION,
        "From": resource["from"] or "", "To": resource["to"],
        "MessageSid": message.sid, "SmsSid": message.sid,
        "MessageStatus": status, "SmsStatus": status,
    }
    if resource["messaging_service_sid"]:
        params["MessagingServiceSid"] = resource["messaging_service_sid"]
    if resource["error_code"] is not None and status in ("failed", "undelivered"):
        params["ErrorCode"] = str(resource["error_code"])
    if message.channel == "whatsapp":
        params.update(ChannelPrefix="whatsapp", ChannelToAddress=split_channel(resource["to"])[1],
                      ChannelInstallSid="XE" + "0" * 32, StructuredMessage="false")
    return params


def _matches(message: StoredMessage, query: dict[str, str]) -> bool:
    """Twilio's list filters: To and From exact, DateSent on a UTC day, inclusive bounds."""
    resource = message.resource
    if "To" in query and resource["to"] != query["To"]:
        return False
    if "From" in query and resource["from"] != query["From"]:
        return False
    day = message.sent_at.date() if message.sent_at else None
    for name, test in _DAY_TESTS.items():
        if name in query:
            bound = _day(query[name])
            if day is None or not test(day, bound):
                return False
    return True


_DAY_TESTS: dict[str, Callable[[date, date], bool]] = {
    "DateSent": lambda day, bound: day == bound,
    "DateSent<": lambda day, bound: day <= bound,
    "DateSent>": lambda day, bound: day >= bound,
}


def _day(value: str) -> date:
    moment = parse_when(value)
    assert moment is not None   # the query was checked against its date-time schema
    return moment.date()


def _page(path: str, filters: list[tuple[str, str]], listed: list[StoredMessage],
          query: dict[str, str]) -> dict[str, Any]:
    """One page in Twilio's 2010 envelope. PageToken "PA<sid>" continues after that message,
    "PB<sid>" goes back before it, so pages stay stable while new messages arrive."""
    size = int(query.get("PageSize", 50))
    page = int(query.get("Page", 0))
    token = query.get("PageToken", "")
    first = _page_start(listed, token, page * size, size)
    items = listed[first:first + size]

    def uri(number: int, page_token: str | None = None) -> str:
        pairs = filters + [("PageSize", str(size)), ("Page", str(number))]
        return f"{path}?{urlencode(pairs + ([('PageToken', page_token)] if page_token else []))}"

    more = first + size < len(listed)
    return {
        "end": page * size + max(len(items) - 1, 0),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1, "PA" + items[-1].sid) if items and more else None,
        "page": page, "page_size": size,
        "previous_page_uri": uri(page - 1, "PB" + items[0].sid) if items and page > 0 else None,
        "messages": [m.resource for m in items],
        "start": page * size,
        "uri": uri(page, token or None),
    }


def _page_start(listed: list[StoredMessage], token: str, default: int, size: int) -> int:
    sids = [m.sid for m in listed]
    if token[:2] in ("PA", "PB") and token[2:] in sids:
        index = sids.index(token[2:])
        return index + 1 if token.startswith("PA") else max(0, index - size)
    return default


async def _read_params(request: web.Request) -> Params:
    params: Params = {}
    for name, value in request.query.items():
        params.setdefault(name, []).append(value)
    if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
        if request.content_type != "application/x-www-form-urlencoded":
            raise web.HTTPUnsupportedMediaType(text="Twilio's API takes form-encoded bodies")
        for name, value in (await request.post()).items():
            params.setdefault(name, []).append(str(value))
    return params


def _basic_credentials(header: str) -> tuple[str, str]:
    """(login, password) of a Basic Authorization header; ("", "") when there is none."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    login, _, password = decoded.partition(":")
    return login, password


def _flat(params: Params) -> dict[str, str | list[str]]:
    return {name: values[0] if len(values) == 1 else list(values)
            for name, values in params.items()}


async def _answer_of(run: Callable[[], Awaitable[web.Response]]) -> web.Response:
    try:
        return await run()
    except ApiError as error:
        return error.response()


# --- control API: the same scripting over HTTP, for a fake in another process ----------------

FAKE_TWILIO = web.AppKey("fake_twilio", FakeTwilio)

_CONTROL_OPERATIONS = ("fail_next", "throttle_next", "hang_next", "fail_for",
                       "set_number_behaviour", "shuffle_callbacks", "register_content", "reset")


async def _control(request: web.Request) -> web.Response:
    """POST /_fake/<operation> with the keyword arguments as a JSON object."""
    fake = request.app[FAKE_TWILIO]
    name = request.match_info["operation"]
    if name not in _CONTROL_OPERATIONS:
        raise web.HTTPNotFound(text=f"no such control operation: {name}")
    arguments = await request.json() if request.can_read_body else {}
    if not isinstance(arguments, dict):
        raise web.HTTPBadRequest(text="expected a JSON object of arguments")
    try:
        getattr(fake, name)(**arguments)
    except (TypeError, ValueError) as error:
        raise web.HTTPBadRequest(text=str(error)) from error
    return web.json_response({"ok": True})


async def _control_messages(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAKE_TWILIO].messages)


async def _control_requests(request: web.Request) -> web.Response:
    return web.json_response([asdict(r) for r in request.app[FAKE_TWILIO].requests])


async def _control_callbacks(request: web.Request) -> web.Response:
    return web.json_response([asdict(c) for c in request.app[FAKE_TWILIO].callbacks])


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _api(request: web.Request) -> web.Response:
    return await request.app[FAKE_TWILIO].handle(request)


async def _callback_session(app: web.Application):
    """The HTTP session status callbacks go out on; pending callbacks stop with the app."""
    fake = app[FAKE_TWILIO]
    fake.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT))
    yield
    await fake.close()
    await fake.session.close()
    fake.session = None


async def _end_hangs(app: web.Application) -> None:
    # Runs before the server waits for open requests, so held requests do not delay shutdown.
    app[FAKE_TWILIO].release_hangs()


def create_fake_twilio(spec_path: Path, auth_tokens: dict[str, str], *,
                       callback_delay: float = 0.05) -> web.Application:
    """The fake as an aiohttp application; its `FakeTwilio` is `app[FAKE_TWILIO]`.
    `auth_tokens` maps each account SID it accepts to that account's auth token."""
    app = web.Application()
    app[FAKE_TWILIO] = FakeTwilio(load_spec(Path(spec_path)), auth_tokens,
                                  callback_delay=callback_delay)
    app.router.add_get("/_fake/health", _health)
    app.router.add_get("/_fake/messages", _control_messages)
    app.router.add_get("/_fake/requests", _control_requests)
    app.router.add_get("/_fake/callbacks", _control_callbacks)
    app.router.add_post("/_fake/{operation}", _control)
    app.router.add_route("*", "/{tail:.*}", _api)
    app.cleanup_ctx.append(_callback_session)
    app.on_shutdown.append(_end_hangs)
    return app


# --- running it on its own -------------------------------------------------------------------

def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.fake_twilio",
                                     description="A local fake of Twilio's Messaging API.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"))
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"),
                        help="defaults to $TWILIO_AUTH_TOKEN (keeps it out of `ps`)")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--callback-delay", type=float, default=0.5,
                        help="seconds between a message's statuses")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    if not re.fullmatch(r"AC[0-9a-fA-F]{32}", args.account_sid or ""):
        sys.exit("fake_twilio: --account-sid (or TWILIO_ACCOUNT_SID) must be AC + 32 hex digits")
    if not args.auth_token:
        sys.exit("fake_twilio: --auth-token (or TWILIO_AUTH_TOKEN) is required")
    if not args.spec.is_file():
        sys.exit(f"fake_twilio: no OpenAPI spec at {args.spec} (pass --spec)")
    app = create_fake_twilio(args.spec, {args.account_sid: args.auth_token},
                             callback_delay=args.callback_delay)
    print(f"fake Twilio for {args.account_sid} on http://127.0.0.1:{args.port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
