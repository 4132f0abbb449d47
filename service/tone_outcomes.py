"""Outcomes of campaign messages, credited to the message before them, and the bandit's counts.

When a campaign message goes out (``Sender`` calls :meth:`ToneOutcomes.record_sent`), the
debtor's *touch* (``Keys.touch``) records what it was: assignment id, segment, step, tone,
channel, group (bandit / holdout / pinned / guardrail), the probability it was chosen with,
when it went, until when outcomes are credited to it (``attribution_days``) and until when a
success counts for the bandit (``success.within_days``).

Outcomes (``bot.core.segments.OUTCOMES``) arrive from wherever they happen: delivery status
callbacks (delivered, read), inbound processing (replied), the payment page (link_clicked),
arrangements and payments via the business-events stream (pay_later_chosen, promise_made,
paid), opt-outs and hand-offs (opted_out, complained). :meth:`record` credits each outcome at
most once per message, in one Lua script, to

* ``Keys.outcome_counts``: counts per segment × step × tone × channel × group × outcome;
* the bandit, when the outcome is a success inside the message's success window: the message
  is marked *won*;
* the workflow: an engaging outcome (a reply, a promise...) stops the debtor's next steps.

Every message is *resolved* when its window ends (:meth:`resolve_expired`, run by the worker)
or when the next step replaces it: a success if it was won, else a failure
(``Keys.tone_stats`` ``<segment>|<tone>|s`` or ``|f`` + 1). Successes and failures reach the
bandit on the same clock, so a tone sent a lot in the last days is not favoured by successes
that arrive before its failures can (delayed-feedback bias). Each
resolution is also logged to ``Keys.tone_log`` by assignment id (no personal data), beside the
assignment and its probability, for inverse-propensity analysis.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bot.core.segments import ENGAGED_OUTCOMES, OUTCOMES, SegmentBook
from bot.core.tone_choice import ArmCounts
from service.keys import Keys
from service.logs import get_logger

log = get_logger("tone_outcomes")

#: A touch outlives its last message by this long (the workflow's memory of the debtor).
TOUCH_TTL_SECONDS = 90 * 86400

# Shared by the scripts below: resolve the touch in KEYS[1] as success (1) or failure (0).
# KEYS: touch, touch_open, tone_stats, outcome_counts, tone_log. `f`: the touch's fields in
# _FIELDS order; `debtor`: its id (the member of touch_open).
_RESOLVE = """
local function resolve(f, debtor, success, at)
  redis.call('HSET', KEYS[1], 'resolved', success == 1 and 'success' or 'failure')
  redis.call('ZREM', KEYS[2], debtor)
  local seg, step, tone = f[2], f[3], f[4]
  if f[12] == '1' then
    redis.call('HINCRBY', KEYS[3], seg .. '|' .. tone .. (success == 1 and '|s' or '|f'), 1)
  end
  redis.call('HINCRBY', KEYS[3], seg .. '|' .. step .. '|proof_n', 1)
  local base = seg .. '|' .. step .. '|' .. tone .. '|' .. f[5] .. '|' .. f[6] .. '|'
  redis.call('HINCRBY', KEYS[4], base .. 'resolved', 1)
  if success == 1 then
    redis.call('HINCRBY', KEYS[3], seg .. '|' .. step .. '|proof_s', 1)
    redis.call('HINCRBY', KEYS[4], base .. 'success', 1)
  end
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 2000000, '*', 'kind', 'resolve', 'aid', f[13],
             'success', tostring(success), 'at', tostring(at))
end
"""
_FIELDS = ("message_id", "segment", "step", "tone", "channel", "group", "attribute_until",
           "deadline", "resolved", "success", "sent_at", "bandit", "aid", "won")
_READ = "local f = redis.call('HMGET', KEYS[1], " + ", ".join(f"'{n}'" for n in _FIELDS) + ")\n"

# ARGV: debtor, outcome, at, message id ('' = any), engaged (1/0)
_RECORD = _RESOLVE + """
local debtor = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
""" + _READ + """
local at = tonumber(ARGV[3])
if at < tonumber(f[11]) or at > tonumber(f[7]) then return 0 end
if ARGV[4] ~= '' and ARGV[4] ~= f[1] then return 0 end
if redis.call('HSETNX', KEYS[1], 'o:' .. ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[4], f[2] .. '|' .. f[3] .. '|' .. f[4] .. '|' .. f[5] .. '|' .. f[6]
           .. '|' .. ARGV[2], 1)
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'engaged', '1') end
if f[9] == 'open' and at <= tonumber(f[8])
   and string.find(',' .. f[10] .. ',', ',' .. ARGV[2] .. ',', 1, true) then
  redis.call('HSETNX', KEYS[1], 'won', ARGV[3])
