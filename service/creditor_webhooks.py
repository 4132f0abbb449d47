"""Delivering business events to creditors: each event in ``Keys.business_events`` is POSTed to
its creditor's ``events_url`` (policies/creditors.yml), signed (service/signatures.py).

    POST <events_url>
    Content-Type: application/json
    Nudge-Signature: t=...,v1=...
    Nudge-Event-Id: <event id>          the receiver de-duplicates on it
    Nudge-Event-Type: <event type>
    <the event JSON exactly as stored>

* **At least once, never dropped.** A 2xx answer is the only success. Any other status, a
  timeout or a refused connection is retried with back-off (1 s doubling to 1 h, +-10 %
  jitter so a recovering receiver is not hit by every event at the same second), for as long
  as it takes. A receiver may see an event more than once (its answer was lost) and must
  de-duplicate on Nudge-Event-Id. Retries can overtake later events: order by occurred_at.
* **Who reads what.** The workers share one consumer group on the stream. New events come
  from XREADGROUP. A sorted set, ``Keys.creditor_webhook_due``, holds each event being
  delivered, scored by when it may next be tried; taking an event means moving its score
  to now + visibility timeout in one Lua step (a lease), so exactly one worker tries it, and
  a worker that dies mid-delivery leaves a lease that simply runs out. An event a dead
  worker read but never got to lease is still in the group's pending list: XAUTOCLAIM
  takes it over once it has sat idle for the visibility timeout.
* **State per event** in ``Keys.creditor_webhook_state(entry id)``: event id, type, creditor,
  attempts, next attempt, last error. Never the body or a secret, in Redis or in logs.
* A creditor with no ``events_url`` gets no deliveries: its events are acknowledged at once
  (they stay in the stream, which is never trimmed).

`now` (run_once) drives the scheduling only, so tests can step through back-off without
sleeping; signatures always carry the wall clock, which is what the receiver checks them by.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets as token_source
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.creditor_config import CreditorConfig
from service.keys import Keys
from service.logs import get_logger
from service.signatures import HEADER, sign

log = get_logger("creditor_webhooks")

GROUP = "creditor_webhooks"
FIRST_DELAY = 1.0
MAX_DELAY = 3600.0
JITTER = 0.1
DELIVERED_KEEP_SECONDS = 7 * 86400   # a delivered event's state, for "was X delivered?"
CONCURRENCY = 10                     # POSTs in flight at once per worker
_MAX_ERROR = 200

# Take an event for one delivery attempt. KEYS[1] due set, KEYS[2] the event's state;
# ARGV[1] entry id, ARGV[2] now, ARGV[3] lease until.
# 1 = taken; 0 = not due yet (or leased by another worker); 2 = already delivered.
_LEASE = """
if redis.call('HEXISTS', KEYS[2], 'delivered_at') == 1 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 2
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(fields: Mapping) -> bytes | None:
    raw = fields.get(b"data", fields.get("data"))
    return raw.encode() if isinstance(raw, str) else raw


def entry_time(entry_id: str) -> float:
    """When a stream entry was appended (its id is milliseconds-sequence)."""
    return int(entry_id.split("-", 1)[0]) / 1000


