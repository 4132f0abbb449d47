"""Campaigns: one workflow step for one segment, planned through the contact rules, paced per
sender, resumable after a crash with nothing doubled or lost.

Life of a campaign (``Keys.campaign``: state, progress counters, planning cursor):

``planning``  the worker reads the debtor index in batches (SSCAN: memory stays flat whatever
              the portfolio's size), keeps the debtors of the segment who are due this step
              (see :meth:`Campaigns._eligible`), asks the contact rules about each and queues
              the ones that may be written to in ``Keys.campaign_queue`` at the time they may
              go: now, or when their contact window opens, spaced by the campaign's pace per
              channel. The SSCAN cursor is saved after every batch; a batch planned twice
              after a crash queues nothing twice (ZADD NX).
``running``   planning is done; the worker sends what is due (:meth:`dispatch`): a lease on
              each queued debtor (a crashed worker's lease runs out and another takes over),
              the tone chosen *now* (bandit, holdout, pin, guardrails), the message through
              the one send path (``Sender.send``, which checks the contact rules again and
              sends each message id at most once: ``cmp:<campaign>:<debtor>``), then the
              debtor is marked done and counted, once, in one script.
``paused``    nothing is planned or sent until resumed.
``cancelled`` what was not sent is dropped (counted as cancelled).
``done``      every queued debtor was handled. The next workflow step is scheduled as a
              deferred job in the queue library (arq, durable in Redis) at its day offset;
              a step some debtors were not yet due for runs again the next day (at most
              ``MAX_STEP_RUNS`` times).

Queue scores: a debtor's earliest send time (epoch seconds); a lease is ``now + LEASE``;
done is ``DONE`` or more, so ``ZCOUNT`` tells progress without another structure.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.core.debtors import Debtor
from bot.core.segments import Segment, SegmentBook
from service.contact_rules import ContactRules
from service.keys import Keys
from service.logs import get_logger
from service.sending import PlannedMessage, Sender
from service.tone_chooser import ToneChooser
from service.tone_outcomes import CampaignTag

log = get_logger("campaigns")

STATES = ("planning", "running", "paused", "cancelled", "done")
DONE = 1e13            # queue scores at or above this: handled
LEASE_SECONDS = 120
MAX_STEP_RUNS = 7      # a step runs again the next day for debtors not yet due, this often
PLAN_LOCK_SECONDS = 300

# KEYS: queue. ARGV: now, lease-until, limit. Claim due debtors (score <= now, not done).
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""
# KEYS: queue, campaign. ARGV: debtor, done score, counter field. Once per debtor.
_FINISH = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
return 1
"""


class CampaignError(ValueError):
    """A campaign cannot be started or changed as asked; the message says why."""


@dataclass
class CampaignStatus:
    id: str
    segment: str
    step: int
    state: str
    created_at: float
    created_by: str
    scanned: int = 0
    total_debtors: int = 0
    queued: int = 0
    handled: int = 0
    counts: dict[str, int] = field(default_factory=dict)   # sent, deferred, refused:<reason>, skipped:<reason>
    run: int = 1
    parent: str = ""
    next_step_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__}


def message_id_for(campaign_id: str, debtor_id: str) -> str:
    return f"cmp:{campaign_id}:{debtor_id}"


