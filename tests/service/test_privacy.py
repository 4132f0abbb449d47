"""Data protection on real Redis: a debtor's whole footprint, built through the real code paths
(import, gateway's accept + enqueue, arq worker running the real Processor, escalation,
opt-outs), then export, erasure checked by reading every key of the database, and retention
with a controlled clock.

The engine here is a small stand-in HTTP server that answers like Rasa and keeps a tracker in
Redis under Rasa's key (tests/e2e/test_erasure.py does the same against the real engine).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from typer.testing import CliRunner

from bot.core.negotiation import Offer
from channels.base import InboundMessage, OutboundMessage
from service import privacy
from service.arrangements import ArrangementBook
from service.audit import AuditLog
from service.contact_rules import ContactConfig, ContactRules
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.inbound import InboundStore, enqueue_processing
from service.keys import Keys
from service.outbox import OutboxTransport
from service.privacy import (
    RetentionPolicy,
    RetentionPolicyError,
    erase_debtor,
    export_debtor,
    run_retention,
)
from service.campaigns import Campaigns
from service.processing import Processor
from service.sending import PlannedMessage
from service.settings import Settings
from service.stack import free_port
from service.suppression import SuppressionStore
from service.templates import TemplateRenderer
from service.tone_outcomes import CampaignTag

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"
DAY = 86400.0

DEBTOR = {
    "id": "D-PRIV-001", "first_name": "Wilhelmina", "last_name": "Quistorp",
    "phone": "+31612398745", "email": "W.Quistorp@example.org", "language": "en", "country": "NL",
    "date_of_birth": "1961-02-27", "postcode": "9437 QX", "reference": "QX-2026-77123",
    "creditor": "Polderlicht Energie", "balance": "412.50", "currency": "EUR",
    "due_date": "2026-01-15", "age_band": "41-65", "product": "energy",
    "payment_history": "late", "preferred_channel": "sms", "whatsapp_opt_in": True,
    "segment": None,
}
# Every way the person can be found: id, phone (E.164 and as digits, as in unknown-<digits>),
# email, names, reference, date of birth (stored and as typed), postcode.
IDENTIFIERS = ["D-PRIV-001", "+31612398745", "31612398745", "w.quistorp@example.org",
               "Wilhelmina Quistorp", "Wilhelmina", "Quistorp", "QX-2026-77123", "1961-02-27",
               "27-02-1961", "9437 QX"]


# --- reading the whole database -----------------------------------------------------------
async def dump_everything(redis: aioredis.Redis, *, raw: bool = True) -> dict[str, tuple[str, bytes]]:
    """Every key of the db with its whole value, whatever the type: key -> (type, bytes).
    Sets and hashes in sorted order; with `raw=False` (no DUMP, whose bytes depend on internal
    layout) two dumps of the same data compare equal."""
    dump: dict[str, tuple[str, bytes]] = {}
    # Also each key's DUMP (its RDB form, what lands on disk), uncompressed: it shows bytes the
    # commands no longer return, such as stream entries XDEL only flagged as deleted.
    await redis.config_set("rdbcompression", "no")
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        parts: list[bytes] = [key]
        if kind == "string":
            parts.append(await redis.get(key))
        elif kind == "hash":
            for field, value in sorted((await redis.hgetall(key)).items()):
                parts += [field, value]
        elif kind == "list":
            parts += await redis.lrange(key, 0, -1)
        elif kind == "set":
            parts += sorted(await redis.smembers(key))
        elif kind == "zset":
            parts += [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for entry_id, fields in await redis.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, value]
        elif kind == "none":
            continue   # expired between SCAN and TYPE
        else:
            raise AssertionError(f"{key!r}: a {kind} this scanner does not read")
        if raw:
            parts.append(await redis.dump(key))
        dump[key.decode()] = (kind, b"\n".join(p for p in parts if p is not None))
    return dump


def where(dump: dict[str, tuple[str, bytes]], identifiers: list[str]) -> dict[str, list[str]]:
    """identifier -> keys whose name or value holds it (case-insensitive)."""
    found: dict[str, list[str]] = {}
    for needle in identifiers:
        wanted = needle.lower().encode()
        hits = [key for key, (_, blob) in dump.items() if wanted in blob.lower()]
        if hits:
            found[needle] = sorted(hits)
    return found


# --- a stand-in for the engine: Rasa's HTTP API shape, tracker kept in Redis ---------------
def fake_engine(redis: aioredis.Redis, settings: Settings) -> web.Application:
    keys = Keys(settings.key_prefix)

    async def tracker_of(sender: str) -> dict:
        raw = await redis.get(f"{settings.engine_key_prefix}:tracker:{sender}")
        # Rasa's RedisTrackerStore stores json.dumps(tracker.as_dialogue().as_dict())
        return json.loads(raw) if raw else {"events": [], "name": sender}

    async def save(tracker: dict) -> None:
        sender = tracker["name"]
        await redis.set(f"{settings.engine_key_prefix}:tracker:{sender}", json.dumps(tracker))
        # Rasa's lock store entry (rasa/core/lock_store.py); left behind as after a crash
        await redis.set(f"{settings.engine_key_prefix}:lock:{sender}",
                        json.dumps({"conversation_id": sender, "tickets": []}))

    async def parse(request: web.Request) -> web.Response:
        text = (await request.json())["text"]
        intent = "inform" if any(c.isdigit() for c in text) else "ask_balance"
        if "not my debt" in text:
            intent = "dispute"
        return web.json_response({"text": text, "intent": {"name": intent, "confidence": 0.93},
                                  "entities": []})

    async def webhook(request: web.Request) -> web.Response:
        body = await request.json()
        sender, metadata = body["sender"], body.get("metadata") or {}
        tracker = await tracker_of(sender)
        tracker["events"].append({"event": "user", "text": metadata.get("text"),
                                  "parse_data": {"text": body["message"]},
                                  "metadata": metadata, "timestamp": time.time()})
        if metadata.get("text", "").startswith("27-02"):
            tracker["events"].append({"event": "slot", "name": "date_of_birth",
                                      "value": metadata["text"], "timestamp": time.time()})
            custom = {"template": "balance", "vars": {
                "creditor": DEBTOR["creditor"], "reference": DEBTOR["reference"],
                "amount": DEBTOR["balance"], "currency": "EUR", "due_date": DEBTOR["due_date"]}}
        elif "not my debt" in metadata.get("text", ""):
            # what action_handoff does (bot/actions/handoff.py): a stop-state, then the queue
            rules = ContactRules(redis, keys, ContactConfig.load(settings.policies_dir),
                                 settings.pseudonym_key)
            await rules.stop_states.set(sender, "dispute", source="intent:dispute")
            await ConversationStore(redis, keys).escalate(sender, "dispute")
            custom = {"template": "handoff", "vars": {"reason": "dispute"}}
        else:
            custom = {"template": "ask_verification", "vars": {"method": "date_of_birth"}}
        tracker["events"].append({"event": "bot", "data": {"custom": custom},
                                  "timestamp": time.time()})
        await save(tracker)
        return web.json_response([{"recipient_id": sender, "custom": custom}])

    async def trigger(request: web.Request) -> web.Response:
        sender = request.match_info["sender"]
        tracker = await tracker_of(sender)
        tracker["events"].append({"event": "user", "text": "EXTERNAL", "timestamp": time.time(),
                                  "parse_data": await request.json()})
        await save(tracker)
        return web.json_response({"messages": []})

    async def get_tracker(request: web.Request) -> web.Response:
        return web.json_response(await tracker_of(request.match_info["sender"]))

    app = web.Application()
    app.router.add_post("/model/parse", parse)
    app.router.add_post("/webhooks/rest/webhook", webhook)
    app.router.add_post("/conversations/{sender}/trigger_intent", trigger)
    app.router.add_get("/conversations/{sender}/tracker", get_tracker)
    return app


def make_settings(redis_url: str, tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": "privtest",
        "NUDGE_ENGINE_KEY_PREFIX": "privengine", "NUDGE_PSEUDONYM_KEY": "test-pseudonym-key-0123",
        "NUDGE_STATE_DIR": str(tmp_path / "state"), "NUDGE_CONVERSATION_LOCK_SECONDS": "5",
        **extra})


class World:
    """The database after a debtor's whole life with us, and handles on it."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, processor: Processor,
                 queue, portfolio: Path):
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix)
        self.processor = processor
        self.queue = queue
        self.portfolio = portfolio
        self.store = RedisDebtorStore(redis, self.keys)
        self.audit = AuditLog(redis, self.keys, settings.pseudonym_key)
        self.suppressions = SuppressionStore(redis, self.keys, settings.pseudonym_key)

    async def accept(self, conversation_id: str, body: str, *, address: str = DEBTOR["phone"],
                     channel: str = "sms", received_at: float | None = None) -> str:
        message = InboundMessage(f"SM{uuid.uuid4().hex}", channel, address, body,
                                 received_at or time.time())
        assert await InboundStore(self.redis, self.keys).accept(message, conversation_id)
        await enqueue_processing(self.queue, conversation_id, message.message_id,
                                 self.settings.queue_name)
        return message.message_id

    async def work(self) -> None:
        """Run the real worker functions until the queue is empty (arq, burst mode)."""
        from service.worker import process_conversation, send_reminder

        worker = Worker(functions=[process_conversation, send_reminder],
                        queue_name=self.settings.queue_name, redis_pool=self.queue, burst=True,
                        handle_signals=False, poll_delay=0.05,
                        ctx={"processor": self.processor}, keep_result=3600)
        await worker.main()   # burst: returns once the queue is empty (the pool stays ours)

    async def release_deferred(self) -> None:
        """Outside the contact window a reminder waits (service/sending.py); let everything
        deferred go at the time it was deferred to, as the worker's sweep would then."""
        due = await self.redis.zrange(self.keys.deferred, 0, -1, withscores=True)
        if due:
            when = datetime.fromtimestamp(max(score for _, score in due), timezone.utc)
            await self.processor.sender.release_due(now=when)


