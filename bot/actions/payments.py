"""Balance, plans, counter-offers, promises and payment in full: thin adapters over
bot.core.plans. Every one of them needs a verified person first.

Issue #4 replaces the simple default policy here with per-portfolio policy, a negotiation
ladder and durable arrangements; the shapes (offer on the table, yes/no) stay.
"""

from __future__ import annotations

import abc
import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.actions.context import context, debtor_of, is_verified, say, today_of
from bot.actions.handoff import handoff_events
from bot.actions.verification import start_verification
from bot.core.debtors import minor_digits, minor_to_decimal
from bot.core.plans import propose_plan


def request_entities(tracker: Tracker) -> dict[str, Any]:
    """Entities of the request being answered: this message's, or the one asked before
    verification interrupted it."""
    pending = tracker.get_slot("pending_request")
    if pending:
        entities = pending.get("entities") or []
    else:
        entities = (tracker.latest_message or {}).get("entities") or []
    return {e["entity"]: e["value"] for e in entities}


def _minor(amount: Any, currency: str) -> int | None:
    """The amount entity ({"value": "50", ...}) in the debtor's minor units."""
    value = amount.get("value") if isinstance(amount, dict) else amount
    if value in (None, ""):
        return None
    return int(Decimal(str(value)).scaleb(minor_digits(currency)).to_integral_value())


def _money(minor: int, currency: str) -> str:
    return str(minor_to_decimal(minor, currency))


