"""Campaigns against a real Redis, the real contact rules and send path, the demo portfolio:
planned through the contact rules, paced, each message once (crash, retry, pause, cancel),
outcomes credited to the message before them, the next step scheduled in the job queue."""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from arq import create_pool
from arq.connections import RedisSettings

from bot.core.tone_choice import in_holdout
from service.business_events import BusinessEvents
from service.campaigns import DONE, LEASE_SECONDS, Campaigns, CampaignError, message_id_for
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.processing import Processor
from service.settings import Settings
from service.templates import TemplateRenderer
from service.tone_chooser import ToneChooser

ROOT = Path(__file__).resolve().parents[2]
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400


@pytest_asyncio.fixture
async def world(redis_url, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "message_templates", templates)
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "campaigns",
                                  "NUDGE_TEMPLATES_DIR": str(templates)})
    client = await create_pool(RedisSettings.from_dsn(redis_url))
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, Keys()))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    processor = Processor(settings, client, engine, TemplateRenderer(templates))
    told: list[str] = []

    async def tell_engine(plan):      # the engine is Rasa's; here we only note what it is told
        told.append(plan.message_id)
    processor.sender.on_sent = tell_engine
    chooser = ToneChooser(client, processor.keys, processor.segments, rng=random.Random(7))
    campaigns = Campaigns(client, processor.keys, processor.segments, rules=processor.rules,
                          sender=processor.sender, chooser=chooser,
                          queue_name=settings.queue_name)
    yield processor, campaigns, told
    await engine.close()
    await client.aclose()


async def plan_all(campaigns: Campaigns, campaign_id: str, now: float) -> None:
    while await campaigns.plan_batch(campaign_id, now=now):
        pass


async def outbox(processor) -> list[dict]:
    rows = await processor.redis.xrange(processor.keys.outbox)
    return [json.loads(fields[b"data"]) for _id, fields in rows]


async def late_debtors(processor) -> set[str]:
    today = datetime.fromtimestamp(MONDAY_10, UTC).date()
    out = set()
    for debtor_id in await processor.debtors.all_ids():
        debtor = await processor.debtors.get(debtor_id)
        if processor.segments.segment_of(debtor, today).name == "late":
            out.add(debtor_id)
    return out


@pytest.mark.asyncio
async def test_a_campaign_plans_paces_and_sends_each_debtor_once(world):
    processor, campaigns, told = world
    campaign_id = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, campaign_id, MONDAY_10)
    status = await campaigns.status(campaign_id)
    late = await late_debtors(processor)
    assert status.state == "running" and status.scanned == 51
    queue = await processor.redis.zrange(processor.keys.campaign_queue(campaign_id), 0, -1,
                                         withscores=True)
    planned = {m.decode() for m, _ in queue}
    refused = sum(v for k, v in status.counts.items() if k.startswith(("refused:", "skipped:")))
    assert planned <= late and len(planned) + refused == len(late) >= 25
    # paced: on one channel, no two slots closer than 1 / pace
    sms_slots = sorted([s for m, s in queue
                        if (await processor.debtors.get(m.decode())).preferred_channel == "sms"])
    gaps = [b - a for a, b in zip(sms_slots, sms_slots[1:], strict=False)]
    assert gaps and min(gaps) >= 1 / processor.segments.pace_per_second["sms"] - 1e-6

    # send everything that is due, twice: the second round finds nothing to do
    later = MONDAY_10 + 2 * DAY
    while await campaigns.dispatch(campaign_id, now=later):
        pass
    assert await campaigns.dispatch(campaign_id, now=later) == 0
    sent = [m for m in await outbox(processor) if m["message_id"].startswith(f"cmp:{campaign_id}:")]
    status = await campaigns.status(campaign_id)
    assert len(sent) == status.counts.get("sent", 0) > 0
    assert len({m["message_id"] for m in sent}) == len(sent)
    assert status.handled == len(planned) and status.state == "done"
    assert sorted(told) == sorted(m["message_id"] for m in sent)  # the dialogue knows
    # every message in an allowed tone, its assignment logged with its probability
    tones = processor.segments.get("late").workflow.tones
    assert {m["tone"] for m in sent} <= set(tones)
    log = [{k.decode(): v.decode() for k, v in f.items()}
           for _, f in await processor.redis.xrange(processor.keys.tone_log)]
    assigns = [e for e in log if e["kind"] == "assign"]
    assert len(assigns) == len(sent)
    assert all(0 < float(e["p"]) <= 1 for e in assigns)
    assert {e["group"] for e in assigns} <= {"bandit", "holdout", "guardrail"}
    for entry in assigns:
        assert "D-" not in json.dumps(entry)     # no personal data in the analysis log
    for message in sent:
        debtor_id = message["message_id"].rsplit(":", 1)[1]
        touch = await campaigns.chooser.outcomes.touch_of(debtor_id)
        assert (touch["segment"], touch["step"], touch["tone"]) == ("late", "1", message["tone"])
        if in_holdout(debtor_id, processor.segments.bandit.holdout_share):
            assert touch["group"] == "holdout" and touch["tone"] == "soft"