@pytest_asyncio.fixture
async def world(redis_url, tmp_path):
    engine_port = free_port()
    settings = make_settings(redis_url, tmp_path,
                             NUDGE_ENGINE_URL=f"http://127.0.0.1:{engine_port}")
    redis = aioredis.from_url(redis_url)
    runner = web.AppRunner(fake_engine(redis, settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", engine_port).start()
    queue = await create_pool(RedisSettings.from_dsn(redis_url),
                              default_queue_name=settings.queue_name)
    engine = EngineClient(settings.engine_url, "token", timeout=5)
    processor = Processor(settings, queue, engine, TemplateRenderer(settings.templates_dir))
    portfolio = tmp_path / "debtor.json"
    portfolio.write_text(json.dumps({"debtors": [DEBTOR]}))
    keys = Keys(settings.key_prefix)
    store = RedisDebtorStore(redis, keys)
    assert not (await import_file(DEMO, store)).errors     # other debtors, who must stay whole
    assert not (await import_file(portfolio, store)).errors
    yield World(settings, redis, processor, queue, portfolio)
    await engine.close()
    await queue.aclose()
    await redis.aclose()
    await runner.cleanup()


async def build_footprint(w: World) -> None:
    """Everything the product writes about one debtor, through its own code where it exists."""
    debtor_id, keys, redis = DEBTOR["id"], w.keys, w.redis
    # Before we knew the number: an unknown sender (service/processing.py).
    await w.accept("unknown-31612398745", "hi who is this, Wilhelmina here")
    # The first reminder, queued as the gateway does, and another debtor's for contrast.
    for who in (debtor_id, "D-EN-001"):
        message_id = f"reminder-{uuid.uuid4().hex}"
        await w.queue.enqueue_job("send_reminder", who, "sms", message_id, _job_id=message_id,
                                  _queue_name=w.settings.queue_name)
    await w.work()
    await w.release_deferred()
    # A reminder by email planned at night: the contact rules defer it (real send path).
    night = datetime.now(timezone.utc).replace(hour=1, minute=0) + timedelta(days=1)
    decision = await w.processor.sender.send(PlannedMessage(
        "reminder-email-1", debtor_id, "email", DEBTOR["email"], "reminder_first", "reminder",
        tell_engine=True), now=night)
    assert decision.verdict == "defer", decision
    # A campaign (#6) planned for the debtor's segment through the real campaign code, and
    # its message recorded as sent (the debtor's touch, the open success window).
    campaigns = Campaigns(w.queue, keys, w.processor.segments, rules=w.processor.rules,
                          sender=w.processor.sender, chooser=w.processor.tones,
                          queue_name=w.settings.queue_name)
    segment = w.processor.segments.segment_of(await w.store.get(debtor_id), date.today())
    campaign_id = await campaigns.start(segment.name, 1, by="alice", follow=False)
    while await campaigns.plan_batch(campaign_id):
        pass
    assert await redis.zscore(keys.campaign_queue(campaign_id), debtor_id) is not None
    # Replies: a question, the date of birth as typed, a dispute (escalates), then STOP.
    for body in ("how much do i owe", "27-02-1961", "this is not my debt"):
        await w.accept(debtor_id, body)
        await w.work()
    await w.accept(debtor_id, "hello?? my postcode is 9437 QX")   # waits for the agent
    await w.accept(debtor_id, "STOP")
    await w.work()
    # An opt-out from the email address the way the unsubscribe link will record it.
    await w.suppressions.suppress("email", DEBTOR["email"], "unsubscribe_link")
    # A job still waiting in the queue (a later reminder).
    await w.queue.enqueue_job("send_reminder", debtor_id, "email", "reminder-later",
                              _job_id="reminder-later", _defer_by=3600,
                              _queue_name=w.settings.queue_name)
    # What the dialogue keeps (the shapes bot/actions/payments.py writes) and preferences.
    book = ArrangementBook(redis, keys)
    debtor = await w.store.get(debtor_id)
    offer = Offer("plan", 41250, (13750, 13750, 13750),
                  (date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)), "monthly")
    await book.propose(debtor, offer, date(2026, 1, 20), grace_days=5, reminder_days_before=1)
    await book.accept(debtor, date(2026, 1, 20))
    await book.apply_payment(debtor, "PAY-1", 13750, date(2026, 2, 1), source="webhook")
    # An agent's note naming the payer and their account.
    await ConversationStore(redis, keys).add_event(debtor_id, "agent_note", {
        "text": "Wilhelmina Quistorp pays from NL00BANK0123456789"})
    await redis.zadd(keys.arrangement_due, {debtor_id: time.time()})
    await redis.hset(keys.verification(debtor_id), mapping={"attempts": 1})
    await redis.set(keys.promise(debtor_id), json.dumps(
        {"date": "2026-02-01", "amount": "412.50", "currency": "EUR", "state": "open"}))
    await redis.hset(keys.preferences(debtor_id), mapping={"not_before": "09:00",
                                                           "channels": "sms,email"})
    await redis.xadd(keys.events, {"data": json.dumps(
        {"name": "offer_made", "conversation_id": debtor_id, "at": time.time()})})
    await redis.xadd(keys.events, {"data": json.dumps(
        {"name": "offer_made", "conversation_id": "D-EN-001", "at": time.time()})})
    # The campaign message recorded as sent (after the payment above, which would have been
    # its success and closed its window).
    await w.processor.outcomes.record_sent(
        debtor_id, f"cmp:{campaign_id}:{debtor_id}",
        CampaignTag(campaign_id, segment.name, 1, "bandit", 0.4, workflow_start=True),
        tone="soft", channel="sms")
    # People who looked at the record.
    await w.audit.record("alice", "debtor.view", debtor_id=debtor_id)
    await w.audit.record("bob", "debtor.view", debtor_id="D-EN-001")


# --- erasure --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_footprint_reaches_every_store(world):
    """The scanner and the footprint are sound: before erasure, each identifier is found, and in
    every kind of place the erasure has to reach."""
    await build_footprint(world)
    dump = await dump_everything(world.redis)
    found = where(dump, IDENTIFIERS)
    assert set(found) == set(IDENTIFIERS), f"not found anywhere: {set(IDENTIFIERS) - set(found)}"
    places = set(found["D-PRIV-001"]) | set(found["31612398745"])
    k = world.keys
    for expected in (k.debtor("D-PRIV-001"), k.transcript("D-PRIV-001"), k.outbox,
                     k.conversation("D-PRIV-001"), k.agent_queue, k.debtor_index,
                     "privengine:tracker:D-PRIV-001", "privengine:lock:D-PRIV-001",
                     f"{k.prefix}:unknown_senders", k.transcript("unknown-31612398745"),
                     k.stop_states("D-PRIV-001"), k.deferred_message("reminder-email-1"),
                     k.contact_log("D-PRIV-001", "sms"), k.events,
                     "arq:job:reminder-later", k.touch("D-PRIV-001"), k.touch_open):
        assert expected in places, expected
    assert any(p.startswith(k.campaign_queue("")) for p in places)
    assert any(p.startswith("arq:result:") for p in places)
    assert any(p.startswith(k.inbound("")) for p in places)
    assert {dump[key][0] for key in places} >= {"string", "hash", "set", "zset", "stream"}


@pytest.mark.asyncio
async def test_erasure_leaves_no_identifier_in_any_key(world):
    await build_footprint(world)
    before = await dump_everything(world.redis)
    others_outbox = await world.redis.xlen(world.keys.outbox)

    report = await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol",
                                reason="GDPR art. 17 request #4411 from Wilhelmina Quistorp")

    after = await dump_everything(world.redis)
    assert where(after, IDENTIFIERS) == {}
    # the report counts per record type
    for kind in ("debtor", "address_index", "debtor_index", "conversation", "transcript",
                 "inbound_messages", "outbound_markers", "outbox_entries", "arrangement",
                 "promise", "stop_states", "preferences", "contact_logs", "deferred_messages",
                 "deferred_queue", "engine_tracker", "engine_lock", "unknown_senders",
                 "agent_queue", "job_results", "jobs", "queued_jobs", "event_entries",
                 "campaign_touch", "campaign_queues", "campaign_success_window"):
        assert report.deleted.get(kind, 0) >= 1, kind
    assert report.deleted["address_index"] == 2 and report.deleted["transcript"] == 2
    assert report.deleted["inbound_messages"] == 6
    assert not report.already_erased
    assert report.persistence == "aof_rewrite_started" or report.persistence.startswith("not_started")
    # other debtors are untouched
    assert await world.store.get("D-EN-001") is not None
    remaining_outbox = await world.redis.xlen(world.keys.outbox)
    assert 0 < remaining_outbox < others_outbox
    for key in (world.keys.transcript("D-EN-001"), world.keys.debtor("D-EN-002")):
        assert key in after and after[key] == before[key]
    assert len(await world.redis.xrange(world.keys.events)) == 1


