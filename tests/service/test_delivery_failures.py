"""What Nudge does when a provider says a message failed: the real send path, contact rules,
channel rules and Redis (no engine needed: these messages are already planned)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.delivery import DeliveryStore
from service.delivery_failures import FailureHandler
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.processing import Processor
from service.sending import PlannedMessage
from service.settings import Settings
from service.templates import TemplateRenderer
from tests.conftest import always_open_policies

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def rig(redis_url, tmp_path):
    policies = always_open_policies(tmp_path / "policies")
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "f" * 32,
                                  "NUDGE_KEY_PREFIX": "fail", "NUDGE_POLICIES_DIR": str(policies)})
    client = aioredis.from_url(redis_url)
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, Keys("fail")))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    processor = Processor(settings, client, engine, TemplateRenderer(settings.templates_dir))
    store = DeliveryStore(client, processor.keys)
    handler = FailureHandler(store, processor.sender, processor.rules.suppressions,
                             processor.conversations, processor.rules.audit)
    yield processor, store, handler
    await engine.close()
    await client.aclose()


async def fail(store: DeliveryStore, message_id: str, code: str) -> None:
    record = await store.get(message_id)
    assert await store.advance(record, "undelivered", error_code=code)


@pytest.mark.asyncio
async def test_whatsapp_63016_resends_the_approved_template(rig):
    processor, store, handler = rig
    debtor = await processor.debtors.get("D-EN-002")           # opted in to WhatsApp
    await processor.conversations.touch(debtor.id, channel="whatsapp", language="en",
                                        inbound_at=time.time() - 60)
    plan = PlannedMessage("r-1", debtor.id, "whatsapp", debtor.phone, "reminder_first", "reminder")
    assert (await processor.sender.send(plan)).verdict == "send"
    assert not (await store.get("r-1")).get("content_sid")    # inside the window: free-form
    await fail(store, "r-1", "63016")
    assert await handler.handle("r-1") == "whatsapp_template:send"
    template = await store.get("r-1~template")
    assert template["content_sid"] == "HX0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert '"1": "Amelia"' in template["content_variables"]


@pytest.mark.asyncio
async def test_whatsapp_63016_without_a_template_moves_to_the_next_channel(rig):
    processor, store, handler = rig
    debtor = await processor.debtors.get("D-EN-002")
    await processor.conversations.touch(debtor.id, channel="whatsapp", language="en",
                                        inbound_at=time.time() - 60)
    plan = PlannedMessage("h-1:0", debtor.id, "whatsapp", debtor.phone, "help_reply", "confirmation")
    assert (await processor.sender.send(plan)).verdict == "send"
    await fail(store, "h-1:0", "63016")
    # the template try is refused (no approved template), and the refusal moves it on
    assert await handler.handle("h-1:0") == "whatsapp_template:refuse"
    fallback = await store.get("h-1:0~sms")
    assert fallback["channel"] == "sms" and fallback["address"] == debtor.phone


@pytest.mark.asyncio
@pytest.mark.parametrize("code", ["21211", "21614"])
async def test_an_invalid_number_is_flagged_and_the_message_moves_on(rig, code):
    processor, store, handler = rig
    debtor = await processor.debtors.get("D-EN-001")
    plan = PlannedMessage("i-1:0", debtor.id, "sms", debtor.phone, "help_reply", "confirmation")
    await processor.sender.send(plan)
    await fail(store, "i-1:0", code)
    assert (await handler.handle("i-1:0")).startswith("fallback:")
    # D-EN-001 has not opted in to WhatsApp, and this answer is not inside a WhatsApp window:
    # refused there, so it went on to email
    assert (await store.get("i-1:0~email"))["address"] == debtor.email
    again = await processor.sender.send(PlannedMessage(
        "i-2:0", debtor.id, "sms", debtor.phone, "help_reply", "confirmation"))
    assert (again.verdict, again.reason) == ("refuse", "invalid_address")


@pytest.mark.asyncio
async def test_21610_records_the_opt_out_and_does_not_move_on(rig):
    processor, store, handler = rig
    debtor = await processor.debtors.get("D-EN-004")
    await processor.sender.send(PlannedMessage("o-1:0", debtor.id, "sms", debtor.phone,
                                               "help_reply", "confirmation"))
    record = await store.get("o-1:0")
    await store.advance(record, "failed", error_code="21610")
    assert await handler.handle("o-1:0") == "opted_out"
    assert await processor.rules.suppressions.reason("sms", debtor.phone) == "twilio_21610"
    assert not await store.get("o-1:0~whatsapp") and not await store.get("o-1:0~email")


@pytest.mark.asyncio
async def test_handling_twice_sends_nothing_twice(rig):
    processor, store, handler = rig
    debtor = await processor.debtors.get("D-EN-007")
    await processor.sender.send(PlannedMessage("u-1:0", debtor.id, "sms", debtor.phone,
                                               "help_reply", "confirmation"))
    await fail(store, "u-1:0", "30005")
    first, second = await handler.handle("u-1:0"), await handler.handle("u-1:0")
    assert first == second
    outbox = await processor.redis.xrange(processor.keys.outbox)
    assert sum(b"u-1:0~" in fields[b"data"] for _, fields in outbox) == 1


@pytest.mark.asyncio
async def test_whatsapp_stop_and_start_change_the_opt_in_the_portfolio_gave(rig):
    processor, _, _ = rig
    debtor = await processor.debtors.get("D-EN-002")           # opted in by the portfolio
    rules = processor.channel_rules

    async def mode() -> str:
        plan = await rules.whatsapp_plan(conversation_id=debtor.id, debtor=debtor, kind="reminder",
                                         template="reminder_first", language="en",
                                         now=time.time())
        return plan.reason or plan.mode

    assert await mode() == "template"
    await rules.withdraw_opt_in(debtor.id)
    assert await mode() == "whatsapp_no_opt_in"
    await rules.record_opt_in(debtor.id, "whatsapp_keyword")
    assert await mode() == "template"