@pytest.mark.asyncio
async def test_a_crashed_dispatch_is_taken_over_and_nothing_is_sent_twice(world):
    processor, campaigns, _told = world
    campaign_id = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, campaign_id, MONDAY_10)
    later = MONDAY_10 + 2 * DAY
    queue = processor.keys.campaign_queue(campaign_id)
    # a worker claims five debtors, sends two of them and dies before marking any done
    claimed = [c.decode() for c in await campaigns._claim(keys=[queue], args=[later, later + LEASE_SECONDS, 5])]
    segment = processor.segments.get("late")
    for debtor_id in claimed[:2]:
        await campaigns._send_one(campaign_id, debtor_id, segment, 1, "reminder_first", later)
    assert await campaigns.dispatch(campaign_id, now=later + 1) > 0       # the others go on
    for debtor_id in claimed:                                            # leased: left alone
        assert await processor.redis.zscore(queue, debtor_id) < DONE
    while await campaigns.dispatch(campaign_id, now=later + LEASE_SECONDS + 5):
        pass
    sent = [m["message_id"] for m in await outbox(processor)]
    assert len(sent) == len(set(sent))
    assert all([await processor.redis.zscore(queue, d) >= DONE for d in claimed])
    status = await campaigns.status(campaign_id)
    assert status.counts.get("sent", 0) == len(sent)


@pytest.mark.asyncio
async def test_pause_resume_cancel(world):
    processor, campaigns, _told = world
    campaign_id = await campaigns.start("late", 1, by="maria")
    assert await campaigns.set_state(campaign_id, "pause", by="maria") == "paused"
    assert not await campaigns.plan_batch(campaign_id, now=MONDAY_10)
    assert await campaigns.set_state(campaign_id, "resume", by="maria") == "planning"
    await plan_all(campaigns, campaign_id, MONDAY_10)
    await campaigns.set_state(campaign_id, "pause", by="maria")
    assert await campaigns.dispatch(campaign_id, now=MONDAY_10 + DAY) == 0
    assert await campaigns.set_state(campaign_id, "resume", by="maria") == "running"
    assert await campaigns.dispatch(campaign_id, now=MONDAY_10 + DAY, limit=3) == 3
    assert await campaigns.set_state(campaign_id, "cancel", by="maria") == "cancelled"
    status = await campaigns.status(campaign_id)
    assert status.handled == status.queued
    assert status.counts["cancelled"] == status.queued - 3
    assert await campaigns.dispatch(campaign_id, now=MONDAY_10 + DAY) == 0
    with pytest.raises(CampaignError, match="is cancelled; cannot resume"):
        await campaigns.set_state(campaign_id, "resume", by="maria")
    with pytest.raises(CampaignError, match="no segment 'vip'"):
        await campaigns.start("vip", 1, by="maria")
    with pytest.raises(CampaignError, match="steps 1 to 3"):
        await campaigns.start("late", 4, by="maria")


