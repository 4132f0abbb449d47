"""Accepting an inbound message: drop duplicates, store it, queue it, all before answering
the provider.

One Lua script records the message (keyed by the provider's id), appends it to the
conversation's transcript and to the conversation's pending list, or does nothing if that id
was seen before. The job that processes the conversation is enqueued after; if the process
dies in between, the worker's sweep finds the pending message and enqueues it (nothing lost).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from arq.connections import ArqRedis
from redis.asyncio import Redis

from channels.base import InboundMessage
from service.keys import Keys
from service.metrics import INBOUND, INBOUND_DUPLICATES

_ACCEPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'message', ARGV[1], 'conversation_id', ARGV[2], 'state', 'received')
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'data', ARGV[4])
redis.call('PUBLISH', KEYS[4], ARGV[4])
return 1
"""

PROCESS_JOB = "process_conversation"


class InboundStore:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._accept = redis.register_script(_ACCEPT)

    async def accept(self, message: InboundMessage, conversation_id: str) -> bool:
        """Store a new message for processing; False if it is a duplicate."""
        transcript_entry = json.dumps({
            "kind": "message", "direction": "in", "message_id": message.message_id,
            "body": message.body, "channel": message.channel, "at": message.received_at,
            "media_urls": list(message.media_urls),
            **({"button": message.button_payload} if message.button_payload else {}),
            **({"subject": message.subject} if message.subject else {}),
        })
        accepted = await self._accept(
            keys=[self.keys.inbound(message.message_id), self.keys.pending(conversation_id),
                  self.keys.transcript(conversation_id), self.keys.events_channel(conversation_id)],
            args=[json.dumps(asdict(message)), conversation_id, message.message_id, transcript_entry],
        )
        (INBOUND if accepted else INBOUND_DUPLICATES).labels(message.channel).inc()
        return bool(accepted)

    async def load(self, message_id: str) -> tuple[InboundMessage, dict[str, str]] | None:
        raw = await self.redis.hgetall(self.keys.inbound(message_id))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        fields = json.loads(data["message"])
        fields["media_urls"] = tuple(fields.get("media_urls") or ())
        fields["references"] = tuple(fields.get("references") or ())
        return InboundMessage(**fields), data

    async def update(self, message_id: str, **fields: str) -> None:
        await self.redis.hset(self.keys.inbound(message_id), mapping=fields)


async def enqueue_processing(queue: ArqRedis, conversation_id: str, message_id: str,
                             queue_name: str) -> None:
    # The job id comes from the provider's id: a duplicate enqueue is a no-op (house style 8).
    await queue.enqueue_job(PROCESS_JOB, conversation_id, _job_id=f"in:{message_id}",
                            _queue_name=queue_name)
