"""Hand the conversation to a person: stop-states, requests for a human, opt-out in words.

The action moves the conversation to the agent queue with a reason (app state in Redis),
pauses the engine (ConversationPaused) and names an acknowledgement template. Until an
agent hands it back, the worker sends the debtor's messages to the agent, not the engine.
"""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, ConversationPaused, EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.actions.context import context, debtor_of, message_metadata, say
from bot.core.keywords import opt_out_channels
from service.suppression import address_digest

# Crisis lines by the debtor's language; shown when vulnerability is reported.
HELPLINES = {
    "en": ("Samaritans", "116 123"),
    "nl": ("113 Zelfmoordpreventie", "0800 0113"),
    "de": ("TelefonSeelsorge", "0800 111 0 111"),
}


#: Reasons that are stop-states: automation pauses until a person with the right role lifts it
#: (policies/contact.yml). Other reasons (a request for a person, a complaint) only hand over.
STOP_STATE_REASONS = frozenset({"dispute", "attorney", "bankruptcy", "deceased", "vulnerability",
                                "hardship", "wrong_number"})


async def handoff_events(tracker: Tracker, reason: str, *, urgent: bool = False) -> list[EventType]:
    ctx = context()
    if reason in STOP_STATE_REASONS:
        metadata = message_metadata(tracker)
        digest = None
        if reason == "wrong_number" and metadata.get("address"):
            # Nothing more goes to the address that is somebody else's, on any phone channel.
            address = metadata["address"]
            digest = address_digest(ctx.settings.pseudonym_key, address)
        await ctx.rules.stop_states.set(tracker.sender_id, reason,
                                        source=f"intent:{reason}", address_digest_=digest)
    if reason == "hardship":
        await ctx.book.note_hardship(tracker.sender_id)
    await ctx.conversations.escalate(tracker.sender_id, reason, urgent=urgent)
    return [ActiveLoop(None), ConversationPaused()]


def _language(tracker: Tracker) -> str:
    return message_metadata(tracker).get("language") or tracker.get_slot("language") or "en"


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        reason = ((tracker.latest_message or {}).get("intent") or {}).get("name") or "request_human"
        urgent = bool(message_metadata(tracker).get("urgent"))
        if reason == "vulnerability":
            name, phone = HELPLINES.get(_language(tracker), HELPLINES["en"])
            say(dispatcher, "vulnerability_support", helpline_name=name, helpline_phone=phone,
                urgent=urgent)
        elif reason == "wrong_number":
            say(dispatcher, "wrong_number_ack")
        else:
            say(dispatcher, "handoff", reason=reason)
        return await handoff_events(tracker, reason, urgent=urgent)


class ActionOptOut(Action):
    """An opt-out said in words: "please stop texting me" suppresses the channel it came on;
    "stop emailing me" sent by text suppresses email. Either way WhatsApp is suppressed too
    (service/suppression.py says why)."""

    def name(self) -> str:
        return "action_opt_out"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        metadata = message_metadata(tracker)
        channel, address = metadata.get("channel"), metadata.get("address")
        ctx = context()
        debtor = await debtor_of(tracker)
        first_time = False
        if channel and address:
            for target in sorted(opt_out_channels(metadata.get("text") or "", channel)):
                target_address = address if target == channel else _address_for(debtor, target)
                if not target_address:
                    continue
                first_time |= await ctx.rules.suppressions.suppress(
                    target, target_address, "opt_out_intent",
                    whatsapp_phone=debtor.phone if debtor else None)
                await ctx.conversations.add_event(tracker.sender_id, "opted_out",
                                                  {"channel": target, "via": "opt_out_intent"})
                await ctx.rules.audit.record("debtor", "opt_out", debtor_id=tracker.sender_id,
                                             channel=target, via="opt_out_intent")
        if first_time:  # at most one confirmation
            say(dispatcher, "optout_confirmation")
        return [ActiveLoop(None)]


def _address_for(debtor, channel: str) -> str | None:
    if debtor is None:
        return None
    return debtor.email if channel == "email" else debtor.phone
