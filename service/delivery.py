"""Handing outbound messages to their provider (Twilio for SMS and WhatsApp, SMTP or SendGrid
for email): paced per sender, retried with back-off, and never sent twice.

A message reaches this module once the send path (service/sending.py) decided it goes out and
the outbox (service/outbox.py) recorded it, in the same Lua script, as a delivery record
``nudge:delivery:<id>`` (state ``queued``) and an entry in ``nudge:delivery_due``. Then:

    queued --attempt--> attempting --provider accepted--> submitted --callbacks--> sent
        ^                   |                                  delivered / read
        |  429, refused     |  5xx, timeout: ambiguous          undelivered / failed
        +-------------------+  (reconciled with the provider before any new attempt)
                            |  4xx: permanent -> failed (error code acted on)

* **Never twice.** One worker at a time talks to the provider about a message (a lock). The
  record says ``attempting`` before the call; when a call may have reached the provider (a
  5xx, a timeout, a crash mid-call) the record keeps ``maybe_sent`` and the next attempt first
  asks the provider whether the message exists: a status callback that named our id (the id
  rides in the callback URL), else Twilio's message list for that number, matched on body or
  Content SID. Only when it is not there is it sent again.
* **Never dropped.** Retryable errors re-schedule the message; nothing gives up after N tries
  (a provider outage of an hour must not lose the morning's replies). The worker's sweep
  re-enqueues every due entry whose job was lost.
* **Pacing.** Each sender (a number, a Messaging Service, a mailbox) has a next free slot in
  Redis; a message takes the next slot and waits for it in the job queue (arq's deferred
  jobs), so any number of workers together keep to the configured rate.
* **State moves forward only** (``advance``): status callbacks arrive out of order, and a
  late ``sent`` must not undo ``delivered``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import Redis

from service.channel_config import ChannelConfig
from service.keys import Keys
from service.logs import get_logger
from service.tone_outcomes import ToneOutcomes

log = get_logger("delivery")

DELIVER_JOB = "deliver_message"
FAILURE_JOB = "handle_delivery_failure"

#: Ranks of delivery states: a state only ever moves to a higher rank. Terminal outcomes share
#: a rank, so the first one reported wins (delivered then a stray undelivered stays delivered).
RANK = {"queued": 0, "attempting": 1, "submitted": 2, "sent": 3,
        "delivered": 4, "undelivered": 4, "failed": 4, "read": 5}
FAILED_STATES = {"undelivered", "failed"}

#: Twilio's message statuses -> ours.
TWILIO_STATUS = {"accepted": "submitted", "scheduled": "submitted", "queued": "submitted",
                 "sending": "submitted", "sent": "sent", "delivered": "delivered",
                 "read": "read", "undelivered": "undelivered", "failed": "failed",
                 "canceled": "failed"}

# Forward-only state change, with a transcript entry when it moved. KEYS: record, transcript,
# pub/sub channel, due set. ARGV: message id, new state, rank table (JSON), now, extra fields
# (JSON object), transcript entry (JSON, "" for none).
_ADVANCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ranks = cjson.decode(ARGV[3])
local current = redis.call('HGET', KEYS[1], 'state') or 'queued'
if (ranks[ARGV[2]] or -1) <= (ranks[current] or 0) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated', ARGV[4])
local extra = cjson.decode(ARGV[5])
for k, v in pairs(extra) do redis.call('HSET', KEYS[1], k, v) end
if ranks[ARGV[2]] >= ranks['submitted'] then redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'data', ARGV[6])
  redis.call('PUBLISH', KEYS[3], ARGV[6])
end
return 1
"""