@pytest.mark.asyncio
async def test_suppressions_outlive_the_erasure_and_a_reimport(world):
    await build_footprint(world)
    await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol", reason="request")
    s = world.suppressions
    assert await s.is_suppressed("sms", DEBTOR["phone"])          # STOP, by keyword
    assert await s.is_suppressed("whatsapp", DEBTOR["phone"])     # ...widened to WhatsApp
    assert await s.is_suppressed("email", DEBTOR["email"])        # the unsubscribe link
    assert await s.reason("sms", DEBTOR["phone"]) == "keyword"

    report = await import_file(world.portfolio, world.store)       # the creditor sends them again
    assert report.created == 1
    assert await s.is_suppressed("sms", DEBTOR["phone"])
    assert await s.is_suppressed("email", DEBTOR["email"].lower())
    exported = await export_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol")
    assert {x["channel"]: x["suppressed"] for x in exported["suppressions"]} == {
        "sms": True, "whatsapp": True, "email": True}


@pytest.mark.asyncio
async def test_audit_entries_stay_but_no_longer_name_the_debtor(world):
    await build_footprint(world)
    entries_before = await world.audit.entries()
    mine = [e for e in entries_before if e.get("debtor_id") == "D-PRIV-001"]
    assert {e["action"] for e in mine} == {"debtor.view", "stop_state.set", "opt_out"}

    report = await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol",
                                reason="request")
    entries_after = await world.audit.entries()
    assert [e["id"] for e in entries_after][:len(entries_before)] == [e["id"] for e in entries_before]
    assert not [e for e in entries_after if e.get("debtor_id") == "D-PRIV-001"]
    unlinked = [e for e in entries_after if e.get("subject") == report.pseudonym]
    assert len(unlinked) == len(mine) and all(e["debtor_id"] is None for e in unlinked)
    assert next(e for e in entries_after if e.get("subject") != report.pseudonym
                and e.get("actor") == "bob")["debtor_id"] == "D-EN-001"
    erase_entry = entries_after[-1]
    assert erase_entry["action"] == "debtor.erase" and erase_entry["actor"] == "carol"
    assert "subject" not in erase_entry and erase_entry["detail"]["pseudonym"] == report.pseudonym
    assert report.kept["audit_entries"] == len(mine)


