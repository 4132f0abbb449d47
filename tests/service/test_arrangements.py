"""Arrangements on real Redis: proposed → accepted → active → completed or broken, payments from
the CSV import, follow-ups through the real send path, each message once."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.core.arrangement_policy import load_policy_book
from bot.core.negotiation import Offer
from service.arrangements import ArrangementBook, NoProposal
from service.business_events import BusinessEvents
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.follow_up import FollowUps
from service.importer import import_file
from service.keys import Keys
from service.pay_links import PayLinks
from service.payments import PaymentRecorder
from service.processing import Processor
from service.settings import Settings
from service.templates import TemplateRenderer

ROOT = Path(__file__).resolve().parents[2]
TODAY = date(2026, 11, 23)


def noon(day: date) -> float:
    """Noon UTC: inside every contact window, so follow-ups are sent, not deferred."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()


@pytest_asyncio.fixture
async def world(redis_url, tmp_path):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "arrangements",
                                  "NUDGE_PAY_LINK_SECRET": "pay-secret"})
    client = aioredis.from_url(redis_url)
    keys = Keys()
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, keys))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    processor = Processor(settings, client, engine, TemplateRenderer(settings.templates_dir))
    book = ArrangementBook(client, keys)
    follow = FollowUps(processor, book, load_policy_book(ROOT / "policies" / "arrangements.yml"),
                       PayLinks(settings.pay_link_secret, settings.public_url))
    yield processor, book, follow
    await engine.close()
    await client.aclose()


def plan_offer(total: int) -> Offer:
    third = total // 3
    amounts = (third, third, total - 2 * third)
    # Wednesdays, away from bank holidays (30 November is one in Scotland, so closed UK-wide)
    return Offer("plan", total, amounts, (date(2026, 12, 9), date(2027, 1, 13), date(2027, 2, 10)),
                 "monthly")


async def outbox_templates(processor) -> list[str]:
    rows = await processor.redis.xrange(processor.keys.outbox)
    return [json.loads(fields[b"data"])["template"] for _, fields in rows]


async def business_event_types(redis, keys) -> list[str]:
    return [e["type"] for _, e in await BusinessEvents(redis, keys).read(count=1000)]


@pytest.mark.asyncio
async def test_a_plan_from_proposal_to_completion(world):
    processor, book, _ = world
    debtor = await processor.debtors.get("D-NL-001")
    with pytest.raises(NoProposal):
        await book.accept(debtor, TODAY)
    first = await book.propose(debtor, plan_offer(debtor.balance_minor), TODAY,
                               grace_days=5, reminder_days_before=1)
    second = await book.propose(debtor, plan_offer(debtor.balance_minor), TODAY,
                                grace_days=5, reminder_days_before=1)
    assert first.id != second.id
    assert [a.state for a in await book.history(debtor.id)] == ["superseded"]
    accepted = await book.accept(debtor, TODAY)
    assert accepted.state == "accepted"
    for n, inst in enumerate(accepted.instalments):
        outcome = await book.apply_payment(debtor, f"P{n}", inst.amount_minor, inst.due, source="csv")
    assert outcome.arrangement.state == "completed" and outcome.balance_minor == 0
    assert (await processor.debtors.get(debtor.id)).balance_minor == 0
    types = await business_event_types(processor.redis, processor.keys)
    assert types[:3] == ["arrangement_proposed", "arrangement_proposed", "arrangement_accepted"]
    assert "arrangement_active" in types and types[-1] == "arrangement_completed"
    assert types.count("payment_received") == 3


@pytest.mark.asyncio
async def test_follow_ups_remind_note_a_miss_and_break_each_once(world):
    processor, book, follow = world
    debtor = await processor.debtors.get("D-EN-003")
    await book.propose(debtor, plan_offer(debtor.balance_minor), TODAY, grace_days=5,
                       reminder_days_before=1)
    await book.accept(debtor, TODAY)
    for day in (date(2026, 12, 7), date(2026, 12, 8), date(2026, 12, 8), date(2026, 12, 10),
                date(2026, 12, 10), date(2026, 12, 15), date(2026, 12, 16)):
        await follow.sweep(noon(day))
    assert await outbox_templates(processor) == [
        "instalment_reminder", "instalment_missed", "arrangement_broken"]
    assert (await book.current(debtor.id)).state == "broken"
    assert await processor.redis.zscore(processor.keys.arrangement_due, debtor.id) is None
    types = await business_event_types(processor.redis, processor.keys)
    assert types[-2:] == ["instalment_missed", "arrangement_broken"]


