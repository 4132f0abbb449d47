"""Results for the dashboard tests, put into Redis through the real code: campaign messages and
their outcomes (ToneOutcomes.record_sent / record / resolve_expired), allocation snapshots
(ToneChooser.state at several moments), campaigns planned through the real contact rules on
the demo portfolio (Campaigns.start / plan_batch / set_state), and hand-offs to the agent queue
(ConversationStore.escalate / claim).

    await seed_results(redis, keys)            # everything below; returns what it made
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bot.core.segments import load_segment_book
from service.campaigns import Campaigns
from service.contact_rules import ContactConfig, ContactRules
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from service.report import Report, gather_report
from service.tone_chooser import ToneChooser
from service.tone_outcomes import CampaignTag, ToneOutcomes

ROOT = Path(__file__).resolve().parents[2]
BOOK = load_segment_book(ROOT / "policies" / "segments.yml")
T0 = 1_795_428_000.0          # Monday 2026-11-23 10:00 UTC: inside the contact windows
DAY, HOUR = 86400.0, 3600.0
REPORT_AT = T0 + 9 * DAY
PSEUDONYM_KEY = "results-test"


@dataclass
class Seeded:
    campaigns: list[str]
    queue_ids: list[str]
    claimed: list[str]


async def send(outcomes: ToneOutcomes, prefix: str, n: int, *, segment: str, tone: str,
               channel: str, group: str, p: float = 1.0, at: float = T0, step: int = 1) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for debtor in ids:
        assert await outcomes.record_sent(
            debtor, f"cmp:seed-{segment}:{debtor}",
            CampaignTag(f"seed-{segment}", segment, step, group, p, workflow_start=step == 1),
            tone=tone, channel=channel, at=at)
    return ids


async def outcome(outcomes: ToneOutcomes, debtors: list[str], name: str,
                  at: float = T0 + HOUR) -> None:
    for debtor in debtors:
        assert await outcomes.record(debtor, name, at=at), (debtor, name)


async def seed_outcomes(redis, keys: Keys) -> None:
    """Segments `early` (three tones, a holdout) and `mid` (two tones), and allocation
    snapshots of both before, during and after."""
    outcomes = ToneOutcomes(redis, keys, BOOK)
    clock = [T0 - HOUR]
    chooser = ToneChooser(redis, keys, BOOK, rng=random.Random(3), clock=lambda: clock[0])
    for name in ("early", "mid"):
        await chooser.state(BOOK.get(name))
    la = await send(outcomes, "la", 20, segment="early", tone="loss_aversion", channel="sms",
                    group="bandit", p=0.4)
    await outcome(outcomes, la[:18], "delivered")
    await outcome(outcomes, la[:8], "replied", at=T0 + 2 * HOUR)
    await outcome(outcomes, la[:6], "promise_made", at=T0 + 3 * HOUR)
    sp = await send(outcomes, "sp", 12, segment="early", tone="social_proof", channel="email",
                    group="bandit", p=0.3)
    await outcome(outcomes, sp[:11], "delivered")
    await outcome(outcomes, sp[:2], "replied", at=T0 + 2 * HOUR)
    await outcome(outcomes, sp[:1], "paid", at=T0 + DAY)
    soft = await send(outcomes, "ho", 8, segment="early", tone="soft", channel="sms",
                      group="holdout")
    await outcome(outcomes, soft[:7], "delivered")
    await outcome(outcomes, soft[:2], "pay_later_chosen", at=T0 + 5 * HOUR)
    mid = await send(outcomes, "mid", 10, segment="mid", tone="soft", channel="whatsapp",
                     group="bandit", p=0.5)
    await outcome(outcomes, mid[:10], "delivered")
    await outcome(outcomes, mid[:3], "paid", at=T0 + 2 * DAY)
    clock[0] = T0 + 2 * DAY
    await redis.hset(keys.tone_pins, "mid", "soft")          # a manager's pin, logged
    for name in ("early", "mid"):
        await chooser.state(BOOK.get(name), fresh=True)
    assert await outcomes.resolve_expired(T0 + 8 * DAY) == 50
    clock[0] = T0 + 8 * DAY
    for name in ("early", "mid"):
        await chooser.state(BOOK.get(name), fresh=True)


async def seed_campaigns(redis, keys: Keys) -> list[str]:
    """Two campaigns over the demo portfolio, planned through the real contact rules: one
    running (everything queued), one cancelled (what was queued counted as cancelled)."""
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(redis, keys))
    rules = ContactRules(redis, keys, ContactConfig.load(ROOT / "policies"), PSEUDONYM_KEY)
    made = []
    for segment, action in (("late", None), ("mid", "cancel")):
        campaigns = Campaigns(redis, keys, BOOK, rules=rules, clock=lambda: T0)
        campaign_id = await campaigns.start(segment, 1, by="maria")
        while await campaigns.plan_batch(campaign_id, now=T0):
            pass
        if action:
            await campaigns.set_state(campaign_id, action, by="maria")
        made.append(campaign_id)
    return made


async def seed_queue(redis, keys: Keys) -> tuple[list[str], list[str]]:
    """Five conversations handed to a person, two of them claimed."""
    store = ConversationStore(redis, keys)
    ids = []
    for conversation, reason, urgent in (("D-EN-001", "vulnerability", True),
                                         ("D-EN-002", "dispute", False),
                                         ("D-NL-001", "dispute", False),
                                         ("D-DE-001", "request_human", False),
                                         ("D-EN-003", "hardship", False)):
        assert await store.escalate(conversation, reason, urgent=urgent)
        ids.append(conversation)
    claimed = ["D-EN-002", "D-DE-001"]
    for conversation in claimed:
        await store.claim(conversation, "alice")
    return ids, claimed


async def seed_results(redis, keys: Keys) -> Seeded:
    await seed_outcomes(redis, keys)
    campaigns = await seed_campaigns(redis, keys)
    queue_ids, claimed = await seed_queue(redis, keys)
    return Seeded(campaigns, queue_ids, claimed)


async def report_of(redis, keys: Keys, segment: str | None = None) -> Report:
    return await gather_report(redis, keys, BOOK, now=REPORT_AT, segment=segment)
