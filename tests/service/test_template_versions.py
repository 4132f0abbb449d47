"""Template versions on a real Redis: propose (checked), four-eyes approval, reject, rollback,
history and diffs, and the send path using an approved text at once, without a restart."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.audit import AuditLog
from service.channel_config import ChannelConfig
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.processing import Processor
from service.sending import PlannedMessage
from service.settings import Settings
from service.template_preview import TemplateName
from service.template_versions import (
    DraftRefused,
    FourEyesError,
    TemplateVersions,
    UnknownTemplate,
    UnknownVersion,
    VersionStateError,
    whatsapp_templates,
)
from service.templates import TemplateRenderer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "message_templates"
HELP = "en/help_reply.j2"
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def edited(name: str = HELP, marker: str = "Edited in the console.") -> str:
    """The file's text with one sentence changed (still passing every check)."""
    text = (TEMPLATES / name).read_text()
    return text.replace("This is the messaging service", f"{marker} This is the messaging service", 1)


@pytest_asyncio.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys("tv")


@pytest.fixture
def versions(redis, keys) -> TemplateVersions:
    return TemplateVersions(redis, keys, TEMPLATES, audit=AuditLog(redis, keys, "secret"))


async def audit_actions(redis, keys) -> list[dict]:
    return [entry for entry in await AuditLog(redis, keys, "secret").entries()]


# --------------------------------------------------------------------------- propose

@pytest.mark.asyncio
async def test_a_checked_draft_is_stored_pending(versions, redis, keys):
    version = await versions.propose(HELP, edited(), "maria", "clearer opening")
    assert (version.number, version.status, version.based_on, version.author) == (1, "pending", 0, "maria")
    history = await versions.history(HELP)
    assert [(v.number, v.status) for v in history] == [(0, "live"), (1, "pending")]
    assert history[0].text == (TEMPLATES / HELP).read_text()
    assert await versions.pending_names() == {HELP}
    assert await versions.overlay() == {}  # nothing live yet
    entries = await audit_actions(redis, keys)
    assert [(e["actor"], e["action"], e["detail"]["template"], e["detail"]["version"])
            for e in entries] == [("maria", "template.propose", HELP, 1)]
    assert "Edited" not in json.dumps(entries)  # never the text


@pytest.mark.asyncio
@pytest.mark.parametrize(("text", "code", "words"), [
    ("Hello {% if x %}\n", "syntax", "syntax error"),
    ("{{ first_name.__class__ }}\n{% include 'en/_footer.j2' %}\n", "syntax", "private"),
    ("This is {{ company }}.\n", "missing_optout", "opt out"),
    ("Pay now or we call the police.\n{% include 'en/_footer.j2' %}\n", "threat_phrase", "police"),
    ("{{ balance_owed }}\n{% include 'en/_footer.j2' %}\n", "undefined_variable", "balance_owed"),
    ("{{ 'x' * 10**9 }}\n{% include 'en/_footer.j2' %}\n", "render", "'*' would make"),
    ("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}\n"
     "{% include 'en/_footer.j2' %}\n", "render", "steps"),
    ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}\n"
     "{% include 'en/_footer.j2' %}\n", "render", "steps"),
    ("Hi. " + "A long message about your account. " * 20 + "\n{% include 'en/_footer.j2' %}\n",
     "sms_segments", "SMS segments"),
])
async def test_a_draft_with_errors_is_refused_with_them_and_nothing_is_stored(
        versions, redis, keys, text, code, words):
    with pytest.raises(DraftRefused) as info:
        await versions.propose(HELP, text, "maria")
    assert code in {issue.code for issue in info.value.issues}, info.value.issues
    assert words in str(info.value)
    assert not await redis.exists(keys.template_versions(HELP))
    assert await versions.pending_names() == set()