@pytest.mark.asyncio
async def test_step_two_goes_to_who_is_due_and_has_not_engaged(world):
    processor, campaigns, _told = world
    first = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, first, MONDAY_10)
    while await campaigns.dispatch(first, now=MONDAY_10 + 3600):
        pass
    sent_first = {m["message_id"].rsplit(":", 1)[1].split("~")[0] for m in await outbox(processor)}
    # the next step is in the job queue, at its day offset (late: day 3)
    jobs = await processor.redis.zrange(processor.settings.queue_name, 0, -1, withscores=True)
    follow = [(j.decode(), s) for j, s in jobs if j.decode() == f"wf:{first}:2:1"]
    assert follow and follow[0][1] / 1000 == pytest.approx(MONDAY_10 + 3600 + 3 * DAY, abs=5)

    replied, promised = sorted(sent_first)[:2]
    outcomes = campaigns.chooser.outcomes
    assert await outcomes.record(replied, "replied", at=MONDAY_10 + 2 * 3600)
    await BusinessEvents(processor.redis, processor.keys).append(
        "promise_made", promised, {"date": "2026-11-30"},
        occurred_at=datetime.fromtimestamp(MONDAY_10 + 3 * 3600, UTC))

    too_early = await campaigns.start("late", 2, by="scheduler", parent=first)
    await plan_all(campaigns, too_early, MONDAY_10 + 1 * DAY)
    status = await campaigns.status(too_early)
    assert status.counts.get("skipped:not_due") == len(sent_first) - 2
    assert status.counts.get("skipped:engaged") == 2

    on_time = await campaigns.start("late", 2, by="scheduler", parent=first, run=2)
    await plan_all(campaigns, on_time, MONDAY_10 + 3 * DAY + 3600)
    while await campaigns.dispatch(on_time, now=MONDAY_10 + 4 * DAY):
        pass
    second = [m for m in await outbox(processor) if m["message_id"].startswith(f"cmp:{on_time}:")]
    assert {m["message_id"].rsplit(":", 1)[1] for m in second} == sent_first - {replied, promised}
    assert {m["channel"] for m in second} >= {"whatsapp", "sms"}   # per-tone WhatsApp templates
    assert {m["template"] for m in second} == {"reminder_second"}
    # starting a scheduled step twice (a retried job) makes one campaign
    assert await campaigns.start("late", 2, by="scheduler", parent=first, run=2) == on_time


@pytest.mark.asyncio
async def test_outcomes_are_credited_once_and_the_bandit_learns(world):
    processor, campaigns, _told = world
    campaign_id = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, campaign_id, MONDAY_10)
    while await campaigns.dispatch(campaign_id, now=MONDAY_10 + 60):
        pass
    outcomes = campaigns.chooser.outcomes
    sent = sorted(m["message_id"].rsplit(":", 1)[1] for m in await outbox(processor))
    payer, late_payer = sent[0], sent[1]
    touch = await outcomes.touch_of(payer)
    message_id = message_id_for(campaign_id, payer)
    assert await outcomes.record(payer, "delivered", message_id=message_id, at=MONDAY_10 + 60)
    assert not await outcomes.record(payer, "delivered", message_id=message_id, at=MONDAY_10 + 61)
    assert not await outcomes.record(payer, "read", message_id="someone-else", at=MONDAY_10 + 62)
    assert await outcomes.record(payer, "paid", at=MONDAY_10 + DAY)
    assert not await outcomes.record(payer, "paid", at=MONDAY_10 + DAY + 5)     # once
    # a reply is an outcome, not a success; a payment after the window is credited to nothing
    assert await outcomes.record(late_payer, "replied", at=MONDAY_10 + DAY)
    assert not await outcomes.record(late_payer, "paid", at=MONDAY_10 + 8 * DAY)

    resolved = await outcomes.resolve_expired(MONDAY_10 + 8 * DAY)
    assert resolved == len(sent)      # the success too: both reach the bandit at window end
    arms = await outcomes.arms("late", ("loss_aversion", "social_proof", "soft"))
    tone = touch["tone"]
    bandit_sent = sum([(await outcomes.touch_of(d))["group"] in ("bandit", "holdout") for d in sent])
    assert sum(a.successes + a.failures for a in arms.values()) == bandit_sent
    if touch["group"] in ("bandit", "holdout"):
        assert arms[tone].successes == 1
    assert await outcomes.proof_counts("late", 1) == (1, len(sent))
    counts = await outcomes.counts()
    key = ("late", "1", tone, touch["channel"], touch["group"])
    assert counts[(*key, "paid")] >= 1 and counts[(*key, "success")] == 1
    assert counts[(*key, "delivered")] == 1