end
return 1
"""

# ARGV: debtor, now. A failure once the window has closed (only if still open).
_EXPIRE = _RESOLVE + """
local debtor = ARGV[1]
""" + _READ + """
if f[9] ~= 'open' then redis.call('ZREM', KEYS[2], debtor) return 0 end
if tonumber(f[8]) > tonumber(ARGV[2]) then return 0 end
resolve(f, debtor, f[14] and 1 or 0, tonumber(ARGV[2]))
return 1
"""

# ARGV: debtor, now, ttl, the new touch as JSON (field -> value), deadline, assignment log JSON
# A new campaign message replaces the touch; the one before it, if still open, failed (the next
# step went out before it succeeded). Workflow fields (wf_*) carry over unless given.
_SENT = _RESOLVE + """
local debtor = ARGV[1]
""" + _READ + """
local new = cjson.decode(ARGV[4])
if f[13] == new['aid'] then return 0 end
if f[9] == 'open' then resolve(f, debtor, f[14] and 1 or 0, tonumber(ARGV[2])) end
local keep = redis.call('HMGET', KEYS[1], 'wf_segment', 'wf_started', 'engaged')
redis.call('DEL', KEYS[1])
if new['wf_started'] == nil and keep[2] then new['wf_started'] = keep[2] end
if new['engaged'] == nil then new['engaged'] = (keep[1] == new['segment'] and keep[3]) or '0' end
for k, v in pairs(new) do redis.call('HSET', KEYS[1], k, tostring(v)) end
redis.call('HSET', KEYS[1], 'resolved', 'open', 'wf_segment', new['segment'])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), debtor)
local base = new['segment'] .. '|' .. new['step'] .. '|' .. new['tone'] .. '|' .. new['channel']
             .. '|' .. new['group'] .. '|'
