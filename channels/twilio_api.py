"""The Twilio REST client the product sends SMS and WhatsApp with, and what its errors mean.

`make_twilio_client` builds the SDK's own `twilio.rest.Client` on its async HTTP client, pointed
at https://api.twilio.com or, for tests and the local demo, at the fake in
`sandbox/fake_twilio.py`. `classify_error` sorts what a send can raise into the three cases the
delivery code acts on:

* ``retry``     - Twilio did not create the message (429 / 20429, or no connection was made):
                  send again after a back-off.
* ``ambiguous`` - it may exist (5xx, timeout, connection lost mid-request): look it up before
                  any new attempt, or the debtor gets it twice.
* ``permanent`` - it never will (other 4xx: 21610 unsubscribed, 21211 invalid number...).

Errors of `create_async`/`fetch_async` come as TwilioRestException (`.status`, `.code`, `.msg`);
errors of `list_async`/`page_async` as a plain TwilioException carrying the HTTP response.
`describe_error` reads both.

Why the URL is rewritten in the HTTP client rather than on the SDK's domain object: every
request, including the next-page URLs that the SDK builds from `next_page_uri` and the
regional hosts it makes from TWILIO_EDGE / TWILIO_REGION, passes through one method,
`AsyncHttpClient.request`, the transport the SDK takes by injection (`http_client=`). One small
override there catches them all; setting `client.api.base_url` would miss regional hosts and
depend on the SDK creating its domain objects lazily.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

#: What the SDK raises for an HTTP error answer from api.twilio.com: `.status` (HTTP),
#: `.code` (Twilio's error code, e.g. 21610) and `.msg`. Re-exported so callers need not know
#: the SDK's module layout.
TwilioApiError = TwilioRestException

ErrorKind = Literal["retry", "ambiguous", "permanent"]

#: Twilio answers webhooks within 15 s and the product's retry settings default to the same; a
#: send that takes longer is treated as ambiguous rather than waited on.
DEFAULT_TIMEOUT = 15.0

THROTTLED_CODE = 20429

# api.twilio.com and the regional forms the SDK derives from edge/region settings
# (api.us1.twilio.com, api.dublin.ie1.twilio.com).
_API_HOST = re.compile(r"^api(\.[a-z0-9-]+){0,2}\.twilio\.com$")


class _RedirectingHttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp transport with two corrections.

    * A deadline on every request. The SDK hands aiohttp `timeout=None` unless a caller passes
      one per request, which aiohttp reads as "no limit at all", so a hung server would hang the
      sender for ever; the constructor's `timeout` is otherwise never used.
    * Optionally, api.twilio.com replaced by another base URL (the fake). Any other Twilio host
      is refused then, so a sandboxed product can never reach a real Twilio service by accident.

    Basic auth goes in as a header because aiohttp deprecates its `auth=` argument and
    its BasicAuth class.
    """

    def __init__(self, *, timeout: float, api_base_url: str | None):
        if api_base_url is not None:
            _check_base_url(api_base_url)    # before the session opens: nothing to leak
        super().__init__(timeout=timeout)
        self.api_base_url = api_base_url

    async def request(self, method: str, url: str, params=None, data=None, headers=None,
                      auth=None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        return await super().request(
            method, redirect_url(url, self.api_base_url), params=params, data=data,
            headers=headers, auth=None, timeout=timeout or self.timeout,
            allow_redirects=allow_redirects,
        )


def redirect_url(url: str, api_base_url: str | None) -> str:
    """Where a request for `url` goes: unchanged without a base URL; else api.twilio.com (or a
    regional form of it) replaced by the base URL's scheme, host and path prefix, the path and
    query kept. Any other Twilio host raises TwilioException then: it has no fake."""
    if api_base_url is None:
        return url
    parts, base = urlsplit(url), urlsplit(api_base_url)
    if not _API_HOST.match(parts.hostname or ""):
        raise TwilioException(
            f"{parts.hostname} is not redirected to the sandbox: only api.twilio.com is")
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


def _check_base_url(api_base_url: str) -> None:
    parts = urlsplit(api_base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"api_base_url must be an http(s) URL with a host, not {api_base_url!r}")


def make_twilio_client(account_sid: str, auth_token: str, api_base_url: str | None = None, *,
                       timeout: float = DEFAULT_TIMEOUT) -> Client:
    """A Twilio client whose `*_async` calls (`client.messages.create_async(...)`) go to
    api.twilio.com, or to `api_base_url` (e.g. "http://127.0.0.1:8765") when given.

    `timeout` bounds each request, connecting and reading the answer included. Call it inside
    the running event loop: the aiohttp session it opens belongs to that loop. Close it with
    `close_twilio_client`.
    """
    if not account_sid or not auth_token:
        raise ValueError("a Twilio account SID and auth token are both required")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    http_client = _RedirectingHttpClient(timeout=timeout, api_base_url=api_base_url)
    return Client(account_sid, auth_token, http_client=http_client)


async def close_twilio_client(client: Client) -> None:
    """Close the client's aiohttp session (and its pooled connections)."""
    http_client = client.http_client
    if isinstance(http_client, AsyncTwilioHttpClient):
        await http_client.close()


@dataclass(frozen=True)
class TwilioFailure:
    """What went wrong with a call, in the terms delivery acts on."""
    kind: ErrorKind
    status: int | None      # HTTP status, None when no answer came
    code: int | None        # Twilio's error code (21610, 20429...), None when no answer came
    detail: str


def classify_error(exc: BaseException) -> ErrorKind:
    """retry | ambiguous | permanent for an exception raised by a Twilio SDK call."""
    return describe_error(exc).kind


def describe_error(exc: BaseException) -> TwilioFailure:
    """`classify_error` with the HTTP status, Twilio's error code and a one-line detail.

    Raises TypeError for anything that is not an error of the call itself (a bug in our code
    must surface, not be retried).
    """
    if isinstance(exc, (TwilioRestException, TwilioServiceException)):
        return _from_answer(exc.status, exc.code, _message_of(exc))
    page_answer = _page_answer(exc)
    if page_answer is not None:
        return _from_answer(page_answer.status_code, *_code_and_message(page_answer.text))
    if isinstance(exc, TwilioException):
        # Raised before any request: a client that cannot make this call at all.
        return TwilioFailure("permanent", None, None, f"not sent: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The TCP connection was never made, so no request reached Twilio.
        return TwilioFailure("retry", None, None, f"could not connect: {exc}")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)):
        return TwilioFailure("ambiguous", None, None,
                             f"no answer ({type(exc).__name__}): the message may exist")
    raise TypeError(f"not an error of a Twilio call: {type(exc).__name__}") from exc