class CreditorWebhooks:
    def __init__(self, redis: Redis, keys: Keys, config: CreditorConfig,
                 secrets: Mapping[str, str],
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None, *,
                 consumer: str | None = None, timeout: float = 10.0,
                 visibility_timeout: float = 60.0, batch: int = 50,
                 rng: random.Random | None = None):
        if visibility_timeout <= timeout:
            # Otherwise a slow but live POST would be taken over and sent a second time.
            raise ValueError("visibility_timeout must be longer than the request timeout")
        self.redis, self.keys, self.config, self.secrets = redis, keys, config, secrets
        self.timeout = timeout
        self.visibility_timeout = visibility_timeout
        self.batch = batch
        self.consumer = consumer or (f"{socket.gethostname()}:{os.getpid()}:"
                                     f"{token_source.token_hex(3)}")
        self._session_factory = session_factory or (lambda: aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout)))
        self._session: aiohttp.ClientSession | None = None
        self._rng = rng or random.Random()
        self._lease = redis.register_script(_LEASE)
        self._group_ready = False
        self._claim_cursor = "0-0"

    # --- the loop ----------------------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        """Deliver until `stop` is set; pauses `interval` only when a round found nothing."""
        try:
            while not stop.is_set():
                try:
                    handled = await self.run_once()
                except Exception as exc:  # noqa: BLE001 - Redis down, say: it comes back
                    log.warning("creditor_webhook.round_failed", error=type(exc).__name__)
                    handled = 0
                if not handled:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self.close()

    async def run_once(self, now: float | None = None) -> int:
        """One round: retries that are due, new events, events a dead worker left behind
        (each at most `batch`). Returns how many events were attempted or acknowledged."""
        now = time.time() if now is None else now
        await self._ensure_group()
        found: dict[str, bytes | None] = {}
        for entry_id in await self.redis.zrangebyscore(self.keys.creditor_webhook_due, "-inf",
                                                       now, start=0, num=self.batch):
            found[_text(entry_id)] = None
        try:
            fresh = await self.redis.xreadgroup(GROUP, self.consumer,
                                                {self.keys.business_events: ">"},
                                                count=self.batch)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted under us: start over
                self._group_ready = False
                return 0
            raise
        for _stream, entries in fresh or []:
            for entry_id, fields in entries:
                found[_text(entry_id)] = _fields(fields)
        cursor, claimed, *_ = await self.redis.xautoclaim(
            self.keys.business_events, GROUP, self.consumer,
            min_idle_time=int(self.visibility_timeout * 1000), start_id=self._claim_cursor,
            count=self.batch)
        self._claim_cursor = _text(cursor)
        for entry_id, fields in claimed:
            found.setdefault(_text(entry_id), _fields(fields))

        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(entry_id: str, raw: bytes | None) -> int:
            async with gate:
                return await self._handle(entry_id, raw, now)

        results = await asyncio.gather(*(one(e, raw) for e, raw in found.items()))
        return sum(results)

    # --- one event ---------------------------------------------------------------------
    async def _handle(self, entry_id: str, raw: bytes | None, now: float) -> int:
        state_key = self.keys.creditor_webhook_state(entry_id)
        taken = await self._lease(keys=[self.keys.creditor_webhook_due, state_key],
                                  args=[entry_id, repr(now), repr(now + self.visibility_timeout)])
        if taken == 2:
            await self.redis.xack(self.keys.business_events, GROUP, entry_id)
            return 0
        if taken != 1:
            return 0
        if raw is None:
            rows = await self.redis.xrange(self.keys.business_events, entry_id, entry_id)
            if not rows:  # deleted from the stream (it is never trimmed; someone XDEL'd it)
                log.warning("creditor_webhook.event_gone", entry_id=entry_id)
                await self._finish(entry_id, delete_state=True)
                return 1
            raw = _fields(rows[0][1])
        try:
            event = json.loads(raw or b"")
        except ValueError:
            event = None
        if not isinstance(event, dict):
            attempts = await self._count_attempt(entry_id, {}, now)
            await self._failed(entry_id, {}, now, "the stored event is not valid JSON", None,
                               attempts)
            return 1
        endpoint = self.config.for_creditor(event.get("creditor"))
        if not endpoint.events_url:
            await self._finish(entry_id, delete_state=True)
            return 1
        await self._attempt(entry_id, event, raw, endpoint.events_url,
                            self.secrets.get(endpoint.secret_env or ""), endpoint.secret_env, now)
        return 1

    async def _attempt(self, entry_id: str, event: dict, body: bytes, url: str,
                       secret: str | None, secret_env: str | None, now: float) -> None:
        about = {"event_id": str(event.get("id", "")), "type": str(event.get("type", "")),
                 "creditor": str(event.get("creditor") or "")}
        attempts = await self._count_attempt(entry_id, about, now)
        if not secret:
            await self._failed(entry_id, about, now, f"secret {secret_env} is not set", None,
                               attempts)
            return
        headers = {"Content-Type": "application/json", HEADER: sign(secret, body),
                   "Nudge-Event-Id": about["event_id"], "Nudge-Event-Type": about["type"],
                   "Nudge-Delivery-Attempt": str(attempts), "User-Agent": "Nudge-Webhooks/1"}
        status: int | None = None
        try:
            if self._session is None:
                self._session = self._session_factory()
            async with self._session.post(url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.timeout)
                                          ) as response:
                status = response.status
                await response.read()  # drain, so the connection can be reused
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - refused, reset, DNS, bad URL: retry
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await self._finish(entry_id, status=status, attempts=attempts)
            log.info("creditor_webhook.delivered", **about, attempts=attempts, status=status)
        else:
            await self._failed(entry_id, about, now, error, status, attempts)

    async def _count_attempt(self, entry_id: str, about: dict[str, str], now: float) -> int:
        """Record that an attempt starts (before the POST: a crash mid-call still counts)."""
        state_key = self.keys.creditor_webhook_state(entry_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(state_key, mapping={**about, "last_attempt_at": repr(now)})
            pipe.hsetnx(state_key, "first_attempt_at", repr(now))
            pipe.hincrby(state_key, "attempts", 1)
            *_, attempts = await pipe.execute()
        return int(attempts)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        base = min(MAX_DELAY, FIRST_DELAY * 2 ** min(max(attempts - 1, 0), 32))
        return min(MAX_DELAY, base * self._rng.uniform(1 - JITTER, 1 + JITTER))

    async def _failed(self, entry_id: str, about: dict[str, str], now: float, error: str,
                      status: int | None, attempts: int) -> None:
        next_at = now + self.backoff(attempts)
        error = error[:_MAX_ERROR]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.creditor_webhook_state(entry_id),
                      mapping={"next_attempt_at": repr(next_at), "last_error": error,
                               "last_status": str(status or "")})
            pipe.zadd(self.keys.creditor_webhook_due, {entry_id: next_at})
            await pipe.execute()
        log.warning("creditor_webhook.retry", **about, attempts=attempts, error=error,
                    retry_in=round(next_at - now, 1))

    async def _finish(self, entry_id: str, *, status: int | None = None, attempts: int = 0,
                      delete_state: bool = False) -> None:
        """Acknowledge: the event leaves the pending list and the due set for good."""
        state_key = self.keys.creditor_webhook_state(entry_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.business_events, GROUP, entry_id)
            pipe.zrem(self.keys.creditor_webhook_due, entry_id)
            if delete_state:
                pipe.delete(state_key)
            else:
                pipe.hset(state_key, mapping={"delivered_at": repr(time.time()),
                                              "last_status": str(status or "")})
                pipe.hdel(state_key, "next_attempt_at")
                pipe.expire(state_key, DELIVERED_KEEP_SECONDS)
            await pipe.execute()

    # --- housekeeping ------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start: events recorded before the first worker ran are
            # delivered too.
            await self.redis.xgroup_create(self.keys.business_events, GROUP, id="0",
                                           mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def delivery_state(self, entry_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.creditor_webhook_state(entry_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def pending_summary(self, now: float | None = None) -> dict[str, Any]:
        """For the CLI: `due` (may be tried now), `retrying` (waiting for back-off, or in
        flight), `unread` (not yet picked up by any worker), `pending` (picked up, not yet
        delivered) and `oldest` (the oldest event not yet delivered, or None)."""
        now = time.time() if now is None else now
        due_key = self.keys.creditor_webhook_due
        summary: dict[str, Any] = {
            "due": await self.redis.zcount(due_key, "-inf", now),
            "retrying": await self.redis.zcount(due_key, f"({now!r}", "+inf"),
            "unread": 0, "pending": 0, "oldest": None,
        }
        oldest: str | None = None
        try:
            groups = await self.redis.xinfo_groups(self.keys.business_events)
        except ResponseError:  # no stream yet
            groups = []
        group = next((g for g in groups if _text(g.get("name")) == GROUP), None)
        if group is None:
            summary["unread"] = await self.redis.xlen(self.keys.business_events)
            first = await self.redis.xrange(self.keys.business_events, count=1)
            oldest = _text(first[0][0]) if first else None
        else:
            summary["unread"] = int(group.get("lag") or 0)
            pending = await self.redis.xpending(self.keys.business_events, GROUP)
            summary["pending"] = int(pending.get("pending") or 0)
            if summary["pending"]:
                oldest = _text(pending["min"])
            elif summary["unread"]:
                after = _text(group.get("last-delivered-id"))
                first = await self.redis.xrange(self.keys.business_events, f"({after}", count=1)
                oldest = _text(first[0][0]) if first else None
        if oldest:
            state = await self.delivery_state(oldest)
            appended = entry_time(oldest)
            summary["oldest"] = {
                "entry_id": oldest,
                "recorded_at": datetime.fromtimestamp(appended, UTC).isoformat(),
                "age_seconds": max(0, int(now - appended)),
                "event_id": state.get("event_id"), "creditor": state.get("creditor"),
                "attempts": int(state.get("attempts", 0)),
                "last_error": state.get("last_error"),
            }
        return summary