redis.call('HINCRBY', KEYS[4], base .. 'sent', 1)
redis.call('HSETNX', KEYS[1], 'o:sent', ARGV[2])
local log = cjson.decode(ARGV[6])
local args = {'XADD', KEYS[5], 'MAXLEN', '~', 2000000, '*'}
for k, v in pairs(log) do table.insert(args, k) table.insert(args, tostring(v)) end
redis.call(unpack(args))
return 1
"""


@dataclass(frozen=True)
class CampaignTag:
    """What a campaign message is, carried on its ``PlannedMessage`` to the moment it is sent."""

    campaign_id: str
    segment: str
    step: int
    group: str
    probability: float
    workflow_start: bool = False    # step 1: the debtor's workflow starts today

    def to_dict(self) -> dict[str, Any]:
        return {"campaign_id": self.campaign_id, "segment": self.segment, "step": self.step,
                "group": self.group, "probability": self.probability,
                "workflow_start": self.workflow_start}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CampaignTag":
        return cls(**raw)


class ToneOutcomes:
    def __init__(self, redis: Redis, keys: Keys, book: SegmentBook | None = None):
        """`book` (policies/segments.yml) is needed to record a sent message; recording
        outcomes needs nothing from it (the touch carries its own windows)."""
        self.redis = redis
        self.keys = keys
        self.book = book
        self._record = redis.register_script(_RECORD)
        self._expire = redis.register_script(_EXPIRE)
        self._sent = redis.register_script(_SENT)

    def _keys(self, debtor_id: str) -> list[str]:
        return [self.keys.touch(debtor_id), self.keys.touch_open, self.keys.tone_stats,
                self.keys.outcome_counts, self.keys.tone_log]

    async def record_sent(self, debtor_id: str, message_id: str, tag: CampaignTag, *, tone: str,
                          channel: str, at: float | None = None) -> bool:
        """The campaign message went out: it becomes the debtor's touch. Idempotent per
        message (a retried send does not count twice)."""
        if self.book is None:
            raise RuntimeError("ToneOutcomes needs the segment book to record a sent message")
        at = time.time() if at is None else at
        message_id = message_id.split("~", 1)[0]   # moved to another channel: same assignment
        aid = uuid.uuid5(uuid.NAMESPACE_URL, message_id).hex
        deadline = at + self.book.success_days * 86400
        touch = {"aid": aid, "message_id": message_id, "campaign_id": tag.campaign_id,
                 "segment": tag.segment, "step": tag.step, "tone": tone, "channel": channel,
                 "group": tag.group, "probability": round(tag.probability, 6), "sent_at": at,
                 "attribute_until": at + self.book.attribution_days * 86400,
                 "deadline": deadline, "success": ",".join(sorted(self.book.success_outcomes)),
                 # the bandit learns from its own choices and the holdout's fixed tone, not
                 # from guardrail or pinned choices (those say nothing about the allocation)
                 "bandit": "1" if tag.group in ("bandit", "holdout") else "0",
                 "wf_step": tag.step}
        if tag.workflow_start:
            touch["wf_started"] = at
            touch["engaged"] = "0"
        entry = {"kind": "assign", "aid": aid, "campaign": tag.campaign_id,
                 "segment": tag.segment, "step": tag.step, "tone": tone, "channel": channel,
                 "group": tag.group, "p": round(tag.probability, 6), "at": at}
        done = await self._sent(keys=self._keys(debtor_id),
                                args=[debtor_id, at, TOUCH_TTL_SECONDS, _strings(touch),
                                      deadline, _strings(entry)])
        return bool(done)

    async def record(self, debtor_id: str | None, outcome: str, *, at: float | None = None,
                     message_id: str | None = None) -> bool:
        """Credit `outcome` to the debtor's last campaign message, if it came within the
        attribution window (and, with `message_id`, only to that message). True if counted."""
        if not debtor_id:
            return False
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        at = time.time() if at is None else at
        base_id = (message_id or "").split("~", 1)[0]   # a fallback's id names its original
        counted = await self._record(keys=self._keys(debtor_id),
                                     args=[debtor_id, outcome, at, base_id,
                                           "1" if outcome in ENGAGED_OUTCOMES else "0"])
        return bool(counted)

    async def resolve_expired(self, now: float | None = None, *, batch: int = 1000) -> int:
        """Messages whose success window closed without a success: failures for the bandit."""
        now = time.time() if now is None else now
        resolved = 0
        while True:
            due = await self.redis.zrangebyscore(self.keys.touch_open, "-inf", now, 0, batch)
            if not due:
                return resolved
            for raw in due:
                debtor_id = raw.decode() if isinstance(raw, bytes) else raw
                resolved += int(await self._expire(keys=self._keys(debtor_id),
                                                   args=[debtor_id, now]))
            if len(due) < batch:
                return resolved

    # --- reading -------------------------------------------------------------------------
    async def touch_of(self, debtor_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.touch(debtor_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def arms(self, segment: str, tones: tuple[str, ...]) -> dict[str, ArmCounts]:
        fields = [f"{segment}|{t}|{x}" for t in tones for x in ("s", "f")]
        values = await self.redis.hmget(self.keys.tone_stats, fields)
        counts = [int(v or 0) for v in values]
        return {t: ArmCounts(counts[2 * i], counts[2 * i + 1]) for i, t in enumerate(tones)}

    async def proof_counts(self, segment: str, step: int) -> tuple[int, int]:
        """(successes, resolved) for social proof: comparable debtors, same segment and step."""
        s, n = await self.redis.hmget(self.keys.tone_stats, [f"{segment}|{step}|proof_s",
                                                             f"{segment}|{step}|proof_n"])
        return int(s or 0), int(n or 0)

    async def counts(self) -> dict[tuple[str, str, str, str, str, str], int]:
        """Every outcome counter: (segment, step, tone, channel, group, outcome) -> count."""
        out: dict[tuple[str, str, str, str, str, str], int] = {}
        async for field, value in self.redis.hscan_iter(self.keys.outcome_counts, count=1000):
            parts = tuple(_s(field).split("|"))
            if len(parts) == 6:
                out[parts] = int(value)  # type: ignore[index]
        return out

    async def tone_totals(self, segment: str, *outcomes: str) -> dict[str, dict[str, int]]:
        """Per outcome, per tone: how many messages in the segment had it (all steps and
        channels), from one scan of the counters."""
        totals: dict[str, dict[str, int]] = {name: {} for name in outcomes}
        for (seg, _step, tone, _channel, _group, name), n in (await self.counts()).items():
            if seg == segment and name in totals:
                totals[name][tone] = totals[name].get(tone, 0) + n
        return totals


def _strings(fields: dict[str, Any]) -> str:
    """JSON with every value as text: Lua's number formatting would shorten timestamps."""
    return json.dumps({k: repr(v) if isinstance(v, float) else str(v) for k, v in fields.items()})


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: Business events (service/business_events.py) that are outcomes of the message before them.
BUSINESS_EVENT_OUTCOMES = {
    "pay_link_opened": "link_clicked",
    "promise_made": "promise_made",
    "payment_received": "paid",
}


def outcome_of_business_event(event_type: str, data: dict[str, Any]) -> str | None:
    """The outcome a business event is, if any: an accepted plan is "pay later"; an accepted
    settlement is a promise to pay the agreed sum."""
    if event_type == "arrangement_accepted":
        return "pay_later_chosen" if data.get("kind") == "plan" else "promise_made"
    return BUSINESS_EVENT_OUTCOMES.get(event_type)
