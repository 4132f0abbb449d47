"""Verification before disclosure: the verification form and what happens after it.

No amount, creditor or reference is said before the person proved who they are with every
method their portfolio configures (policies/arrangements.yml `verification.methods`: date of
birth, postcode, reference), asked in turn. The attempts and the lock live in Redis
(service/identity.py), shared with the payment page: after `max_attempts` wrong answers both
lock and the conversation goes to an agent. A verification expires after `valid_for_minutes`;
the next request for debt detail asks again.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.actions.context import context, debtor_of, message_metadata, now_of, say
from bot.actions.handoff import handoff_events

# Replies that must not be taken as a (wrong) verification answer: the dialogue's
# rules hand these to an agent or record the opt-out instead.
NOT_AN_ANSWER = {
    "dispute", "wrong_number", "hardship", "vulnerability", "deceased", "bankruptcy",
    "attorney", "request_human", "request_callback", "complain", "opt_out",
}


def start_verification(tracker: Tracker) -> list[EventType]:
    """Remember what was asked (with its entities) and start the verification form."""
    message = tracker.latest_message or {}
    pending = {
        "intent": (message.get("intent") or {}).get("name"),
        "entities": [{"entity": e["entity"], "value": e["value"]} for e in message.get("entities", [])],
    }
    return [SlotSet("pending_request", pending), FollowupAction("verification_form")]


async def locked_out(dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
    """Too many wrong answers (here or on the payment page): a person takes over."""
    ctx = context()
    debtor = await debtor_of(tracker)
    say(dispatcher, "verification_locked")
    await ctx.events.append("verification_locked", tracker.sender_id, {"where": "chat"},
                            creditor=debtor.creditor if debtor else None)
    return [SlotSet("verification_answer", None), SlotSet("verification_attempts", 0),
            ActiveLoop(None)] + await handoff_events(tracker, "verification")


class ValidateVerificationForm(FormValidationAction):
    def name(self) -> str:
        return "validate_verification_form"

    async def extract_verification_answer(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("requested_slot") != "verification_answer":
            return {}
        intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
        if intent in NOT_AN_ANSWER:
            return {}
        text = message_metadata(tracker).get("text")
        return {"verification_answer": text} if text else {}

    async def validate_verification_answer(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        ctx = context()
        debtor = await debtor_of(tracker)
        if debtor is None:
            return {"verification_answer": "locked"}
        result = await ctx.identity.answer(debtor, "chat", ctx.policy_for(debtor).verification,
                                           str(value), now_of(tracker))
        if result.outcome == "verified":
            return {"verification_answer": "verified", "verified": True, "verification_attempts": 0}
        if result.outcome == "locked":
            return {"verification_answer": "locked", "verification_attempts": 0}
        # "wrong" asks the same method again (and says so); "next" asks the next method.
        wrong = result.outcome == "wrong"
        return {"verification_answer": None,
                "verification_attempts": (int(tracker.get_slot("verification_attempts") or 0) + 1)
                if wrong else 0}


class ActionAskVerificationAnswer(Action):
    def name(self) -> str:
        return "action_ask_verification_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        ctx = context()
        debtor = await debtor_of(tracker)
        if debtor is None:
            say(dispatcher, "handoff", reason="verification")
            return await handoff_events(tracker, "verification")
        question = await ctx.identity.next_question(debtor.id, "chat",
                                                    ctx.policy_for(debtor).verification, now_of(tracker))
        if question.outcome == "locked":
            return await locked_out(dispatcher, tracker)
        steps = {"step": question.step, "steps": question.steps} if question.steps > 1 else {}
        if int(tracker.get_slot("verification_attempts") or 0):
            say(dispatcher, "verification_retry", method=question.method,
                attempts_left=question.attempts_left, **steps)
        else:
            say(dispatcher, "ask_verification", method=question.method, **steps)
        return []


class ActionAfterVerification(Action):
    def name(self) -> str:
        return "action_after_verification"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        outcome = tracker.get_slot("verification_answer")
        reset = [SlotSet("verification_answer", None)]
        if outcome == "verified":
            # Answer what was asked before verification, here and now: a FollowupAction
            # would leave the dialogue policy to guess what comes after it.
            from bot.actions.payments import ANSWER_AFTER_VERIFICATION, ActionBalance

            pending = tracker.get_slot("pending_request") or {}
            action = ANSWER_AFTER_VERIFICATION.get(pending.get("intent") or "", ActionBalance)()
            return reset + await action.answer_verified(dispatcher, tracker)
        return reset + await locked_out(dispatcher, tracker)
