"""Whole conversations through the real product: gateway → queue → worker → engine →
action server → templates → outbox, in each language (tests/conftest.py starts the stack)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.agent import AgentDesk
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from tests.e2e.helpers import DebtorPhone, templates

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"

# Per language: the debtor, and what they say at each step of the happy path.
SCRIPTS = {
    "en": ("D-EN-001", "how much do i owe", "can i pay in 3 monthly instalments", "yes thats fine"),
    "nl": ("D-NL-001", "hoeveel moet ik nog betalen", "kan ik in 3 termijnen betalen per maand", "ja prima"),
    "de": ("D-DE-001", "wie viel schulde ich euch", "kann ich in 3 raten zahlen monatlich", "ja passt"),
}
BIRTH_DATE_FORMAT = {"en": "%d-%m-%Y", "nl": "%d-%m-%Y", "de": "%d.%m.%Y"}


@pytest_asyncio.fixture
async def portfolio(product):
    client = aioredis.from_url(product.settings.redis_url)
    store = RedisDebtorStore(client, Keys(product.settings.key_prefix))
    report = await import_file(DEMO, store)
    assert not report.errors
    yield store
    await client.aclose()


async def _reset(product, debtor_id: str) -> None:
    """Each test starts its debtor with no conversation: our state and the engine's tracker."""
    client = aioredis.from_url(product.settings.redis_url)
    keys = Keys(product.settings.key_prefix)
    await client.delete(keys.conversation(debtor_id), keys.transcript(debtor_id),
                        keys.pending(debtor_id), keys.arrangement(debtor_id), keys.promise(debtor_id),
                        keys.verification(debtor_id),
                        keys.stop_states(debtor_id), keys.contact_log(debtor_id, "sms"),
                        f"{product.settings.engine_key_prefix}:tracker:{debtor_id}")
    await client.zrem(keys.agent_queue, debtor_id)
    async for key in client.scan_iter(match=keys.suppression("*", "*")):
        await client.delete(key)
    await client.aclose()


@pytest.mark.parametrize("language", ["en", "nl", "de"])
async def test_reminder_verification_balance_plan_accepted(product, portfolio, language):
    debtor_id, ask_balance, ask_plan, yes = SCRIPTS[language]
    await _reset(product, debtor_id)
    debtor = await portfolio.get(debtor_id)
    channel = "sms" if language == "en" else ("whatsapp" if language == "nl" else "email")
    async with DebtorPhone(product.base_url, debtor_id, channel) as phone:
        await phone.remind()
        reminder = [e for e in await phone.new_entries() if e.get("direction") == "out"]
        assert templates(reminder) == ["reminder_first"]
        assert debtor.creditor not in reminder[0]["body"]          # nothing before verification
        if channel == "email":
            assert reminder[0]["subject"]

        asked = await phone.say(ask_balance)
        assert templates(asked) == ["ask_verification"]
        assert str(debtor.balance) not in asked[0]["body"]

        verified = await phone.say(debtor.date_of_birth.strftime(BIRTH_DATE_FORMAT[language]))
        if language == "de":
            # Elbtal Kredit asks for the postcode too (policies/arrangements.yml)
            assert templates(verified) == ["ask_verification"]
            verified = await phone.say(debtor.postcode)
        assert templates(verified) == ["balance"]
        assert debtor.reference in verified[0]["body"]

        offer = await phone.say(ask_plan)
        assert templates(offer) == ["offer_plan"]

        confirmed = await phone.say(yes)
        assert templates(confirmed) == ["plan_confirmed"]

        understood = [e for e in await phone.transcript() if e.get("name") == "understood"]
        intents = [u["intent"] for u in understood]
        assert intents[0] == "ask_balance" and intents[-1] == "affirm"
        # "in 3 instalments" is a plan request or a counter-offer of a count: both offer a plan.
        assert intents[-2] in ("request_payment_plan", "propose_amount")
        assert understood[-2]["entities"].get("installments") == 3

    client = aioredis.from_url(product.settings.redis_url)
    arrangement = json.loads(await client.hget(Keys(product.settings.key_prefix).arrangement(debtor_id),
                                               "current"))
    await client.aclose()
    assert arrangement["state"] == "accepted" and len(arrangement["instalments"]) == 3
    amounts = [i["amount_minor"] for i in arrangement["instalments"]]
    assert sum(amounts) == debtor.balance_minor                     # the schedule sums exactly