@pytest.mark.asyncio
async def test_the_tombstone_keeps_money_and_dates_but_names_nobody(world):
    await build_footprint(world)
    report = await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol",
                                reason="GDPR request from Wilhelmina Quistorp, 9437 QX")
    tombstone = json.loads(await world.redis.get(report.tombstone_key))
    assert set(tombstone) == {"pseudonym", "erased_at", "erased_at_iso", "actor", "reason",
                              "bookkeeping"}
    assert tombstone["actor"] == "carol" and tombstone["pseudonym"] == report.pseudonym
    assert tombstone["reason"] == "GDPR request from [redacted], [redacted]"
    money = tombstone["bookkeeping"]
    assert money["payments_received"] == [{"payment_id": "PAY-1", "paid_on": "2026-02-01",
                                           "amount": "137.50", "currency": "EUR",
                                           "source": "webhook"}]
    [agreed] = money["arrangements"]
    assert [i["amount_minor"] for i in agreed["instalments"]] == [13750] * 3
    assert agreed["instalments"][0]["paid_minor"] == 13750 and money["currency"] == "EUR"
    assert money["creditor"] == "Polderlicht Energie"
    assert "NL00BANK" not in json.dumps(tombstone)


@pytest.mark.asyncio
async def test_erasure_can_be_run_again(world):
    await build_footprint(world)
    first = await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol",
                               reason="request")
    state = await dump_everything(world.redis, raw=False)
    tombstone = await world.redis.get(first.tombstone_key)

    again = await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="dave",
                               reason="request repeated")
    assert again.already_erased and again.deleted == {}
    assert await world.redis.get(first.tombstone_key) == tombstone     # the first one stays
    after = await dump_everything(world.redis, raw=False)
    audit = world.keys.audit
    assert {k: v for k, v in after.items() if k != audit} == \
        {k: v for k, v in state.items() if k != audit}
    assert where(await dump_everything(world.redis), IDENTIFIERS) == {}


