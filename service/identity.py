"""Identity checks shared by the conversation and the payment page.

A person proves who they are by answering every method the debtor's portfolio configures, in
turn. Wrong answers count against the debtor, whichever door they came through: the chat and
the payment page share one attempt counter, so a link forwarded to someone else cannot be
used to guess a date of birth while the chat counter says all is well. After
`max_attempts` wrong answers both doors lock for `lock_minutes`.

A success is remembered per *scope* for `valid_for_minutes`: "chat" for the conversation,
"page:<session>" for one browser session of the payment page.

Layout: hash ``Keys.verification(debtor_id)`` with ``attempts``, ``locked_until`` and per scope
``step:<scope>`` (methods passed so far) and ``verified_until:<scope>`` (epoch seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from bot.core.arrangement_policy import VerificationPolicy
from bot.core.identity import answer_matches
from service.keys import Keys

Outcome = Literal["verified", "next", "wrong", "locked"]

# Count a wrong answer and lock at the limit in one step: two answers arriving at once (chat
# and page) must not both slip under the limit.
_WRONG = """
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'locked_until', ARGV[2], 'attempts', 0)
  return -1
end
return attempts
"""


@dataclass(frozen=True)
class CheckResult:
    outcome: Outcome
    method: str | None       # the method to ask next (next, wrong), None otherwise
    step: int                # 1-based number of that method among the configured ones
    steps: int
    attempts_left: int


class IdentityChecks:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._wrong = redis.register_script(_WRONG)

    async def _fields(self, debtor_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.verification(debtor_id))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    async def is_verified(self, debtor_id: str, scope: str, now: float) -> bool:
        until = (await self._fields(debtor_id)).get(f"verified_until:{scope}")
        return bool(until) and float(until) > now

    async def locked_until(self, debtor_id: str, now: float) -> float | None:
        until = (await self._fields(debtor_id)).get("locked_until")
        return float(until) if until and float(until) > now else None

    async def next_question(self, debtor_id: str, scope: str, policy: VerificationPolicy,
                            now: float) -> CheckResult:
        """What to ask now (or that the person is locked out)."""
        fields = await self._fields(debtor_id)
        attempts = int(fields.get("attempts") or 0)
        if fields.get("locked_until") and float(fields["locked_until"]) > now:
            return CheckResult("locked", None, 0, len(policy.methods), 0)
        step = min(int(fields.get(f"step:{scope}") or 0), len(policy.methods) - 1)
        return CheckResult("next", policy.methods[step], step + 1, len(policy.methods),
                           policy.max_attempts - attempts)

    async def answer(self, debtor, scope: str, policy: VerificationPolicy, text: str,
                     now: float) -> CheckResult:
        key = self.keys.verification(debtor.id)
        question = await self.next_question(debtor.id, scope, policy, now)
        if question.outcome == "locked":
            return question
        steps = len(policy.methods)
        if not answer_matches(question.method, text, debtor):
            attempts = int(await self._wrong(keys=[key], args=[
                policy.max_attempts, now + policy.lock_minutes * 60]))
            if attempts < 0:
                await self.redis.hdel(key, f"step:{scope}")
                return CheckResult("locked", None, 0, steps, 0)
            return CheckResult("wrong", question.method, question.step, steps,
                               policy.max_attempts - attempts)
        if question.step < steps:
            await self.redis.hset(key, f"step:{scope}", question.step)
            method = policy.methods[question.step]
            return CheckResult("next", method, question.step + 1, steps, question.attempts_left)
        await self.redis.hset(key, mapping={
            "attempts": 0, f"step:{scope}": 0,
            f"verified_until:{scope}": now + policy.valid_for_minutes * 60})
        return CheckResult("verified", None, steps, steps, policy.max_attempts)

    async def forget(self, debtor_id: str, scope: str) -> None:
        await self.redis.hdel(self.keys.verification(debtor_id), f"verified_until:{scope}",
                              f"step:{scope}")

    async def move_scope(self, debtor_id: str, old: str, new: str, now: float) -> None:
        """Carry a verification over to a new scope (the payment page renews its session id
        after a success), and drop page scopes whose verification lapsed."""
        key = self.keys.verification(debtor_id)
        until = await self.redis.hget(key, f"verified_until:{old}")
        async with self.redis.pipeline(transaction=True) as pipe:
            if until is not None:
                pipe.hset(key, f"verified_until:{new}", until)
            pipe.hdel(key, f"verified_until:{old}", f"step:{old}")
            await pipe.execute()
        stale = []
        for name, value in (await self._fields(debtor_id)).items():
            if name.startswith("verified_until:page:"):
                try:
                    lapsed = float(value) <= now
                except ValueError:
                    lapsed = True
                if lapsed:
                    stale += [name, "step:" + name[len("verified_until:"):]]
        if stale:
            await self.redis.hdel(key, *stale)

    async def unlock(self, debtor_id: str) -> None:
        """An agent confirmed the person another way (console, #7)."""
        await self.redis.hdel(self.keys.verification(debtor_id), "locked_until", "attempts")