@pytest.mark.asyncio
async def test_an_unchanged_text_or_an_unknown_file_is_refused(versions):
    with pytest.raises(DraftRefused, match="the live text"):
        await versions.propose(HELP, (TEMPLATES / HELP).read_text(), "maria")
    for name in ("en/nope.j2", "../secrets.j2", "xx/help_reply.j2", "en/help_reply.txt"):
        with pytest.raises(UnknownTemplate):
            await versions.propose(name, "x", "maria")


@pytest.mark.asyncio
async def test_a_partial_draft_is_checked_through_every_template_using_it(versions):
    footer = "en/_footer.j2"
    text = (TEMPLATES / footer).read_text() + "{{ debt_amount }}\n"
    with pytest.raises(DraftRefused) as info:
        await versions.propose(footer, text, "maria")
    assert {i.code for i in info.value.issues} >= {"undefined_variable"}
    # a partial that makes every SMS that includes it too long
    long = (TEMPLATES / footer).read_text() + "Lots of words here. " * 12 + "\n"
    with pytest.raises(DraftRefused) as info:
        await versions.propose(footer, long, "maria")
    assert any(i.code == "sms_segments" and "as sms" in i.message for i in info.value.issues)


# --------------------------------------------------------------------------- approve

@pytest.mark.asyncio
async def test_four_eyes_the_author_cannot_approve(versions, redis, keys):
    version = await versions.propose(HELP, edited(), "maria")
    with pytest.raises(FourEyesError, match="four eyes: you cannot approve your own edit"):
        await versions.approve(HELP, version.number, "maria")
    assert (await versions.version(HELP, 1)).status == "pending"
    assert await versions.overlay() == {}
    assert (await audit_actions(redis, keys))[-1]["action"] == "template.approve_refused"


@pytest.mark.asyncio
async def test_approval_makes_it_live_atomically(versions, redis, keys):
    text = edited()
    await versions.propose(HELP, text, "maria")
    live = await versions.approve(HELP, 1, "max")
    assert (live.status, live.decided_by) == ("live", "max")
    assert await versions.overlay() == {HELP: text}
    assert await versions.live_number(HELP) == 1
    assert int(await redis.get(keys.template_generation)) == 1
    assert await versions.pending_names() == set()
    assert [(v.number, v.status) for v in await versions.history(HELP)] == [(0, "file"), (1, "live")]
    with pytest.raises(VersionStateError, match="is live, not pending"):
        await versions.approve(HELP, 1, "ada")
    assert [e["action"] for e in await audit_actions(redis, keys)] == [
        "template.propose", "template.approve"]


@pytest.mark.asyncio
async def test_a_draft_whose_base_is_no_longer_live_is_stale(versions):
    await versions.propose(HELP, edited(marker="First."), "maria")
    await versions.propose(HELP, edited(marker="Second."), "max")
    await versions.approve(HELP, 1, "max")
    second = await versions.version(HELP, 2)
    assert second.stale and second.status == "pending"
    assert await versions.pending_names() == {HELP}
    with pytest.raises(VersionStateError, match="propose it again on the live text"):
        await versions.approve(HELP, 2, "maria")
    third = await versions.propose(HELP, edited(marker="Third."), "max")
    assert third.based_on == 1
    await versions.reject(HELP, 2, "max")  # the author withdraws the stale one
    await versions.approve(HELP, 3, "maria")
    assert (await versions.overlay())[HELP].startswith(edited(marker="Third.")[:40])


