"""The outbox: where the send path hands a message over for delivery.

`send` is exactly-once per message id: one Lua script marks the id as handed over, appends the
message to the outbox stream and to the conversation's transcript (state ``queued``), writes
its delivery record and puts it in the due set (service/delivery.py), and announces it, all or
nothing. A retried job that hands over the same id again changes nothing.

Then a delivery job is enqueued. If the process dies between the script and the enqueue, the
worker's sweep finds the due entry and enqueues it: nothing is lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from arq.connections import ArqRedis
from redis.asyncio import Redis

from channels.base import OutboundMessage
from service.delivery import enqueue_delivery
from service.keys import Keys
from service.metrics import OUTBOUND

_SEND_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('XADD', KEYS[2], '*', 'data', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'data', ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[3])
local record = cjson.decode(ARGV[4])
for k, v in pairs(record) do redis.call('HSET', KEYS[5], k, v) end
redis.call('ZADD', KEYS[6], ARGV[1], ARGV[5])
return 1
"""


class OutboxTransport:
    def __init__(self, redis: Redis, keys: Keys, queue_name: str = ""):
        """`queue_name`: the job queue delivery jobs go to. With a plain Redis client (no arq
        pool) no job is enqueued and the worker's sweep picks the message up."""
        self.redis = redis
        self.keys = keys
        self.queue_name = queue_name or f"{keys.prefix}:queue"
        self._send_once = redis.register_script(_SEND_ONCE)

    async def send(self, message: OutboundMessage) -> bool:
        """True if handed over now, False if this id was handed over before."""
        now = time.time()
        outbox_entry = json.dumps({**asdict(message), "at": now}, default=str)
        transcript_entry = json.dumps({
            "kind": "message", "direction": "out", "message_id": message.message_id,
            "body": message.body, "subject": message.subject, "channel": message.channel,
            "template": message.template, "language": message.language, "tone": message.tone,
            "status": "queued", "at": now,
            **({"content_sid": message.extra["content_sid"]}
               if message.extra.get("content_sid") else {}),
        })
        record = {"message_id": message.message_id, "state": "queued", "created": now,
                  "conversation_id": message.conversation_id, "channel": message.channel,
                  "address": message.address, "body": message.body,
                  "subject": message.subject or "", "template": message.template,
                  "language": message.language, "tone": message.tone, "attempts": 0,
                  **{k: v if isinstance(v, str) else json.dumps(v)
                     for k, v in message.extra.items()}}
        sent = await self._send_once(
            keys=[self.keys.outbound(message.message_id), self.keys.outbox,
                  self.keys.transcript(message.conversation_id),
                  self.keys.events_channel(message.conversation_id),
                  self.keys.delivery(message.message_id), self.keys.delivery_due],
            args=[repr(now), outbox_entry, transcript_entry, json.dumps(record, default=str),
                  message.message_id],
        )
        if sent:
            OUTBOUND.labels(message.channel, message.template).inc()
            if isinstance(self.redis, ArqRedis):
                await enqueue_delivery(self.redis, message.message_id, now, tag="0",
                                       queue_name=self.queue_name)
        return bool(sent)