@pytest.mark.asyncio
async def test_erasing_an_id_nobody_has_makes_no_tombstone(world):
    with pytest.raises(LookupError):
        await erase_debtor(world.redis, world.settings, "D-TYPO-999", actor="carol", reason="x")
    assert not [k async for k in world.redis.scan_iter(match=world.keys.tombstone("*"))]


@pytest.mark.asyncio
async def test_a_message_arriving_during_the_erasure_is_erased_too(world, monkeypatch):
    """The transaction WATCHes the conversation: a message accepted between finding and deleting
    aborts it, and the retry takes the new message as well (no half state, nothing left)."""
    await build_footprint(world)
    real_find = privacy._find
    calls = []

    async def find_then_race(redis, settings, debtor_id):
        found = await real_find(redis, settings, debtor_id)
        if not calls:
            calls.append(await world.accept(debtor_id, "one more thing, 27-02-1961"))
        return found

    monkeypatch.setattr(privacy, "_find", find_then_race)
    await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol", reason="request")
    assert calls
    assert not await world.redis.exists(world.keys.inbound(calls[0]))
    assert where(await dump_everything(world.redis), IDENTIFIERS) == {}


@pytest.mark.asyncio
async def test_an_opt_out_stored_under_the_raw_address_is_kept_as_a_digest(world):
    """Before keyed digests (service/suppression.py), opt-outs were stored under the address
    itself. Erasure keeps the opt-out but not the address."""
    raw_key = world.keys.suppression("sms", DEBTOR["phone"])
    await world.redis.set(raw_key, "keyword")
    report = await erase_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol",
                                reason="request")
    assert report.deleted["legacy_suppressions"] == 1
    assert not await world.redis.exists(raw_key)
    assert await world.suppressions.reason("sms", DEBTOR["phone"]) == "keyword"
    assert where(await dump_everything(world.redis), IDENTIFIERS) == {}


