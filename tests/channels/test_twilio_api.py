"""make_twilio_client against the fake Twilio: where requests go, the calls the product makes,
deadlines, and how classify_error sorts every failure a call can end in."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from datetime import UTC, datetime

import aiohttp
import pytest
import pytest_asyncio
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channels.twilio_api import (
    DEFAULT_TIMEOUT,
    TwilioApiError,
    classify_error,
    close_twilio_client,
    describe_error,
    make_twilio_client,
    redirect_url,
)
from service.stack import free_port

ACCOUNT = "AC" + "5" * 32
TOKEN = "api-test-token"
SENDER = "+15005550006"
DEBTOR = "+4915112345678"
SERVICE = "MG" + "c" * 32
CONTENT = "HX" + "d" * 32
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


async def failure_of(call) -> BaseException:
    try:
        await call
    except Exception as error:      # noqa: BLE001 - the point is to look at whatever it was
        return error
    pytest.fail("the call did not fail")


# --- where requests go ---------------------------------------------------------------------
@pytest.mark.parametrize("url, base, expected", [
    (MESSAGES_URL, None, MESSAGES_URL),
    (MESSAGES_URL + "?PageSize=2&Page=1&PageToken=PASM1", "http://127.0.0.1:8765",
     (f"http://127.0.0.1:8765/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
      "?PageSize=2&Page=1&PageToken=PASM1")),
    ("https://api.dublin.ie1.twilio.com/2010-04-01/Accounts.json", "http://localhost:9",
     "http://localhost:9/2010-04-01/Accounts.json"),
    ("https://api.us1.twilio.com/2010-04-01/Accounts.json", "https://sandbox.test/twilio/",
     "https://sandbox.test/twilio/2010-04-01/Accounts.json"),
])
def test_redirect_url_swaps_only_scheme_host_and_prefix(url, base, expected):
    assert redirect_url(url, base) == expected


@pytest.mark.parametrize("url", ["https://messaging.twilio.com/v1/Services",
                                 "https://content.twilio.com/v1/Content", "https://example.com/x"])
def test_redirect_url_refuses_hosts_the_sandbox_does_not_have(url):
    with pytest.raises(TwilioException, match="not redirected"):
        redirect_url(url, "http://127.0.0.1:8765")


@pytest.mark.parametrize("arguments", [
    {"account_sid": "", "auth_token": "t"}, {"account_sid": ACCOUNT, "auth_token": ""},
    {"account_sid": ACCOUNT, "auth_token": "t", "api_base_url": "127.0.0.1:8765"},
    {"account_sid": ACCOUNT, "auth_token": "t", "api_base_url": "ftp://host"},
    {"account_sid": ACCOUNT, "auth_token": "t", "timeout": 0},
])
def test_bad_settings_fail_before_anything_opens(arguments):
    with pytest.raises(ValueError):
        make_twilio_client(**arguments)


@pytest.mark.asyncio
async def test_the_client_is_the_sdks_own_on_its_async_transport(client):
    assert isinstance(client, Client) and isinstance(client.http_client, AsyncTwilioHttpClient)
    assert client.http_client.timeout == 5
    assert make_twilio_client.__kwdefaults__["timeout"] == DEFAULT_TIMEOUT == 15.0


@pytest.mark.asyncio
async def test_regional_settings_still_reach_the_fake(base_url, fake, monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    client = make_twilio_client(ACCOUNT, TOKEN, base_url)
    try:
        message = await client.messages.create_async(to=DEBTOR, from_=SENDER, body="Hallo")
    finally:
        await close_twilio_client(client)
    assert [m["sid"] for m in fake.messages] == [message.sid]


@pytest.mark.asyncio
async def test_other_twilio_services_are_not_reached_from_the_sandbox(client, fake):
    error = await failure_of(client.messaging.v1.services.list_async())
    assert isinstance(error, TwilioException) and fake.requests == []
    assert classify_error(error) == "permanent"


@pytest.mark.asyncio
async def test_no_deprecated_aiohttp_auth_is_used(client):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        await client.messages.create_async(to=DEBTOR, from_=SENDER, body="x")


@pytest.mark.asyncio
async def test_close_twilio_client_closes_the_session(base_url):
    client = make_twilio_client(ACCOUNT, TOKEN, base_url)
    await close_twilio_client(client)
    assert client.http_client.session.closed


# --- the calls the product makes, exactly as it makes them ------------------------------------
@pytest.mark.asyncio
async def test_the_products_sms_send(client, fake):
    message = await client.messages.create_async(
        to=DEBTOR, from_=SENDER, body="Ihre Zahlung über 120 € ist fällig.",
        status_callback="https://nudge.example.com/webhooks/twilio/status?id=m-1")
    assert message.sid.startswith("SM") and message.status == "queued"
    assert message.num_segments == "1"
    assert fake.requests[0].params["StatusCallback"].endswith("?id=m-1")


@pytest.mark.asyncio
async def test_the_products_whatsapp_template_send(client, fake):
    message = await client.messages.create_async(
        to=f"whatsapp:{DEBTOR}", messaging_service_sid=SERVICE, content_sid=CONTENT,
        content_variables=json.dumps({"1": "Anna", "2": "120,00 €"}))
    assert message.status == "accepted" and message.num_segments == "1"
    assert json.loads(fake.requests[0].params["ContentVariables"])["2"] == "120,00 €"


@pytest.mark.asyncio
async def test_the_products_reconciliation_lookup(client):
    sent = await client.messages.create_async(to=DEBTOR, from_=SENDER, body="Reminder 1")
    await client.messages.create_async(to=DEBTOR, from_=SENDER, body="Reminder 2")
    found = await client.messages.list_async(
        to=DEBTOR, from_=SENDER, date_sent=datetime.now(UTC).date(), limit=50)
    assert [m.sid for m in found if m.body == "Reminder 1"] == [sent.sid]


# --- deadlines ------------------------------------------------------------------------------
@pytest_asyncio.fixture
async def silent_server():
    """A TCP server that reads requests and never answers; its port."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.mark.asyncio