# The next free slot of a sender. Returned as a string: Lua numbers become integers on the
# way back to Python, and pacing works in fractions of a second.
_RESERVE_SLOT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, nxt)
redis.call('SET', KEYS[1], tostring(slot + interval), 'EX', 3600)
return tostring(slot)
"""


class ProviderError(Exception):
    """A provider refused or failed a send.

    kind: ``retry`` (the message was not created: throttled, refused for now), ``ambiguous``
    (it may have been created: 5xx, timeout, connection lost mid-request) or ``permanent``
    (it will never go: invalid number, unsubscribed, bad request); ``code`` is the provider's
    error code where it gave one (Twilio's 21610, an SMTP reply code...).
    """

    def __init__(self, kind: str, detail: str, code: str | None = None):
        super().__init__(detail)
        self.kind = kind
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ProviderResult:
    provider_id: str
    state: str = "submitted"          # one of RANK
    segments: int | None = None


class Provider(Protocol):
    async def send(self, record: dict[str, str]) -> ProviderResult: ...

    async def find_sent(self, record: dict[str, str]) -> str | None:
        """The provider id of this message if an earlier attempt created it, else None."""


class DeliveryStore:
    """The delivery records and the due set; the forward-only state change."""

    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._advance = redis.register_script(_ADVANCE)
        self.outcomes = ToneOutcomes(redis, keys)

    async def get(self, message_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.delivery(message_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def advance(self, record: dict[str, str], state: str, *, error_code: str | None = None,
                      **fields: Any) -> bool:
        """Move a message to `state` if that is forward; note it in the transcript. True if moved."""
        message_id = record["message_id"]
        conversation_id = record.get("conversation_id", "")
        extra = {k: str(v) for k, v in fields.items() if v is not None}
        if error_code:
            extra["error_code"] = error_code
        entry = json.dumps({"kind": "event", "name": "delivery", "message_id": message_id,
                            "channel": record.get("channel"), "status": state,
                            "error_code": error_code, "at": time.time()})
        moved = await self._advance(
            keys=[self.keys.delivery(message_id), self.keys.transcript(conversation_id),
                  self.keys.events_channel(conversation_id), self.keys.delivery_due],
            args=[message_id, state, json.dumps(RANK), time.time(), json.dumps(extra),
                  entry if conversation_id else ""])
        if moved and conversation_id and state in ("delivered", "read"):
            await self.outcomes.record(conversation_id, state, message_id=message_id)
        return bool(moved)

    async def due(self, before: float, limit: int = 500) -> list[str]:
        ids = await self.redis.zrangebyscore(self.keys.delivery_due, "-inf", before,
                                             start=0, num=limit)
        return [_s(i) for i in ids]


class Deliverer:
    """Runs in the worker: one call of `deliver` is one attempt at one message."""

    def __init__(self, redis: Redis, keys: Keys, config: ChannelConfig,
                 providers: dict[str, Provider], queue_name: str, *, on_failure=None):
        """`providers`: channel -> Provider. `on_failure(record)` (async) runs when a message
        ends failed or undelivered (opt-out on 21610, fall back to another channel...)."""
        self.redis = redis
        self.keys = keys
        self.config = config
        self.providers = providers
        self.queue_name = queue_name
        self.store = DeliveryStore(redis, keys)
        self.on_failure = on_failure
        self._reserve = redis.register_script(_RESERVE_SLOT)

    # --- scheduling -----------------------------------------------------------------
    async def schedule(self, message_id: str, at: float, *, tag: str) -> None:
        """(Re)queue an attempt at `at`. Each re-schedule is a job of its own (arq refuses a job
        id it already holds); two jobs for one message are harmless (lock and state)."""
        await self.redis.zadd(self.keys.delivery_due, {message_id: at})
        await enqueue_delivery(self.redis, message_id, at, tag=f"{tag}.{int(at * 1000)}",
                               queue_name=self.queue_name)

    async def requeue_stalled(self, now: float, grace: float = 60.0) -> int:
        """Due messages whose job disappeared (a crash between record and enqueue, a lost
        queue): enqueue them again. Called from the worker's sweep."""
        stalled = await self.store.due(now - grace)
        bucket = int(now // 30)
        for message_id in stalled:
            await enqueue_delivery(self.redis, message_id, now, tag=f"sweep{bucket}",
                                   queue_name=self.queue_name)
        return len(stalled)

    # --- one attempt ----------------------------------------------------------------
    async def deliver(self, message_id: str) -> str:
        """Try to hand one message to its provider. Returns what happened (for logs and tests):
        done, busy, paced, submitted, retry, ambiguous, failed, missing."""
        token = secrets.token_hex(8)
        lock_key = self.keys.delivery_lock(message_id)
        timeout = self.config.retry.provider_timeout_seconds
        if not await self.redis.set(lock_key, token, nx=True, px=int((timeout + 30) * 1000)):
            return "busy"
        try:
            return await self._attempt(message_id)
        finally:
            # Only our own lock: a lock that expired and was taken by another worker stays.
            if _s(await self.redis.get(lock_key)) == token:
                await self.redis.delete(lock_key)

    async def _attempt(self, message_id: str) -> str:
        record = await self.store.get(message_id)
        if not record:
            await self.redis.zrem(self.keys.delivery_due, message_id)
            return "missing"
        if RANK.get(record.get("state", ""), 0) >= RANK["submitted"]:   # handed over already
            await self.redis.zrem(self.keys.delivery_due, message_id)
            return "done"
        provider = self.providers.get(record["channel"])
        if provider is None:
            raise RuntimeError(f"no provider configured for channel {record['channel']!r}")

        # A record still `attempting` is an attempt that died mid-call (the worker was killed,
        # or lost Redis, after marking the attempt and before recording its outcome): the
        # provider may have the message, just as after a timeout. Without this, the next
        # attempt sent it again whenever no status callback had told us otherwise (found by
        # tests/e2e/test_faults.py: Redis killed while a send waited for Twilio's answer; the
        # debtor got the message twice).
        if record.get("maybe_sent") == "1" or record.get("state") == "attempting":
            try:
                found = record.get("provider_id") or await provider.find_sent(record)
            except ProviderError as error:
                # We cannot tell whether it exists: better late than twice. Ask again later.
                attempts = int(record.get("attempts") or 1)
                delay = self.config.retry.delay(attempts)
                await self.schedule(message_id, time.time() + delay, tag=f"find{attempts}")
                log.warning("delivery_reconcile_failed", message_id=message_id,
                            error=error.detail[:200])
                return "ambiguous"
            if found:
                await self.store.advance(record, "submitted", provider_id=found,
                                         reconciled="1")
                log.info("delivery_reconciled", message_id=message_id)
                return "submitted"

        now = time.time()
        wait = await self._pacing_wait(record, now)
        if wait > 1.0:
            await self.schedule(message_id, now + wait, tag=f"pace{record.get('attempts', '0')}")
            return "paced"
        if wait > 0:
            await asyncio.sleep(wait)

        attempts = int(record.get("attempts") or 0) + 1
        await self.redis.hset(self.keys.delivery(message_id),
                              mapping={"state": "attempting", "attempts": attempts,
                                       "attempt_at": time.time(), "slot": ""})
        try:
            result = await asyncio.wait_for(provider.send(record),
                                            self.config.retry.provider_timeout_seconds + 5)
        except TimeoutError:
            return await self._after_error(record, attempts, ProviderError(
                "ambiguous", "the provider did not answer in time"))
        except ProviderError as error:
            return await self._after_error(record, attempts, error)
        await self.store.advance(record, result.state, provider_id=result.provider_id,
                                 provider_segments=result.segments, submitted_at=time.time())
        log.info("delivery_submitted", message_id=message_id, channel=record["channel"],
                 attempts=attempts)
        return "submitted"

    async def _pacing_wait(self, record: dict[str, str], now: float) -> float:
        """Seconds until this message's send slot; a slot taken earlier is kept, so a message
        that waited for its slot is not sent to the back of the line again."""
        if record.get("slot"):
            return max(0.0, float(record["slot"]) - now)
        pacing_key, rate = self.config.pacing(record["channel"])
        if rate <= 0:
            return 0.0
        slot = float(_s(await self._reserve(keys=[self.keys.pacing(pacing_key)],
                                            args=[repr(now), repr(1.0 / rate)])))
        if slot - now > 1.0:
            await self.redis.hset(self.keys.delivery(record["message_id"]), "slot", repr(slot))
        return max(0.0, slot - now)

    async def _after_error(self, record: dict[str, str], attempts: int,
                           error: ProviderError) -> str:
        message_id = record["message_id"]
        key = self.keys.delivery(message_id)
        if error.kind == "permanent":
            await self.store.advance(record, "failed", error_code=error.code or "permanent",
                                     error_detail=error.detail[:300])
            log.warning("delivery_failed", message_id=message_id, code=error.code)
            if self.on_failure is not None:
                await self.on_failure(await self.store.get(message_id))
            return "failed"
        fields: dict[str, Any] = {"last_error": f"{error.code or ''} {error.detail}"[:300]}
        if error.kind == "ambiguous":
            fields["maybe_sent"] = "1"
        elif record.get("maybe_sent") != "1":
            fields["state"] = "queued"       # certainly not created: an ordinary retry
        await self.redis.hset(key, mapping=fields)
        delay = self.config.retry.delay(attempts)
        await self.schedule(message_id, time.time() + delay, tag=f"try{attempts}")
        log.warning("delivery_retry", message_id=message_id, kind=error.kind, code=error.code,
                    attempts=attempts, delay=round(delay, 1))
        return error.kind if error.kind == "ambiguous" else "retry"


async def enqueue_delivery(queue, message_id: str, at: float, *, tag: str, queue_name: str) -> None:
    """One arq job per attempt; `queue` is an ArqRedis."""
    await queue.enqueue_job(DELIVER_JOB, message_id, _job_id=f"out:{message_id}:{tag}",
                            _defer_until=datetime.fromtimestamp(at, UTC),
                            _queue_name=queue_name)


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