@pytest.mark.asyncio
async def test_a_stream_rebuilt_after_xdel_keeps_its_ids_and_loses_the_deleted_bytes(redis_url):
    redis = aioredis.from_url(redis_url)
    try:
        ids = [await redis.xadd("s", {"data": body}) for body in ("one", "SECRET-0612398745", "three")]
        await redis.xdel("s", ids[1], ids[2])
        assert b"SECRET" in await redis.dump("s")          # XDEL only flags the entry
        assert await privacy.compact_stream(redis, "s")
        assert b"SECRET" not in await redis.dump("s")
        assert [i for i, _ in await redis.xrange("s")] == [ids[0]]
        info = await redis.xinfo_stream("s")
        assert info["last-generated-id"] == ids[2]           # new ids keep growing
        assert not await redis.exists("s:compacting")
        await redis.xdel("s", ids[0])
        assert await privacy.compact_stream(redis, "s") and not await redis.exists("s")
    finally:
        await redis.aclose()


# --- export ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_export_holds_every_part_and_is_audited(world):
    await build_footprint(world)
    data = await export_debtor(world.redis, world.settings, "D-PRIV-001", actor="carol")
    json.dumps(data)   # serialisable as is
    for part in ("debtor", "conversation", "transcript", "inbound_messages", "outbox",
                 "sent_markers", "events", "arrangements", "business_events", "promise",
                 "stop_states", "contact_log",
                 "preferences", "deferred_messages", "suppressions", "engine_tracker",
                 "unknown_sender_conversations", "jobs", "audit"):
        assert data[part], f"export lacks {part}"
    assert data["debtor"]["last_name"] == "Quistorp"
    assert data["conversation"]["owner"] == "agent" and data["conversation"]["reason"] == "dispute"
    assert {e.get("body") for e in data["transcript"]} >= {"how much do i owe", "27-02-1961"}
    assert len(data["inbound_messages"]) == 6      # five of theirs, one from before we knew them
    assert {e["conversation_id"] for e in data["outbox"]} == {"D-PRIV-001", "unknown-31612398745"}
    assert {e["template"] for e in data["outbox"]} >= {"reminder_first", "balance", "handoff",
                                                      "optout_confirmation"}
    assert data["engine_tracker"]["name"] == "D-PRIV-001"
    assert list(data["unknown_sender_conversations"]) == ["unknown-31612398745"]
    assert "reminder-later" in {j["id"] for j in data["jobs"]}
    assert [d["message_id"] for d in data["deferred_messages"]] == ["reminder-email-1"]
    assert data["deferred_messages"][0]["plan"]["template"] == "reminder_first"
    assert {x["channel"]: x["suppressed"] for x in data["suppressions"]} == {
        "sms": True, "whatsapp": True, "email": True}
    assert set(data["stop_states"]) == {"dispute"}
    assert data["contact_log"]["sms"][0]["message_id"].startswith("reminder-")
    assert data["audit"][-1]["action"] == "debtor.export" and data["audit"][-1]["actor"] == "carol"
    assert {e["action"] for e in data["audit"]} == {"debtor.view", "stop_state.set", "opt_out",
                                                    "debtor.export"}
    # D-EN-001's things are not in it
    assert "D-EN-001" not in json.dumps(data)


@pytest.mark.asyncio
async def test_export_of_an_unknown_debtor_fails(world):
    with pytest.raises(LookupError):
        await export_debtor(world.redis, world.settings, "D-NOBODY", actor="carol")


