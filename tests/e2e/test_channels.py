"""One debtor, three channels, through the whole product: the simulator posts signed Twilio
webhooks and real SMTP mail, the engine answers, the worker delivers through the real twilio
SDK to the fake Twilio server and over SMTP to the sandbox mail sink, and Twilio's signed status
callbacks come back to the gateway."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from tests.e2e.helpers import DebtorPhone

pytestmark = pytest.mark.engine
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"


@pytest_asyncio.fixture
async def portfolio(product):
    client = aioredis.from_url(product.settings.redis_url)
    store = RedisDebtorStore(client, Keys(product.settings.key_prefix))
    assert not (await import_file(DEMO, store)).errors
    yield store
    await client.aclose()


async def reset(product, debtor_id: str) -> None:
    client = aioredis.from_url(product.settings.redis_url)
    keys = Keys(product.settings.key_prefix)
    await client.delete(keys.conversation(debtor_id), keys.transcript(debtor_id),
                        keys.stop_states(debtor_id), keys.contact_log(debtor_id, "sms"),
                        keys.contact_log(debtor_id, "whatsapp"), keys.contact_log(debtor_id, "email"),
                        f"{product.settings.engine_key_prefix}:tracker:{debtor_id}")
    async for key in client.scan_iter(match=f"{keys.prefix}:suppressed:*"):
        await client.delete(key)
    await client.aclose()


class FakeTwilioControl:
    def __init__(self, url: str):
        self.url = url

    async def messages(self) -> list[dict]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/_fake/messages") as r:
            return await r.json()

    async def call(self, operation: str, **arguments) -> None:
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.url}/_fake/{operation}", json=arguments) as response:
            assert response.status == 200, await response.text()


@pytest.fixture
def twilio(product) -> FakeTwilioControl:
    return FakeTwilioControl(product.settings.twilio_api_url)


async def wait_for(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("timed out")


def sink_mail(product, to: str) -> list[email.message.EmailMessage]:
    folder = product.settings.state_dir / "mail"
    found = []
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["To"] and to in str(message["To"]):
            found.append(message)
    return found


@pytest.mark.asyncio
async def test_sms_reply_goes_out_through_twilio_and_is_delivered(product, portfolio, twilio):
    debtor = await portfolio.get("D-EN-001")
    await reset(product, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "sms") as phone:
        [reply] = await phone.say("hello, who is this?")
        sent = await wait_for(lambda: _to(twilio, debtor.phone, reply["body"]))
        assert sent[0]["from"] == "+3197010520000"

        async def delivered():
            entries = await phone.transcript()
            return [e for e in entries if e.get("name") == "delivery"
                    and e.get("message_id") == reply["message_id"] and e["status"] == "delivered"]
        await wait_for(delivered)


async def _to(twilio: FakeTwilioControl, address: str, body: str) -> list[dict]:
    return [m for m in await twilio.messages() if m["to"].removeprefix("whatsapp:") == address
            and m.get("body") == body]


@pytest.mark.asyncio
async def test_whatsapp_reply_goes_back_on_whatsapp_inside_the_window(product, portfolio, twilio):
    debtor = await portfolio.get("D-NL-001")
    await reset(product, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "whatsapp") as phone:
        [reply] = await phone.say("hallo, wie is dit?")
        assert reply["channel"] == "whatsapp"
        sent = await wait_for(lambda: _to(twilio, debtor.phone, reply["body"]))
        assert sent[0]["to"] == f"whatsapp:{debtor.phone}"


@pytest.mark.asyncio
async def test_email_reply_threads_under_the_debtors_mail(product, portfolio):
    debtor = await portfolio.get("D-DE-001")
    await reset(product, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "email") as phone:
        their_id = await phone.send("Hallo, wer sind Sie?")
        replies = [e for e in await phone.new_entries() if e.get("direction") == "out"]
        assert replies and replies[0]["channel"] == "email"
        mails = await wait_for(lambda: _async([m for m in sink_mail(product, debtor.email)
                                               if m["In-Reply-To"] == f"<{their_id}>"]))
        mail = mails[-1]
        assert mail["Subject"].startswith("Re: ")
        assert mail["Reply-To"].startswith("reply+") and "@reply.nudge.example" in mail["Reply-To"]
        # the test stack's public URL is http: RFC 8058 one-click needs https, so the header
        # is left out and the link is in the body (tests/service/test_delivery.py checks the
        # headers with an https deployment)
        assert mail["List-Unsubscribe"] is None
        text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")  # CRLF on the wire
        assert text.strip() == replies[0]["body"].strip()
        assert f"{product.settings.public_url}/unsubscribe/" in text
        assert mail.get_body(("html",)) is not None


async def _async(value):
    return value


@pytest.mark.asyncio
async def test_a_reminder_on_whatsapp_without_opt_in_falls_back_to_sms(product, portfolio, twilio):
    debtor = await portfolio.get("D-EN-001")          # whatsapp_opt_in: false in the portfolio
    assert not debtor.whatsapp_opt_in
    await reset(product, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "whatsapp") as phone:
        await phone.remind()
        entries = await phone.new_entries()
        refused = [e for e in entries if e.get("name") == "refused"]
        assert refused and refused[0]["reason"] == "whatsapp_no_opt_in"
        fallback = [e for e in entries if e.get("name") == "fallback"]
        assert fallback and fallback[0]["channel"] == "sms"
        out = [e for e in entries if e.get("direction") == "out"]
        assert out[0]["channel"] == "sms" and out[0]["template"] == "reminder_first"


@pytest.mark.asyncio
async def test_an_undelivered_sms_moves_to_the_next_channel(product, portfolio, twilio):
    debtor = await portfolio.get("D-EN-002")          # opted in to WhatsApp
    await reset(product, debtor.id)
    await twilio.call("set_number_behaviour", to=debtor.phone, error_code=30003, at="callback")
    try:
        async with DebtorPhone(product.base_url, debtor.id, "sms") as phone:
            await phone.remind()

            async def moved():
                entries = await phone.transcript()
                return [e for e in entries if e.get("name") == "fallback"]
            [fallback] = await wait_for(moved)
            # next in the fallback order: WhatsApp, with the approved template (no window yet)
            assert fallback["channel"] == "whatsapp" and fallback["reason"] == "undelivered:30003"
    finally:
        await twilio.call("reset")


@pytest.mark.asyncio
async def test_a_carrier_opt_out_is_recorded(product, portfolio, twilio):
    debtor = await portfolio.get("D-NL-003")
    await reset(product, debtor.id)
    await twilio.call("set_number_behaviour", to=debtor.phone, error_code=21610, at="create")
    try:
        async with DebtorPhone(product.base_url, debtor.id, "sms") as phone:
            await phone.remind()

            async def opted_out():
                return [e for e in await phone.transcript() if e.get("name") == "opted_out"]
            [event] = await wait_for(opted_out)
            assert "21610" in event["via"]
        client = aioredis.from_url(product.settings.redis_url)
        from service.suppression import SuppressionStore
        store = SuppressionStore(client, Keys(product.settings.key_prefix),
                                 product.settings.pseudonym_key)
        assert await store.reason("sms", debtor.phone) == "twilio_21610"
        await client.aclose()
    finally:
        await twilio.call("reset")
