"""An agent takes over a conversation in the console while the debtor writes in the simulator.

The whole product runs (the `product` stack: engine with the trained model, actions, gateway,
worker, fake Twilio); two browser pages in Debian's chromium: the debtor's simulator and the
agent's console. Nothing is reloaded by hand: the inbox and the transcript update live.
Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from service.users import UserError, Users
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.engine]

DEBTOR = "D-EN-009"            # Thomas Kilbride, Brightwater Energy, prefers SMS; no other test uses him
PASSWORD = "console browser test password"
WAIT = 45_000                  # ms: a message goes gateway -> worker -> engine -> worker -> fake Twilio


def run_async(coroutine):
    """Playwright's sync API owns this thread's event loop; async set-up runs in its own."""
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    if "error" in result:
        raise result["error"]
    return result.get("value")


async def prepare(settings) -> None:
    client = aioredis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    try:
        await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, keys))
        await client.delete(keys.conversation(DEBTOR), keys.transcript(DEBTOR), keys.pending(DEBTOR),
                            keys.arrangement(DEBTOR), keys.stop_states(DEBTOR),
                            keys.verification(DEBTOR), keys.engine_outbox(DEBTOR),
                            keys.contact_log(DEBTOR, "sms"),
                            f"{settings.engine_key_prefix}:tracker:{DEBTOR}")
        await client.zrem(keys.agent_queue, DEBTOR)
        users = Users(client, keys)
        try:
            await users.add("alice", "agent", PASSWORD)
        except UserError:
            await users.set_password("alice", PASSWORD)
    finally:
        await client.aclose()


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/console/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def debtor_says(page, text: str) -> None:
    page.fill("#composer", text)
    page.click("#send-button")


def test_agent_claims_replies_and_hands_back_while_the_debtor_writes(product, chromium, artifacts):
    run_async(prepare(product.settings))
    shots = artifacts / "console"
    shots.mkdir(exist_ok=True)
    base = product.base_url

    agent_context = chromium.new_context(viewport={"width": 1360, "height": 900})
    agent = agent_context.new_page()
    log_in(agent, base, "alice", PASSWORD)
    agent.wait_for_url(f"{base}/console/inbox")
    agent.wait_for_selector("#live.on", timeout=10_000)         # the inbox's live stream is open

    debtor_context = chromium.new_context(viewport={"width": 1200, "height": 900})
    debtor = debtor_context.new_page()
    debtor.goto(f"{base}/simulator")
    debtor.wait_for_selector(f"#debtor-select option[value='{DEBTOR}']", state="attached")
    debtor.select_option("#debtor-select", DEBTOR)
    debtor.select_option("#channel-select", "sms")
    debtor.wait_for_selector("#composer:not([disabled])")
    debtor_says(debtor, "can I talk to a real person")
    debtor.wait_for_selector("#agent-banner:not([hidden])", timeout=WAIT)

    # the hand-off reaches the open inbox by itself
    row = agent.wait_for_selector(f"#queue tr[data-id='{DEBTOR}']", timeout=WAIT)
    assert "request human" in row.inner_text()
    agent.screenshot(path=str(shots / "agent-inbox.png"), full_page=True)

    row.query_selector("button.claim").click()
    agent.wait_for_url(f"{base}/console/conversations/{DEBTOR}")
    agent.wait_for_selector("#reply-form:not([hidden])")
    agent.wait_for_selector("#transcript li.in .bubble:has-text('real person')")
    # the agent sees the case, with the phone number masked
    case = agent.inner_text("#case")
    assert "Brightwater Energy" in case and "123009" not in case

    # the debtor writes again: it appears in the agent's transcript without a reload
    debtor_says(debtor, "hello? is anyone there")
    agent.wait_for_selector("#transcript li.in .bubble:has-text('is anyone there')", timeout=WAIT)

    # the agent answers; the counter shows what it costs as SMS while typing
    agent.fill("#reply", "Hello Thomas, this is Alice. I can help you with your energy bill today.")
    agent.wait_for_selector("#counter:has-text('1 SMS segment')")
    agent.click("#send")
    agent.wait_for_selector("#reply-result.ok")
    agent.wait_for_selector("#transcript li.out.agent .bubble:has-text('this is Alice')")
    debtor.wait_for_selector(".msg-out .msg-body:has-text('this is Alice')", timeout=WAIT)
    # the fake Twilio's status callbacks move the message's delivery state, live
    agent.wait_for_selector("#transcript li.out.agent .delivery:text-matches('delivered|read')", timeout=WAIT)
    agent.screenshot(path=str(shots / "agent-conversation.png"), full_page=True)

    # hand back: the bot answers the debtor's next message
    agent.click("#handback")
    agent.wait_for_selector("#state:has-text('The bot is handling')")
    bot_messages = debtor.locator(".msg-out").count()
    debtor_says(debtor, "how much do i owe")
    debtor.wait_for_function(
        f"document.querySelectorAll('.msg-out').length > {bot_messages}", timeout=WAIT)
    debtor.screenshot(path=str(shots / "debtor-simulator.png"), full_page=True)

    # the engine heard the agent: its tracker holds the agent's turn and the hand-back
    client = redis.Redis.from_url(product.settings.redis_url)
    try:
        assert client.llen(Keys(product.settings.key_prefix).engine_outbox(DEBTOR)) == 0
    finally:
        client.close()
    agent_context.close()
    debtor_context.close()