def test_cli_export_writes_a_private_file_and_erase_needs_by_and_reason(tmp_path, redis_url):
    from service.cli import app

    env = {"REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": "privtest",
           "NUDGE_ENGINE_KEY_PREFIX": "privengine", "NUDGE_PSEUDONYM_KEY": "test-pseudonym-key-0123",
           "NUDGE_STATE_DIR": str(tmp_path / "state")}
    runner = CliRunner()
    portfolio = tmp_path / "debtor.json"
    portfolio.write_text(json.dumps({"debtors": [DEBTOR]}))
    result = runner.invoke(app, ["import", str(portfolio)], env=env)
    assert result.exit_code == 0, result.output
    out = tmp_path / "export.json"
    result = runner.invoke(app, ["privacy", "export", "D-PRIV-001", "--out", str(out),
                                 "--by", "carol"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["debtor"]["id"] == "D-PRIV-001"
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert runner.invoke(app, ["privacy", "erase", "D-PRIV-001", "--by", "carol"],
                         env=env).exit_code != 0                      # no --reason
    result = runner.invoke(app, ["privacy", "erase", "D-PRIV-001", "--by", "carol",
                                 "--reason", "request", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "erased" in result.output
    result = runner.invoke(app, ["privacy", "erase", "D-PRIV-001", "--by", "carol",
                                 "--reason", "again", "--yes"], env=env)
    assert result.exit_code == 0 and "already erased" in result.output, result.output
    result = runner.invoke(app, ["privacy", "retention", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert "tombstones" in result.output and "would delete" in result.output


# --- retention ------------------------------------------------------------------------------
def test_the_shipped_retention_policy_loads():
    policy = privacy.load_retention_policy()
    assert dict(policy.days) == {"inbound_messages": 90, "outbox": 180, "outbound_markers": 180,
                                 "transcripts": 730, "engine_trackers": 730, "unknown_senders": 30,
                                 "domain_events": 180, "tombstones": 2557, "audit_log": 2557}


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("outbox"), "periods.outbox: missing"),
    (lambda p: p.update(transcript=10),
     "periods.transcript: unknown record type (did you mean transcripts?)"),
    (lambda p: p.update(audit_log=365), "periods.audit_log: 365 days is shorter than the legal minimum"),
    (lambda p: p.update(tombstones=2000), "periods.tombstones: 2000 days is shorter"),
    (lambda p: p.update(inbound_messages="90"), "periods.inbound_messages: expected a whole number"),
    (lambda p: p.update(outbox=0), "periods.outbox: expected a whole number of days >= 1"),
])
def test_a_bad_retention_policy_is_refused_with_a_clear_error(change, message):
    periods = dict(privacy.load_retention_policy().days)
    change(periods)
    with pytest.raises(RetentionPolicyError) as error:
        RetentionPolicy.from_mapping({"periods": periods}, source="retention.yml")
    assert message in str(error.value)
    with pytest.raises(RetentionPolicyError, match="expected a mapping"):
        RetentionPolicy.from_mapping(["periods"])


def test_an_unreadable_policy_file_names_the_file(tmp_path):
    path = tmp_path / "retention.yml"
    path.write_text("periods: [unclosed")
    with pytest.raises(RetentionPolicyError, match="retention.yml: cannot read"):
        privacy.load_retention_policy(path=path)


@pytest.mark.asyncio
async def test_retention_deletes_exactly_what_is_past_its_period(redis_url, tmp_path):
    settings = make_settings(redis_url, tmp_path)
    keys = Keys(settings.key_prefix)
    redis = aioredis.from_url(redis_url)
    policy = privacy.load_retention_policy()
    t0 = time.time()

    def ms(seconds_ago: float) -> str:
        return f"{int((t0 - seconds_ago) * 1000)}-0"

    def data(**fields) -> dict:
        return {"data": json.dumps(fields)}

    try:
        inbound = InboundStore(redis, keys)
        outbox = OutboxTransport(redis, keys)
        audit = AuditLog(redis, keys, settings.pseudonym_key)
        # streams, oldest first (ids must grow): 200 days old, then an unknown sender's 40
        await redis.xadd(keys.outbox, data(conversation_id="D-EN-001", body="old"), id=ms(200 * DAY))
        await redis.xadd(keys.outbox, data(conversation_id="unknown-31600000001", body="hi"),
                         id=ms(40 * DAY))
        await outbox.send(OutboundMessage("new:0", "D-EN-001", "sms", "+447400123001", "new",
                                          "fallback", "en"))
        await redis.xadd(keys.events, data(name="x"), id=ms(181 * DAY))
        await redis.xadd(keys.events, data(name="y"), id=ms(179 * DAY))
        await redis.xadd(keys.audit, data(action="old"), id=ms(2558 * DAY))
        await redis.xadd(keys.audit, data(action="kept"), id=ms(2556 * DAY))
        await audit.record("alice", "debtor.view", debtor_id="D-EN-001")
        # inbound message states, either side of 90 days
        old_in = InboundMessage("SMold", "sms", "+447400123001", "old", t0 - 90 * DAY - 60)
        edge_in = InboundMessage("SMedge", "sms", "+447400123001", "edge", t0 - 90 * DAY + 60)
        new_in = InboundMessage("SMnew", "sms", "+447400123001", "new", t0)
        for message in (old_in, edge_in, new_in):
            await inbound.accept(message, "D-EN-001")
        await redis.set(keys.outbound("ancient:0"), str(t0 - 181 * DAY))
        # transcripts: inactive for 800 days, the same but waiting for an agent, and live
        await redis.xadd(keys.transcript("D-EN-002"), data(kind="event", name="x"), id=ms(800 * DAY))
        await redis.hset(keys.conversation("D-EN-002"), "owner", "bot")
        await redis.xadd(keys.transcript("D-EN-003"), data(kind="event", name="x"), id=ms(800 * DAY))
        await redis.zadd(keys.agent_queue, {"D-EN-003": 1})
        for sender, age in (("D-EN-002", 800 * DAY), ("D-EN-001", 0)):
            await redis.set(f"privengine:tracker:{sender}", json.dumps(
                {"name": sender, "events": [{"event": "user", "timestamp": t0 - age}]}))
        # unknown senders: one last seen 40 days ago (with its message), one today
        await redis.sadd(f"{keys.prefix}:unknown_senders", "unknown-31600000001", "unknown-31600000002")
        await redis.xadd(keys.transcript("unknown-31600000001"),
                         data(kind="message", direction="in", message_id="SMunk"), id=ms(40 * DAY))
        await redis.hset(keys.inbound("SMunk"), mapping={
            "conversation_id": "unknown-31600000001", "state": "done",
            "message": json.dumps({"received_at": t0 - 40 * DAY, "address": "+31600000001"})})
        await inbound.accept(InboundMessage("SMunk2", "sms", "+31600000002", "hi", t0),
                             "unknown-31600000002")
        # tombstones: 8 years and 1 day old
        await redis.set(keys.tombstone("p-old"), json.dumps({"erased_at": t0 - 8 * 365 * DAY}))
        await redis.set(keys.tombstone("p-new"), json.dumps({"erased_at": t0 - DAY}))

        expected = {"inbound_messages": 1, "outbox": 1, "outbound_markers": 1, "transcripts": 1,
                    "engine_trackers": 1, "unknown_senders": 1, "domain_events": 1,
                    "tombstones": 1, "audit_log": 1}
        before = await dump_everything(redis)
        as_datetime = datetime.fromtimestamp(t0, timezone.utc)
        assert await run_retention(redis, settings, policy, as_datetime, dry_run=True) == expected
        assert await dump_everything(redis) == before                    # a dry run changes nothing

        assert await run_retention(redis, settings, policy, t0) == expected
        gone = [keys.inbound("SMold"), keys.outbound("ancient:0"), keys.transcript("D-EN-002"),
                keys.conversation("D-EN-002"), "privengine:tracker:D-EN-002",
                keys.transcript("unknown-31600000001"), keys.inbound("SMunk"),
                keys.tombstone("p-old")]
        kept = [keys.inbound("SMedge"), keys.inbound("SMnew"), keys.outbound("new:0"),
                keys.transcript("D-EN-003"), keys.transcript("D-EN-001"),
                "privengine:tracker:D-EN-001", keys.transcript("unknown-31600000002"),
                keys.inbound("SMunk2"), keys.tombstone("p-new")]
        assert [k for k in gone if await redis.exists(k)] == []
        assert [k for k in kept if not await redis.exists(k)] == []
        assert {m.decode() for m in await redis.smembers(f"{keys.prefix}:unknown_senders")} == {
            "unknown-31600000002"}
        outbox_left = [json.loads(f[b"data"])["body"] for _, f in await redis.xrange(keys.outbox)]
        assert outbox_left == ["new"]                  # the 200-day one and the unknown sender's
        assert [json.loads(f[b"data"])["action"] for _, f in await redis.xrange(keys.audit)] == [
            "kept", "debtor.view"]
        assert len(await redis.xrange(keys.events)) == 1

        # nothing more to do at the same moment; later, the next things expire
        assert set((await run_retention(redis, settings, policy, t0)).values()) == {0}
        later = await run_retention(redis, settings, policy, t0 + 31 * DAY, dry_run=True)
        assert later["unknown_senders"] == 1 and later["inbound_messages"] == 1
        assert later["audit_log"] == 1 and later["tombstones"] == 0
    finally:
        await redis.aclose()


@pytest.mark.asyncio
async def test_compacting_a_stream_keeps_its_consumer_group_and_loses_nothing(redis_url):
    """The business events stream is read by the creditor webhooks' group: compaction after
    an erasure re-creates it, and entries that were pending come again (at least once)."""
    client = aioredis.from_url(redis_url)
    key = "compact:test"
    ids = [await client.xadd(key, {"n": str(n)}) for n in range(6)]
    await client.xgroup_create(key, "g", id="0")
    await client.xreadgroup("g", "c", {key: ">"}, count=4)      # 0..3 read
    await client.xack(key, "g", ids[0], ids[1])                   # 2, 3 still pending
    await client.xdel(key, ids[4])
    assert await privacy.compact_stream(client, key)
    again = await client.xreadgroup("g", "c", {key: ">"})
    assert [e[0] for e in again[0][1]] == [ids[2], ids[3], ids[5]]
    await client.aclose()
