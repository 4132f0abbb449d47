"""The send path's handling of templates that fail: a broken template is kept and retried
(it can be fixed), a message the lint refuses for its own content is refused with the reason."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.processing import Processor
from service.sending import TEMPLATE_RETRY, PlannedMessage
from service.settings import Settings
from service.templates import TemplateRenderer

ROOT = Path(__file__).resolve().parents[2]
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


@pytest_asyncio.fixture
async def processor(redis_url, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "message_templates", templates)
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "sending",
                                  "NUDGE_TEMPLATES_DIR": str(templates)})
    client = aioredis.from_url(redis_url)
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, Keys()))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    yield Processor(settings, client, engine, TemplateRenderer(templates))
    await engine.close()
    await client.aclose()


@pytest.mark.asyncio
async def test_an_agent_typing_a_threat_is_refused_with_the_reason(processor):
    debtor = await processor.debtors.get("D-EN-001")
    plan = PlannedMessage("agent-threat", debtor.id, "sms", debtor.phone, "agent_message", "agent",
                          {"text": "Pay today or the police will come for you."})
    decision = await processor.sender.send(plan, now=MONDAY_10)
    assert (decision.verdict, decision.reason) == ("refuse", "lint:threat_phrase")
    assert not await processor.redis.exists(processor.keys.outbound("agent-threat"))


@pytest.mark.asyncio
async def test_a_broken_template_is_kept_and_goes_once_fixed(processor):
    debtor = await processor.debtors.get("D-EN-001")
    path = processor.settings.templates_dir / "en" / "help_reply.j2"
    good = path.read_text()
    path.write_text("{{ not_a_variable_anybody_passes }}\n" + good)
    plan = PlannedMessage("broken-1", debtor.id, "sms", debtor.phone, "help_reply", "confirmation")
    decision = await processor.sender.send(plan, now=MONDAY_10)
    assert (decision.verdict, decision.reason) == ("defer", "template_invalid")
    assert decision.until == MONDAY_10 + TEMPLATE_RETRY

    path.write_text(good)  # a manager fixes it
    await processor.sender.release_due(MONDAY_10 + TEMPLATE_RETRY)
    assert await processor.redis.exists(processor.keys.outbound("broken-1"))
    assert await processor.redis.zscore(processor.keys.deferred, "broken-1") is None


@pytest.mark.asyncio
async def test_a_message_sent_once_is_never_sent_again(processor):
    debtor = await processor.debtors.get("D-EN-001")
    plan = PlannedMessage("once-1", debtor.id, "sms", debtor.phone, "help_reply", "confirmation")
    for _ in range(3):
        await processor.sender.send(plan, now=MONDAY_10 + timedelta(minutes=1))
    assert await processor.redis.xlen(processor.keys.outbox) == 1
