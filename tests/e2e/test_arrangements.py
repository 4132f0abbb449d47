"""Negotiation through the whole product (gateway → worker → engine → actions → send path), in
three languages, across creditors' policies (policies/arrangements.yml) and segments; then
paying: a signed payment webhook, the receipt, the events the creditor's system receives."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.core.arrangement_lifecycle import Arrangement
from service.agent import AgentDesk
from service.arrangements import ArrangementBook
from service.business_events import BusinessEvents
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from service.signatures import HEADER, sign
from tests.e2e.helpers import DebtorPhone, templates

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"
BIRTH = {"en": "%d-%m-%Y", "nl": "%d-%m-%Y", "de": "%d.%m.%Y"}


@pytest_asyncio.fixture
async def portfolio(product):
    client = aioredis.from_url(product.settings.redis_url)
    keys = Keys(product.settings.key_prefix)
    store = RedisDebtorStore(client, keys)
    assert not (await import_file(DEMO, store)).errors
    yield store, client, keys
    await client.aclose()


async def reset(product, client, keys, debtor_id: str) -> None:
    await client.delete(keys.conversation(debtor_id), keys.transcript(debtor_id),
                        keys.pending(debtor_id), keys.arrangement(debtor_id),
                        keys.verification(debtor_id), keys.stop_states(debtor_id),
                        keys.contact_log(debtor_id, "sms"),
                        f"{product.settings.engine_key_prefix}:tracker:{debtor_id}")
    await client.zrem(keys.agent_queue, debtor_id)
    await client.zrem(keys.arrangement_due, debtor_id)


async def current(client, keys, debtor_id) -> Arrangement | None:
    return await ArrangementBook(client, keys).current(debtor_id)


async def verify(phone, debtor, language):
    """Answer the date of birth; returns the bot's answer to what was asked before."""
    return await phone.say(debtor.date_of_birth.strftime(BIRTH[language]))


# --- the negotiation table ---------------------------------------------------------------------
async def test_en_plan_ladder_then_counter_below_policy_gets_the_nearest_plan(product, portfolio):
    """Northwind Mobile, segment mid: ladder 1-2-4-6, at most 6 instalments of at least 20."""
    store, client, keys = portfolio
    debtor = await store.get("D-EN-003")
    await reset(product, client, keys, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "sms") as phone:
        assert templates(await phone.say("can i pay in instalments")) == ["ask_verification"]
        first = await verify(phone, debtor, "en")
        assert templates(first) == ["offer_plan"]
        assert len((await current(client, keys, debtor.id)).instalments) == 2
        second = await phone.say("no")
        assert templates(second) == ["offer_plan"]
        assert len((await current(client, keys, debtor.id)).instalments) == 4
        nearest = await phone.say("i can only do £20 a month")
        assert templates(nearest) == ["offer_plan"]
        proposal = await current(client, keys, debtor.id)
        # 171.97 at 20 a month is 9 payments; the policy allows 6: the nearest plan inside it.
        assert proposal.state == "proposed" and len(proposal.instalments) == 6
        assert templates(await phone.say("ok yes")) == ["plan_confirmed"]
    accepted = await current(client, keys, debtor.id)
    assert accepted.state == "accepted"
    assert sum(i.amount_minor for i in accepted.instalments) == debtor.balance_minor
    types = [e["type"] for _, e in await BusinessEvents(client, keys).read(count=10_000)
             if e["debtor_id"] == debtor.id]
    assert types.count("offer_made") == 3 and "counter_offer" in types
    assert types[-1] == "arrangement_accepted"


