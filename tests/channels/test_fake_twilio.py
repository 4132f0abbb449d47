"""The fake Twilio Messaging API, driven by the real twilio SDK through make_twilio_client:
spec matching, auth and validation, the Messages resource, signed status callbacks, and every
scripted failure (in-process and over the /_fake control API, in a subprocess too)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from channels.sms_encoding import analyse
from channels.twilio_api import classify_error, close_twilio_client, make_twilio_client
from sandbox.fake_twilio import (
    DEFAULT_SPEC,
    load_spec,
)
from service.stack import free_port

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "fake-auth-token"
SENDER = "+15005550006"
DEBTOR = "+31612345678"
OTHER = "+31687654321"
SERVICE = "MG" + "a" * 32
CONTENT = "HX" + "b" * 32
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


def today() -> datetime:
    return datetime.now(UTC)


# --- fixtures ------------------------------------------------------------------------------
@pytest_asyncio.fixture
async def quick_client(base_url):
    """A client that gives up after 0.3 s, for hangs."""
    client = make_twilio_client(ACCOUNT, TOKEN, base_url, timeout=0.3)
    yield client
    await close_twilio_client(client)


@pytest_asyncio.fixture
async def raw(base_url):
    """A plain HTTP session for requests the SDK would never make."""
    async with aiohttp.ClientSession(base_url) as session:
        yield session


@dataclass
class Receiver:
    """A product-side StatusCallback endpoint: records each callback and its signature check."""
    url: str
    calls: list[tuple[dict[str, str], bool]] = field(default_factory=list)
    answers: deque[int] = field(default_factory=deque)     # statuses to answer, then 204

    def statuses(self, sid: str | None = None) -> list[str]:
        return [form["MessageStatus"] for form, _ in self.calls
                if sid is None or form["MessageSid"] == sid]


@pytest_asyncio.fixture
async def receiver(aiohttp_server) -> Receiver:
    receiver = Receiver(url="")

    async def status(request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        valid = RequestValidator(TOKEN).validate(
            str(request.url), form, request.headers.get("X-Twilio-Signature", ""))
        receiver.calls.append((form, valid))
        return web.Response(status=receiver.answers.popleft() if receiver.answers else 204)

    app = web.Application()
    app.router.add_post("/twilio/status", status)
    site = await aiohttp_server(app)
    receiver.url = f"http://{site.host}:{site.port}/twilio/status?delivery=d-1"
    return receiver


def auth_header(login: str = ACCOUNT, password: str = TOKEN) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(login, password)}


async def send_sms(client, to: str = DEBTOR, body: str = "Hello", **extra):
    return await client.messages.create_async(to=to, from_=SENDER, body=body, **extra)


# --- the spec: every path routes to itself ---------------------------------------------------
def _sample(template: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        return ACCOUNT if name == "AccountSid" else f"{name[:2].upper()}{'0' * 32}"
    return re.sub(r"{(\w+)}", value, template)


def test_every_path_of_the_spec_is_matched_by_its_own_template():
    spec = load_spec(DEFAULT_SPEC)
    assert len(spec.routes) == 121
    for route in spec.routes:
        found = spec.match(_sample(route.template))
        assert found is not None and found[0].template == route.template


@pytest.mark.asyncio
async def test_a_path_not_in_the_spec_is_a_twilio_404(client, raw):
    answer = await client.request_async(
        "GET", f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Mesages.json")
    assert answer.status_code == 404
    assert json.loads(answer.text) == {
        "code": 20404, "status": 404,
        "message": f"The requested resource /2010-04-01/Accounts/{ACCOUNT}/Mesages.json was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404"}
    async with raw.put(MESSAGES, headers=auth_header()) as answer:
        assert answer.status == 405 and (await answer.json())["code"] == 20004


@pytest.mark.asyncio
async def test_a_malformed_sid_in_the_path_is_a_404(client):
    with pytest.raises(TwilioRestException) as caught:
        await client.messages("SMnot-a-sid").fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


@pytest.mark.asyncio
async def test_other_spec_paths_answer_501_after_auth(client, raw):
    async with raw.get(f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json") as answer:
        assert answer.status == 401
    async with raw.get(f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json", headers=auth_header()) as answer:
        assert answer.status == 501 and "ListCall" in (await answer.json())["message"]


# --- auth -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_wrong_auth_token_is_refused_with_20003(base_url):
    client = make_twilio_client(ACCOUNT, "not-the-token", base_url, timeout=5)
    try:
        with pytest.raises(TwilioRestException) as caught:
            await send_sms(client)
    finally:
        await close_twilio_client(client)
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert classify_error(caught.value) == "permanent"


@pytest.mark.asyncio
async def test_requests_need_basic_auth_for_the_account_in_the_path(raw, fake):
    other = "AC" + "f" * 32
    for headers in ({}, {"Authorization": "Bearer x"}, auth_header(password=""),
                    auth_header(login=other)):
        async with raw.get(MESSAGES, headers=headers) as answer:
            assert answer.status == 401
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
            assert (await answer.json())["code"] == 20003
    async with raw.get(MESSAGES.replace(ACCOUNT, other), headers=auth_header()) as answer:
        assert answer.status == 401
    assert fake.messages == []


# --- validation of the form against the spec ---------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("arguments, code", [
    ({"to": None, "from_": SENDER, "body": "x"}, 21604),
    ({"to": "", "from_": SENDER, "body": "x"}, 21604),
    ({"to": DEBTOR, "body": "x"}, 21603),
    ({"to": DEBTOR, "from_": "", "body": "x"}, 21603),
    ({"to": DEBTOR, "from_": SENDER}, 21619),
    ({"to": DEBTOR, "from_": SENDER, "body": ""}, 21602),
    ({"to": DEBTOR, "from_": SENDER, "body": "x" * 1601}, 21617),
    ({"to": "0612345678", "from_": SENDER, "body": "x"}, 21211),
    ({"to": DEBTOR, "from_": "not a number!", "body": "x"}, 21212),
    ({"to": f"whatsapp:{DEBTOR}", "from_": SENDER, "body": "x"}, 21910),
    ({"to": f"whatsapp:{DEBTOR}", "from_": f"whatsapp:{SENDER}", "content_sid": CONTENT,
      "content_variables": "{not json"}, 21656),
    ({"to": DEBTOR, "from_": SENDER, "body": "x", "risk_check": "maybe"}, 20001),
    ({"to": DEBTOR, "from_": SENDER, "body": "x", "max_price": "cheap"}, 20001),
    ({"to": DEBTOR, "from_": SENDER, "body": "x", "status_callback": "ftp://x/y"}, 20001),
    ({"to": DEBTOR, "messaging_service_sid": "MG123", "body": "x"}, 20001),
    ({"to": DEBTOR, "from_": SENDER, "body": "x", "message_intent": "x"}, 20001),
    ({"to": DEBTOR, "messaging_service_sid": SERVICE, "body": "x", "schedule_type": "fixed"},
     20001),
    ({"to": DEBTOR, "from_": SENDER, "body": "x", "schedule_type": "fixed",
      "send_at": datetime(2030, 1, 1, tzinfo=UTC)}, 20001),
])
async def test_invalid_creates_are_refused_with_twilios_codes(client, fake, arguments, code):
    with pytest.raises(TwilioRestException) as caught:
        await client.messages.create_async(**arguments)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert classify_error(caught.value) == "permanent"
    assert fake.messages == []


@pytest.mark.asyncio
async def test_unknown_and_repeated_form_parameters_are_refused(raw):
    form = {"To": DEBTOR, "From": SENDER, "Body": "x", "Bodee": "typo"}
    async with raw.post(MESSAGES, data=form, headers=auth_header()) as answer:
        assert answer.status == 400
        assert await answer.json() == {
            "code": 20001, "message": "Unknown parameter: Bodee", "status": 400,
            "more_info": "https://www.twilio.com/docs/errors/20001"}
    async with raw.post(MESSAGES, data=[("To", DEBTOR), ("To", OTHER), ("From", SENDER),
                                        ("Body", "x")], headers=auth_header()) as answer:
        assert answer.status == 400 and "only once" in (await answer.json())["message"]


@pytest.mark.asyncio
async def test_query_parameters_are_checked_against_their_schema(raw):
    async with raw.get(MESSAGES, params={"PageSize": "5000"}, headers=auth_header()) as answer:
        assert answer.status == 400
    async with raw.get(MESSAGES, params={"DateSent": "someday"}, headers=auth_header()) as answer:
        assert answer.status == 400
    async with raw.get(MESSAGES, params={"Whatever": "1"}, headers=auth_header()) as answer:
        assert answer.status == 200     # Twilio ignores query parameters it does not know


# --- creating messages ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_an_sms_is_created_like_twilio_answers(client, fake):
    message = await send_sms(client, body="Your payment plan is ready.")
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert (message.status, message.num_segments, message.num_media) == ("queued", "1", "0")
    assert (message.to, message.from_, message.direction) == (DEBTOR, SENDER, "outbound-api")
    assert message.account_sid == ACCOUNT and message.api_version == "2010-04-01"
    assert message.price is None and message.error_code is None and message.error_message is None
    assert message.date_sent is not None and message.messaging_service_sid is None
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{message.sid}.json"
    assert message.subresource_uris["media"].endswith(f"/Messages/{message.sid}/Media.json")
    [stored] = fake.messages
    schema = load_spec(DEFAULT_SPEC).resolve({"$ref": "#/components/schemas/api.v2010.account.message"})
    assert set(stored) == set(schema["properties"])
    assert parsedate_to_datetime(stored["date_created"]).tzinfo is not None


@pytest.mark.asyncio
@pytest.mark.parametrize("body", ["a" * 160, "a" * 161, "€" * 80, "é" * 71, "Zahlung 💶 " * 20])
async def test_num_segments_follows_gsm7_and_ucs2(client, body):
    message = await send_sms(client, body=body)
    assert message.num_segments == str(analyse(body).segments)


@pytest.mark.asyncio
async def test_a_whatsapp_free_form_message(client):
    message = await client.messages.create_async(
        to=f"whatsapp:{DEBTOR}", from_=f"whatsapp:{SENDER}", body="Hi! " * 100)
    assert (message.to, message.from_, message.num_segments) == (
        f"whatsapp:{DEBTOR}", f"whatsapp:{SENDER}", "1")


@pytest.mark.asyncio
async def test_a_whatsapp_template_with_content_variables(client, fake):
    fake.register_content(CONTENT, "Hello {{1}}, {{2}} is due.")
    message = await client.messages.create_async(
        to=f"whatsapp:{DEBTOR}", from_=f"whatsapp:{SENDER}", content_sid=CONTENT,
        content_variables=json.dumps({"1": "Anna", "2": "€120"}))
    assert message.body == "Hello Anna, €120 is due." and message.status == "queued"
    [request] = fake.requests
    assert request.params["ContentSid"] == CONTENT and "Body" not in request.params


@pytest.mark.asyncio
async def test_a_messaging_service_send_is_accepted_and_gets_a_sender(client, fake):
    message = await client.messages.create_async(
        to=DEBTOR, messaging_service_sid=SERVICE, body="Hi")
    assert (message.status, message.from_, message.messaging_service_sid) == (
        "accepted", None, SERVICE)
    await fake.settle()
    fetched = await client.messages(message.sid).fetch_async()
    assert (fetched.status, fetched.from_) == ("delivered", SENDER)


@pytest.mark.asyncio
async def test_media_makes_an_mms(client):
    message = await send_sms(client, body="", media_url=["https://example.com/a.png"])
    assert message.sid.startswith("MM") and message.num_media == "1"


# --- reading, updating, deleting --------------------------------------------------------------
@pytest.mark.asyncio
async def test_fetch_follows_the_status_and_unknown_sids_are_404(client, fake):
    message = await send_sms(client)
    assert (await client.messages(message.sid).fetch_async()).status == "queued"
    await fake.settle()
    assert (await client.messages(message.sid).fetch_async()).status == "delivered"
    with pytest.raises(TwilioRestException) as caught:
        await client.messages("SM" + "0" * 32).fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


@pytest.mark.asyncio
async def test_list_filters_on_to_from_and_the_day_sent(client):
    first = await send_sms(client, to=DEBTOR, body="one")
    await send_sms(client, to=OTHER, body="two")
    third = await send_sms(client, to=DEBTOR, body="three")
    day = today().date()

    async def sids(**filters) -> list[str]:
        return [m.sid for m in await client.messages.list_async(limit=50, **filters)]

    assert await sids(to=DEBTOR, from_=SENDER, date_sent=day) == [third.sid, first.sid]
    assert await sids(from_=SENDER) == [m.sid for m in await client.messages.list_async()]
    assert len(await sids()) == 3
    assert await sids(to=DEBTOR, date_sent=day - timedelta(days=1)) == []
    assert len(await sids(date_sent_before=day)) == 3
    assert len(await sids(date_sent_after=day)) == 3
    assert await sids(date_sent_after=day + timedelta(days=1)) == []
    assert await sids(from_="+15550000000") == []


@pytest.mark.asyncio
@pytest.mark.parametrize("count, page_size", [(0, 2), (5, 2), (6, 3), (7, 50)])
async def test_list_pages_through_everything_once_newest_first(client, fake, count, page_size):
    created = [(await send_sms(client, body=str(n))).sid for n in range(count)]
    listed = await client.messages.list_async(page_size=page_size)
    assert [m.sid for m in listed] == created[::-1]
    pages = [r for r in fake.requests if r.method == "GET"]
    assert len(pages) == max(1, -(-count // page_size))
    assert all(str(r.params["PageToken"]).startswith("PA") for r in pages[1:])


@pytest.mark.asyncio
async def test_the_page_envelope_has_twilios_fields(raw, client):
    for n in range(3):
        await send_sms(client, body=str(n))
    async with raw.get(MESSAGES, params={"To": DEBTOR, "PageSize": "2"}, headers=auth_header()) as answer:
        page = await answer.json()
    assert page["first_page_uri"] == f"{MESSAGES}?To=%2B31612345678&PageSize=2&Page=0"
    assert page["uri"] == page["first_page_uri"]
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["previous_page_uri"] is None
    assert re.fullmatch(re.escape(f"{MESSAGES}?To=%2B31612345678&PageSize=2&Page=1&PageToken=PA")
                        + r"SM[0-9a-f]{32}", page["next_page_uri"])
    async with raw.get(page["next_page_uri"], headers=auth_header()) as answer:
        second = await answer.json()
    assert (len(second["messages"]), second["start"], second["end"]) == (1, 2, 2)
    assert second["next_page_uri"] is None and second["previous_page_uri"].startswith(MESSAGES)


@pytest.mark.asyncio
async def test_redaction_once_final_and_cancel_only_when_scheduled(client, fake):
    fake.callback_delay = 0.2       # so the message is surely still queued for the first update
    message = await send_sms(client, body="secret")
    with pytest.raises(TwilioRestException):
        await client.messages(message.sid).update_async(body="")   # still in progress
    await fake.settle()
    redacted = await client.messages(message.sid).update_async(body="")
    assert redacted.body == "" and fake.messages[0]["body"] == ""
    with pytest.raises(TwilioRestException) as caught:
        await client.messages(message.sid).update_async(status="canceled")
    assert caught.value.status == 400
    with pytest.raises(TwilioRestException) as caught:
        await client.messages(message.sid).update_async(status="paused")
    assert caught.value.code == 20001


@pytest.mark.asyncio
async def test_a_scheduled_message_can_be_canceled(client, fake):
    message = await client.messages.create_async(
        to=DEBTOR, messaging_service_sid=SERVICE, body="later", schedule_type="fixed",
        send_at=today() + timedelta(hours=1))
    assert message.status == "scheduled" and message.date_sent is None
    canceled = await client.messages(message.sid).update_async(status="canceled")
    assert canceled.status == "canceled"
    await fake.settle()


@pytest.mark.asyncio
async def test_delete_hides_the_message_but_the_ledger_keeps_it(client, fake):
    message = await send_sms(client)
    assert await client.messages(message.sid).delete_async() is True
    with pytest.raises(TwilioRestException):
        await client.messages(message.sid).fetch_async()
    assert await client.messages.list_async() == []
    assert [m["sid"] for m in fake.messages] == [message.sid]


# --- status callbacks -----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_sms_callbacks_come_signed_and_in_order(client, fake, receiver):
    message = await send_sms(client, status_callback=receiver.url)
    await fake.settle()
    assert receiver.statuses() == ["queued", "sent", "delivered"]
    assert all(valid for _, valid in receiver.calls)
    form = receiver.calls[-1][0]
    assert form == {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "From": SENDER,
                    "To": DEBTOR, "MessageSid": message.sid, "SmsSid": message.sid,
                    "MessageStatus": "delivered", "SmsStatus": "delivered"}


@pytest.mark.asyncio
async def test_whatsapp_callbacks_end_with_read(client, fake, receiver):
    await client.messages.create_async(to=f"whatsapp:{DEBTOR}", from_=f"whatsapp:{SENDER}",
                                       body="Hi", status_callback=receiver.url)
    await fake.settle()
    assert receiver.statuses() == ["queued", "sent", "delivered", "read"]
    form = receiver.calls[-1][0]
    assert (form["ChannelPrefix"], form["ChannelToAddress"]) == ("whatsapp", DEBTOR)


@pytest.mark.asyncio
async def test_messaging_service_callbacks_start_with_accepted(client, fake, receiver):
    await client.messages.create_async(to=DEBTOR, messaging_service_sid=SERVICE, body="Hi",
                                       status_callback=receiver.url)
    await fake.settle()
    assert receiver.statuses() == ["accepted", "queued", "sent", "delivered"]
    assert receiver.calls[-1][0]["MessagingServiceSid"] == SERVICE


@pytest.mark.asyncio
async def test_shuffled_callbacks_arrive_out_of_order(client, fake, receiver):
    fake.shuffle_callbacks(True, seed=7)
    first = await send_sms(client, status_callback=receiver.url)
    second = await send_sms(client, to=OTHER, status_callback=receiver.url)
    await fake.settle()
    for message in (first, second):
        statuses = receiver.statuses(message.sid)
        assert sorted(statuses) == sorted(["queued", "sent", "delivered"])
        assert statuses != ["queued", "sent", "delivered"]
    assert all(valid for _, valid in receiver.calls)


@pytest.mark.asyncio
async def test_callbacks_are_retried_while_the_receiver_fails(client, fake, receiver):
    receiver.answers.extend([500, 503])
    await send_sms(client, status_callback=receiver.url)
    await fake.settle()
    assert receiver.statuses() == ["queued", "queued", "queued", "sent", "delivered"]
    assert [(c.attempt, c.status) for c in fake.callbacks][:3] == [(1, 500), (2, 503), (3, 204)]


@pytest.mark.asyncio
async def test_a_receiver_that_is_down_is_tried_a_few_times(client, fake):
    url = f"http://127.0.0.1:{free_port()}/status"
    await send_sms(client, status_callback=url)
    await fake.settle()
    assert len(fake.callbacks) == 9 and all(c.status is None for c in fake.callbacks)
    assert fake.messages[0]["status"] == "delivered"


# --- per-number errors ------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("code", [21610, 21211, 21614])
async def test_number_errors_at_create(client, fake, code):
    fake.set_number_behaviour(DEBTOR, code)
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(client)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert classify_error(caught.value) == "permanent"
    assert fake.messages == []
    assert (await send_sms(client, to=OTHER)).status == "queued"


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [30003, 30004, 30005, 30006, 30007, 30008])
async def test_carrier_errors_arrive_in_callbacks_as_undelivered(client, fake, receiver, code):
    fake.set_number_behaviour(DEBTOR, code, at="callback")
    message = await send_sms(client, status_callback=receiver.url)
    assert message.status == "queued"
    await fake.settle()
    assert receiver.statuses() == ["queued", "sent", "undelivered"]
    assert receiver.calls[-1][0]["ErrorCode"] == str(code)
    assert "ErrorCode" not in receiver.calls[0][0]
    fetched = await client.messages(message.sid).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", code)
    assert fetched.error_message


@pytest.mark.asyncio
async def test_63016_fails_free_form_whatsapp_outside_the_window(client, fake, receiver):
    fake.set_number_behaviour(f"whatsapp:{DEBTOR}", 63016)
    free = await client.messages.create_async(
        to=f"whatsapp:{DEBTOR}", from_=f"whatsapp:{SENDER}", body="Hi",
        status_callback=receiver.url)
    template = await client.messages.create_async(
        to=f"whatsapp:{DEBTOR}", from_=f"whatsapp:{SENDER}", content_sid=CONTENT,
        content_variables=json.dumps({"1": "Anna"}), status_callback=receiver.url)
    await fake.settle()
    assert receiver.statuses(free.sid) == ["queued", "failed"]
    assert [f.get("ErrorCode") for f, _ in receiver.calls if f["MessageSid"] == free.sid] == [
        None, "63016"]
    assert receiver.statuses(template.sid) == ["queued", "sent", "delivered", "read"]


# --- scripted failures -----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fail_next_answers_500_then_recovers(client, fake):
    fake.fail_next(2)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            await send_sms(client)
        assert (caught.value.status, caught.value.code) == (500, 20500)
        assert classify_error(caught.value) == "ambiguous"
    assert fake.messages == []
    assert (await send_sms(client)).status == "queued"
    assert len(fake.messages) == 1


@pytest.mark.asyncio
async def test_create_then_fail_leaves_the_message_behind(client, fake):
    fake.fail_next(1, status=503, code=20503, create_then_fail=True)
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(client, body="exists anyway")
    assert caught.value.status == 503 and classify_error(caught.value) == "ambiguous"
    assert [m["body"] for m in fake.messages] == ["exists anyway"]


@pytest.mark.asyncio
async def test_throttle_answers_429_with_retry_after(client, fake, raw):
    fake.throttle_next(1, retry_after=3)
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(client)
    assert (caught.value.status, caught.value.code) == (429, 20429)
    assert classify_error(caught.value) == "retry"
    fake.throttle_next(1)
    async with raw.get(MESSAGES, headers=auth_header()) as answer:
        assert answer.status == 429 and answer.headers["Retry-After"] == "1"
    assert fake.messages == []


@pytest.mark.asyncio
async def test_a_hang_times_the_client_out_and_creates_nothing(quick_client, client, fake):
    fake.hang_next(1, seconds=30)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError) as caught:
        await send_sms(quick_client)
    assert time.monotonic() - started < 2
    assert classify_error(caught.value) == "ambiguous"
    fake.release_hangs()
    await asyncio.sleep(0.1)
    assert fake.messages == []
    assert await client.messages.list_async(to=DEBTOR) == []


@pytest.mark.asyncio
async def test_a_short_hang_is_just_a_slow_answer(client, fake):
    fake.hang_next(1, seconds=0.3)
    started = time.monotonic()
    assert (await send_sms(client)).status == "queued"
    assert time.monotonic() - started >= 0.3


@pytest.mark.asyncio
async def test_create_then_hang_is_the_ambiguous_case(quick_client, client, fake):
    fake.hang_next(1, seconds=30, create_then_hang=True)
    with pytest.raises(asyncio.TimeoutError) as caught:
        await send_sms(quick_client, body="did it go?")
    assert classify_error(caught.value) == "ambiguous"
    # Reconciliation as the product does it: the message exists although the client timed out.
    found = await client.messages.list_async(
        to=DEBTOR, from_=SENDER, date_sent=today().date(), limit=50)
    assert [m.body for m in found] == ["did it go?"]
    assert len(fake.messages) == 1


@pytest.mark.asyncio
async def test_fail_for_is_an_outage_window(client, fake):
    fake.fail_for(0.3, status=503)
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(client)
    assert (caught.value.status, caught.value.code) == (503, 20503)
    with pytest.raises(TwilioRestException):
        await send_sms(client)
    await asyncio.sleep(0.35)
    assert (await send_sms(client)).status == "queued"
    assert len(fake.messages) == 1


@pytest.mark.asyncio
async def test_requests_are_recorded_and_reset_forgets_everything(client, fake):
    fake.fail_next(3)
    fake.set_number_behaviour(DEBTOR, 21610)
    with pytest.raises(TwilioRestException):
        await send_sms(client, body="first")
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", MESSAGES)
    assert request.params == {"To": DEBTOR, "From": SENDER, "Body": "first"}
    fake.reset()
    assert fake.requests == [] and fake.messages == []
    assert (await send_sms(client)).status == "queued"


# --- the control API and a fake in its own process ---------------------------------------------
@pytest.mark.asyncio
async def test_the_control_api_scripts_the_fake(client, raw, fake):
    async with raw.post("/_fake/fail_next", json={"n": 1, "status": 500}) as answer:
        assert answer.status == 200
    with pytest.raises(TwilioRestException):
        await send_sms(client)
    async with raw.post("/_fake/set_number_behaviour",
                        json={"to": DEBTOR, "error_code": 21610}) as answer:
        assert answer.status == 200
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(client)
    assert caught.value.code == 21610
    async with raw.post("/_fake/reset") as answer:
        assert answer.status == 200
    message = await send_sms(client)
    async with raw.get("/_fake/messages") as answer:
        assert [m["sid"] for m in await answer.json()] == [message.sid]
    async with raw.get("/_fake/requests") as answer:
        assert (await answer.json())[0]["params"]["To"] == DEBTOR
    async with raw.post("/_fake/explode") as answer:
        assert answer.status == 404
    async with raw.post("/_fake/hang_next", json={"minutes": 3}) as answer:
        assert answer.status == 400
    async with raw.get("/_fake/health") as answer:
        assert await answer.json() == {"status": "ok"}


@pytest.mark.asyncio
async def test_the_fake_runs_as_its_own_process():
    port = free_port()
    env = dict(os.environ, TWILIO_AUTH_TOKEN=TOKEN)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox.fake_twilio", "--port", str(port),
        "--account-sid", ACCOUNT, "--callback-delay", "0.01",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    client = None
    try:
        async with aiohttp.ClientSession(base) as session:
            await _wait_for_health(session, process)
            client = make_twilio_client(ACCOUNT, TOKEN, base, timeout=5)
            async with session.post("/_fake/throttle_next", json={"n": 1}) as answer:
                assert answer.status == 200
            with pytest.raises(TwilioRestException) as caught:
                await send_sms(client)
            assert caught.value.status == 429
            message = await send_sms(client)
            async with session.get("/_fake/messages") as answer:
                assert [m["sid"] for m in await answer.json()] == [message.sid]
    finally:
        if client is not None:
            await close_twilio_client(client)
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 10)
    assert b"fake Twilio for" in output and TOKEN.encode() not in output


async def _wait_for_health(session: aiohttp.ClientSession,
                           process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.returncode is None, "the fake exited"
        try:
            async with session.get("/_fake/health") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass    # not listening yet
        await asyncio.sleep(0.1)
    pytest.fail("the fake did not start")


def test_the_fake_refuses_to_start_without_a_valid_account():
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.fake_twilio", "--port", "1", "--account-sid", "nope",
         "--auth-token", "x"], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "AC + 32 hex" in result.stderr
