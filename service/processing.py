"""What the worker does with one conversation: understand each pending reply in order, let
the engine answer it, render and send the answers; and send reminders.

Exactly-once, step by step. Each inbound message has a state hash (service/inbound.py):
- the understanding is stored once computed;
- before calling the engine we mark `engine_sent`; after, we store its responses. If we
  crash in between, the retry finds our message in the engine's tracker (by message id in
  its metadata) and takes the responses from there instead of sending it twice;
- each response i goes out as message id `<inbound id>:<i>` through a send-once transport.
Messages of one conversation are processed one at a time, in arrival order, under a lock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezones
from redis.asyncio import Redis

from bot.core.debtors import Debtor
from channels.base import InboundMessage, OutboundMessage
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.inbound import InboundStore
from service.keys import Keys
from service.logs import get_logger
from service.metrics import PROCESSING_LATENCY
from service.outbox import OutboxTransport
from service.settings import Settings
from service.templates import TemplateRenderer
from service.understanding import Understanding, understand

log = get_logger("worker")

COUNTRY_ZONES = {"GB": "Europe/London", "IE": "Europe/Dublin", "NL": "Europe/Amsterdam",
                 "DE": "Europe/Berlin", "BE": "Europe/Brussels", "AT": "Europe/Vienna",
                 "CH": "Europe/Zurich", "US": "America/New_York"}


def debtor_zone(debtor: Debtor) -> ZoneInfo:
    """The debtor's time zone from the country of their address, else their phone number."""
    if debtor.country in COUNTRY_ZONES:
        return ZoneInfo(COUNTRY_ZONES[debtor.country])
    if debtor.phone:
        zones = phone_timezones.time_zones_for_number(phonenumbers.parse(debtor.phone))
        if zones and zones[0] != "Etc/Unknown":
            return ZoneInfo(zones[0])
    return ZoneInfo("Europe/Amsterdam")


REGION_LANGUAGES = {"NL": "nl", "BE": "nl", "SR": "nl", "DE": "de", "AT": "de", "CH": "de",
                    "LI": "de", "LU": "de"}