async def test_nl_settlement_discount_steps_up_once_then_is_accepted(product, portfolio):
    """Dijkstra Krediet allows a settlement at 90+ days past due: 10 %, at most 20 %."""
    store, client, keys = portfolio
    debtor = await store.get("D-NL-002")
    await reset(product, client, keys, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "email") as phone:   # no phone number
        assert templates(await phone.say("kan ik een schikking treffen")) == ["ask_verification"]
        offer = await verify(phone, debtor, "nl")
        assert templates(offer) == ["offer_settlement"]
        first = await current(client, keys, debtor.id)
        assert (first.kind, first.total_minor) == ("settlement", debtor.balance_minor * 90 // 100)
        assert templates(await phone.say("nee")) == ["offer_settlement"]
        better = await current(client, keys, debtor.id)
        assert first.total_minor > better.total_minor >= debtor.balance_minor * 80 // 100
        assert templates(await phone.say("ja graag")) == ["settlement_confirmed"]
    assert (await current(client, keys, debtor.id)).state == "accepted"


async def test_de_two_step_verification_then_a_counter_inside_policy_is_agreed(product, portfolio):
    """Elbtal Kredit asks date of birth and postcode; 50 a month is inside its policy."""
    store, client, keys = portfolio
    debtor = await store.get("D-DE-004")
    await reset(product, client, keys, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "email") as phone:
        assert templates(await phone.say("Kann ich in Raten zahlen?")) == ["ask_verification"]
        postcode = await verify(phone, debtor, "de")
        assert templates(postcode) == ["ask_verification"] and "Postleitzahl" in postcode[0]["body"]
        assert templates(await phone.say(debtor.postcode)) == ["offer_plan"]
        agreed = await phone.say("Ich kann 50 Euro im Monat zahlen")
        assert templates(agreed) == ["offer_plan"]
        proposal = await current(client, keys, debtor.id)
        # 516.26 at 50 a month: ten of 50 and a last one of 16.26 (the last absorbs the rest)
        assert [i.amount_minor for i in proposal.instalments] == [5000] * 10 + [1626]
        assert templates(await phone.say("ja, einverstanden")) == ["plan_confirmed"]


async def test_en_an_offer_far_outside_policy_goes_to_an_agent_with_a_summary(product, portfolio):
    store, client, keys = portfolio
    debtor = await store.get("D-EN-007")   # Brightwater Energy: at least 36.42 a month here
    await reset(product, client, keys, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "sms") as phone:
        assert templates(await phone.say("i can pay £5 a month")) == ["ask_verification"]
        handed = await verify(phone, debtor, "en")
        assert templates(handed) == ["handoff"]
    state = await ConversationStore(client, keys).get(debtor.id)
    assert (state.owner, state.reason) == ("agent", "negotiation")
    summary = [e for _, e in await ConversationStore(client, keys).transcript(debtor.id)
               if e.get("name") == "negotiation_summary"]
    assert summary and summary[0]["reason"] == "far_outside_policy"
    assert summary[0]["summary"]["asks"], summary


async def test_nl_hardship_puts_the_most_affordable_plan_first(product, portfolio):
    store, client, keys = portfolio
    debtor = await store.get("D-NL-006")   # Polderlicht Energie: the default policy, 12 at most
    await reset(product, client, keys, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "whatsapp") as phone:
        told = await phone.say("ik ben mijn baan kwijt en kan de rekening niet betalen")
        assert templates(told) == ["handoff"]
        async with AgentDesk.connect(product.settings) as desk:
            await desk.conversations.claim(debtor.id, "alice")
            await desk.processor.rules.stop_states.lift(debtor.id, "hardship", by="alice",
                                                        role="agent", note="talked it through")
            await desk.hand_back(debtor.id, "alice")
        await phone.new_entries(until_templates=0, timeout=1)
        assert templates(await phone.say("kan ik in termijnen betalen")) == ["ask_verification"]
        offer = await verify(phone, debtor, "nl")
        assert templates(offer) == ["offer_plan"]
    proposal = await current(client, keys, debtor.id)
    assert len(proposal.instalments) == 12 and proposal.frequency == "monthly"


async def test_en_promise_to_pay_then_a_signed_payment_keeps_it(product, portfolio):
    store, client, keys = portfolio
    debtor = await store.get("D-EN-005")
    await reset(product, client, keys, debtor.id)
    async with DebtorPhone(product.base_url, debtor.id, "sms") as phone:
        assert templates(await phone.say("i will pay it all on friday")) == ["ask_verification"]
        promised = await verify(phone, debtor, "en")
        assert templates(promised) == ["promise_confirmed"]
        promise = await current(client, keys, debtor.id)
        assert promise.kind == "promise" and promise.state == "accepted"

        body = json.dumps({"payment_id": f"PAY-{time.time_ns()}", "reference": debtor.reference,
                           "amount": str(debtor.balance), "currency": debtor.currency,
                           "paid_at": date.today().isoformat() + "T10:00:00Z"}).encode()
        secret = product.env["NUDGE_PAYMENT_WEBHOOK_SECRET"]
        async with aiohttp.ClientSession() as http:
            url = f"{product.base_url}/payments/webhook"
            forged = await http.post(url, data=body, headers={HEADER: sign("wrong", body, time.time())})
            assert forged.status == 403
            answers = []
            for _ in range(2):
                async with http.post(url, data=body,
                                     headers={HEADER: sign(secret, body, time.time())}) as r:
                    answers.append((r.status, (await r.json())["status"]))
            assert answers == [(200, "recorded"), (200, "duplicate")]
        receipt = [e for e in await phone.new_entries(until_templates=1, timeout=30)
                   if e.get("direction") == "out"]
        assert templates(receipt) == ["arrangement_completed"]
    assert (await current(client, keys, debtor.id)).state == "completed"
    assert (await store.get(debtor.id)).balance_minor == 0

    # The creditor's system (the sandbox receiver) gets the events, signed, each once.
    receiver = product.env["NUDGE_CREDITOR_EVENTS_URL"].rsplit("/", 1)[0] + "/_fake/events"
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(receiver) as response:
                received = await response.json()
            events = received.get("events", received) if isinstance(received, dict) else received
            mine = [e["type"] for e in events if e.get("debtor_id") == debtor.id]
            if "promise_kept" in mine or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert {"promise_made", "payment_received", "promise_kept"} <= set(mine), mine
