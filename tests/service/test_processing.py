"""Worker processing that needs no engine: unknown senders and carrier keywords, on real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from channels.base import InboundMessage
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.processing import Processor
from service.settings import Settings
from service.templates import TemplateRenderer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"


@pytest_asyncio.fixture
async def processor(redis_url):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "test-key"})
    client = aioredis.from_url(redis_url)
    await import_file(DEMO, RedisDebtorStore(client, Keys()))
    # Nothing listens here: these paths must not need the engine.
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    yield Processor(settings, client, engine, TemplateRenderer(settings.templates_dir))
    await engine.close()
    await client.aclose()


async def _sent(processor, conversation_id):
    rows = await processor.redis.xrange(processor.keys.transcript(conversation_id))
    entries = [json.loads(fields[b"data"]) for _, fields in rows]
    return [e for e in entries if e.get("direction") == "out"]


@pytest.mark.asyncio
async def test_an_unknown_sender_gets_a_generic_reply_in_their_numbers_language(processor):
    message = InboundMessage("SMunknown1", "sms", "+31687654321", "hoeveel moet ik betalen", time.time())
    await processor.inbound.accept(message, "unknown-31687654321")
    await processor.process_pending("unknown-31687654321")
    sent = await _sent(processor, "unknown-31687654321")
    assert [(m["template"], m["language"]) for m in sent] == [("unknown_sender", "nl")]
    assert await processor.redis.sismember("nudge:unknown_senders", "unknown-31687654321")


@pytest.mark.asyncio
async def test_stop_is_answered_once_without_the_engine_and_suppresses_the_address(processor):
    debtor = await processor.debtors.get("D-EN-001")
    for index, text in enumerate(["STOP", "stop", "Stop."]):
        message = InboundMessage(f"SMstop{index}", "sms", debtor.phone, text, time.time())
        await processor.inbound.accept(message, debtor.id)
    await processor.process_pending(debtor.id)
    sent = await _sent(processor, debtor.id)
    assert [m["template"] for m in sent] == ["optout_confirmation"]
    assert await processor.rules.suppressions.is_suppressed("sms", debtor.phone)
    assert not await processor.rules.suppressions.is_suppressed("email", debtor.email)
