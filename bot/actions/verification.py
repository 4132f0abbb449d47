"""Verification before disclosure: the verification form and what happens after it.

No amount, creditor or reference is said before the person proved who they are with what
the portfolio configures (date of birth by default). A limited number of attempts, then the
conversation goes to an agent. Issue #4 adds expiry and per-portfolio methods.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import dateparser
from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.actions.context import context, debtor_of, message_metadata, say
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


def _parse_birth_date(text: str) -> date | None:
    # A birth date is in the past and written day first in all three languages we serve.
    parsed = dateparser.parse(text, settings={"DATE_ORDER": "DMY", "PREFER_DATES_FROM": "past",
                                               "STRICT_PARSING": True},
                              languages=["en", "nl", "de"])
    return parsed.date() if parsed else None


def _normalise_postcode(text: str) -> str:
    return re.sub(r"\s+", "", text).upper()


def answer_matches(method: str, answer: str, debtor: Any) -> bool:
    if method == "date_of_birth":
        return _parse_birth_date(answer) == debtor.date_of_birth
    if method == "postcode":
        return _normalise_postcode(answer) == _normalise_postcode(debtor.postcode)
    return _normalise_postcode(answer) == _normalise_postcode(debtor.reference)


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
        settings = context().settings
        debtor = await debtor_of(tracker)
        attempts = int(tracker.get_slot("verification_attempts") or 0) + 1
        if debtor is not None and answer_matches(settings.verification_method, str(value), debtor):
            return {"verification_answer": "verified", "verified": True, "verification_attempts": 0}
        if attempts >= settings.verification_max_attempts:
            return {"verification_answer": "locked", "verification_attempts": attempts}
        return {"verification_answer": None, "verification_attempts": attempts}


class ActionAskVerificationAnswer(Action):
    def name(self) -> str:
        return "action_ask_verification_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        settings = context().settings
        attempts = int(tracker.get_slot("verification_attempts") or 0)
        method = settings.verification_method
        if attempts:
            say(dispatcher, "verification_retry", method=method,
                attempts_left=settings.verification_max_attempts - attempts)
        else:
            say(dispatcher, "ask_verification", method=method)
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
        say(dispatcher, "verification_locked")
        return reset + [SlotSet("verification_attempts", 0), ActiveLoop(None)] + await handoff_events(
            tracker, "verification")
