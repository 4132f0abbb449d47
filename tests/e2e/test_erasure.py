"""Erasure through the real product: a debtor talks with the engine (gateway → worker → Rasa →
actions), agrees a plan; then `erase_debtor` and every key of the database, the engine's
tracker and lock store included, is read for anything that identifies them."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from service.privacy import erase_debtor, export_debtor
from service.suppression import SuppressionStore
from tests.e2e.helpers import DebtorPhone, templates
from tests.service.test_privacy import dump_everything, where

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]

DEBTOR = {
    "id": "D-ERASE-E2E", "first_name": "Cornelius", "last_name": "Fairweather",
    "phone": "+447400123999", "email": "c.fairweather@example.net", "language": "en",
    "country": "GB", "date_of_birth": "1958-11-03", "postcode": "KY16 9AJ",
    "reference": "CFB-2026-99881", "creditor": "Hollis & Vane", "balance": "300.00",
    "currency": "GBP", "due_date": "2026-06-01", "age_band": "65+", "product": "retail",
    "payment_history": "late", "preferred_channel": "sms", "whatsapp_opt_in": False,
    "segment": None,
}
IDENTIFIERS = ["D-ERASE-E2E", "+447400123999", "447400123999", "c.fairweather@example.net",
               "Cornelius Fairweather", "Cornelius", "Fairweather", "CFB-2026-99881",
               "1958-11-03", "03-11-1958", "KY16 9AJ"]


@pytest_asyncio.fixture
async def redis_client(product):
    client = aioredis.from_url(product.settings.redis_url)
    yield client
    await client.aclose()


async def _import(product, client, tmp_path) -> None:
    portfolio = tmp_path / "debtor.json"
    portfolio.write_text(json.dumps({"debtors": [DEBTOR]}))
    report = await import_file(portfolio, RedisDebtorStore(client, Keys(product.settings.key_prefix)))
    assert not report.errors


async def _quiet(product, client, timeout: float = 30) -> None:
    """Wait until the worker has nothing queued or running (so nothing writes after we look)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = await client.zrangebyscore(product.settings.queue_name, "-inf", time.time() * 1000)
        # (cron jobs keep their in-progress marker for a while after they ran: not ours)
        running = [k async for k in client.scan_iter(match="arq:in-progress:*")
                   if not k.startswith(b"arq:in-progress:cron:")]
        if not due and not running:
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the worker did not go quiet: queued {due}, running {running}")


async def _reminder_handled(phone: DebtorPhone, timeout: float = 30) -> None:
    """The first reminder went out, or the contact rules deferred it (outside the window)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = await phone.transcript()
        if any(entry.get("template") == "reminder_first" for entry in entries):
            phone.seen |= {entry["id"] for entry in entries}
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the reminder was neither sent nor deferred")


async def test_erasure_after_a_conversation_with_the_engine_leaves_nothing(product, redis_client,
                                                                          tmp_path):
    settings, client = product.settings, redis_client
    await _import(product, client, tmp_path)
    async with DebtorPhone(product.base_url, DEBTOR["id"], "sms") as phone:
        await phone.remind()
        await _reminder_handled(phone)
        assert templates(await phone.say("how much do i owe")) == ["ask_verification"]
        verified = await phone.say("03-11-1958")
        assert templates(verified) == ["balance"] and DEBTOR["reference"] in verified[0]["body"]
        assert templates(await phone.say("can i pay in 3 monthly instalments")) == ["offer_plan"]
        assert templates(await phone.say("yes thats fine")) == ["plan_confirmed"]
    await _quiet(product, client)

    tracker_key = f"{settings.engine_key_prefix}:tracker:{DEBTOR['id']}"
    before = where(await dump_everything(client), IDENTIFIERS)
    # the scanner finds each one before erasure (the names are stored apart, never joined)
    assert set(before) == set(IDENTIFIERS) - {"Cornelius Fairweather"}
    assert tracker_key in before["D-ERASE-E2E"] and tracker_key in before["03-11-1958"]
    assert any(k.startswith("arq:result:") for k in before["D-ERASE-E2E"])

    exported = await export_debtor(client, settings, DEBTOR["id"], actor="carol")
    assert exported["engine_tracker"]["name"] == DEBTOR["id"]
    assert any(e.get("event") == "user" for e in exported["engine_tracker"]["events"])
    assert exported["arrangements"]["current"]["state"] == "accepted"
    assert any(e["type"] == "arrangement_accepted" for e in exported["business_events"])

    report = await erase_debtor(client, settings, DEBTOR["id"], actor="carol",
                                reason="erasure request, e2e")
    assert report.deleted["engine_tracker"] == 1 and report.deleted["outbox_entries"] >= 4
    assert where(await dump_everything(client), IDENTIFIERS) == {}
    assert not await client.exists(tracker_key)
    tombstone = json.loads(await client.get(report.tombstone_key))
    assert len(tombstone["bookkeeping"]["arrangements"][-1]["instalments"]) == 3
    assert tombstone["bookkeeping"]["currency"] == "GBP"

    # The engine kept nothing in memory either: the same person, imported again, starts over.
    await _import(product, client, tmp_path)
    async with DebtorPhone(product.base_url, DEBTOR["id"], "sms") as phone:
        assert templates(await phone.say("how much do i owe")) == ["ask_verification"]
    await _quiet(product, client)
    assert not await SuppressionStore(client, Keys(settings.key_prefix),
                                      settings.pseudonym_key).is_suppressed("sms", DEBTOR["phone"])
    await erase_debtor(client, settings, DEBTOR["id"], actor="carol", reason="clean up")
    assert where(await dump_everything(client), IDENTIFIERS) == {}
