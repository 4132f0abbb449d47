"""The agent's side of a handoff: reply on the debtor's channel and hand back to the bot.

Agent replies go through the same send path as the bot's (the contact rules, the send-once
transport) and are written into the engine's tracker as bot turns, so when the bot takes the
conversation back its history is whole (design.md, Handoff).
"""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import redis.asyncio as aioredis

from bot.core.contact_policy import Decision
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.keys import Keys
from service.processing import Processor
from service.sending import PlannedMessage
from service.settings import Settings
from service.templates import TemplateRenderer


class AgentDesk:
    """`engine`: write the agent's turns into the tracker at once (the CLI). Without one (the
    console, in the gateway) they go through the engine outbox and the worker's
    `flush_engine_events` job, so an engine restart never loses or reorders them."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, engine: EngineClient | None):
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix)
        self.engine = engine
        self.conversations = ConversationStore(redis, self.keys)
        self.debtors = RedisDebtorStore(redis, self.keys)
        self.processor = Processor(settings, redis, engine, TemplateRenderer(
            settings.templates_dir, company_name=settings.company_name))

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

    async def reply(self, conversation_id: str, agent: str, text: str) -> Decision:
        """Send an agent's message through the contact rules. Refused or deferred messages
        come back as the decision, with the reason to show the agent."""
        state = await self.conversations.get(conversation_id)
        if state.owner != "agent" or state.agent != agent:
            raise LookupError(f"{agent} does not own {conversation_id}: claim it first")
        debtor = await self.debtors.get(conversation_id)
        if debtor is None:
            raise LookupError(f"no debtor {conversation_id}")
        channel = state.channel or debtor.preferred_channel
        address = debtor.email if channel == "email" else debtor.phone
        if not address:
            raise LookupError(f"{conversation_id} has no address for {channel}")
        decision = await self.processor.sender.send(PlannedMessage(
            f"agent-{uuid.uuid4().hex}", debtor.id, channel, address, "agent_message", "agent",
            {"text": text}), debtor=debtor)
        if decision.verdict != "refuse":
            await self._tell_engine(conversation_id, [
                {"event": "bot", "text": text, "timestamp": time.time(), "metadata": {"agent": agent}}])
        await self.processor.rules.audit.record(agent, "conversation.reply", debtor_id=debtor.id,
                                                verdict=decision.verdict, reason=decision.reason)
        return decision

    async def hand_back(self, conversation_id: str, agent: str) -> None:
        blocking = await self.processor.rules.stop_states.blocking_bot(conversation_id)
        if blocking:
            raise LookupError(f"{conversation_id} is in stop-state {', '.join(blocking)}: "
                              "the bot may not answer until a supervisor lifts it "
                              "(nudge stop lift)")
        await self.conversations.hand_back(conversation_id, agent)
        await self.processor.rules.audit.record(agent, "conversation.hand_back",
                                                debtor_id=conversation_id)
        # The paused turn ended without the engine listening; record that it listens now, or
        # the next reply would be read as coming in the middle of the hand-off action.
        now = time.time()
        await self._tell_engine(conversation_id, [
            {"event": "resume", "timestamp": now},
            {"event": "action", "name": "action_listen", "timestamp": now}])

    async def _tell_engine(self, conversation_id: str, events: list[dict]) -> None:
        await self.processor.engine_outbox.push(conversation_id, events)
        if self.engine is not None:
            await self.processor.flush_engine_outbox(conversation_id)
        else:
            await self.redis.enqueue_job("flush_engine_events", conversation_id,
                                         _queue_name=self.settings.queue_name)