def guess_language(address: str) -> str:
    """For a sender we do not know: the language of their phone number's country, else English."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(address))
    except phonenumbers.NumberParseException:
        return "en"
    return REGION_LANGUAGES.get(region or "", "en")


def local_today(debtor: Debtor, now: float | None = None) -> date:
    return datetime.fromtimestamp(now or time.time(), debtor_zone(debtor)).date()


@dataclass
class Processor:
    settings: Settings
    redis: Redis
    engine: EngineClient
    renderer: TemplateRenderer

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.key_prefix)
        self.debtors = RedisDebtorStore(self.redis, self.keys)
        self.conversations = ConversationStore(self.redis, self.keys)
        self.inbound = InboundStore(self.redis, self.keys)
        self.outbox = OutboxTransport(self.redis, self.keys)

    # --- inbound --------------------------------------------------------------------
    async def process_pending(self, conversation_id: str) -> int:
        """Process every pending message of a conversation, oldest first. Returns how many."""
        lock = self.redis.lock(self.keys.conversation_lock(conversation_id),
                               timeout=self.settings.conversation_lock_seconds,
                               blocking_timeout=self.settings.conversation_lock_seconds * 2)
        done = 0
        async with lock:
            while True:
                head = await self.redis.lindex(self.keys.pending(conversation_id), 0)
                if head is None:
                    return done
                message_id = head.decode()
                await self.process_message(message_id)
                await lock.extend(self.settings.conversation_lock_seconds, replace_ttl=True)
                await self.redis.lpop(self.keys.pending(conversation_id))
                done += 1

    async def process_message(self, message_id: str) -> None:
        loaded = await self.inbound.load(message_id)
        if loaded is None:
            log.warning("inbound_missing", message_id=message_id)
            return
        message, state = loaded
        if state.get("state") == "done":
            return
        conversation_id = state["conversation_id"]
        debtor = await self.debtors.get(conversation_id)
        if debtor is None:
            await self._answer_unknown_sender(message, conversation_id)
        else:
            await self._process_debtor_message(message, state, debtor)
        await self.inbound.update(message_id, state="done")
        PROCESSING_LATENCY.observe(max(0.0, time.time() - message.received_at))

    async def _process_debtor_message(self, message: InboundMessage, state: dict[str, str],
                                      debtor: Debtor) -> None:
        conversation_id, language = debtor.id, debtor.language
        await self.conversations.touch(conversation_id, channel=message.channel, language=language)
        today = local_today(debtor, message.received_at)
        understanding = await self._understanding(message, state, debtor, today)

        if understanding.is_keyword:
            await self._keyword(message, debtor, understanding)
            return
        conversation = await self.conversations.get(conversation_id)
        if conversation.owner == "agent":
            # An agent owns it: the message waits for them in the transcript, the bot is silent.
            await self.conversations.add_event(conversation_id, "for_agent",
                                               {"message_id": message.message_id})
            return
        metadata = {"message_id": message.message_id, "channel": message.channel,
                    "address": message.address, "language": language, "today": today.isoformat(),
                    "text": message.body, "urgent": understanding.urgent}
        responses = await self._engine_turn(conversation_id, message.message_id,
                                            understanding.engine_message(), metadata, state)
        await self.deliver(debtor, message.channel, message.address, responses, message.message_id)

    async def _understanding(self, message: InboundMessage, state: dict[str, str],
                             debtor: Debtor, today: date) -> Understanding:
        if state.get("understanding"):
            stored = json.loads(state["understanding"])
            return Understanding.from_contract(stored)
        understanding = await understand(message.body, debtor.language, self.engine, today=today,
                                         default_currency=debtor.currency)
        await self.inbound.update(message.message_id,
                                  understanding=json.dumps(understanding.to_contract()))
        await self.conversations.add_event(debtor.id, "understood", {
            "message_id": message.message_id, **understanding.to_contract()})
        log.info("understood", conversation=debtor.id, intent=understanding.intent,
                 confidence=round(understanding.confidence, 3), source=understanding.source)
        return understanding

    async def _engine_turn(self, conversation_id: str, message_id: str, text: str,
                           metadata: dict[str, Any], state: dict[str, str]) -> list[dict[str, Any]]:
        if state.get("engine_responses"):
            return json.loads(state["engine_responses"])
        responses = None
        if state.get("engine_sent"):
            responses = await self._responses_from_tracker(conversation_id, message_id)
        if responses is None:
            await self.inbound.update(message_id, engine_sent="1")
            responses = await self.engine.send(conversation_id, text, metadata)
        await self.inbound.update(message_id, engine_responses=json.dumps(responses))
        return responses

    async def _responses_from_tracker(self, conversation_id: str, message_id: str) -> list[dict] | None:
        """The engine's answers to our message if it already took it (a retry after a crash)."""
        events = (await self.engine.tracker(conversation_id)).get("events") or []
        for index, event in enumerate(events):
            if event.get("event") == "user" and (event.get("metadata") or {}).get("message_id") == message_id:
                answers = []
                for later in events[index + 1:]:
                    if later.get("event") == "user":
                        break
                    if later.get("event") == "bot":
                        custom = (later.get("data") or {}).get("custom")
                        answers.append({"recipient_id": conversation_id, "custom": custom}
                                       if custom else {"recipient_id": conversation_id,
                                                       "text": later.get("text")})
                return answers
        return None

    async def _keyword(self, message: InboundMessage, debtor: Debtor, understanding: Understanding) -> None:
        key = self.keys.suppression(message.channel, message.address)
        if understanding.intent == "opt_out":
            first_time = await self.redis.set(key, "keyword", nx=True)
            await self.conversations.add_event(debtor.id, "opted_out",
                                               {"channel": message.channel, "via": understanding.source})
            if first_time:  # at most one confirmation
                await self._send_template(debtor, message.channel, message.address, "optout_confirmation",
                                          {}, f"{message.message_id}:0", ignore_suppression=True)
        elif understanding.intent == "opt_in":
            await self.redis.delete(key)
            await self.conversations.add_event(debtor.id, "opted_in", {"channel": message.channel})
            await self._send_template(debtor, message.channel, message.address, "optin_confirmation",
                                      {}, f"{message.message_id}:0")
        else:
            await self._send_template(debtor, message.channel, message.address, "help_reply", {},
                                      f"{message.message_id}:0", ignore_suppression=True)

    async def _answer_unknown_sender(self, message: InboundMessage, conversation_id: str) -> None:
        await self.redis.sadd(f"{self.settings.key_prefix}:unknown_senders", conversation_id)
        language = guess_language(message.address)
        rendered = self.renderer.render("unknown_sender", channel=message.channel, language=language,
                                        variables=self._common_vars(None, message.channel, language))
        await self.outbox.send(OutboundMessage(
            f"{message.message_id}:0", conversation_id, message.channel, message.address,
            rendered.body, "unknown_sender", language, rendered.subject))

    # --- outbound -------------------------------------------------------------------
    async def deliver(self, debtor: Debtor, channel: str, address: str,
                      responses: list[dict[str, Any]], base_id: str) -> None:
        for index, response in enumerate(responses):
            custom = response.get("custom")
            if not isinstance(custom, dict) or "template" not in custom:
                log.error("engine_response_without_template", conversation=debtor.id)
                continue
            await self._send_template(debtor, channel, address, custom["template"],
                                      custom.get("vars") or {}, f"{base_id}:{index}")

    async def _send_template(self, debtor: Debtor, channel: str, address: str, template: str,
                             variables: dict[str, Any], message_id: str, *,
                             ignore_suppression: bool = False) -> bool:
        if not ignore_suppression and await self.redis.exists(self.keys.suppression(channel, address)):
            await self.conversations.add_event(debtor.id, "held",
                                               {"message_id": message_id, "reason": "opted_out"})
            return False
        rendered = self.renderer.render(template, channel=channel, language=debtor.language,
                                        variables={**self._common_vars(debtor, channel, debtor.language),
                                                   **variables})
        return await self.outbox.send(OutboundMessage(
            message_id, debtor.id, channel, address, rendered.body, template, debtor.language,
            rendered.subject))

    def _common_vars(self, debtor: Debtor | None, channel: str, language: str) -> dict[str, Any]:
        return {"first_name": debtor.first_name if debtor else "", "company": self.settings.company_name,
                "channel": channel, "language": language,
                "unsubscribe_url": f"{self.settings.public_url}/unsubscribe"}

    async def send_reminder(self, debtor_id: str, channel: str, message_id: str) -> bool:
        """The first reminder of a debtor, and the engine told of it (EXTERNAL_reminder_sent)."""
        debtor = await self.debtors.get(debtor_id)
        if debtor is None:
            raise LookupError(f"no debtor {debtor_id}")
        address = debtor.email if channel == "email" else debtor.phone
        if not address:
            raise LookupError(f"debtor {debtor_id} has no address for {channel}")
        await self.conversations.touch(debtor.id, channel=channel, language=debtor.language)
        sent = await self._send_template(debtor, channel, address, "reminder_first", {}, message_id)
        if await self.redis.set(self.keys.reminder_told(message_id), "1", nx=True):
            await self.engine.trigger_intent(debtor.id, "EXTERNAL_reminder_sent", {
                "debtor_id": debtor.id, "language": debtor.language, "channel": channel})
        return sent
