"""The tone of a debtor's next campaign message (and of persuasive replies), from Redis state.

Gathers what :func:`bot.core.tone_choice.choose_tone` needs: the segment's posterior counts
(``Keys.tone_stats``), a manager's pin (``Keys.tone_pins``), the tones the guardrails suspend
(opt-out and complaint rates from ``Keys.outcome_counts``) and whether the debtor is protected
(vulnerability or hardship: a stop-state or the hardship note on their arrangements). The
allocation is recomputed at most every ``refresh_seconds`` per segment (outcomes arrive over
days; a Monte Carlo estimate per message would only cost time) and each new one is logged to
``Keys.tone_log`` so the allocation over time can be drawn.

Social proof: :meth:`proof_variables` gives ``proof_percent``/``proof_days`` only when the
measured outcomes of the same segment and step pass the sample and confidence rules
(:func:`bot.core.tone_choice.proof_percent`); otherwise nothing, and the template says it
without numbers.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bot.core.segments import Segment, SegmentBook
from bot.core.tone_choice import (
    ToneDecision,
    candidates,
    choose_tone,
    proof_percent,
    suspended_tones,
    thompson_allocation,
)
from service.keys import Keys
from service.tone_outcomes import ToneOutcomes

PROTECTING_STATES = ("vulnerability", "hardship")


@dataclass
class _SegmentState:
    at: float
    allocation: dict[str, float]
    suspended: dict[str, str]
    pinned: str | None


class ToneChooser:
    def __init__(self, redis: Redis, keys: Keys, book: SegmentBook, *,
                 rng: random.Random | None = None, refresh_seconds: float = 30.0,
                 clock=time.time):
        self.redis = redis
        self.keys = keys
        self.book = book
        self.outcomes = ToneOutcomes(redis, keys, book)
        self.rng = rng or random.Random()
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._cache: dict[str, _SegmentState] = {}

    async def state(self, segment: Segment, *, fresh: bool = False) -> _SegmentState:
        now = self.clock()
        cached = self._cache.get(segment.name)
        if cached is not None and not fresh and now - cached.at < self.refresh_seconds:
            return cached
        allowed = segment.workflow.tones
        totals = await self.outcomes.tone_totals(segment.name, "sent", "opted_out", "complained")
        suspended = suspended_tones(totals["sent"], totals["opted_out"], totals["complained"],
                                    self.book.bandit.guardrails)
        pinned_raw = await self.redis.hget(self.keys.tone_pins, segment.name)
        pinned = pinned_raw.decode() if isinstance(pinned_raw, bytes) else pinned_raw
        tones = candidates(allowed, suspended)
        allocation: dict[str, float] = {}
        if tones:
            arms = await self.outcomes.arms(segment.name, tuple(tones))
            allocation = thompson_allocation(arms, floor=self.book.bandit.exploration_floor,
                                             rng=self.rng)
        state = _SegmentState(now, allocation, suspended, pinned)
        if cached is None or cached.suspended != suspended or cached.pinned != pinned \
                or _moved(cached.allocation, allocation):
            await self.redis.xadd(self.keys.tone_log, {
                "kind": "allocation", "segment": segment.name, "at": repr(now),
                "allocation": json.dumps({k: round(v, 4) for k, v in allocation.items()}),
                "suspended": json.dumps(suspended), "pinned": pinned or ""},
                maxlen=2_000_000, approximate=True)
        self._cache[segment.name] = state
        return state

    async def is_protected(self, debtor_id: str) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.stop_states(debtor_id), list(PROTECTING_STATES))
            pipe.hget(self.keys.arrangement(debtor_id), "hardship")
            states, hardship = await pipe.execute()
        return any(states) or bool(hardship)

    async def choose(self, debtor_id: str, segment: Segment, *,
                     protected: bool | None = None) -> ToneDecision:
        state = await self.state(segment)
        if protected is None:
            protected = await self.is_protected(debtor_id)
        return choose_tone(debtor_id=debtor_id, allowed=segment.workflow.tones,
                           settings=self.book.bandit, allocation=state.allocation, rng=self.rng,
                           protected=protected, pinned=state.pinned, suspended=state.suspended)

    async def proof_variables(self, segment: str, step: int) -> dict[str, Any]:
        successes, total = await self.outcomes.proof_counts(segment, step)
        percent = proof_percent(successes, total, self.book.social_proof)
        if percent is None:
            return {}
        return {"proof_percent": percent, "proof_days": self.book.success_days}

    async def pin(self, segment: str, tone: str | None) -> None:
        """A manager's override (None lifts it). The caller audits who did it."""
        seg = self.book.get(segment)
        if tone is None:
            await self.redis.hdel(self.keys.tone_pins, segment)
        else:
            if tone not in seg.workflow.tones:
                raise ValueError(f"{tone!r} is not allowed in segment {segment!r} "
                                 f"(allowed: {', '.join(seg.workflow.tones)})")
            await self.redis.hset(self.keys.tone_pins, segment, tone)
        self._cache.pop(segment, None)


def _moved(before: dict[str, float], now: dict[str, float], by: float = 0.02) -> bool:
    """Worth a new snapshot in the log: a tone appeared, went, or moved by 2 points (Monte
    Carlo estimates always differ a little)."""
    if set(before) != set(now):
        return True
    return any(abs(before[t] - now[t]) >= by for t in now)