@pytest.mark.asyncio
async def test_two_approvals_at_once_one_wins(versions):
    await versions.propose(HELP, edited(marker="One."), "maria")
    await versions.propose(HELP, edited(marker="Two."), "maria")
    results = await asyncio.gather(versions.approve(HELP, 1, "max"), versions.approve(HELP, 2, "ada"),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Version", "VersionStateError"]
    assert len([v for v in await versions.history(HELP) if v.status == "live"]) == 1


@pytest.mark.asyncio
async def test_reject_and_withdraw(versions, redis, keys):
    await versions.propose(HELP, edited(marker="One."), "maria")
    await versions.propose(HELP, edited(marker="Two."), "maria")
    rejected = await versions.reject(HELP, 1, "max", "too long")
    assert (rejected.status, rejected.decided_by, rejected.reason) == ("rejected", "max", "too long")
    assert await versions.pending_names() == {HELP}
    await versions.reject(HELP, 2, "maria")
    assert await versions.pending_names() == set()
    with pytest.raises(VersionStateError, match="rejected, not pending"):
        await versions.approve(HELP, 1, "ada")
    assert [e["action"] for e in await audit_actions(redis, keys)][-2:] == [
        "template.reject", "template.withdraw"]


# --------------------------------------------------------------------------- rollback, history

@pytest.mark.asyncio
async def test_rollback_to_an_earlier_live_version_and_to_the_file(versions, redis, keys):
    one, two = edited(marker="One."), edited(marker="Two.")
    await versions.propose(HELP, one, "maria")
    await versions.approve(HELP, 1, "max")
    await versions.propose(HELP, two, "maria")
    await versions.approve(HELP, 2, "max")
    await versions.propose(HELP, edited(marker="Never."), "maria")  # v3, never live
    with pytest.raises(VersionStateError, match="was never live"):
        await versions.rollback(HELP, 3, "ada")
    with pytest.raises(VersionStateError, match="live already"):
        await versions.rollback(HELP, 2, "ada")

    back = await versions.rollback(HELP, 1, "ada", "two confused people")
    assert (back.number, back.kind, back.rollback_of, back.status) == (4, "rollback", 1, "live")
    assert await versions.overlay() == {HELP: one}
    statuses = {v.number: v.status for v in await versions.history(HELP)}
    assert statuses == {0: "file", 1: "superseded", 2: "rolled_back", 3: "pending", 4: "live"}
    assert (await versions.version(HELP, 3)).stale

    to_file = await versions.rollback(HELP, 0, "ada")
    assert await versions.overlay() == {}
    assert await versions.live_number(HELP) == to_file.number == 5
    with pytest.raises(VersionStateError, match="live already"):
        await versions.rollback(HELP, 0, "ada")
    assert int(await redis.get(keys.template_generation)) == 4
    await versions.rollback(HELP, 2, "ada")                      # v6: "Two." again
    to_file_again = await versions.rollback(HELP, 5, "ada")      # v5 was "the file"
    assert (to_file_again.number, to_file_again.rollback_of) == (7, 0)
    assert await versions.overlay() == {}
    assert [e["detail"].get("to_version") for e in await audit_actions(redis, keys)
            if e["action"] == "template.rollback"] == [1, 0, 2, 5]


@pytest.mark.asyncio
async def test_diff_between_versions(versions):
    await versions.propose(HELP, edited(), "maria")
    diff = await versions.diff(HELP, 0, 1)
    assert diff.startswith(f"--- {HELP} v0\n+++ {HELP} v1\n")
    assert "\n-This is the messaging service" in diff
    assert "\n+Edited in the console. This is the messaging service" in diff
    with pytest.raises(UnknownVersion):
        await versions.diff(HELP, 0, 7)


# --------------------------------------------------------------------------- live without restart

@pytest.mark.asyncio
async def test_the_renderer_picks_up_approved_versions_and_rollbacks(versions, redis, keys):
    renderer = TemplateRenderer(TEMPLATES, live_check_seconds=0)
    variables = {"first_name": "Anna", "unsubscribe_url": "https://x.example/u"}

    def body() -> str:
        return renderer.render("help_reply", channel="sms", language="en", variables=variables).body

    assert await renderer.refresh_live(redis, keys)  # the first look loads (nothing live yet)
    assert body().startswith("This is the messaging service")
    await versions.propose(HELP, edited(), "maria")
    assert not await renderer.refresh_live(redis, keys)  # pending changes nothing
    await versions.approve(HELP, 1, "max")
    assert await renderer.refresh_live(redis, keys)
    assert body().startswith("Edited in the console.")
    assert not await renderer.refresh_live(redis, keys)  # generation unchanged: one GET, no reload
    await versions.rollback(HELP, 0, "ada")
    await renderer.refresh_live(redis, keys)
    assert body().startswith("This is the messaging service")


@pytest.mark.asyncio
async def test_a_partial_edit_reaches_every_template_using_it(versions, redis, keys):
    renderer = TemplateRenderer(TEMPLATES, live_check_seconds=0)
    footer = "en/_footer.j2"
    text = "Questions? Reply to this message.\n" + (TEMPLATES / footer).read_text()
    await versions.propose(footer, text, "maria")
    await versions.approve(footer, 1, "max")
    await renderer.refresh_live(redis, keys)
    message = renderer.render("help_reply", channel="sms", language="en",
                              variables={"first_name": "Anna", "unsubscribe_url": "https://x/u"})
    assert "Questions? Reply to this message." in message.body


@pytest.mark.asyncio
async def test_the_renderer_checks_at_most_once_a_second(versions, redis, keys):
    renderer = TemplateRenderer(TEMPLATES)  # the default: one GET a second at most
    assert await renderer.refresh_live(redis, keys)  # first look
    await versions.propose(HELP, edited(), "maria")
    await versions.approve(HELP, 1, "max")
    assert not await renderer.refresh_live(redis, keys)  # within the second: not even a GET
    await asyncio.sleep(1.05)
    assert await renderer.refresh_live(redis, keys)
    assert renderer.overlay == {HELP: edited()}


@pytest_asyncio.fixture
async def processor(redis_url, redis):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "versions",
                                  "NUDGE_KEY_PREFIX": "tv"})
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(redis, Keys("tv")))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    yield Processor(settings, redis, engine, TemplateRenderer(TEMPLATES, live_check_seconds=0))
    await engine.close()