@pytest.mark.asyncio
async def test_a_promise_is_reminded_and_kept_by_a_payment(world):
    processor, book, follow = world
    debtor = await processor.debtors.get("D-DE-001")
    await book.make_promise(debtor, 5000, date(2026, 11, 27), TODAY, grace_days=2,
                            reminder_days_before=1)
    await follow.sweep(noon(date(2026, 11, 26)))
    recorder = PaymentRecorder(processor.redis, processor.keys, processor.settings.queue_name, book)
    csv = Path(processor.settings.state_dir)
    csv.mkdir(parents=True, exist_ok=True)
    path = csv / "payments-test.csv"
    path.write_text("payment_id,reference,amount,currency,paid_at\n"
                    f"PAY-77,{debtor.reference},50.00,EUR,2026-11-27T09:00:00Z\n")
    report = await recorder.import_csv(path)
    assert report.recorded == ["PAY-77"] and not report.errors
    again = await recorder.import_csv(path)
    assert again.duplicates == ["PAY-77"] and again.recorded == []
    assert (await book.current(debtor.id)).state == "completed"
    assert await outbox_templates(processor) == ["promise_reminder"]
    types = await business_event_types(processor.redis, processor.keys)
    assert "promise_kept" in types and types.count("payment_received") == 1
    receipt = await follow.receipt(debtor.id, "PAY-77", 5000, now=noon(date(2026, 11, 27)))
    assert receipt == "send"
    assert (await outbox_templates(processor))[-1] == "payment_received"


@pytest.mark.asyncio
async def test_broken_csv_rows_are_reported_and_good_rows_go_through(world, tmp_path):
    processor, book, _ = world
    recorder = PaymentRecorder(processor.redis, processor.keys, processor.settings.queue_name, book)
    path = tmp_path / "payments.csv"
    path.write_text("payment_id,debtor_id,amount,currency,paid_at\n"
                    "A1,D-EN-001,10.00,GBP,2026-11-20T10:00:00Z\n"
                    "A2,D-EN-001,ten pounds,GBP,2026-11-20T10:00:00Z\n"
                    "A3,D-NOPE-1,10.00,GBP,2026-11-20T10:00:00Z\n"
                    "A4,D-EN-001,10.00,EUR,2026-11-20T10:00:00Z\n"
                    "A5,D-EN-001,5.50,GBP,2026-11-21T10:00:00Z\n")
    before = (await processor.debtors.get("D-EN-001")).balance_minor
    report = await recorder.import_csv(path)
    assert report.recorded == ["A1", "A5"]
    assert [e.line for e in report.errors] == [3, 4, 5]
    assert "no debtor" in report.errors[1].message and "currency" in report.errors[2].message
    assert (await processor.debtors.get("D-EN-001")).balance_minor == before - 1550


@pytest.mark.asyncio
async def test_a_payment_and_the_sweep_at_once_lose_nothing(world):
    processor, book, follow = world
    debtor = await processor.debtors.get("D-EN-004")
    await book.propose(debtor, plan_offer(debtor.balance_minor), TODAY, grace_days=5,
                       reminder_days_before=1)
    await book.accept(debtor, TODAY)
    first = (await book.current(debtor.id)).instalments[0]
    await asyncio.gather(
        follow.sweep(noon(date(2026, 12, 8))),
        *(book.apply_payment(debtor, f"C{n}", 100, date(2026, 12, 8), source="webhook")
          for n in range(10)))
    current = await book.current(debtor.id)
    assert current.instalments[0].paid_minor == 1000 and current.state == "active"
    assert (await processor.debtors.get(debtor.id)).balance_minor == debtor.balance_minor - 1000
    assert first.amount_minor > 1000


@pytest.mark.asyncio
async def test_a_payment_applied_twice_lowers_the_balance_once(world):
    """The ledger's claim can lapse after a crash between applying and marking it recorded;
    the sender's retry must then change nothing."""
    processor, book, _ = world
    debtor = await processor.debtors.get("D-EN-001")
    for _ in range(2):
        await book.apply_payment(debtor, "TWICE-1", 1000, TODAY, source="webhook")
    assert (await processor.debtors.get(debtor.id)).balance_minor == debtor.balance_minor - 1000


@pytest.mark.asyncio
async def test_a_plan_chosen_on_the_page_is_confirmed_on_the_debtors_channel(world):
    processor, book, follow = world
    debtor = await processor.debtors.get("D-NL-001")
    await book.propose(debtor, plan_offer(debtor.balance_minor), TODAY, grace_days=5,
                       reminder_days_before=1)
    accepted = await book.accept(debtor, TODAY)
    assert await follow.confirmation(debtor.id, "D-NL-001-999") is None    # not the current one
    # WhatsApp (preferred) has no open window and no approved template for it: it moves on
    # to the next channel (service/sending.py fall_back), never lost.
    await follow.confirmation(debtor.id, accepted.id)
    rows = await processor.redis.xrange(processor.keys.outbox)
    deferred = await processor.sender.deferred_for(debtor.id)
    sent = [json.loads(f[b"data"]) for _, f in rows]
    assert [m["template"] for m in sent] + [d.get("template") for d in deferred] == ["plan_confirmed"]
