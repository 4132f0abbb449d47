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

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from redis.asyncio import Redis
from redis.exceptions import LockNotOwnedError, RedisError

from bot.core.debtors import Debtor
from bot.core.segments import SegmentBook, load_segment_book
from channels.base import InboundMessage
from service.channel_config import ChannelConfig
from service.channel_rules import ChannelRules
from service.contact_rules import ContactConfig, ContactRules
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.engine_outbox import EngineOutbox
from service.engine import EngineClient
from service.inbound import InboundStore
from service.keys import Keys
from service.tone_chooser import ToneChooser
from service.tone_outcomes import ToneOutcomes
from service.logs import get_logger
from service.metrics import PROCESSING_LATENCY
from service.sending import PlannedMessage, Sender
from service.settings import Settings
from service.templates import TemplateRenderer
from service.understanding import KEYWORD_INTENTS, Understanding, understand
from service.unsubscribe import unsubscribe_url

log = get_logger("worker")

REGION_LANGUAGES = {"NL": "nl", "BE": "nl", "SR": "nl", "DE": "de", "AT": "de", "CH": "de",
                    "LI": "de", "LU": "de"}


def guess_language(address: str) -> str:
    """For a sender we do not know: the language of their phone number's country, else English."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(address))
    except phonenumbers.NumberParseException:
        return "en"
    return REGION_LANGUAGES.get(region or "", "en")


#: What each template the dialogue names is, for the contact rules (contact_policy.KINDS).
#: Anything not listed is an ordinary reply.
#: Replies whose wording carries the tone (message_templates/<lang>/<key>.<tone>.j2).
PERSUASIVE_TEMPLATES = frozenset({"offer_full", "offer_plan", "payment_link"})

TEMPLATE_KINDS = {
    "vulnerability_support": "support",
    "optout_confirmation": "opt_out_confirmation",
    "optin_confirmation": "confirmation",
    "help_reply": "confirmation",
    "handoff": "confirmation",
    "wrong_number_ack": "confirmation",
    "cease_ack": "confirmation",
    "unknown_sender": "confirmation",
    "media_received": "confirmation",
}


@dataclass
class Processor:
    settings: Settings
    redis: Redis
    engine: EngineClient
    renderer: TemplateRenderer
    contact_config: ContactConfig | None = None
    channel_config: ChannelConfig | None = None
    segment_book: SegmentBook | None = None

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.key_prefix)
        self.debtors = RedisDebtorStore(self.redis, self.keys)
        self.conversations = ConversationStore(self.redis, self.keys)
        self.inbound = InboundStore(self.redis, self.keys)
        self.engine_outbox = EngineOutbox(self.redis, self.keys)
        config = self.contact_config or ContactConfig.load(self.settings.policies_dir)
        self.rules = ContactRules(self.redis, self.keys, config, self.settings.pseudonym_key)
        self.channel_config = self.channel_config or ChannelConfig.load(self.settings.policies_dir)
        self.channel_rules = ChannelRules(self.redis, self.keys, self.channel_config,
                                          self.settings.pseudonym_key)
        # Segments and tones (policies/segments.yml): outcomes of campaign messages are
        # recorded as they happen; persuasive replies keep the tone the debtor was reached in.
        self.segments = self.segment_book or load_segment_book(self.settings.policies_dir
                                                               / "segments.yml")
        self.outcomes = ToneOutcomes(self.redis, self.keys, self.segments)
        self.tones = ToneChooser(self.redis, self.keys, self.segments)
        self.sender = Sender(self.redis, self.keys, self.rules, self.renderer, self.common_vars,
                             on_sent=self._tell_engine, channel_rules=self.channel_rules,
                             queue_name=self.settings.queue_name, outcomes=self.outcomes)

    def local_today(self, debtor: Debtor, now: float) -> date:
        """The debtor's date, in the zone the contact rules count their days in (the first of
        their candidate zones), so "friday" and a daily cap mean the same day."""
        zone = self.rules.config.jurisdictions.zones_for(debtor.country, debtor.phone)[0]
        return datetime.fromtimestamp(now, ZoneInfo(zone)).date()

    # --- inbound --------------------------------------------------------------------
    def conversation_lock(self, conversation_id: str):
        """The lock under which one conversation's messages are processed, and its engine
        outbox flushed: one at a time, in order."""
        return self.redis.lock(self.keys.conversation_lock(conversation_id),
                               timeout=self.settings.conversation_lock_seconds,
                               blocking_timeout=self.settings.conversation_lock_seconds * 2)

    @contextlib.asynccontextmanager
    async def _holding(self, conversation_id: str):
        """The conversation lock, kept alive while it is held.

        One step can take longer than the lock's timeout (an engine that is restarting makes
        the worker wait for its answer), and a lock that expires meanwhile lets another job
        take the same pending message: the engine then heard it twice (found by
        tests/e2e/test_faults.py, kill -9 of the engine mid-message). So the lock is renewed
        in the background until the work under it is over."""
        lock = self.conversation_lock(conversation_id)
        async with lock:
            keeper = asyncio.create_task(self._keep_locked(lock))
            try:
                yield lock
            finally:
                keeper.cancel()

    async def _keep_locked(self, lock) -> None:
        seconds = self.settings.conversation_lock_seconds
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                await lock.extend(seconds, replace_ttl=True)
            except LockNotOwnedError:
                return          # lost (it expired while Redis was away): the work under it fails
            except RedisError:
                continue        # Redis away for a moment: try again

    async def flush_engine_outbox(self, conversation_id: str) -> int:
        """An agent's turns and hand-backs into the engine's tracker, in order, under the
        conversation lock (service/engine_outbox.py)."""
        async with self._holding(conversation_id):
            return await self.engine_outbox.flush(conversation_id, self.engine)

    async def process_pending(self, conversation_id: str) -> int:
        """Process every pending message of a conversation, oldest first. Returns how many."""
        done = 0
        async with self._holding(conversation_id) as lock:
            # An agent's turns and a hand-back reach the tracker before the next message does.
            await self.engine_outbox.flush(conversation_id, self.engine)
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
        await self.conversations.touch(conversation_id, channel=message.channel, language=language,
                                       inbound_at=message.received_at)
        await self.outcomes.record(debtor.id, "replied", at=message.received_at)
        if message.channel == "email":
            await self.conversations.remember_email_thread(
                conversation_id, message.message_id, message.references, message.subject)
        if message.media_urls:
            await self.conversations.add_event(conversation_id, "media_received", {
                "message_id": message.message_id, "count": len(message.media_urls)})
        if not message.body.strip():
            # Only a picture, a voice note or an attachment: acknowledged, kept as a reference
            # (the URLs are in the transcript), and the debtor asked to write instead.
            if message.media_urls:
                await self._send(debtor, message, "media_received", {}, f"{message.message_id}:0")
            else:
                await self.conversations.add_event(conversation_id, "empty_message",
                                                   {"message_id": message.message_id})
            return
        today = self.local_today(debtor, message.received_at)
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
                    "now": message.received_at, "text": message.body, "urgent": understanding.urgent}
        responses = await self._engine_turn(conversation_id, message.message_id,
                                            understanding.engine_message(), metadata, state)
        await self.deliver(debtor, message.channel, message.address, responses, message.message_id)

    async def _understanding(self, message: InboundMessage, state: dict[str, str],
                             debtor: Debtor, today: date) -> Understanding:
        if state.get("understanding"):
            stored = json.loads(state["understanding"])
            return Understanding.from_contract(stored)
        button_intent = self.channel_config.buttons.get(message.button_payload or "")
        if button_intent:
            # A quick-reply button says what it means; no guessing from its text.
            source = ("prerule:button" if button_intent in KEYWORD_INTENTS
                      else f"button:{message.button_payload}")
            understanding = Understanding(button_intent, 1.0, {}, source)
        else:
            understanding = await understand(message.body, debtor.language, self.engine,
                                             today=today, default_currency=debtor.currency)
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
        """Carrier keywords and a request to cease communication: answered here, never by the
        engine, with at most one confirmation and no collection content."""
        reply_id = f"{message.message_id}:0"
        suppressions = self.rules.suppressions
        if understanding.intent == "opt_out":
            first_time = await suppressions.suppress(message.channel, message.address, "keyword",
                                                     whatsapp_phone=debtor.phone)
            await self.conversations.add_event(debtor.id, "opted_out",
                                               {"channel": message.channel, "via": understanding.source})
            await self.rules.audit.record("debtor", "opt_out", debtor_id=debtor.id,
                                          channel=message.channel, via="keyword")
            if message.channel == "whatsapp":
                # STOP on WhatsApp also withdraws the opt-in that messages we start need
                await self.channel_rules.withdraw_opt_in(debtor.id)
            if first_time:  # at most one confirmation
                await self._send(debtor, message, "optout_confirmation", {}, reply_id)
        elif understanding.intent == "opt_in":
            await suppressions.lift(message.channel, message.address)
            await self.conversations.add_event(debtor.id, "opted_in", {"channel": message.channel})
            await self.rules.audit.record("debtor", "opt_in", debtor_id=debtor.id,
                                          channel=message.channel)
            if message.channel == "whatsapp":
                # START on WhatsApp, written by the debtor: a recorded WhatsApp opt-in
                await self.channel_rules.record_opt_in(debtor.id, "whatsapp_keyword")
            await self._send(debtor, message, "optin_confirmation", {}, reply_id)
        elif understanding.intent == "cease_communication":
            new = await self.rules.stop_states.set(debtor.id, "cease_communication",
                                                   source=understanding.source)
            await self.conversations.escalate(debtor.id, "cease_communication")
            if new:
                await self._send(debtor, message, "cease_ack", {}, reply_id)
        else:
            await self._send(debtor, message, "help_reply", {}, reply_id)

    async def _send(self, debtor: Debtor, message: InboundMessage, template: str,
                    variables: dict[str, Any], message_id: str) -> None:
        await self.sender.send(PlannedMessage(
            message_id, debtor.id, message.channel, message.address, template,
            TEMPLATE_KINDS.get(template, "reply"), variables))

    async def _answer_unknown_sender(self, message: InboundMessage, conversation_id: str) -> None:
        """A polite generic answer with no debt detail; the conversation waits in the unknown
        senders list for an agent to match it."""
        await self.redis.sadd(self.keys.unknown_senders, conversation_id)
        await self.conversations.touch(conversation_id, channel=message.channel, language="",
                                       inbound_at=message.received_at)
        if message.channel == "email":
            await self.conversations.remember_email_thread(
                conversation_id, message.message_id, message.references, message.subject)
        await self.sender.send(PlannedMessage(
            f"{message.message_id}:0", None, message.channel, message.address, "unknown_sender",
            "confirmation", language=guess_language(message.address),
            conversation_id=conversation_id))

    # --- outbound -------------------------------------------------------------------
    async def deliver(self, debtor: Debtor, channel: str, address: str,
                      responses: list[dict[str, Any]], base_id: str) -> None:
        for index, response in enumerate(responses):
            custom = response.get("custom")
            if not isinstance(custom, dict) or "template" not in custom:
                log.error("engine_response_without_template", conversation=debtor.id)
                continue
            template = custom["template"]
            tone = await self.reply_tone(debtor.id) if template in PERSUASIVE_TEMPLATES else "soft"
            await self.sender.send(PlannedMessage(
                f"{base_id}:{index}", debtor.id, channel, address, template,
                TEMPLATE_KINDS.get(template, "reply"), custom.get("vars") or {}, tone=tone),
                debtor=debtor)

    async def reply_tone(self, debtor_id: str) -> str:
        """A persuasive reply speaks in the tone of the campaign message the debtor answers
        (so the tone measured is the tone of the whole exchange); soft without one, and always
        soft for a debtor in hardship or vulnerable."""
        touch = await self.outcomes.touch_of(debtor_id)
        if not touch.get("tone") or await self.tones.is_protected(debtor_id):
            return "soft"
        return touch["tone"]

    def common_vars(self, debtor: Debtor | None, channel: str, language: str,
                    template: str) -> dict[str, Any]:
        """What every template receives. `jurisdiction` and `first_contact` choose the required
        disclosure partial; creditor and product are only for templates that may name them."""
        country = debtor.country if debtor else None
        return {"first_name": debtor.first_name if debtor else "",
                "company": self.settings.company_name,
                "channel": channel, "language": language,
                "unsubscribe_url": (unsubscribe_url(self.settings.public_url,
                                                    self.settings.pseudonym_key, debtor.id)
                                    if debtor else ""),
                "jurisdiction": self.rules.config.jurisdictions.pack_for(country).name,
                "first_contact": template == "reminder_first",
                "creditor": debtor.creditor if debtor else "",
                "product": debtor.product if debtor else ""}

    async def send_reminder(self, debtor_id: str, channel: str, message_id: str) -> str:
        """The first reminder of a debtor, through the contact rules; the engine is told of it
        (EXTERNAL_reminder_sent) once it went out. Returns the verdict: send, defer or refuse."""
        debtor = await self.debtors.get(debtor_id)
        if debtor is None:
            raise LookupError(f"no debtor {debtor_id}")
        address = debtor.email if channel == "email" else debtor.phone
        if not address:
            raise LookupError(f"debtor {debtor_id} has no address for {channel}")
        await self.conversations.touch(debtor.id, channel=channel, language=debtor.language)
        decision = await self.sender.send(PlannedMessage(
            message_id, debtor.id, channel, address, "reminder_first", "reminder",
            tell_engine=True), debtor=debtor)
        return decision.verdict

    async def _tell_engine(self, plan: PlannedMessage) -> None:
        # Marked after the call: if the engine is down the job retries and tells it then (a
        # second trigger after a crash right here is harmless; a missing one is not).
        told = self.keys.reminder_told(plan.message_id)
        if await self.redis.exists(told):
            return
        debtor = await self.debtors.get(plan.debtor_id or "")
        await self.engine.trigger_intent(plan.debtor_id or "", "EXTERNAL_reminder_sent", {
            "debtor_id": plan.debtor_id, "language": debtor.language if debtor else "en",
            "channel": plan.channel})
        await self.redis.set(told, "1")