@pytest.mark.asyncio
async def test_the_send_path_uses_the_approved_text_without_a_restart(processor, versions, redis):
    debtor = await processor.debtors.get("D-EN-001")

    async def send(message_id: str) -> str:
        plan = PlannedMessage(message_id, debtor.id, "sms", debtor.phone, "help_reply", "confirmation")
        decision = await processor.sender.send(plan, now=MONDAY_10)
        assert decision.verdict == "send", decision
        return (await redis.hget(processor.keys.delivery(message_id), "body")).decode()

    assert (await send("before")).startswith("This is the messaging service")
    await versions.propose(HELP, edited(), "maria")
    await versions.approve(HELP, 1, "max")
    assert (await send("after")).startswith("Edited in the console.")
    await versions.rollback(HELP, 0, "ada")
    assert (await send("rolled-back")).startswith("This is the messaging service")


# --------------------------------------------------------------------------- WhatsApp

def test_whatsapp_content_sids_per_tone_for_display():
    config = ChannelConfig.load(ROOT / "policies")
    rows = whatsapp_templates(config, TemplateName.parse("nl/reminder_second.soft.j2"))
    assert rows == [{"tone": "soft", "content_template": "reminder_second.soft",
                     "content_sid": "HX798fa564a91f466c499378f9f9b22367",
                     "variables": {"1": "{{ first_name }}", "2": "{{ company }}"},
                     "buttons": ["PAY_NOW", "PLAN", "TALK"]}]
    base = whatsapp_templates(config, TemplateName.parse("en/reminder_first.j2"))
    assert [(r["tone"], r["content_template"]) for r in base] == [
        ("soft", "reminder_first"), ("loss_aversion", "reminder_first"),
        ("social_proof", "reminder_first")]
    assert whatsapp_templates(config, TemplateName.parse("en/reminder_first.soft.email.j2")) == []
    assert whatsapp_templates(config, TemplateName.parse("en/_footer.j2")) == []
    assert whatsapp_templates(config, TemplateName.parse("en/balance.j2")) == []