class _NeedsVerification(Action, abc.ABC):
    """Base: verify first, then `answer`. Abstract, so rasa_sdk does not register it."""

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        if not is_verified(tracker):
            return start_verification(tracker)
        return await self.answer_verified(dispatcher, tracker)

    async def answer_verified(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
        debtor = await debtor_of(tracker)
        if debtor is None:
            say(dispatcher, "handoff", reason="request_human")
            return await handoff_events(tracker, "request_human")
        events = await self.answer(dispatcher, tracker, debtor)
        return [SlotSet("pending_request", None)] + events

    @abc.abstractmethod
    async def answer(self, dispatcher, tracker, debtor) -> list[EventType]:
        """Say what the verified debtor asked for; return the events."""


class ActionBalance(_NeedsVerification):
    def name(self) -> str:
        return "action_balance"

    async def answer(self, dispatcher, tracker, debtor):
        say(dispatcher, "balance", creditor=debtor.creditor, reference=debtor.reference,
            amount=str(debtor.balance), currency=debtor.currency,
            due_date=debtor.due_date.isoformat())
        return []


def _offer_for_request(dispatcher, tracker, debtor, entities: dict[str, Any]) -> list[EventType]:
    """Offer the plan nearest to what was asked: a count of instalments, or an amount each."""
    installments = entities.get("installments")
    plan, _ = propose_plan(
        debtor.balance_minor, context().policy, today_of(tracker),
        installments=int(installments) if installments else None,
        frequency=entities.get("frequency"),
        amount_per_instalment_minor=None if installments
        else _minor(entities.get("amount"), debtor.currency),
    )
    currency = debtor.currency
    say(dispatcher, "offer_plan", installments=plan.installments,
        instalment_amount=_money(plan.instalment_minor, currency),
        first_amount=_money(plan.first_minor, currency),
        currency=currency, frequency=plan.frequency,
        first_date=plan.first_date.isoformat(), total=str(debtor.balance))
    offer = {"kind": "plan", "installments": plan.installments, "frequency": plan.frequency,
             "first_date": plan.first_date.isoformat(),
             "amounts": [_money(a, currency) for a in plan.amounts_minor],
             "dates": [d.isoformat() for d in plan.dates]}
    return [SlotSet("pending_offer", offer)]


class ActionOfferPlan(_NeedsVerification):
    def name(self) -> str:
        return "action_offer_plan"

    async def answer(self, dispatcher, tracker, debtor):
        return _offer_for_request(dispatcher, tracker, debtor, request_entities(tracker))


class ActionCounterOffer(_NeedsVerification):
    def name(self) -> str:
        return "action_counter_offer"

    async def answer(self, dispatcher, tracker, debtor):
        entities = request_entities(tracker)
        amount_minor = _minor(entities.get("amount"), debtor.currency)
        if amount_minor is None and not entities.get("installments"):
            say(dispatcher, "fallback")
            return []
        if amount_minor is not None and amount_minor >= debtor.balance_minor:
            return await ActionPayInFull().answer(dispatcher, tracker, debtor)
        return _offer_for_request(dispatcher, tracker, debtor, entities)


class ActionPayInFull(_NeedsVerification):
    def name(self) -> str:
        return "action_pay_in_full"

    async def answer(self, dispatcher, tracker, debtor):
        link = f"{context().settings.payment_base_url}/{debtor.reference}"
        say(dispatcher, "payment_link", amount=str(debtor.balance), currency=debtor.currency,
            payment_link=link)
        await context().conversations.add_event(tracker.sender_id, "pay_in_full_chosen", {})
        return [SlotSet("pending_offer", None)]


class ActionPromiseToPay(_NeedsVerification):
    def name(self) -> str:
        return "action_promise_to_pay"

    async def answer(self, dispatcher, tracker, debtor):
        entities = request_entities(tracker)
        policy = context().policy
        latest = today_of(tracker) + timedelta(days=policy.promise_horizon_days)
        when = entities.get("date")
        if not when:
            say(dispatcher, "ask_promise_date", amount=str(debtor.balance), currency=debtor.currency)
            return []
        promised = date.fromisoformat(str(when))
        if promised > latest:
            say(dispatcher, "promise_date_too_late", latest_date=latest.isoformat())
            return []
        amount = entities.get("amount")
        value = str(amount.get("value")) if isinstance(amount, dict) else str(debtor.balance)
        ctx = context()
        await ctx.redis.set(ctx.keys.promise(debtor.id), json.dumps(
            {"date": promised.isoformat(), "amount": value, "currency": debtor.currency,
             "state": "open"}))
        await ctx.conversations.add_event(tracker.sender_id, "promise_made",
                                          {"date": promised.isoformat()})
        say(dispatcher, "promise_confirmed", amount=value, currency=debtor.currency,
            date=promised.isoformat())
        return []


class ActionMoreTime(_NeedsVerification):
    def name(self) -> str:
        return "action_more_time"

    async def answer(self, dispatcher, tracker, debtor):
        latest = today_of(tracker) + timedelta(days=context().policy.promise_horizon_days)
        say(dispatcher, "more_time_offer", latest_date=latest.isoformat())
        return []


class ActionAffirm(Action):
    """"Yes" accepts the offer on the table, if there is one."""

    def name(self) -> str:
        return "action_affirm"

    async def run(self, dispatcher, tracker, domain):
        offer = tracker.get_slot("pending_offer")
        debtor = await debtor_of(tracker)
        if not offer or debtor is None or not is_verified(tracker):
            say(dispatcher, "fallback")
            return []
        ctx = context()
        arrangement = {"state": "accepted", "currency": debtor.currency,
                       "total": str(debtor.balance), **offer}
        await ctx.redis.set(ctx.keys.arrangement(debtor.id), json.dumps(arrangement))
        await ctx.conversations.add_event(tracker.sender_id, "arrangement_accepted",
                                          {"installments": offer["installments"]})
        schedule = [{"date": d, "amount": a} for d, a in zip(offer["dates"], offer["amounts"])]
        say(dispatcher, "plan_confirmed", schedule=schedule, currency=debtor.currency,
            frequency=offer["frequency"], total=str(debtor.balance))
        return [SlotSet("pending_offer", None)]


class ActionDeny(Action):
    """"No" to an offer: ask what they can afford (a counter-offer), else not understood."""

    def name(self) -> str:
        return "action_deny"

    async def run(self, dispatcher, tracker, domain):
        if tracker.get_slot("pending_offer"):
            debtor = await debtor_of(tracker)
            say(dispatcher, "ask_affordable_amount",
                currency=debtor.currency if debtor else context().settings.default_currency)
            return [SlotSet("pending_offer", None)]
        say(dispatcher, "fallback")
        return []


class ActionWhoWeAre(Action):
    def name(self) -> str:
        return "action_who_we_are"

    async def run(self, dispatcher, tracker, domain):
        debtor = await debtor_of(tracker)
        creditor = debtor.creditor if (debtor and is_verified(tracker)) else None
        say(dispatcher, "who_we_are", creditor=creditor)
        return []


class ActionPaymentMethods(_NeedsVerification):
    def name(self) -> str:
        return "action_payment_methods"

    async def answer(self, dispatcher, tracker, debtor):
        link = f"{context().settings.payment_base_url}/{debtor.reference}"
        say(dispatcher, "payment_methods", payment_link=link, iban="NL00NUDG0123456789",
            reference=debtor.reference)
        return []


# What each request that needs verification runs once the person is verified.
ANSWER_AFTER_VERIFICATION: dict[str, type[_NeedsVerification]] = {
    "ask_balance": ActionBalance,
    "request_payment_plan": ActionOfferPlan,
    "propose_amount": ActionCounterOffer,
    "pay_in_full": ActionPayInFull,
    "promise_to_pay": ActionPromiseToPay,
    "request_more_time": ActionMoreTime,
    "ask_payment_methods": ActionPaymentMethods,
}
