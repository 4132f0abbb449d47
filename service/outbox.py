"""The outbox transport: where outbound messages go until real providers are wired (#3).

`send` is exactly-once per message id: one Lua script marks the id as sent, appends the
message to the outbox stream and to the conversation's transcript, and announces it, all or
nothing. A retried job that sends the same id again changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from redis.asyncio import Redis

from channels.base import OutboundMessage
from service.keys import Keys
from service.metrics import OUTBOUND

_SEND_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('XADD', KEYS[2], '*', 'data', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'data', ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 1
"""


class OutboxTransport:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._send_once = redis.register_script(_SEND_ONCE)

    async def send(self, message: OutboundMessage) -> bool:
        """True if handed over now, False if this id was handed over before."""
        now = time.time()
        outbox_entry = json.dumps({**asdict(message), "at": now}, default=str)
        transcript_entry = json.dumps({
            "kind": "message", "direction": "out", "message_id": message.message_id,
            "body": message.body, "subject": message.subject, "channel": message.channel,
            "template": message.template, "language": message.language, "tone": message.tone,
            "status": "sent", "at": now,
        })
        sent = await self._send_once(
            keys=[self.keys.outbound(message.message_id), self.keys.outbox,
                  self.keys.transcript(message.conversation_id),
                  self.keys.events_channel(message.conversation_id)],
            args=[str(now), outbox_entry, transcript_entry],
        )
        if sent:
            OUTBOUND.labels(message.channel, message.template).inc()
        return bool(sent)
