"""The compliance table, part 1: situations (time, state, kind of message) -> the contact
rules' verdict, through the real send path on a real Redis with a controllable clock.

Each case is in situations.yml; see its header for the format. A deferred message must be
kept (never dropped) and released at the right moment; a refused one must leave a reason in
the transcript; a sent one must reach the outbox exactly once.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import yaml

from bot.core.debtors import Debtor
from service.contact_rules import ContactConfig
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.processing import Processor
from service.sending import PlannedMessage
from service.settings import Settings
from service.suppression import address_digest
from service.templates import TemplateRenderer

ROOT = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((Path(__file__).parent / "situations.yml").read_text())


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest_asyncio.fixture
async def world(redis_url):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "compliance"})
    client = aioredis.from_url(redis_url)
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, Keys()))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)  # never called here
    yield settings, client, engine
    await engine.close()
    await client.aclose()


def _processor(settings, client, engine, party: str | None) -> Processor:
    config = ContactConfig.load(settings.policies_dir)
    if party:
        config = dataclasses.replace(
            config, policy=dataclasses.replace(config.policy, creditor_party=party))
    return Processor(settings, client, engine, TemplateRenderer(settings.templates_dir), config)


async def _debtor(processor: Processor, case: dict) -> Debtor:
    debtor = await processor.debtors.get(case["base"])
    assert debtor is not None, case["base"]
    if case.get("with"):
        debtor = dataclasses.replace(debtor, **case["with"])
        if "phone" in case["with"] and not case["with"]["phone"]:
            debtor = dataclasses.replace(debtor, phone=None)
        await processor.debtors.upsert(debtor, take_over_from=[case["base"]])
    return debtor


async def _given(processor: Processor, debtor: Debtor, case: dict, channel: str) -> None:
    given = case.get("given") or {}
    keys, redis, rules = processor.keys, processor.redis, processor.rules
    for state in given.get("stop_states", []):
        await rules.stop_states.set(debtor.id, state, source="test")
    for suppressed in given.get("suppressed", []):
        address = debtor.email if suppressed == "email" else debtor.phone
        await rules.suppressions.suppress(suppressed, address, "test", whatsapp_phone=debtor.phone)
    if given.get("wrong_number"):
        wrong = debtor.email if given["wrong_number"] == "email" else debtor.phone
        await rules.stop_states.set(debtor.id, "wrong_number", source="test",
                                    address_digest_=address_digest(processor.settings.pseudonym_key, wrong))
    sent_channel = case.get("sent_channel", channel)
    for index, at in enumerate(given.get("sent", [])):
        await redis.zadd(keys.contact_log(debtor.id, sent_channel), {f"earlier-{index}": _utc(at).timestamp()})
    if given.get("last_inbound"):
        await redis.hset(keys.conversation(debtor.id), "last_inbound", _utc(given["last_inbound"]).timestamp())
    if given.get("prefs"):
        await redis.hset(keys.preferences(debtor.id), mapping=given["prefs"])


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_situation(world, case):
    settings, client, engine = world
    processor = _processor(settings, client, engine, (case.get("given") or {}).get("party"))
    debtor = await _debtor(processor, case)
    channel = case.get("channel", "sms")
    await _given(processor, debtor, case, channel)
    address = debtor.email if channel == "email" else debtor.phone
    now = _utc(case["at"])
    template = "agent_message" if case["kind"] == "agent" else "reminder_first"
    plan = PlannedMessage(f"case-{case['id']}", debtor.id, channel, address, template,
                          case["kind"], {"text": "Hello"} if case["kind"] == "agent" else {})

    decision = await processor.sender.send(plan, now=now)

    expect = case["expect"]
    assert decision.verdict == expect["verdict"], decision.detail
    if "reason" in expect:
        assert decision.reason == expect["reason"], decision.detail
    if "until" in expect:
        assert decision.until == _utc(expect["until"]), decision.detail
    sent = await client.exists(processor.keys.outbound(plan.message_id))
    deferred = await client.zscore(processor.keys.deferred, plan.message_id)
    if decision.verdict == "send":
        assert sent and deferred is None
    elif decision.verdict == "defer":
        # Kept, not dropped: nothing goes before its time, and it goes at its time.
        assert not sent and deferred == decision.until.timestamp()
        events = [json.loads(fields[b"data"]) for _id, fields in
                  await client.xrange(processor.keys.transcript(debtor.id))]
        assert [e["kind"] for e in events if e.get("name") == "deferred"] == ["event"]
        await processor.sender.release_due(decision.until - timedelta(seconds=1))
        assert not await client.exists(processor.keys.outbound(plan.message_id))
        if decision.reason == "outside_contact_window":
            await processor.sender.release_due(decision.until)
            assert await client.exists(processor.keys.outbound(plan.message_id))
            assert await client.zscore(processor.keys.deferred, plan.message_id) is None
    else:
        assert not sent and deferred is None
        events = [json.loads(fields[b"data"]) for _id, fields in
                  await client.xrange(processor.keys.transcript(debtor.id))]
        assert any(e.get("kind") == "event" and e.get("name") == "refused"
                   and e.get("reason") == decision.reason for e in events)
