"""A manager edits a reminder in the console, another manager approves it, and the next
reminder the running product sends uses the new text — no restart, no retraining.

The whole product runs (the `product` stack); the edit is made in the gateway, the reminder is
rendered and sent by the worker, a separate process that picks up the approved version by
itself. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import time

import pytest
import redis
import redis.asyncio as aioredis

from service.keys import Keys
from service.users import UserError, Users
from tests.browser.test_console_agent_browser import log_in, run_async

pytestmark = [pytest.mark.browser, pytest.mark.engine]

TEMPLATE = "en/reminder_first.soft.j2"   # what the simulator's "Send first reminder" sends
DEBTOR = "D-EN-010"                      # Chloe Redfern; no other test writes to her
PASSWORD = "console manager test password"
NEW_LINE = "Hi, this is {{ company }}. A quick, friendly note about your account"
WAIT = 45_000


async def prepare(settings) -> None:
    from service.debtor_store import RedisDebtorStore
    from service.importer import import_file
    from tests.conftest import ROOT

    client = aioredis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    try:
        await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, keys))
        await client.delete(keys.conversation(DEBTOR), keys.transcript(DEBTOR),
                            keys.contact_log(DEBTOR, "sms"), keys.template_versions(TEMPLATE))
        await client.hdel(keys.template_overrides, TEMPLATE)
        await client.hdel(keys.template_live, TEMPLATE)
        await client.incr(keys.template_generation)
        users = Users(client, keys)
        for name in ("maria", "max"):
            try:
                await users.add(name, "manager", PASSWORD)
            except UserError:
                await users.set_password(name, PASSWORD)
    finally:
        await client.aclose()


def sent_reminders(settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        import json
        rows = client.xrange(Keys(settings.key_prefix).transcript(DEBTOR))
        return [json.loads(fields[b"data"])["body"] for _, fields in rows
                if json.loads(fields[b"data"]).get("template") == "reminder_first"]
    finally:
        client.close()


def test_manager_edits_another_approves_and_the_next_reminder_uses_it(product, chromium, artifacts):
    run_async(prepare(product.settings))
    shots = artifacts / "console"
    shots.mkdir(exist_ok=True)
    base = product.base_url

    # maria edits the first line of the soft first reminder
    maria_context = chromium.new_context(viewport={"width": 1360, "height": 1000})
    maria = maria_context.new_page()
    log_in(maria, base, "maria", PASSWORD)
    maria.goto(f"{base}/console/templates/{TEMPLATE}")
    text = maria.input_value("#text")
    old_line = [line for line in text.splitlines() if line.startswith("Hi{% if first_name %}")][0]
    maria.fill("#text", text.replace(old_line, NEW_LINE + ". We're here to help, so just reply "
                                                        "whenever it suits you."))
    # the preview follows the draft, with a sample debtor of the chosen segment
    maria.wait_for_selector("#preview-body:has-text('A quick, friendly note')", timeout=10_000)
    maria.fill("#note", "friendlier opening")
    maria.click("#propose")
    maria.wait_for_selector("#history tr[data-number='1'] .badge.status-pending", timeout=15_000)
    # her own edit offers her no Approve button
    own_row = maria.locator("#history tr[data-number='1']")
    assert "another person approves" in own_row.inner_text()
    assert own_row.locator("button[data-action='approve']").count() == 0
    maria.screenshot(path=str(shots / "editor-proposed.png"), full_page=True)

    # before approval, reminders still use the live text
    debtor = chromium.new_page()
    debtor.goto(f"{base}/simulator")
    debtor.wait_for_selector(f"#debtor-select option[value='{DEBTOR}']", state="attached")
    debtor.select_option("#debtor-select", DEBTOR)
    debtor.select_option("#channel-select", "sms")

    # max approves it
    max_context = chromium.new_context(viewport={"width": 1360, "height": 1000})
    reviewer = max_context.new_page()
    log_in(reviewer, base, "max", PASSWORD)
    reviewer.goto(f"{base}/console/templates/{TEMPLATE}")
    reviewer.click("#history tr[data-number='1'] button[data-action='diff']")
    reviewer.wait_for_selector("#diff .add:has-text('A quick, friendly note')")
    reviewer.screenshot(path=str(shots / "editor-diff.png"), full_page=True)
    reviewer.once("dialog", lambda dialog: dialog.accept())
    reviewer.click("#history tr[data-number='1'] button[data-action='approve']")
    reviewer.wait_for_selector("#history tr[data-number='1'] .badge.status-live", timeout=15_000)

    # the next reminder, rendered by the worker (another process), has the new words
    debtor.click("#remind-button")
    deadline = time.monotonic() + WAIT / 1000
    while time.monotonic() < deadline and not sent_reminders(product.settings):
        time.sleep(0.3)
    bodies = sent_reminders(product.settings)
    assert bodies and bodies[-1].startswith("Hi, this is Nudge Collections. A quick, friendly note")
    debtor.wait_for_selector(".msg-out .msg-body:has-text('A quick, friendly note')", timeout=WAIT)
    debtor.screenshot(path=str(shots / "reminder-with-new-text.png"), full_page=True)

    # and a rollback puts the file's text back, again live
    reviewer.goto(f"{base}/console/templates/{TEMPLATE}")
    reviewer.once("dialog", lambda dialog: dialog.accept())
    reviewer.click("#history tr[data-number='0'] button[data-action='rollback']")
    reviewer.wait_for_selector("#history tr[data-number='2']", timeout=15_000)
    assert "rollback to v0" in reviewer.inner_text("#history tr[data-number='2']")

    # a manager also reads the results
    reviewer.goto(f"{base}/console/dashboard")
    reviewer.wait_for_selector("svg[role=img]")
    reviewer.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    for context in (maria_context, max_context):
        context.close()
    debtor.close()
