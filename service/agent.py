"""The agent's side of a handoff: reply on the debtor's channel and hand back to the bot.

Agent replies go through the same send path as the bot's (suppression checked, send-once
transport) and are written into the engine's tracker as bot turns, so when the bot takes the
conversation back its history is whole (design.md, Handoff).
"""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import redis.asyncio as aioredis

from channels.base import OutboundMessage
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.keys import Keys
from service.outbox import OutboxTransport
from service.settings import Settings


class AgentDesk:
    def __init__(self, settings: Settings, redis: aioredis.Redis, engine: EngineClient):
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix)
        self.engine = engine
        self.conversations = ConversationStore(redis, self.keys)
        self.debtors = RedisDebtorStore(redis, self.keys)
        self.outbox = OutboxTransport(redis, self.keys)

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator["AgentDesk"]:
        client = aioredis.from_url(settings.redis_url)
        engine = EngineClient(settings.engine_url, settings.engine_token)
        try:
            yield cls(settings, client, engine)
        finally:
            await engine.close()
            await client.aclose()

    async def reply(self, conversation_id: str, agent: str, text: str) -> bool:
        state = await self.conversations.get(conversation_id)
        if state.owner != "agent" or state.agent != agent:
            raise LookupError(f"{agent} does not own {conversation_id}: claim it first")
        debtor = await self.debtors.get(conversation_id)
        if debtor is None:
            raise LookupError(f"no debtor {conversation_id}")
        channel = state.channel or debtor.preferred_channel
        address = debtor.email if channel == "email" else debtor.phone
        if await self.redis.exists(self.keys.suppression(channel, address)):
            await self.conversations.add_event(conversation_id, "held",
                                               {"reason": "opted_out", "agent": agent})
            raise LookupError(f"{conversation_id} opted out of {channel}: the message was not sent")
        sent = await self.outbox.send(OutboundMessage(
            f"agent-{uuid.uuid4().hex}", conversation_id, channel, address, text,
            "agent_message", debtor.language, extra={"agent": agent}))
        await self.engine.append_events(conversation_id, [
            {"event": "bot", "text": text, "timestamp": time.time(), "metadata": {"agent": agent}}])
        return sent

    async def hand_back(self, conversation_id: str, agent: str) -> None:
        await self.conversations.hand_back(conversation_id, agent)
        # The paused turn ended without the engine listening; record that it listens now, or
        # the next reply would be read as coming in the middle of the hand-off action.
        now = time.time()
        await self.engine.append_events(conversation_id, [
            {"event": "resume", "timestamp": now},
            {"event": "action", "name": "action_listen", "timestamp": now}])
