"""The simulator's loop: synthetic debtors answering the real campaign system over simulated
weeks, and how much the bandit's tone choices cost against the best tone (regret).

Everything that decides and sends is the product's own code against a real Redis: the
Processor's contact rules, channel rules, templates and send path (``Sender``), ``Campaigns``
(planning, pacing, dispatch, follow-up steps), ``ToneChooser`` (Thompson sampling, holdout,
guardrails) and ``ToneOutcomes`` (touches, credit, resolution). The one stand-in is the
engine notification after a campaign message (``processor.sender.on_sent``), as in
tests/service/test_campaigns.py.

The clock is simulated: it starts on Monday 2026-11-23 08:00 UTC and moves in steps of one
hour; every call gets that time explicitly, and ``ToneChooser`` and ``Campaigns`` read it as
their clock. The worker is emulated hour by hour: the follow-up steps the campaigns enqueue
as deferred arq jobs (``campaign_step``) are run from the arq queue when their time comes,
the campaign loop (``Campaigns.tick``), deferred messages (``Sender.release_due``) and the
end of success windows (``ToneOutcomes.resolve_expired``).

What debtors do (sim/behaviour.py) is read back through the product's own entry points:
replies (``ToneOutcomes.record``), opt-outs (suppression and the ``opted_out`` event),
promises and payments (``BusinessEvents.append``).

Note: the Processor gets a plain Redis client, so the send path hands messages to the
outbox stream without enqueueing a delivery job (the outbox's documented behaviour for a
client that is not an arq pool); delivery to Twilio or a mail server is not simulated. The
campaigns get an arq pool, because they enqueue their follow-up steps there.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import job_key_prefix
from arq.jobs import deserialize_job

from service.business_events import BusinessEvents
from service.campaigns import Campaigns
from service.engine import EngineClient
from service.processing import Processor
from service.settings import Settings
from service.templates import TemplateRenderer
from service.tone_chooser import ToneChooser
from sim.behaviour import Event, World, regret_row
from sim.cohorts import make_cohort

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)   # a Monday
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
#: Each week's step-1 campaigns start on the Monday, each segment at its own (seeded) hour
#: from START's hour to this many hours later, so messages go out at different local hours.
START_HOUR_SPREAD = 11
#: Everything the simulator writes about itself; a Redis holding this was a simulation.
MARKER_KEY = "nudge-sim:marker"


class SimClock:
    """The simulated time, callable like ``time.time``."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class SegmentResult:
    name: str
    messages: int                      # campaign messages sent in the segment
    bandit_messages: int               # of which chosen by the bandit
    best_tone: str                     # the world's truth
    picks: dict[str, int]              # bandit picks per tone
    allocation: dict[str, float]       # ToneChooser's allocation at the end
    suspended: dict[str, str]
    best_share_last_week: float | None  # share of bandit picks that were the best tone
    regret: dict[str, float]           # cumulative: bandit, uniform, fixed_<tone>

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SimResult:
    parameters: dict[str, Any]
    segments: dict[str, SegmentResult]
    regret: dict[str, float]           # overall cumulative regret per policy
    fixed_best_tone: str               # the fixed tone best on average
    counts: dict[str, int]
    duplicate_message_ids: list[str]
    elapsed_seconds: float
    local_hours: dict[int, int] = field(default_factory=dict)   # campaign messages per local hour
    files: dict[str, str] = field(default_factory=dict)
    # per bandit message, in send order: (segment, week, tone, regret row) for the charts
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    allocation_log: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"parameters": self.parameters, "fixed_best_tone": self.fixed_best_tone,
                "regret": self.regret,
                "segments": {k: v.to_dict() for k, v in self.segments.items()},
                "counts": self.counts, "duplicate_message_ids": self.duplicate_message_ids,
                "messages_by_local_hour": {str(k): v for k, v in sorted(self.local_hours.items())},
                "elapsed_seconds": round(self.elapsed_seconds, 1), "files": self.files}


