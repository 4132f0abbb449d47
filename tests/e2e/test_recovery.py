"""Nothing lost, nothing sent twice: a worker killed mid-conversation, and a crash between
the engine's answer and our record of it."""

from __future__ import annotations

import os
import signal
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
from service.templates import TemplateRenderer
from service.understanding import understand
from tests.e2e.helpers import DebtorPhone, templates
from tests.e2e.test_conversation import _reset

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"


@pytest_asyncio.fixture
async def redis_client(product):
    client = aioredis.from_url(product.settings.redis_url)
    report = await import_file(DEMO, RedisDebtorStore(client, Keys(product.settings.key_prefix)))
    assert not report.errors
    yield client
    await client.aclose()


async def _outbound_ids(client, debtor_id: str, keys: Keys) -> list[str]:
    import json

    rows = await client.xrange(keys.transcript(debtor_id))
    entries = [json.loads(fields[b"data"]) for _, fields in rows]
    return [e["message_id"] for e in entries if e.get("direction") == "out"]


async def test_worker_killed_mid_conversation_loses_nothing_and_sends_nothing_twice(product, redis_client):
    debtor_id = "D-NL-003"
    await _reset(product, debtor_id)
    keys = Keys(product.settings.key_prefix)
    async with DebtorPhone(product.base_url, debtor_id, "sms") as phone:
        assert templates(await phone.say("hoi")) == ["greet_reply"]

        # Kill the worker without warning, then keep writing while no worker runs.
        worker = product.stack.child("worker")
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(10)
        sent_while_down = [await phone.send(text) for text in
                           ("bedankt", "hallo", "doei")]
        time.sleep(1)
        product.stack.start_worker("worker")

        entries = await phone.new_entries(until_templates=3, timeout=60, settle=3.0)
        replies = [e for e in entries if e.get("direction") == "out"]
        # Every reply answers one of the messages, in the order they were written.
        assert [r["message_id"].rsplit(":", 1)[0] for r in replies] == sent_while_down
        assert templates(replies) == ["thank_reply", "greet_reply", "goodbye_reply"]

    ids = await _outbound_ids(redis_client, debtor_id, keys)
    assert len(ids) == len(set(ids))
    assert not await redis_client.llen(keys.pending(debtor_id))


async def test_crash_after_the_engine_answered_recovers_the_answer_from_the_tracker(product, redis_client):
    """The worker sent a reply to the engine and died before recording the answer: the retry
    must take the answer from the engine's tracker, not send the reply to the engine again."""
    debtor_id = "D-DE-002"
    await _reset(product, debtor_id)
    settings, keys = product.settings, Keys(product.settings.key_prefix)
    async with EngineClient(settings.engine_url, settings.engine_token) as engine:
        processor = Processor(settings, redis_client, engine, TemplateRenderer(settings.templates_dir))
        debtor = await processor.debtors.get(debtor_id)
        message = InboundMessage("SMcrash0001", "sms", debtor.phone, "hallo, guten tag", time.time())
        assert await processor.inbound.accept(message, debtor_id)

        # What the dead worker did before it died: understood, marked, sent to the engine.
        understanding = await understand(message.body, "de", engine, today=debtor.due_date)
        await processor.inbound.update(message.message_id, engine_sent="1")
        await engine.send(debtor_id, understanding.engine_message(),
                          {"message_id": message.message_id, "language": "de", "channel": "sms"})

        # The retry.
        await processor.process_pending(debtor_id)
        tracker = await engine.tracker(debtor_id)

    user_turns = [e for e in tracker["events"] if e.get("event") == "user"
                  and (e.get("metadata") or {}).get("message_id") == "SMcrash0001"]
    assert len(user_turns) == 1                                     # not sent to the engine twice
    ids = await _outbound_ids(redis_client, debtor_id, keys)
    assert ids == ["SMcrash0001:0"]                                 # the answer went out, once
    state = await redis_client.hget(keys.inbound("SMcrash0001"), "state")
    assert state == b"done"