@pytest.mark.asyncio
async def test_protected_debtors_get_soft_and_social_proof_needs_real_figures(world):
    processor, campaigns, _told = world
    chooser = campaigns.chooser
    segment = processor.segments.get("late")
    regular = next(f"D-X{i}" for i in range(100) if not in_holdout(f"D-X{i}", 0.1))
    await processor.redis.hset(processor.keys.stop_states(regular), "hardship", "{}")
    decision = await chooser.choose(regular, segment)
    assert (decision.tone, decision.group) == ("soft", "guardrail")
    await processor.redis.delete(processor.keys.stop_states(regular))
    await processor.redis.hset(processor.keys.arrangement(regular), "hardship", "1")
    assert (await chooser.choose(regular, segment)).tone == "soft"

    assert await chooser.proof_variables("late", 1) == {}
    # 150 of 199 comparable debtors succeeded: still no figure (minimum sample 200)
    await processor.redis.hset(processor.keys.tone_stats, mapping={"late|1|proof_s": 150,
                                                                   "late|1|proof_n": 199})
    assert await chooser.proof_variables("late", 1) == {}
    await processor.redis.hset(processor.keys.tone_stats, mapping={"late|1|proof_n": 200})
    assert await chooser.proof_variables("late", 1) == {"proof_percent": 65, "proof_days": 7}

    await chooser.pin("late", "loss_aversion")
    assert (await chooser.choose(regular, segment)).tone == "soft"        # protected still
    await processor.redis.delete(processor.keys.arrangement(regular))
    pinned = await chooser.choose(regular, segment)
    assert (pinned.tone, pinned.group) == ("loss_aversion", "pinned")
    with pytest.raises(ValueError, match="not allowed in segment 'broken_promise'"):
        await chooser.pin("broken_promise", "social_proof")


@pytest.mark.asyncio
async def test_two_campaigns_of_one_step_send_it_once_per_debtor(world):
    """A re-run for late debtors and a new campaign of the same step, planned together: each
    debtor gets the step once (the claim names the workflow run)."""
    processor, campaigns, _told = world
    first = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, first, MONDAY_10)
    while await campaigns.dispatch(first, now=MONDAY_10 + 3600):
        pass
    a = await campaigns.start("late", 2, by="scheduler", parent=first, run=2)
    b = await campaigns.start("late", 2, by="maria")
    for campaign_id in (a, b):
        await plan_all(campaigns, campaign_id, MONDAY_10 + 3 * DAY + 3600)
    for campaign_id in (a, b, a, b):
        while await campaigns.dispatch(campaign_id, now=MONDAY_10 + 4 * DAY, limit=7):
            pass
    step_two = [m["message_id"] for m in await outbox(processor)
                if m["template"] == "reminder_second"]
    debtors = [m.rsplit(":", 1)[1].split("~")[0] for m in step_two]
    assert debtors and len(debtors) == len(set(debtors))
    counts = [(await campaigns.status(c)).counts for c in (a, b)]
    assert sum(c.get("sent", 0) for c in counts) == len(debtors)
    assert sum(v for c in counts for k, v in c.items()
               if k in ("skipped:not_at_step", "skipped:already_sent")) >= len(debtors)


@pytest.mark.asyncio
async def test_an_unreadable_record_is_skipped_and_counted_not_a_stuck_campaign(world):
    """A key of another shape (an older version's arrangement string) or a broken debtor
    document: that debtor is skipped and counted; everyone else is planned."""
    processor, campaigns, _told = world
    late = sorted(await late_debtors(processor))
    await processor.redis.set(processor.keys.arrangement(late[0]), '{"state": "accepted"}')
    await processor.redis.set(processor.keys.debtor(late[1]), "{not json")
    campaign_id = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, campaign_id, MONDAY_10)
    status = await campaigns.status(campaign_id)
    assert status.state == "running"
    assert status.counts["skipped:unreadable_record"] == 2
    queued = {m.decode() for m in await processor.redis.zrange(
        processor.keys.campaign_queue(campaign_id), 0, -1)}
    assert late[2] in queued and not {late[0], late[1]} & queued


@pytest.mark.asyncio
async def test_a_record_that_breaks_after_planning_is_skipped_when_sending(world):
    processor, campaigns, _told = world
    campaign_id = await campaigns.start("late", 1, by="maria")
    await plan_all(campaigns, campaign_id, MONDAY_10)
    queued = sorted(m.decode() for m in await processor.redis.zrange(
        processor.keys.campaign_queue(campaign_id), 0, -1))
    await processor.redis.set(processor.keys.arrangement(queued[0]), "legacy")
    while await campaigns.dispatch(campaign_id, now=MONDAY_10 + 3600):
        pass
    status = await campaigns.status(campaign_id)
    assert status.state == "done" and status.counts["skipped:unreadable_record"] == 1
    assert status.counts["sent"] == len(queued) - 1