async def simulate(redis_url: str, *, weeks: int = 8, debtors_per_week: int = 600, seed: int = 1,
                   out_dir: Path | str = "reports/sim", world: World | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   charts: bool = True) -> SimResult:
    """Run the simulation against the Redis at `redis_url`, which is FLUSHED first: it must be
    a scratch database. Writes sim.json (and the charts) to `out_dir`."""
    if weeks < 1 or debtors_per_week < 1:
        raise ValueError("weeks and debtors_per_week must be at least 1")
    began = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = world or World(seed)
    with tempfile.TemporaryDirectory(prefix="nudge-sim-") as state_dir:
        settings = Settings.from_env({
            "REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": f"simulation-{seed}",
            "NUDGE_STATE_DIR": state_dir, "NUDGE_LOG_LEVEL": "WARNING"})
        plain = aioredis.Redis.from_url(redis_url)
        pool = await create_pool(RedisSettings.from_dsn(redis_url))
        engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
        try:
            await plain.flushdb()
            await plain.set(MARKER_KEY, json.dumps({"seed": seed, "started": time.time()}))
            run = _Run(settings, plain, pool, engine, world, weeks, debtors_per_week, seed,
                       progress)
            await run.loop()
            result = await run.result(time.monotonic() - began)
        finally:
            await engine.close()
            await pool.aclose()
            await plain.aclose()
    result.parameters["out_dir"] = str(out)
    result.files["sim.json"] = str(out / "sim.json")
    if charts:
        from sim.charts import write_charts

        result.files.update({k: str(v) for k, v in write_charts(result, out).items()})
    result.elapsed_seconds = time.monotonic() - began
    (out / "sim.json").write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
                                  + "\n")
    return result


