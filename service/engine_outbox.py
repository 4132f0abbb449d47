"""Events for the engine's tracker that people cause: an agent's replies and the hand-back.

The console runs in the gateway, which does not talk to the engine, and the engine may be
restarting when an agent presses a button. So the events are queued in Redis per conversation
and written into the tracker in order by whoever gets there first: the worker's
`flush_engine_events` job, or the processing of the debtor's next message (under the same
conversation lock), which must not reach the engine before the hand-back it follows.
A batch leaves the list only after the engine took it; a failure leaves it for the retry.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from service.engine import EngineClient
from service.keys import Keys


class EngineOutbox:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    async def push(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        await self.redis.rpush(self.keys.engine_outbox(conversation_id), json.dumps(events))

    async def pending(self, conversation_id: str) -> int:
        return int(await self.redis.llen(self.keys.engine_outbox(conversation_id)))

    async def flush(self, conversation_id: str, engine: EngineClient) -> int:
        """Write every queued batch into the tracker, oldest first. The caller holds the
        conversation lock. Returns how many batches went."""
        key = self.keys.engine_outbox(conversation_id)
        sent = 0
        while True:
            head = await self.redis.lindex(key, 0)
            if head is None:
                return sent
            await engine.append_events(conversation_id, json.loads(head))
            await self.redis.lpop(key)
            sent += 1