def _from_answer(status: int, code: int | None, message: str) -> TwilioFailure:
    if status == 429 or code == THROTTLED_CODE:
        return TwilioFailure("retry", status, code, f"throttled (HTTP {status}, {code}): {message}")
    if 400 <= status < 500:
        return TwilioFailure("permanent", status, code,
                             f"refused (HTTP {status}, Twilio error {code}): {message}")
    return TwilioFailure("ambiguous", status, code,
                         f"server error (HTTP {status}, {code}): the message may exist")


def _page_answer(exc: BaseException) -> Response | None:
    """The error answer to a list or page call. The SDK raises those as a plain
    TwilioException("Unable to fetch page", response), not as TwilioRestException."""
    if isinstance(exc, TwilioException) and len(exc.args) > 1 and isinstance(exc.args[1], Response):
        return exc.args[1]
    return None


def _code_and_message(text: str) -> tuple[int | None, str]:
    try:
        body = json.loads(text)
    except ValueError:
        return None, text[:200]
    if not isinstance(body, dict):
        return None, text[:200]
    return body.get("code"), str(body.get("message", ""))


def _message_of(exc: TwilioRestException | TwilioServiceException) -> str:
    if isinstance(exc, TwilioRestException):
        return str(exc.msg)
    return exc.detail or exc.title
