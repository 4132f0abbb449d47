"""The one send path. Bot replies, reminders, confirmations and agent replies all become a
``PlannedMessage`` and go through ``Sender.send``:

    contact rules  ->  send | defer | refuse
    send:    render (lint included) -> send-once transport -> count it for the caps
    defer:   keep the plan, retry at the decision's time (``release_due``, run by the worker)
    refuse:  record why in the transcript; nothing goes out

Nothing is lost on the way: a deferred plan lives in Redis until it is sent or refused, a plan
whose template fails to render is kept and retried (the template can be fixed; a message the
lint refuses for its own content, such as a threat an agent typed, is refused instead), and the
transport is exactly-once per message id, so a retry after a crash cannot send twice.

The template is rendered when the message goes out, not when it is planned: a message
deferred overnight uses the template text that is live in the morning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis

from bot.core.contact_policy import UNSOLICITED_KINDS, Decision
from bot.core.debtors import Debtor
from channels.base import OutboundMessage
from channels.sms_encoding import analyse, replace_smart_characters
from service.channel_rules import REASONS, ChannelRules
from service.contact_rules import ContactRules
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.keys import Keys
from service.logs import get_logger
from service.outbox import OutboxTransport
from service.templates import TemplateError, TemplateRenderer
from service.tone_outcomes import CampaignTag, ToneOutcomes

log = get_logger("sending")

#: A plan whose template does not render waits this long before the next attempt.
TEMPLATE_RETRY = timedelta(minutes=15)
#: While one worker re-plans a due message, others leave it alone this long (then a crashed
#: worker's claim expires and another takes it; the transport still sends at most once).
RELEASE_LEASE_SECONDS = 120
#: Messages that stay on the channel they were meant for: an opt-out confirmation on another
#: channel would be a new contact the debtor did not ask for.
NO_FALLBACK_KINDS = frozenset({"opt_out_confirmation"})

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""


@dataclass(frozen=True)
class PlannedMessage:
    message_id: str
    debtor_id: str | None        # None: an unknown sender
    channel: str
    address: str
    template: str
    kind: str                    # a contact_policy.KINDS entry
    variables: dict[str, Any] = field(default_factory=dict)
    language: str | None = None  # default: the debtor's
    tone: str = "soft"
    conversation_id: str | None = None  # default: the debtor id
    tell_engine: bool = False    # a business-initiated message the dialogue must know about
    tried_channels: tuple[str, ...] = ()  # channels this message failed on before (fallback)
    # A campaign step (service/campaigns.py): segment, step, tone group and probability; once
    # sent, outcomes are credited to it (service/tone_outcomes.py).
    campaign: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "PlannedMessage":
        fields = json.loads(raw)
        fields["tried_channels"] = tuple(fields.get("tried_channels") or ())
        return cls(**fields)


class Sender:
    def __init__(self, redis: Redis, keys: Keys, rules: ContactRules, renderer: TemplateRenderer,
                 common_vars, on_sent=None, *, channel_rules: ChannelRules | None = None,
                 queue_name: str = "", outcomes: ToneOutcomes | None = None):
        """`common_vars(debtor, channel, language, template)` gives the variables every
        template receives (company, first name, unsubscribe link, disclosures...).
        `on_sent(plan)` (async) runs after a message with `tell_engine` went out.
        `channel_rules`: WhatsApp's window and templates, invalid numbers, fallback."""
        self.on_sent = on_sent
        self.outcomes = outcomes   # records campaign messages as they go out
        self.channel_rules = channel_rules
        self.redis = redis
        self.keys = keys
        self.rules = rules
        self.renderer = renderer
        self.common_vars = common_vars
        self.outbox = OutboxTransport(redis, keys, queue_name)
        self.conversations = ConversationStore(redis, keys)
        self.debtors = RedisDebtorStore(redis, keys)
        self._claim_due = redis.register_script(_CLAIM_DUE)

    async def send(self, plan: PlannedMessage, *, debtor: Debtor | None = None,
                   now: datetime | None = None) -> Decision:
        now = now or datetime.now(timezone.utc)
        if debtor is None and plan.debtor_id:
            debtor = await self.debtors.get(plan.debtor_id)
            if debtor is None:
                return await self._refuse(plan, Decision("refuse", "unknown_debtor",
                                                         f"no debtor {plan.debtor_id}"))
        if await self.redis.exists(self.keys.outbound(plan.message_id)):
            # A retry after a crash: the message went out; finish what follows a send.
            await self._record_campaign(plan, now)
            if plan.tell_engine and self.on_sent is not None:
                await self.on_sent(plan)
            await self._forget_deferred(plan.message_id)
            return Decision("send", "already_sent", "this message id went out before")
        decision = await self.rules.decide(debtor, plan.channel, plan.address, plan.kind, now)
        if decision.verdict == "refuse":
            return await self._refuse(plan, decision)
        if decision.verdict == "defer":
            return await self._defer(plan, decision)
        return await self._deliver(plan, debtor, decision, now)

    async def _deliver(self, plan: PlannedMessage, debtor: Debtor | None, decision: Decision,
                       now: datetime) -> Decision:
        language = plan.language or (debtor.language if debtor else "en")
        conversation_id = plan.conversation_id or plan.debtor_id or ""
        extra: dict[str, Any] = {"kind": plan.kind, "plan": plan.to_json()}
        variables = {**self.common_vars(debtor, plan.channel, language, plan.template),
                     **plan.variables}
        if self.channel_rules is not None:
            refusal = await self._channel_refusal(plan, debtor, conversation_id, language, now,
                                                  extra, variables)
            if refusal is not None:
                await self._refuse(plan, refusal)
                await self.fall_back(plan, refusal.reason, debtor=debtor, now=now)
                return refusal
        # template versions approved in the console since the last message (no restart)
        await self.renderer.refresh_live(self.redis, self.keys)
        try:
            rendered = self.renderer.render(
                plan.template, channel=plan.channel, language=language, tone=plan.tone,
                variables=variables)
        except TemplateError as e:
            if e.content:
                # The template is fine, this message is not (a threat phrase an agent typed,
                # a body over its length): refused, with the lint's words for the sender.
                codes = sorted({issue.code for issue in e.issues})
                return await self._refuse(plan, Decision("refuse", f"lint:{','.join(codes)}",
                                                         str(e)))
            log.error("template_failed", template=plan.template, language=language,
                      channel=plan.channel, error=str(e))
            held = Decision("defer", "template_invalid", str(e), now + TEMPLATE_RETRY)
            return await self._defer(plan, held)
        body, subject = rendered.body, rendered.subject
        if plan.channel == "sms":
            if self.channel_rules and self.channel_rules.config.replace_smart_characters:
                body = replace_smart_characters(body)
            encoding = analyse(body)       # what this SMS costs, kept with its delivery record
            extra.update(encoding=encoding.encoding, segments=encoding.segments)
        if plan.channel == "email":
            subject = await self._email_thread(conversation_id, plan, subject, extra)
            extra["unsubscribe_url"] = variables.get("unsubscribe_url") or ""
        sent = await self.outbox.send(OutboundMessage(
            plan.message_id, conversation_id, plan.channel, plan.address, body,
            plan.template, language, subject, tone=plan.tone, extra=extra))
        if sent and plan.debtor_id and decision.counts_against_caps:
            await self.rules.record_sent(plan.debtor_id, plan.channel, plan.message_id, now)
        await self._record_campaign(plan, now)
        if plan.tell_engine and self.on_sent is not None:
            await self.on_sent(plan)  # idempotent on its side: retried until it succeeds
        await self._forget_deferred(plan.message_id)
        return decision

    async def _record_campaign(self, plan: PlannedMessage, now: datetime) -> None:
        """A campaign message that went out becomes the debtor's touch (idempotent: a retry or
        the same message moved to another channel is the same assignment)."""
        if plan.campaign and plan.debtor_id and self.outcomes is not None:
            await self.outcomes.record_sent(plan.debtor_id, plan.message_id.split("~", 1)[0],
                                            CampaignTag.from_dict(plan.campaign), tone=plan.tone,
                                            channel=plan.channel, at=now.timestamp())

    async def _channel_refusal(self, plan: PlannedMessage, debtor: Debtor | None,
                               conversation_id: str, language: str,
                               now: datetime, extra: dict[str, Any],
                               variables: dict[str, Any]) -> Decision | None:
        """The channel's own rules: a number the provider called invalid; WhatsApp's window,
        templates and opt-in. Adds the WhatsApp template to `extra` when one is needed."""
        rules = self.channel_rules
        assert rules is not None
        if plan.channel != "email" and await rules.is_invalid(plan.channel, plan.address):
            return Decision("refuse", "invalid_address", REASONS["invalid_address"])
        if plan.channel != "whatsapp":
            return None
        # An approved template per tone where there is one (a campaign step's tone must reach
        # the debtor outside the window too), else the key's own.
        wa_key = f"{plan.template}.{plan.tone}"
        if wa_key not in rules.config.content_templates:
            wa_key = plan.template
        wa = await rules.whatsapp_plan(conversation_id=conversation_id, debtor=debtor,
                                       kind=plan.kind, template=wa_key,
                                       language=language, now=now.timestamp())
        if wa.mode == "refuse":
            return Decision("refuse", wa.reason, REASONS[wa.reason])
        if wa.mode == "template":
            extra["content_sid"] = wa.content_sid
            try:
                extra["content_variables"] = rules.content_variables(wa_key, language, variables)
            except Exception as error:  # noqa: BLE001 - any expression error: refuse, named
                return Decision("refuse", "whatsapp_template_variables",
                                f"the WhatsApp template's variables did not render: {error}")
        return None

    async def _email_thread(self, conversation_id: str, plan: PlannedMessage,
                            subject: str | None, extra: dict[str, Any]) -> str | None:
        """Threading headers for an answer to the debtor's email, and "Re: <their subject>"
        so their mail client files it with their message."""
        state = await self.redis.hmget(self.keys.conversation(conversation_id),
                                       ["email_last_message_id", "email_references",
                                        "email_subject"])
        last_id, references, their_subject = (v.decode() if v else "" for v in state)
        if not last_id or plan.kind in UNSOLICITED_KINDS:
            return subject
        extra["in_reply_to"] = last_id
        extra["references"] = references or json.dumps([last_id])
        if their_subject:
            bare = their_subject
            while bare[:3].lower() in ("re:", "aw:") or bare[:4].lower() == "fwd:":
                bare = bare.split(":", 1)[1].strip()
            return f"Re: {bare}"[:200]
        return subject

    async def fall_back(self, plan: PlannedMessage, reason: str, *, debtor: Debtor | None = None,
                        now: datetime | None = None) -> Decision | None:
        """Plan the same message on the next channel the debtor can be reached on (after an
        undelivered SMS, a bounce, a closed WhatsApp window), through the contact rules
        again. None when there is no channel left or this message should not move."""
        if self.channel_rules is None or not plan.debtor_id or plan.kind in NO_FALLBACK_KINDS:
            return None
        debtor = debtor or await self.debtors.get(plan.debtor_id)
        if debtor is None:
            return None
        tried = {*plan.tried_channels, plan.channel}
        found = self.channel_rules.next_channel(debtor, tried)
        conversation_id = plan.conversation_id or plan.debtor_id
        if found is None:
            await self.conversations.add_event(conversation_id, "undeliverable", {
                "message_id": plan.message_id, "template": plan.template, "reason": reason,
                "tried": sorted(tried)})
            return None
        channel, address = found
        base_id = plan.message_id.split("~", 1)[0]
        moved = replace(plan, message_id=f"{base_id}~{channel}", channel=channel,
                        address=address, tried_channels=tuple(sorted(tried)))
        await self.conversations.add_event(conversation_id, "fallback", {
            "message_id": plan.message_id, "to_message_id": moved.message_id,
            "from_channel": plan.channel, "channel": channel, "reason": reason})
        return await self.send(moved, debtor=debtor, now=now)

    async def _refuse(self, plan: PlannedMessage, decision: Decision) -> Decision:
        await self._forget_deferred(plan.message_id)
        conversation_id = plan.conversation_id or plan.debtor_id
        if conversation_id:
            await self.conversations.add_event(conversation_id, "refused", {
                "message_id": plan.message_id, "template": plan.template,
                "message_kind": plan.kind, "channel": plan.channel, "reason": decision.reason,
                "detail": decision.detail})
        log.info("send_refused", message_id=plan.message_id, reason=decision.reason)
        return decision

    async def _defer(self, plan: PlannedMessage, decision: Decision) -> Decision:
        assert decision.until is not None
        key = self.keys.deferred_message(plan.message_id)
        first = not await self.redis.exists(key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"plan": plan.to_json(), "debtor_id": plan.debtor_id or "",
                                    "reason": decision.reason, "until": decision.until.timestamp()})
            pipe.zadd(self.keys.deferred, {plan.message_id: decision.until.timestamp()})
            await pipe.execute()
        conversation_id = plan.conversation_id or plan.debtor_id
        if first and conversation_id:
            await self.conversations.add_event(conversation_id, "deferred", {
                "message_id": plan.message_id, "template": plan.template,
                "message_kind": plan.kind, "channel": plan.channel, "reason": decision.reason,
                "detail": decision.detail, "until": decision.until.isoformat()})
        log.info("send_deferred", message_id=plan.message_id, reason=decision.reason,
                 until=decision.until.isoformat())
        return decision

    async def _forget_deferred(self, message_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.deferred, message_id)
            pipe.delete(self.keys.deferred_message(message_id))
            await pipe.execute()

    async def release_due(self, now: datetime | None = None, *, batch: int = 200) -> int:
        """Plan again every deferred message whose time has come. Returns how many were tried."""
        now = now or datetime.now(timezone.utc)
        due = await self._claim_due(keys=[self.keys.deferred],
                                    args=[now.timestamp(), now.timestamp() + RELEASE_LEASE_SECONDS,
                                          batch])
        for raw_id in due:
            message_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            stored = await self.redis.hget(self.keys.deferred_message(message_id), "plan")
            if stored is None:
                await self.redis.zrem(self.keys.deferred, message_id)
                continue
            await self.send(PlannedMessage.from_json(stored), now=now)
        return len(due)

    async def deferred_for(self, debtor_id: str) -> list[dict[str, Any]]:
        """The messages waiting for a debtor, with why and until when (for agents and export)."""
        result = []
        for raw_id, score in await self.redis.zrange(self.keys.deferred, 0, -1, withscores=True):
            data = await self.redis.hgetall(self.keys.deferred_message(raw_id.decode()))
            if data.get(b"debtor_id", b"").decode() == debtor_id:
                plan = json.loads(data[b"plan"])
                result.append({"message_id": raw_id.decode(), "template": plan["template"],
                               "channel": plan["channel"], "reason": data[b"reason"].decode(),
                               "until": datetime.fromtimestamp(score, timezone.utc).isoformat()})
        return result
