"""Who owns a conversation (bot or agent), the agent queue, and the transcript.

One conversation per debtor across channels; its id is the debtor id, which is also the
`sender` the engine knows it by. State lives in a Redis hash; the transcript is a Redis
stream so readers (simulator, CLI, console) can follow it live; every change is also
published on the conversation's pub/sub channel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.keys import Keys
from service.tone_outcomes import ToneOutcomes

# Lower number = more urgent. The agent queue sorts by priority, then by waiting time.
PRIORITY = {
    "vulnerability_urgent": 0,
    "vulnerability": 1,
    "deceased": 1,
    "attorney": 2,
    "bankruptcy": 2,
    "dispute": 2,
    "hardship": 3,
    "complain": 3,
    "wrong_number": 4,
    "verification": 4,
    "request_human": 5,
    "request_callback": 5,
    "request_settlement": 5,
    "negotiation": 5,
    "already_paid": 5,
}


class ClaimError(Exception):
    """The conversation is not waiting for an agent, or another agent owns it."""


@dataclass(frozen=True)
class ConversationState:
    conversation_id: str
    owner: str  # "bot" | "agent"
    reason: str | None
    agent: str | None
    channel: str | None
    language: str | None
    waiting_since: float | None

    @classmethod
    def from_hash(cls, conversation_id: str, data: dict[str, str]) -> "ConversationState":
        return cls(
            conversation_id=conversation_id,
            owner=data.get("owner", "bot"),
            reason=data.get("reason") or None,
            agent=data.get("agent") or None,
            channel=data.get("channel") or None,
            language=data.get("language") or None,
            waiting_since=float(data["waiting_since"]) if data.get("waiting_since") else None,
        )


# Escalating must be atomic: an action and a pre-check escalating at once, one wins.
_ESCALATE = """
if redis.call('HGET', KEYS[1], 'owner') == 'agent' then return 0 end
redis.call('HSET', KEYS[1], 'owner', 'agent', 'reason', ARGV[2], 'agent', '',
           'priority', ARGV[3], 'waiting_since', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
"""

# Claiming must be atomic: two agents clicking at once, one wins.
_CLAIM = """
local owner = redis.call('HGET', KEYS[1], 'owner')
local agent = redis.call('HGET', KEYS[1], 'agent')
if owner ~= 'agent' then return 'not_escalated' end
if agent and agent ~= '' and agent ~= ARGV[1] then return 'taken:' .. agent end
redis.call('HSET', KEYS[1], 'agent', ARGV[1])
return 'ok'
"""


class ConversationStore:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._escalate = redis.register_script(_ESCALATE)
        self._claim = redis.register_script(_CLAIM)
        self._outcomes = ToneOutcomes(redis, keys)

    async def get(self, conversation_id: str) -> ConversationState:
        data = await self.redis.hgetall(self.keys.conversation(conversation_id))
        return ConversationState.from_hash(conversation_id, _decode(data))

    async def touch(self, conversation_id: str, *, channel: str, language: str,
                    inbound_at: float | None = None) -> None:
        """Remember the channel and language last used, and when the debtor last wrote (the
        contact rules treat messages soon after that as replies, not unsolicited contact)."""
        mapping: dict[str, Any] = {"channel": channel, "language": language, "updated": time.time()}
        if inbound_at is not None:
            mapping["last_inbound"] = inbound_at
            # per channel too: WhatsApp's 24-hour window counts from the last WhatsApp message
            mapping[f"last_inbound_{channel}"] = inbound_at
        await self.redis.hset(self.keys.conversation(conversation_id), mapping=mapping)

    async def remember_email_thread(self, conversation_id: str, message_id: str,
                                    references: tuple[str, ...], subject: str | None) -> None:
        """The debtor's last email, so our answer threads under it (In-Reply-To, References,
        "Re: <subject>")."""
        chain = [r for r in references if r != message_id][-9:] + [message_id]
        await self.redis.hset(self.keys.conversation(conversation_id), mapping={
            "email_last_message_id": message_id, "email_references": json.dumps(chain),
            "email_subject": (subject or "")[:200]})

    async def escalate(self, conversation_id: str, reason: str, *, urgent: bool = False) -> bool:
        """Move the conversation to the agent queue. False if an agent already has it."""
        priority_key = f"{reason}_urgent" if urgent and f"{reason}_urgent" in PRIORITY else reason
        priority = PRIORITY.get(priority_key, 5)
        now = time.time()
        escalated = await self._escalate(
            keys=[self.keys.conversation(conversation_id), self.keys.agent_queue],
            # Queue score: priority dominates, then the oldest first.
            args=[conversation_id, reason, priority, now, priority * 1e11 + now],
        )
        if not escalated:
            return False
        await self.add_event(conversation_id, "handoff", {"reason": reason, "urgent": urgent})
        return True

    async def claim(self, conversation_id: str, agent: str) -> None:
        result = _s(await self._claim(
            keys=[self.keys.conversation(conversation_id), self.keys.agent_queue],
            args=[agent, conversation_id],
        ))
        if result == "not_escalated":
            raise ClaimError(f"{conversation_id} is not waiting for an agent")
        if result.startswith("taken:"):
            raise ClaimError(f"{conversation_id} is already claimed by {result[6:]}")
        await self.add_event(conversation_id, "claimed", {"agent": agent})

    async def hand_back(self, conversation_id: str, agent: str | None = None) -> None:
        key = self.keys.conversation(conversation_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"owner": "bot", "reason": "", "agent": "", "waiting_since": ""})
            pipe.zrem(self.keys.agent_queue, conversation_id)
            await pipe.execute()
        await self.add_event(conversation_id, "handed_back", {"agent": agent})

    async def escalated(self) -> list[ConversationState]:
        """Every conversation an agent owns or should own, claimed or not, most urgent first."""
        ids = [_s(i) for i in await self.redis.zrange(self.keys.agent_queue, 0, -1)]
        return [await self.get(i) for i in ids]

    # --- transcript -------------------------------------------------------------------
    async def add_event(self, conversation_id: str, name: str, data: dict[str, Any]) -> str:
        # The entry's own fields come last: data cannot turn an event into something else.
        entry = {**data, "kind": "event", "name": name, "at": time.time()}
        entry_id = await self._append(conversation_id, entry)
        # Opt-outs and complaints are outcomes of the campaign message before them, whichever
        # path recorded them (keyword, intent, unsubscribe page, carrier 21610, hand-off).
        outcome = ("opted_out" if name == "opted_out"
                   else "complained" if name == "handoff" and data.get("reason") == "complain"
                   else None)
        if outcome:
            await self._outcomes.record(conversation_id, outcome, at=entry["at"])
        return entry_id

    async def _append(self, conversation_id: str, entry: dict[str, Any]) -> str:
        payload = json.dumps(entry, default=str)
        entry_id = _s(await self.redis.xadd(self.keys.transcript(conversation_id), {"data": payload}))
        await self.redis.publish(self.keys.events_channel(conversation_id), payload)
        return entry_id

    async def transcript(self, conversation_id: str, after: str = "-") -> list[tuple[str, dict[str, Any]]]:
        start = "(" + after if after != "-" else "-"
        rows = await self.redis.xrange(self.keys.transcript(conversation_id), min=start)
        return [(_s(entry_id), json.loads(_s(fields[b"data"] if b"data" in fields else fields["data"])))
                for entry_id, fields in rows]


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(data: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in data.items()}
