"""Delivery to Twilio through the real SDK, against the fake Twilio server (sandbox/), with a
real Redis and the real gateway receiving the signed status callbacks.

What must hold whatever the provider does: every message is created at Twilio exactly once
(outages, throttling, hangs, a create that timed out although Twilio made the message), paced
per sender, and its delivery state only moves forward.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from arq import create_pool
from arq.connections import RedisSettings

from channels.base import OutboundMessage
from sandbox.fake_twilio import FAKE_TWILIO, create_fake_twilio
from service.channel_config import ChannelConfig, RetryConfig
from service.delivery import Deliverer
from service.gateway import create_app
from service.keys import Keys
from service.outbox import OutboxTransport
from service.providers import EmailProvider, TwilioProvider
from service.routing import InboundRouter
from service.settings import Settings
from service.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "testdata" / "twilio" / "twilio_api_v2010.json"
ACCOUNT = "AC" + "3" * 32
TOKEN = "d" * 32
PREFIX = "dlv"


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@dataclasses.dataclass
class Rig:
    fake: object
    deliverer: Deliverer
    outbox: OutboxTransport
    redis: object
    keys: Keys

    async def queue(self, message_id: str, body: str = "Hello from Nudge",
                    to: str = "+31612345678", channel: str = "sms") -> None:
        await self.outbox.send(OutboundMessage(message_id, "D-T", channel, to, body, "help_reply",
                                               "en", extra={"kind": "reply"}))

    async def record(self, message_id: str) -> dict[str, str]:
        return await self.deliverer.store.get(message_id)

    async def wait_state(self, message_id: str, state: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.record(message_id)).get("state") == state:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{message_id} never reached {state}: {await self.record(message_id)}")

    def created(self, body: str | None = None) -> list[dict]:
        return [m for m in self.fake.messages if body is None or m.get("body") == body]


@pytest_asyncio.fixture
async def rig(redis_url):
    gateway_port, twilio_port = free_port(), free_port()
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "NUDGE_PSEUDONYM_KEY": "p" * 32,
        "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN,
        "NUDGE_TWILIO_API_URL": f"http://127.0.0.1:{twilio_port}",
        "NUDGE_GATEWAY_PORT": str(gateway_port), "NUDGE_SIMULATOR": "0"})
    fake_app = create_fake_twilio(SPEC, {ACCOUNT: TOKEN}, callback_delay=0.01)
    runners = [await serve(fake_app, twilio_port), await serve(create_app(settings), gateway_port)]
    config = ChannelConfig.load(ROOT / "policies")
    config = dataclasses.replace(config, retry=RetryConfig(0.05, 0.2, 1.0),
                                 sms=dataclasses.replace(config.sms, pacing_per_second=0))
    queue = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name="dlv:queue")
    keys = Keys(PREFIX)
    provider = TwilioProvider(settings, config)
    failures: list[dict] = []

    async def on_failure(record):
        failures.append(record)

    deliverer = Deliverer(queue, keys, config, {"sms": provider, "whatsapp": provider},
                          "dlv:queue", on_failure=on_failure)
    deliverer.failures = failures
    yield Rig(fake_app[FAKE_TWILIO], deliverer, OutboxTransport(queue, keys, "dlv:queue"), queue, keys)
    await provider.close()
    for runner in runners:
        await runner.cleanup()
    await queue.aclose()


async def run_until_settled(rig: Rig, message_ids: list[str], timeout: float = 20) -> list[str]:
    """Play the worker: attempt every due message when its time comes, until none is due."""
    outcomes = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = await rig.redis.zrangebyscore(rig.keys.delivery_due, "-inf", time.time())
        pending = await rig.redis.zcard(rig.keys.delivery_due)
        if not pending:
            return outcomes
        for raw in due:
            outcomes.append(await rig.deliverer.deliver(raw.decode()))
        await asyncio.sleep(0.02)
    raise AssertionError(f"still due after {timeout} s: {outcomes}")


@pytest.mark.asyncio
async def test_a_message_is_created_once_and_its_callbacks_move_it_to_delivered(rig):
    await rig.queue("m-ok")
    assert await run_until_settled(rig, ["m-ok"]) == ["submitted"]
    await rig.wait_state("m-ok", "delivered")
    [created] = rig.created()
    assert created["to"] == "+31612345678" and created["body"] == "Hello from Nudge"
    record = await rig.record("m-ok")
    assert record["provider_id"] == created["sid"] and record["provider_segments"] == "1"


@pytest.mark.asyncio
async def test_an_outage_then_recovery_sends_every_message_exactly_once(rig):
    rig.fake.fail_for(1.0, status=500, code=20500)
    ids = [f"m-out-{i}" for i in range(5)]
    for message_id in ids:
        await rig.queue(message_id, body=f"message {message_id}")
    outcomes = await run_until_settled(rig, ids, timeout=30)
    assert "ambiguous" in outcomes                 # 5xx: Twilio may have made it...
    for message_id in ids:
        assert len(rig.created(f"message {message_id}")) == 1   # ...and it did not twice
        await rig.wait_state(message_id, "delivered")


@pytest.mark.asyncio
async def test_throttling_is_retried_and_not_counted_as_maybe_sent(rig):
    rig.fake.throttle_next(2)
    await rig.queue("m-429")
    outcomes = await run_until_settled(rig, ["m-429"])
    assert outcomes == ["retry", "retry", "submitted"]
    assert (await rig.record("m-429")).get("maybe_sent") is None
    assert len(rig.created()) == 1


@pytest.mark.asyncio
async def test_a_create_that_timed_out_after_twilio_made_the_message_is_not_sent_again(rig):
    rig.fake.hang_next(1, seconds=5, create_then_hang=True)
    await rig.queue("m-hang", body="only once please")
    outcomes = await run_until_settled(rig, ["m-hang"])
    # the next attempt learns it exists: from its status callback (which names our id) if
    # that came first, else from Twilio's message list
    assert outcomes[0] == "ambiguous" and outcomes[-1] in ("submitted", "done")
    assert len(rig.created("only once please")) == 1
    await rig.wait_state("m-hang", "delivered")


@pytest.mark.asyncio
async def test_a_hang_without_a_message_is_sent_after_reconciliation_finds_nothing(rig):
    rig.fake.hang_next(1, seconds=5)
    await rig.queue("m-hang2", body="after the hang")
    outcomes = await run_until_settled(rig, ["m-hang2"])
    assert outcomes == ["ambiguous", "submitted"]
    assert len(rig.created("after the hang")) == 1


@pytest.mark.asyncio
async def test_two_workers_at_once_create_one_message(rig):
    await rig.queue("m-race")
    outcomes = await asyncio.gather(*(rig.deliverer.deliver("m-race") for _ in range(4)))
    assert sorted(outcomes).count("submitted") == 1
    assert set(outcomes) <= {"submitted", "busy", "done"}
    assert len(rig.created()) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [21211, 21614, 21610])
async def test_a_number_twilio_refuses_at_create_fails_with_its_code(rig, code):
    rig.fake.set_number_behaviour("+31600000001", code, at="create")
    await rig.queue("m-bad", to="+31600000001")
    assert await run_until_settled(rig, ["m-bad"]) == ["failed"]
    record = await rig.record("m-bad")
    assert (record["state"], record["error_code"]) == ("failed", str(code))
    assert [f["message_id"] for f in rig.deliverer.failures] == ["m-bad"]
    assert rig.created() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [30003, 30005, 30008])
async def test_carrier_undelivered_arrives_by_callback_with_its_code(rig, code):
    rig.fake.set_number_behaviour("+31600000002", code, at="callback")
    await rig.queue("m-undel", to="+31600000002")
    await run_until_settled(rig, ["m-undel"])
    await rig.wait_state("m-undel", "undelivered")
    assert (await rig.record("m-undel"))["error_code"] == str(code)
    assert await rig.redis.exists("arq:job:fail:m-undel")      # the worker acts on it


@pytest.mark.asyncio
async def test_shuffled_callbacks_end_in_the_furthest_state(rig):
    rig.fake.shuffle_callbacks(True, seed=7)
    for i in range(5):
        await rig.queue(f"m-shuf-{i}", to="+31612345678", body=f"shuffled {i}")
    await run_until_settled(rig, [])
    for i in range(5):
        await rig.wait_state(f"m-shuf-{i}", "delivered")


@pytest.mark.asyncio
async def test_pacing_keeps_a_sender_to_its_rate(rig):
    rig.deliverer.config = dataclasses.replace(
        rig.deliverer.config, sms=dataclasses.replace(rig.deliverer.config.sms, pacing_per_second=4))
    for i in range(8):
        await rig.queue(f"m-pace-{i}", body=f"paced {i}")
    started = time.monotonic()
    await run_until_settled(rig, [], timeout=30)
    elapsed = time.monotonic() - started
    assert len(rig.created()) == 8
    assert elapsed >= 7 / 4 - 0.1               # 8 messages at 4/s: the last starts at 1.75 s


# --- email through SMTP -------------------------------------------------------------------
@pytest_asyncio.fixture
async def mail_rig(redis_url):
    from sandbox.smtp_sink import SmtpSink

    sink = SmtpSink(None)
    sink.start()
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "NUDGE_PSEUDONYM_KEY": "p" * 32,
        "NUDGE_PUBLIC_URL": "https://nudge.example.com", "NUDGE_SMTP_HOST": "127.0.0.1",
        "NUDGE_SMTP_PORT": str(sink.port), "NUDGE_SMTP_STARTTLS": "never"})
    config = ChannelConfig.load(ROOT / "policies")
    queue = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name="dlv:queue")
    keys = Keys(PREFIX)
    router = InboundRouter(queue, keys, settings.pseudonym_key)
    provider = EmailProvider(settings, config, router)
    deliverer = Deliverer(queue, keys, config, {"email": provider}, "dlv:queue")
    yield sink, deliverer, OutboxTransport(queue, keys, "dlv:queue"), router
    await provider.close()
    await queue.aclose()
    sink.stop()


@pytest.mark.asyncio
async def test_an_email_goes_over_smtp_with_threading_and_one_click_unsubscribe(mail_rig):
    sink, deliverer, outbox, router = mail_rig
    unsubscribe = "https://nudge.example.com/unsubscribe/tok123"
    await outbox.send(OutboundMessage(
        "e-1:0", "D-DE-001", "email", "anna@example.org", "Guten Tag, Anna.", "help_reply", "de",
        "Re: Ihre Rechnung", extra={"kind": "reply", "unsubscribe_url": unsubscribe,
                                     "in_reply_to": "their@mail.example",
                                     "references": '["older@mail.example", "their@mail.example"]'}))
    assert await deliverer.deliver("e-1:0") == "submitted"
    assert (await deliverer.store.get("e-1:0"))["state"] == "sent"
    [mail] = sink.messages
    assert mail["To"] == "anna@example.org" and mail["Subject"] == "Re: Ihre Rechnung"
    assert mail["In-Reply-To"] == "<their@mail.example>"
    assert "<older@mail.example>" in mail["References"]
    assert mail["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # the reply address and our Message-ID both lead back to the conversation
    reply_to = str(mail["Reply-To"])
    route = await router.for_email("someone@else.example", [reply_to], [])
    assert route.thread_mismatch and route.debtor_id is None
    assert await router.message_for_thread(mail["Message-ID"]) == "e-1:0"


@pytest.mark.asyncio
async def test_smtp_refusals_retry_or_fail(mail_rig):
    sink, deliverer, outbox, _ = mail_rig
    sink.fail_next(1, code=451)
    sink.fail_permanently_for("gone@example.org", code=550)
    for message_id, to in (("e-451", "anna@example.org"), ("e-550", "gone@example.org")):
        await outbox.send(OutboundMessage(message_id, "D-DE-001", "email", to, "Hallo", "help_reply",
                                          "de", "Betreff", extra={"kind": "reply"}))
    assert await deliverer.deliver("e-451") == "retry"
    assert await deliverer.deliver("e-550") == "failed"
    assert (await deliverer.store.get("e-550"))["error_code"] == "550"
    await deliverer.redis.hset(deliverer.keys.delivery("e-451"), "slot", "")
    assert await deliverer.deliver("e-451") == "submitted"
    assert len(sink.messages) == 1