async def test_wrong_verification_answers_lock_and_escalate(product, portfolio):
    await _reset(product, "D-EN-002")
    async with DebtorPhone(product.base_url, "D-EN-002", "sms") as phone:
        assert templates(await phone.say("whats my balance")) == ["ask_verification"]
        assert templates(await phone.say("01-01-1900")) == ["verification_retry"]
        assert templates(await phone.say("02-02-1901")) == ["verification_retry"]
        locked = await phone.say("03-03-1902")
        assert templates(locked) == ["verification_locked"]
    state = await _state(product, "D-EN-002")
    assert state.owner == "agent" and state.reason == "verification"


async def _state(product, debtor_id):
    client = aioredis.from_url(product.settings.redis_url)
    try:
        return await ConversationStore(client, Keys(product.settings.key_prefix)).get(debtor_id)
    finally:
        await client.aclose()


async def test_handoff_silences_the_bot_and_hand_back_resumes_it(product, portfolio):
    debtor_id = "D-EN-003"
    await _reset(product, debtor_id)
    async with DebtorPhone(product.base_url, debtor_id, "sms") as phone:
        ack = await phone.say("this is not my debt, i never had a contract with you")
        assert templates(ack) == ["handoff"]
        state = await _state(product, debtor_id)
        assert (state.owner, state.reason) == ("agent", "dispute")

        # While the agent owns it, the bot says nothing.
        await phone.send("hello?? anyone there")
        entries = await phone.new_entries(until_templates=1, timeout=4)
        assert not [e for e in entries if e.get("direction") == "out"]
        assert any(e.get("name") == "for_agent" for e in entries)

        async with AgentDesk.connect(product.settings) as desk:
            await desk.conversations.claim(debtor_id, "alice")
            await desk.reply(debtor_id, "alice", "Hi, this is Alice. I will check the contract.")
            # A dispute is a stop-state: the bot may not take over until a supervisor lifts it.
            with pytest.raises(LookupError, match="stop-state dispute"):
                await desk.hand_back(debtor_id, "alice")
            await desk.processor.rules.stop_states.lift(debtor_id, "dispute", by="sam",
                                                        role="supervisor", note="contract checked")
            await desk.hand_back(debtor_id, "alice")
        agent_message = [e for e in await phone.new_entries() if e.get("direction") == "out"]
        assert agent_message[0]["template"] == "agent_message"

        resumed = await phone.say("how much is it")
        assert templates(resumed) == ["ask_verification"]
    assert (await _state(product, debtor_id)).owner == "bot"


async def test_opt_out_keyword_confirms_once_and_holds_later_messages(product, portfolio):
    debtor_id = "D-EN-004"
    await _reset(product, debtor_id)
    async with DebtorPhone(product.base_url, debtor_id, "sms") as phone:
        assert templates(await phone.say("STOP")) == ["optout_confirmation"]
        await phone.send("Stop")
        await phone.send("what do i owe")
        entries = await phone.new_entries(until_templates=1, timeout=5)
        assert not [e for e in entries if e.get("direction") == "out"]
        assert any(e.get("name") == "refused" and e.get("reason") == "opted_out" for e in entries)
        assert templates(await phone.say("START")) == ["optin_confirmation"]


async def test_duplicate_message_ids_are_processed_once(product, portfolio):
    debtor_id = "D-EN-005"
    await _reset(product, debtor_id)
    async with DebtorPhone(product.base_url, debtor_id, "sms") as phone:
        await asyncio.gather(*(phone.send("hi there", message_id="SMdup0001") for _ in range(5)))
        entries = await phone.new_entries(until_templates=1, settle=2.0)
        assert len([e for e in entries if e.get("direction") == "in"]) == 1
        assert len([e for e in entries if e.get("direction") == "out"]) == 1
