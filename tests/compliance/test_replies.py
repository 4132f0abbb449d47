"""The compliance table, part 2: a debtor's reply -> what must happen, through the whole
product (the stack tests/conftest.py starts: gateway, worker, Rasa engine with the trained
model, action server, Redis). Cases and format: replies.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import yaml

from service.contact_rules import ContactConfig, ContactRules
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from tests.e2e.helpers import DebtorPhone, templates

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]

ROOT = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((Path(__file__).parent / "replies.yml").read_text())
DEBTOR = {"en": "D-EN-007", "nl": "D-NL-004", "de": "D-DE-011"}


@pytest_asyncio.fixture
async def stack(product):
    client = aioredis.from_url(product.settings.redis_url)
    keys = Keys(product.settings.key_prefix)
    store = RedisDebtorStore(client, keys)
    if not await store.get("D-EN-007"):
        await import_file(ROOT / "data" / "demo_portfolio.csv", store)
    rules = ContactRules(client, keys, ContactConfig.load(product.settings.policies_dir),
                         product.settings.pseudonym_key)
    yield product, client, keys, store, rules
    await client.aclose()


async def _reset(product, client, keys: Keys, debtor_id: str) -> None:
    """The debtor starts with no conversation, no state, no opt-outs (ours or the engine's)."""
    await client.delete(keys.conversation(debtor_id), keys.transcript(debtor_id),
                        keys.pending(debtor_id), keys.stop_states(debtor_id),
                        keys.preferences(debtor_id), keys.arrangement(debtor_id),
                        keys.promise(debtor_id), keys.verification(debtor_id),
                        f"{product.settings.engine_key_prefix}:tracker:{debtor_id}")
    await client.zrem(keys.agent_queue, debtor_id)
    async for key in client.scan_iter(match=keys.suppression("*", "*")):
        await client.delete(key)


def _debt_details(debtor) -> list[str]:
    """Strings that would reveal the debt: the amount as any template would write it, the
    reference, the creditor."""
    whole, _, cents = f"{debtor.balance_minor / 100:.2f}".partition(".")
    return [debtor.reference, debtor.creditor, f"{whole}.{cents}", f"{whole},{cents}"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_reply(stack, case):
    product, client, keys, store, rules = stack
    debtor_id = DEBTOR[case["lang"]]
    debtor = await store.get(debtor_id)
    await _reset(product, client, keys, debtor_id)
    expect = case["expect"]
    texts = case["say"] if isinstance(case["say"], list) else [case["say"]]
    sent: list[dict] = []
    understood: list[str] = []
    async with DebtorPhone(product.base_url, debtor_id, case.get("channel", "sms")) as phone:
        for text in texts:
            await phone.send(text)
            entries = await phone.new_entries(until_templates=1, timeout=20, settle=1.0)
            sent += [e for e in entries if e.get("direction") == "out"]
            understood += [e["intent"] for e in entries if e.get("name") == "understood"]

    if "intent" in expect:
        assert understood and understood[-1] == expect["intent"], understood
    if "templates" in expect:
        transcript = await ConversationStore(client, keys).transcript(debtor_id)
        assert templates(sent) == expect["templates"], [entry for _id, entry in transcript]
    states = await rules.stop_states.active(debtor_id)
    if "stop_state" in expect:
        assert expect["stop_state"] in states, states
    if expect.get("no_stop_state"):
        assert not states
    conversation = await ConversationStore(client, keys).get(debtor_id)
    if "escalated" in expect:
        assert (conversation.owner, conversation.reason) == ("agent", expect["escalated"])
        if expect.get("urgent"):
            assert await client.hget(keys.conversation(debtor_id), "priority") == b"0"
    for channel in expect.get("suppressed", []):
        address = debtor.email if channel == "email" else debtor.phone
        assert await rules.suppressions.is_suppressed(channel, address), channel
    for channel in expect.get("not_suppressed", []):
        address = debtor.email if channel == "email" else debtor.phone
        assert not await rules.suppressions.is_suppressed(channel, address), channel
    for message in sent:
        for detail in _debt_details(debtor):
            assert detail not in message["body"], (detail, message["body"])
