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

from bot.actions.context import context, message_metadata, say

# Crisis lines by the debtor's language; shown when vulnerability is reported.
HELPLINES = {
    "en": ("Samaritans", "116 123"),
    "nl": ("113 Zelfmoordpreventie", "0800 0113"),
    "de": ("TelefonSeelsorge", "0800 111 0 111"),
}


async def handoff_events(tracker: Tracker, reason: str, *, urgent: bool = False) -> list[EventType]:
    await context().conversations.escalate(tracker.sender_id, reason, urgent=urgent)
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
    """An opt-out said in words ("please stop texting me"): suppress this channel and address."""

    def name(self) -> str:
        return "action_opt_out"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        metadata = message_metadata(tracker)
        channel, address = metadata.get("channel"), metadata.get("address")
        ctx = context()
        if channel and address:
            await ctx.redis.set(ctx.keys.suppression(channel, address), "opt_out_intent")
            await ctx.conversations.add_event(tracker.sender_id, "opted_out",
                                              {"channel": channel, "via": "opt_out_intent"})
        say(dispatcher, "optout_confirmation")
        return [ActiveLoop(None)]