async def test_a_silent_server_times_the_client_out(silent_server):
    client = make_twilio_client(ACCOUNT, TOKEN, f"http://127.0.0.1:{silent_server}", timeout=0.4)
    started = time.monotonic()
    try:
        error = await failure_of(client.messages.create_async(to=DEBTOR, from_=SENDER, body="x"))
    finally:
        await close_twilio_client(client)
    assert 0.3 < time.monotonic() - started < 2
    assert isinstance(error, asyncio.TimeoutError)
    assert describe_error(error).kind == "ambiguous"


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK passes aiohttp auth=BasicAuth
async def test_the_sdks_own_async_client_ignores_its_timeout(silent_server):
    """Why the transport is overridden: AsyncTwilioHttpClient(timeout=...) passes
    timeout=None to aiohttp, which means no deadline. If this starts failing, the SDK got
    fixed and the override's deadline is no longer needed."""
    http_client = AsyncTwilioHttpClient(timeout=0.2)
    client = Client(ACCOUNT, TOKEN, http_client=http_client)
    url = f"http://127.0.0.1:{silent_server}/2010-04-01/Accounts.json"
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.request_async("GET", url), 1.0)
    finally:
        await http_client.close()


# --- classify_error -------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("script, kind, status, code", [
    (lambda f: f.fail_next(1), "ambiguous", 500, 20500),
    (lambda f: f.fail_next(1, status=503, code=20503), "ambiguous", 503, 20503),
    (lambda f: f.fail_for(5, status=502), "ambiguous", 502, 20500),
    (lambda f: f.throttle_next(1), "retry", 429, 20429),
    (lambda f: f.set_number_behaviour(DEBTOR, 21610), "permanent", 400, 21610),
    (lambda f: f.set_number_behaviour(DEBTOR, 21211), "permanent", 400, 21211),
    (lambda f: f.set_number_behaviour(DEBTOR, 21614), "permanent", 400, 21614),
])
async def test_send_failures_are_classified(client, fake, script, kind, status, code):
    script(fake)
    error = await failure_of(client.messages.create_async(to=DEBTOR, from_=SENDER, body="x"))
    assert isinstance(error, TwilioApiError)
    failure = describe_error(error)
    assert (failure.kind, failure.status, failure.code) == (kind, status, code)
    assert classify_error(error) == kind
    if kind == "permanent":
        assert str(code) in failure.detail