class Campaigns:
    def __init__(self, redis: Redis, keys: Keys, book: SegmentBook, *,
                 rules: ContactRules | None = None, sender: Sender | None = None,
                 chooser: ToneChooser | None = None, queue_name: str = "", clock=time.time):
        """`rules` are needed to plan, `sender` and `chooser` to dispatch; the CLI and the API
        that only start, pause and read campaigns need neither."""
        self.redis = redis
        self.keys = keys
        self.book = book
        self.rules = rules
        self.sender = sender
        self.chooser = chooser
        self.queue_name = queue_name
        self.clock = clock
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)

    # --- control -------------------------------------------------------------------------
    async def start(self, segment: str, step: int, *, by: str, run: int = 1, parent: str = "",
                    follow: bool = True) -> str:
        """A new campaign, planned and sent by the worker. A scheduled step (`parent` given)
        has an id made of its origin, step and run, so a retried job starts nothing twice."""
        seg = self._segment(segment)
        try:
            seg.workflow.step(step)
        except ValueError as error:
            raise CampaignError(f"segment {segment}: {error}") from None
        now = self.clock()
        if parent:
            campaign_id = f"{parent}-s{step}-r{run}"
            if await self.redis.exists(self.keys.campaign(campaign_id)):
                return campaign_id
        else:
            day = time.strftime("%Y%m%d", time.gmtime(now))
            campaign_id = f"{day}-{segment}-s{step}-{uuid.uuid4().hex[:6]}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.keys.campaign(campaign_id), "created_at", repr(now))
            pipe.hset(self.keys.campaign(campaign_id), mapping={
                "segment": segment, "step": step, "state": "planning",
                "created_by": by, "cursor": "0", "scanned": 0, "queued": 0, "run": run,
                "parent": parent, "follow": "1" if follow else "0",
                "total_debtors": await self.redis.scard(self.keys.debtor_index)})
            pipe.zadd(self.keys.campaigns, {campaign_id: now})
            pipe.sadd(self.keys.campaigns_unfinished, campaign_id)
            await pipe.execute()
        log.info("campaign_started", campaign=campaign_id, segment=segment, step=step, by=by)
        return campaign_id

    async def set_state(self, campaign_id: str, action: str, *, by: str) -> str:
        """pause | resume | cancel. Returns the new state."""
        status = await self.status(campaign_id)
        allowed = {"pause": ({"planning", "running"}, "paused"),
                   "resume": ({"paused"}, None),
                   "cancel": ({"planning", "running", "paused"}, "cancelled")}
        if action not in allowed:
            raise CampaignError(f"unknown action {action!r}: pause, resume or cancel")
        states, new = allowed[action]
        if status.state not in states:
            raise CampaignError(f"campaign {campaign_id} is {status.state}; cannot {action} it")
        key = self.keys.campaign(campaign_id)
        if action == "resume":
            finished = (await self.redis.hget(key, "planned_all")) == b"1"
            new = "running" if finished else "planning"
        assert new is not None
        await self.redis.hset(key, mapping={"state": new, f"{action}d_by": by,
                                            f"{action}d_at": repr(self.clock())})
        if new == "cancelled":
            await self.redis.srem(self.keys.campaigns_unfinished, campaign_id)
            await self._cancel_rest(campaign_id)
        log.info("campaign_state", campaign=campaign_id, state=new, by=by)
        return new

    async def status(self, campaign_id: str) -> CampaignStatus:
        raw = await self.redis.hgetall(self.keys.campaign(campaign_id))
        if not raw:
            raise CampaignError(f"no campaign {campaign_id!r}")
        data = {k.decode(): v.decode() for k, v in raw.items()}
        counts = {k[2:]: int(v) for k, v in data.items() if k.startswith("c:")}
        queue = self.keys.campaign_queue(campaign_id)
        return CampaignStatus(
            id=campaign_id, segment=data["segment"], step=int(data["step"]), state=data["state"],
            created_at=float(data["created_at"]), created_by=data.get("created_by", ""),
            scanned=int(data.get("scanned", 0)), total_debtors=int(data.get("total_debtors", 0)),
            queued=await self.redis.zcard(queue),
            handled=await self.redis.zcount(queue, DONE, "+inf"), counts=counts,
            run=int(data.get("run", 1)), parent=data.get("parent", ""),
            next_step_at=float(data["next_step_at"]) if data.get("next_step_at") else None)

    async def list(self, limit: int = 50) -> list[CampaignStatus]:
        ids = await self.redis.zrevrange(self.keys.campaigns, 0, limit - 1)
        return [await self.status(i.decode()) for i in ids]

    async def active_ids(self) -> list[str]:
        """Campaigns being planned or sent (the loop asks every second: only the unfinished
        ones are read, not every campaign ever run)."""
        ids = sorted(m.decode() for m in await self.redis.smembers(self.keys.campaigns_unfinished))
        async with self.redis.pipeline(transaction=False) as pipe:
            for campaign_id in ids:
                pipe.hget(self.keys.campaign(campaign_id), "state")
            states = await pipe.execute()
        return [i for i, state in zip(ids, states, strict=True)
                if state in (b"planning", b"running")]

    # --- planning ------------------------------------------------------------------------
    async def plan_batch(self, campaign_id: str, *, now: float | None = None) -> bool:
        """Plan one batch of debtors. True while there is more to plan."""
        assert self.rules is not None, "planning needs the contact rules"
        now = self.clock() if now is None else now
        key = self.keys.campaign(campaign_id)
        meta = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(key)).items()}
        if meta.get("state") != "planning":
            return False
        segment, step = self._segment(meta["segment"]), int(meta["step"])
        cursor, ids = await self.redis.sscan(self.keys.debtor_index, int(meta["cursor"]),
                                             count=self.book.batch_size)
        ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
        counts: Counter[str] = Counter()
        queue: dict[str, float] = {}
        pace = {k.decode(): float(v) for k, v in
                (await self.redis.hgetall(self.keys.campaign_pace(campaign_id))).items()}
        if ids:
            plans = await self._plan_debtors(campaign_id, ids, segment, step, now, counts)
            for debtor_id, channel, earliest in plans:
                gap = 1.0 / self.book.pace_per_second[channel]
                slot = max(earliest, pace.get(channel, now))
                pace[channel] = slot + gap
                queue[debtor_id] = slot
        async with self.redis.pipeline(transaction=True) as pipe:
            if queue:
                pipe.zadd(self.keys.campaign_queue(campaign_id), queue, nx=True)
            if pace:
                pipe.hset(self.keys.campaign_pace(campaign_id), mapping=pace)
            for name, n in counts.items():
                pipe.hincrby(key, f"c:{name}", n)
            pipe.hincrby(key, "scanned", len(ids))
            pipe.hset(key, "cursor", int(cursor))
            if int(cursor) == 0:
                pipe.hset(key, mapping={"planned_all": "1", "state": "running"})
            await pipe.execute()
        return int(cursor) != 0

    async def _plan_debtors(self, campaign_id: str, ids: list[str], segment: Segment, step: int,
                            now: float, counts: Counter[str]) -> list[tuple[str, str, float]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for debtor_id in ids:
                pipe.get(self.keys.debtor(debtor_id))
                pipe.hmget(self.keys.touch(debtor_id), ["wf_segment", "wf_step", "wf_started",
                                                        "engaged", "campaign_id"])
                pipe.hget(self.keys.arrangement(debtor_id), "current")
            # One record that cannot be read (a key of another shape, left by an older version)
            # must not stop the campaign: that debtor is skipped, counted and logged.
            raw = await pipe.execute(raise_on_error=False)
        as_of = datetime.fromtimestamp(now, timezone.utc).date()
        candidates: list[tuple[Debtor, str, str]] = []
        for index, debtor_id in enumerate(ids):
            doc, touch, arrangement = raw[3 * index: 3 * index + 3]
            if doc is None:
                continue
            try:
                if isinstance(touch, Exception) or isinstance(arrangement, Exception):
                    raise touch if isinstance(touch, Exception) else arrangement
                debtor = Debtor.from_json(doc)
            except Exception as error:  # noqa: BLE001 - any unreadable record: skip, say which
                log.warning("campaign_record_unreadable", campaign=campaign_id, debtor=debtor_id,
                            error=type(error).__name__)
                counts["skipped:unreadable_record"] += 1
                continue
            if self.book.segment_of(debtor, as_of) is not segment:
                continue       # another segment's debtor: not this campaign's business
            why = self._ineligible(debtor, touch, arrangement, segment, step, as_of, campaign_id)
            if why:
                counts[f"skipped:{why}"] += 1
                continue
            found = self._channel(debtor, segment)
            if found is None:
                counts["skipped:no_channel"] += 1
                continue
            candidates.append((debtor, *found))
        # The contact rules for the whole batch, read in one round trip.
        assert self.rules is not None
        decisions = await self.rules.decide_many(
            candidates, "campaign", datetime.fromtimestamp(now, timezone.utc))
        planned = []
        for (debtor, channel, _address), decision in zip(candidates, decisions, strict=True):
            if decision.verdict == "refuse":
                counts[f"refused:{decision.reason}"] += 1
                continue
            earliest = decision.until.timestamp() if decision.verdict == "defer" and decision.until else now
            counts["planned"] += 1
            if earliest > now:
                counts["planned_later"] += 1
            planned.append((debtor.id, channel, earliest))
        return planned

    def _ineligible(self, debtor: Debtor, touch: list[Any], arrangement: Any, segment: Segment,
                    step: int, as_of: date, campaign_id: str) -> str | None:
        """Why this debtor gets no message in this step, or None."""
        if debtor.balance_minor <= 0:
            return "nothing_owed"
        if arrangement:
            state = json.loads(arrangement).get("state")
            if state in ("proposed", "accepted", "active"):
                return "arrangement"
        wf_segment, wf_step, wf_started, engaged, last_campaign = (
            v.decode() if isinstance(v, bytes) else v for v in touch)
        if last_campaign == campaign_id:
            return "already_sent"
        out_of_step = _out_of_step(wf_segment, wf_step, engaged, segment, step)
        if out_of_step or step == 1:
            return out_of_step
        started = datetime.fromtimestamp(float(wf_started), timezone.utc).date()
        if (as_of - started).days < segment.workflow.step(step).day:
            return "not_due"
        return None

    def _channel(self, debtor: Debtor, segment: Segment) -> tuple[str, str] | None:
        for channel in segment.workflow.channel_order(debtor):
            if channel == "email" and debtor.email:
                return channel, debtor.email
            if channel == "sms" and debtor.phone:
                return channel, debtor.phone
            if channel == "whatsapp" and debtor.phone and debtor.whatsapp_opt_in:
                return channel, debtor.phone
        return None

    # --- sending -------------------------------------------------------------------------
    async def dispatch(self, campaign_id: str, *, now: float | None = None,
                       limit: int = 200) -> int:
        """Send what is due in a running campaign. Returns how many debtors were handled."""
        assert self.sender is not None and self.chooser is not None, "dispatch needs a sender"
        now = self.clock() if now is None else now
        key = self.keys.campaign(campaign_id)
        meta = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(key)).items()}
        if meta.get("state") not in ("planning", "running"):
            return 0
        queue = self.keys.campaign_queue(campaign_id)
        due = await self._claim(keys=[queue], args=[now, now + LEASE_SECONDS, limit])
        segment, step_no = self._segment(meta["segment"]), int(meta["step"])
        step = segment.workflow.step(step_no)
        for raw in due:
            debtor_id = raw.decode() if isinstance(raw, bytes) else raw
            try:
                outcome = await self._send_one(campaign_id, debtor_id, segment, step_no,
                                               step.template, now)
            except (ResponseError, ValueError) as error:
                # a record this debtor's message cannot be planned from (a key of another
                # shape, a broken document): retrying would fail the same way. Other errors
                # (the engine or Redis down) leave the lease to run out: tried again.
                log.warning("campaign_record_unreadable", campaign=campaign_id, debtor=debtor_id,
                            error=type(error).__name__)
                outcome = "skipped:unreadable_record"
            await self._finish(keys=[queue, key], args=[debtor_id, DONE + now, f"c:{outcome}"])
        if meta.get("state") == "running" and not due:
            await self._maybe_done(campaign_id, meta, now)
        return len(due)

    async def _send_one(self, campaign_id: str, debtor_id: str, segment: Segment, step: int,
                        template: str, now: float) -> str:
        assert self.sender is not None and self.chooser is not None
        debtor = await self.sender.debtors.get(debtor_id)
        if debtor is None:
            return "skipped:gone"
        why = await self._claim_step(campaign_id, debtor_id, segment, step, now)
        if why:
            return f"skipped:{why}"
        found = self._channel(debtor, segment)
        if found is None:
            return "skipped:no_channel"
        channel, address = found
        decision = await self.chooser.choose(debtor_id, segment)
        variables: dict[str, Any] = {}
        if decision.tone == "social_proof":
            variables = await self.chooser.proof_variables(segment.name, step)
        tag = CampaignTag(campaign_id, segment.name, step, decision.group, decision.probability,
                          workflow_start=step == 1)
        await self.sender.conversations.touch(debtor.id, channel=channel, language=debtor.language)
        message_id = message_id_for(campaign_id, debtor_id)
        verdict = await self.sender.send(PlannedMessage(
            message_id, debtor_id, channel, address, template,
            "campaign", variables, tone=decision.tone, tell_engine=True,
            campaign=tag.to_dict()), debtor=debtor, now=datetime.fromtimestamp(now, timezone.utc))
        if verdict.verdict == "refuse":
            # Refused on this channel (a closed WhatsApp window, a number flagged invalid) but
            # perhaps moved on to the next one by the send path's fallback.
            for other in ("sms", "whatsapp", "email"):
                moved = f"{message_id}~{other}"
                if await self.redis.exists(self.keys.outbound(moved)):
                    return "sent"
                if await self.redis.exists(self.keys.deferred_message(moved)):
                    return "deferred"
            return f"refused:{verdict.reason}"
        return "deferred" if verdict.verdict == "defer" else "sent"

    async def _claim_step(self, campaign_id: str, debtor_id: str, segment: Segment, step: int,
                          now: float) -> str | None:
        """Checked again at send time, then claimed: two campaigns of the same step (a re-run
        for late debtors and the next cohort's, or two started at once) must not both send it
        to one debtor. The claim names the workflow run (when its step 1 went), so it holds
        exactly; step 1's names the day. A retry of the same campaign finds its own claim."""
        key = self.keys.touch(debtor_id)
        wf_segment, wf_step, wf_started, engaged, last_campaign = (
            v.decode() if isinstance(v, bytes) else v
            for v in await self.redis.hmget(key, ["wf_segment", "wf_step", "wf_started",
                                                  "engaged", "campaign_id"]))
        if last_campaign == campaign_id:
            return None     # this campaign sent it before a crash: the send path knows (once)
        # since planning: replied or paid, or another campaign sent this step meanwhile
        out_of_step = _out_of_step(wf_segment, wf_step, engaged, segment, step)
        if out_of_step:
            return out_of_step
        run = wf_started if step > 1 else f"{datetime.fromtimestamp(now, timezone.utc):%Y%m%d}"
        claim = f"claim:{segment.name}:{step}:{run}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, claim, campaign_id)
            pipe.hget(key, claim)
            pipe.ttl(key)
            _new, owner, ttl = await pipe.execute()
        if ttl == -1:                       # the claim made the touch: do not keep it forever
            await self.redis.expire(key, 7 * 86400)
        if (owner.decode() if isinstance(owner, bytes) else owner) != campaign_id:
            return "already_sent"
        return None

    async def _maybe_done(self, campaign_id: str, meta: dict[str, str], now: float) -> None:
        queue = self.keys.campaign_queue(campaign_id)
        if await self.redis.zcount(queue, "-inf", f"({DONE}"):
            return
        key = self.keys.campaign(campaign_id)
        # Only one worker moves it to done and schedules what follows.
        if not await self.redis.hsetnx(key, "finished_at", repr(now)):
            return
        await self.redis.hset(key, "state", "done")
        await self.redis.srem(self.keys.campaigns_unfinished, campaign_id)
        log.info("campaign_done", campaign=campaign_id)
        await self._schedule_follow_up(campaign_id, meta, now)

    async def _schedule_follow_up(self, campaign_id: str, meta: dict[str, str], now: float) -> None:
        if meta.get("follow") != "1":
            return
        segment, step = self._segment(meta["segment"]), int(meta["step"])
        run = int(meta.get("run", 1))
        not_due = int(await self.redis.hget(self.keys.campaign(campaign_id),
                                            "c:skipped:not_due") or 0)
        origin = meta.get("parent") or campaign_id
        jobs = []
        if step > 1 and not_due and run < MAX_STEP_RUNS:
            # some debtors had the step before later (a deferral): try them again tomorrow
            jobs.append((step, run + 1, now + 86400))
        if step < len(segment.workflow.steps) and run == 1:
            gap = segment.workflow.step(step + 1).day - segment.workflow.step(step).day
            jobs.append((step + 1, 1, now + gap * 86400))
        for next_step, next_run, at in jobs:
            await self.redis.enqueue_job(  # type: ignore[attr-defined]
                "campaign_step", meta["segment"], next_step, origin, next_run,
                _job_id=f"wf:{origin}:{next_step}:{next_run}",
                _defer_until=datetime.fromtimestamp(at, timezone.utc),
                _queue_name=self.queue_name)
            await self.redis.hset(self.keys.campaign(campaign_id), "next_step_at", repr(at))
            log.info("campaign_step_scheduled", campaign=campaign_id, step=next_step,
                     run=next_run, at=datetime.fromtimestamp(at, timezone.utc).isoformat())

    async def _cancel_rest(self, campaign_id: str) -> None:
        queue, key = self.keys.campaign_queue(campaign_id), self.keys.campaign(campaign_id)
        while True:
            rest = await self.redis.zrangebyscore(queue, "-inf", f"({DONE}", 0, 1000)
            if not rest:
                return
            for raw in rest:
                await self._finish(keys=[queue, key], args=[raw, DONE + self.clock(), "c:cancelled"])

    def _segment(self, name: str) -> Segment:
        try:
            return self.book.get(name)
        except KeyError as error:
            raise CampaignError(str(error.args[0])) from None

    # --- the worker's loop -----------------------------------------------------------------
    async def tick(self, now: float | None = None) -> int:
        """One round over the active campaigns: plan a batch where planning, send what is
        due. Returns how much was done (0: nothing to do, sleep)."""
        work = 0
        for campaign_id in await self.active_ids():
            lock = f"{self.keys.campaign(campaign_id)}:planning_lock"
            if await self.redis.set(lock, "1", nx=True, ex=PLAN_LOCK_SECONDS):
                try:
                    if await self.plan_batch(campaign_id, now=now):
                        work += 1
                finally:
                    await self.redis.delete(lock)
            work += await self.dispatch(campaign_id, now=now)
        return work

    async def run_forever(self, stop: asyncio.Event, *, idle_seconds: float = 1.0) -> None:
        while not stop.is_set():
            try:
                work = await self.tick()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("campaign_tick_failed")
                work = 0
            if not work:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=idle_seconds)
                except asyncio.TimeoutError:
                    pass


def _out_of_step(wf_segment: str | None, wf_step: str | None, engaged: str | None,
                 segment: Segment, step: int) -> str | None:
    """Why the debtor's place in the workflow (their touch) does not allow this step: step 1
    not while a workflow of the segment runs; step k only right after step k-1 and only if
    they have not engaged since. Asked when planning and again when sending."""
    if step == 1:
        return "in_workflow" if wf_segment == segment.name and wf_step and engaged != "1" else None
    if wf_segment != segment.name or not wf_step or int(wf_step) != step - 1:
        return "not_at_step"
    return "engaged" if engaged == "1" else None