class _Run:
    def __init__(self, settings: Settings, plain, pool, engine, world: World, weeks: int,
                 per_week: int, seed: int, progress):
        self.settings = settings
        self.redis = plain
        self.pool = pool
        self.world = world
        self.weeks = weeks
        self.per_week = per_week
        self.seed = seed
        self.progress = progress
        self.clock = SimClock(START.timestamp())
        self.processor = Processor(settings, plain, engine, TemplateRenderer(settings.templates_dir))
        self.told: list[str] = []

        async def tell_engine(plan):       # the engine is Rasa's; here we note what it is told
            self.told.append(plan.message_id)
        self.processor.sender.on_sent = tell_engine
        self.keys = self.processor.keys
        self.book = self.processor.segments
        missing = [s for s in self.book.names if s not in world.base]
        if missing:
            raise ValueError(f"the world has no behaviour for segment {missing[0]!r}")
        self.chooser = ToneChooser(plain, self.keys, self.book, rng=random.Random(seed),
                                   clock=self.clock)
        self.outcomes = self.chooser.outcomes
        self.campaigns = Campaigns(pool, self.keys, self.book, rules=self.processor.rules,
                                   sender=self.processor.sender, chooser=self.chooser,
                                   queue_name=settings.queue_name, clock=self.clock)
        self.events = BusinessEvents(plain, self.keys)
        self.rng = random.Random(f"{seed}:cohorts")
        self.allowed = {s.name: s.workflow.tones for s in self.book.segments}
        self.fixed_best = world.best_on_average(self.allowed)
        self.fixed = tuple(dict.fromkeys(("soft", self.fixed_best)))
        self.pending: list[tuple[float, int, Event]] = []
        self.seq = itertools.count()
        self.debtors: dict[str, Any] = {}
        self.zones: dict[tuple[str, str | None], ZoneInfo] = {}
        self.outbox_after = "0-0"
        self.seen: Counter[str] = Counter()
        self.rows: list[dict[str, Any]] = []
        self.sent_per_segment: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.starts: dict[float, list[str]] = defaultdict(list)
        self.last_step: dict[str, tuple[str, int]] = {}
        self.per_debtor: Counter[str] = Counter()
        self.local_hours: Counter[int] = Counter()

    # --- the loop ----------------------------------------------------------------------
    async def loop(self) -> None:
        hours = self.weeks * 7 * 24
        for hour in range(hours):
            now = START.timestamp() + hour * HOUR
            self.clock.now = now
            if hour % (7 * 24) == 0:
                await self._new_cohort(hour // (7 * 24) + 1, now)
            await self._fire_events(now)
            await self._run_scheduled_jobs(now)
            for segment in self.starts.pop(now, []):
                await self.campaigns.start(segment, 1, by="simulator")
                self.counts["campaigns_started"] += 1
            while await self.campaigns.tick(now):
                pass
            when = datetime.fromtimestamp(now, UTC)
            while await self.processor.sender.release_due(when) >= 200:
                pass
            await self._read_outbox()
            self.counts["resolved_at_window_end"] += await self.outcomes.resolve_expired(now)
            if self.progress and (hour + 1) % 24 == 0:
                self.progress((hour + 1) // 24, hours // 24)
        self.end = START.timestamp() + hours * HOUR

    async def _new_cohort(self, week: int, now: float) -> None:
        as_of = datetime.fromtimestamp(now, UTC).date()
        cohort = make_cohort(week, self.per_week, as_of, self.rng)
        for debtor in cohort:
            await self.processor.debtors.upsert(debtor)
            self.debtors[debtor.id] = debtor
        self.counts["debtors"] += len(cohort)
        monday = now - (now - START.timestamp()) % WEEK
        for segment in self.book.names:
            self.starts[monday + self.rng.randint(0, START_HOUR_SPREAD) * HOUR].append(segment)

    async def _run_scheduled_jobs(self, now: float) -> None:
        """What the arq worker would run now: the deferred ``campaign_step`` jobs."""
        queue = self.settings.queue_name
        due = await self.pool.zrangebyscore(queue, "-inf", int(now * 1000))
        for raw in due:
            job_id = raw.decode() if isinstance(raw, bytes) else raw
            stored = await self.pool.get(job_key_prefix + job_id)
            if stored is None:
                await self.pool.zrem(queue, job_id)
                continue
            job = deserialize_job(stored)
            if job.function != "campaign_step":
                self.counts["other_jobs_left"] += 1
                continue
            segment, step, origin, run = job.args
            await self.campaigns.start(segment, step, by="scheduler", run=run, parent=origin)
            self.counts["campaign_steps_run"] += 1
            async with self.pool.pipeline(transaction=True) as pipe:
                pipe.zrem(queue, job_id)
                pipe.delete(job_key_prefix + job_id)
                await pipe.execute()

    # --- messages out, responses in ---------------------------------------------------
    async def _read_outbox(self) -> None:
        while True:
            rows = await self.redis.xrange(self.keys.outbox, min=f"({self.outbox_after}",
                                           count=500)
            if not rows:
                return
            for entry_id, fields in rows:
                self.outbox_after = entry_id.decode()
                await self._on_message(json.loads(fields[b"data"]))

    async def _on_message(self, message: dict[str, Any]) -> None:
        message_id = message["message_id"]
        self.seen[message_id] += 1
        if not message_id.startswith("cmp:"):
            self.counts["other_messages"] += 1
            return
        base_id = message_id.split("~", 1)[0]
        debtor_id = base_id.rsplit(":", 1)[1]
        touch = await self.outcomes.touch_of(debtor_id)
        if touch.get("message_id") == base_id:
            segment, step, tone = touch["segment"], int(touch["step"]), touch["tone"]
            group, sent_at = touch["group"], float(touch["sent_at"])
        else:
            # Another campaign message reached the debtor later in the same simulated hour
            # and replaced the touch: what this one was is in its plan (sent at this hour).
            tag = json.loads(message["extra"]["plan"])["campaign"]
            segment, step, tone = tag["segment"], int(tag["step"]), message["tone"]
            group, sent_at = tag["group"], self.clock.now
            self.counts["touch_replaced_same_hour"] += 1
        channel = message["channel"]
        last = self.last_step.get(debtor_id)
        if step > 1 and last == (segment, step):
            self.counts["same_step_twice"] += 1     # see the report: overlapping step runs
        self.last_step[debtor_id] = (segment, step)
        debtor = self.debtors[debtor_id]
        local_hour = datetime.fromtimestamp(sent_at, self._zone(debtor)).hour
        self.counts["campaign_messages"] += 1
        self.counts[f"group:{group}"] += 1
        self.sent_per_segment[segment] += 1
        self.per_debtor[debtor_id] += 1
        self.local_hours[local_hour] += 1
        # the world's draw is keyed by the debtor's n-th campaign message, not the message id:
        # campaign ids carry random parts, and the draw must not depend on them
        draw_key = f"{debtor_id}#{self.per_debtor[debtor_id]}"
        for event in self.world.respond(message_id=draw_key, debtor_id=debtor_id, segment=segment,
                                        tone=tone, channel=channel, local_hour=local_hour,
                                        step=step, sent_at=sent_at):
            heapq.heappush(self.pending, (event.at, next(self.seq), event))
        if group != "bandit":
            return
        probabilities = self.world.probabilities(segment, self.allowed[segment], channel=channel,
                                                 local_hour=local_hour, step=step,
                                                 debtor_id=debtor_id)
        self.rows.append({"segment": segment, "tone": tone, "sent_at": sent_at,
                          "week": int((sent_at - START.timestamp()) // WEEK) + 1,
                          "best": self.world.best_tone(segment, self.allowed[segment]),
                          "regret": regret_row(probabilities, tone, self.fixed)})

    def _zone(self, debtor) -> ZoneInfo:
        key = (debtor.country, debtor.phone)
        zone = self.zones.get(key)
        if zone is None:
            name = self.processor.rules.config.jurisdictions.zones_for(*key)[0]
            zone = self.zones[key] = ZoneInfo(name)
        return zone

    async def _fire_events(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            _at, _n, event = heapq.heappop(self.pending)
            await self._fire(event)

    async def _fire(self, event: Event) -> None:
        debtor_id, at = event.debtor_id, event.at
        when = datetime.fromtimestamp(at, UTC)
        debtor = await self.processor.debtors.get(debtor_id)
        if debtor is None:
            return
        if event.kind == "payment_received" and debtor.balance_minor <= 0:
            return
        self.counts[event.kind] += 1
        if event.kind == "replied":
            await self.outcomes.record(debtor_id, "replied", at=at)
        elif event.kind == "opted_out":
            channel = str(event.data["channel"])
            address = debtor.email if channel == "email" else debtor.phone
            await self.processor.rules.suppressions.suppress(
                channel, address or "", "keyword",
                whatsapp_phone=debtor.phone if channel != "email" else None)
            await self.processor.conversations.add_event(debtor_id, "opted_out",
                                                         {"channel": channel, "via": "simulation"})
            # add_event credits the outcome at the wall-clock time; the simulated one counts
            await self.outcomes.record(debtor_id, "opted_out", at=at)
        elif event.kind == "promise_made":
            await self.events.append("promise_made", debtor_id, {
                "date": (when.date() + timedelta(days=7)).isoformat(),
                "amount": str(debtor.balance), "currency": debtor.currency},
                occurred_at=when, event_id=f"sim:{debtor_id}:promise:{next(self.seq)}")
        elif event.kind == "payment_received":
            payment_id = f"sim-{next(self.seq)}"
            await self.events.append("payment_received", debtor_id, {
                "payment_id": payment_id, "amount": str(debtor.balance),
                "currency": debtor.currency, "paid_on": when.date().isoformat(),
                "source": "simulation", "balance": "0"},
                occurred_at=when, event_id=f"payment_received:{payment_id}")
            # the creditor's next file: nothing owed any more
            await self.processor.debtors.upsert(replace(debtor, balance_minor=0))
        elif event.kind == "promise_broken":
            await self.processor.debtors.upsert(replace(debtor, payment_history="broken_promise"))

    # --- the result -------------------------------------------------------------------
    async def result(self, elapsed: float) -> SimResult:
        segments: dict[str, SegmentResult] = {}
        overall: Counter[str] = Counter()
        last_week = self.end - WEEK
        for segment in self.book.segments:
            name = segment.name
            rows = [r for r in self.rows if r["segment"] == name]
            best = self.world.best_tone(name, self.allowed[name])
            regret: Counter[str] = Counter()
            for row in rows:
                regret.update(row["regret"])
            overall.update(regret)
            recent = [r for r in rows if r["sent_at"] >= last_week]
            state = await self.chooser.state(segment, fresh=True)
            segments[name] = SegmentResult(
                name=name, messages=self.sent_per_segment[name], bandit_messages=len(rows),
                best_tone=best, picks=dict(Counter(r["tone"] for r in rows)),
                allocation={k: round(v, 4) for k, v in state.allocation.items()},
                suspended=dict(state.suspended),
                best_share_last_week=(round(sum(r["tone"] == best for r in recent) / len(recent), 4)
                                      if recent else None),
                regret={k: round(v, 3) for k, v in sorted(regret.items())})
        duplicates = sorted(m for m, n in self.seen.items() if n > 1)
        parameters = {
            "weeks": self.weeks, "debtors_per_week": self.per_week, "seed": self.seed,
            "start": START.isoformat(), "end": datetime.fromtimestamp(self.end, UTC).isoformat(),
            "clock_step_seconds": HOUR, "policies": str(self.settings.policies_dir),
            "templates": str(self.settings.templates_dir),
            "world": {"base": self.world.base, "channel": self.world.channel,
                      "step": {str(k): v for k, v in self.world.step.items()},
                      "reply": self.world.reply, "opt_out": self.world.opt_out,
                      "noise_a": self.world.noise_a,
                      "success_delay_days": self.world.success_delay_days,
                      "promise_share": self.world.promise_share,
                      "promise_kept": self.world.promise_kept}}
        counts = dict(sorted(self.counts.items()))
        counts["engine_told"] = len(self.told)
        counts["outbox_messages"] = sum(self.seen.values())
        return SimResult(parameters=parameters, segments=segments,
                         regret={k: round(v, 3) for k, v in sorted(overall.items())},
                         fixed_best_tone=self.fixed_best, counts=counts,
                         duplicate_message_ids=duplicates, elapsed_seconds=elapsed,
                         local_hours=dict(self.local_hours),
                         rows=self.rows, allocation_log=await self._allocation_log())

    async def _allocation_log(self) -> list[dict[str, Any]]:
        """The allocations ToneChooser logged as they changed (Keys.tone_log)."""
        out = []
        after = "-"
        while True:
            page = await self.redis.xrange(self.keys.tone_log, min=after, count=5000)
            for _entry_id, fields in page:
                if fields.get(b"kind") == b"allocation":
                    out.append({"segment": fields[b"segment"].decode(),
                                "at": float(fields[b"at"]),
                                "allocation": json.loads(fields[b"allocation"])})
            if len(page) < 5000:
                return out
            after = "(" + page[-1][0].decode()