@pytest.mark.asyncio
@pytest.mark.parametrize("script, kind, status, code", [
    (lambda f: f.fail_next(1), "ambiguous", 500, 20500),
    (lambda f: f.throttle_next(1), "retry", 429, 20429),
])
async def test_list_failures_are_classified_too(client, fake, script, kind, status, code):
    """list_async raises a plain TwilioException carrying the response, not a
    TwilioRestException: the reconciliation lookup must be classified all the same."""
    script(fake)
    error = await failure_of(client.messages.list_async(to=DEBTOR, limit=50))
    assert not isinstance(error, TwilioRestException)
    failure = describe_error(error)
    assert (failure.kind, failure.status, failure.code) == (kind, status, code)


@pytest.mark.asyncio
async def test_wrong_credentials_and_missing_messages_are_permanent(client, base_url):
    missing = await failure_of(client.messages("SM" + "0" * 32).fetch_async())
    assert (describe_error(missing).kind, describe_error(missing).code) == ("permanent", 20404)
    stranger = make_twilio_client(ACCOUNT, "wrong", base_url)
    try:
        refused = await failure_of(stranger.messages.create_async(to=DEBTOR, from_=SENDER, body="x"))
    finally:
        await close_twilio_client(stranger)
    assert (describe_error(refused).kind, describe_error(refused).status) == ("permanent", 401)


@pytest.mark.asyncio
async def test_no_connection_at_all_is_a_plain_retry():
    client = make_twilio_client(ACCOUNT, TOKEN, f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        error = await failure_of(client.messages.create_async(to=DEBTOR, from_=SENDER, body="x"))
    finally:
        await close_twilio_client(client)
    assert isinstance(error, aiohttp.ClientConnectorError)
    assert classify_error(error) == "retry"


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_request_is_ambiguous():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_twilio_client(ACCOUNT, TOKEN, f"http://127.0.0.1:{port}", timeout=2)
    try:
        error = await failure_of(client.messages.create_async(to=DEBTOR, from_=SENDER, body="x"))
    finally:
        await close_twilio_client(client)
        server.close()
    assert isinstance(error, aiohttp.ServerDisconnectedError)
    assert classify_error(error) == "ambiguous"


@pytest.mark.parametrize("error, kind", [
    (TwilioRestException(429, "/x", "slow down"), "retry"),
    (TwilioRestException(400, "/x", "throttled", code=20429), "retry"),
    (TwilioRestException(400, "/x", "bad", code=21602), "permanent"),
    (TwilioRestException(502, "/x", "bad gateway"), "ambiguous"),
    (TwilioServiceException("https://t/e", "Bad", 400, 20001), "permanent"),
    (TwilioServiceException("https://t/e", "Down", 503, 20503), "ambiguous"),
    (TimeoutError(), "ambiguous"),
    (aiohttp.ClientPayloadError("cut"), "ambiguous"),
])
def test_classification_table(error, kind):
    assert classify_error(error) == kind


def test_anything_else_is_not_classified():
    with pytest.raises(TypeError):
        classify_error(KeyError("bug"))


@pytest.mark.asyncio
async def test_no_answer_from_a_held_request_then_the_message_is_found(base_url, client, fake):
    """The ambiguous case end to end: the client times out, the fake created the message."""
    fake.hang_next(1, seconds=30, create_then_hang=True)
    impatient = make_twilio_client(ACCOUNT, TOKEN, base_url, timeout=0.3)
    try:
        error = await failure_of(impatient.messages.create_async(to=DEBTOR, from_=SENDER,
                                                                 body="once only"))
    finally:
        await close_twilio_client(impatient)
    assert classify_error(error) == "ambiguous"
    found = await client.messages.list_async(to=DEBTOR, from_=SENDER,
                                             date_sent=datetime.now(UTC).date(), limit=50)
    assert [m.body for m in found] == ["once only"]
