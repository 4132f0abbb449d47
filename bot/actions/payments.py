"""Balance, negotiation, promises and paying: thin adapters over bot.core.negotiation and
service.arrangements. Every one of them needs a verified person first.

The negotiation is a ladder (bot/core/negotiation.py) inside the creditor's policy
(policies/arrangements.yml): each offer on the table is a *proposed* arrangement in Redis;
"yes" accepts it, "no" steps down the ladder, figures of the debtor's own are a counter-offer.
After the policy's rounds, or far outside it, a person takes over with a summary of what was
offered and asked. The slot `pending_offer` only says an offer is on the table (its id): the
offer itself lives in Redis, where the payment page and the console see it too.
"""

from __future__ import annotations

import abc
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.actions.context import context, debtor_of, is_verified, now_of, say, today_of
from bot.actions.handoff import handoff_events
from bot.actions.verification import locked_out, start_verification
from bot.core import negotiation as ladder
from bot.core.debtors import Debtor, minor_digits
from service.arrangements import NoProposal, confirmation_message, money


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
    """The amount entity ({"value": "50", ...}) in the debtor's minor units (exact: Decimal)."""
    value = amount.get("value") if isinstance(amount, dict) else amount
    if value in (None, ""):
        return None
    try:
        return int(Decimal(str(value)).scaleb(minor_digits(currency)).to_integral_value())
    except ArithmeticError:
        return None


def ask_from(entities: dict[str, Any], currency: str) -> ladder.Ask:
    installments = entities.get("installments")
    when = entities.get("date")
    return ladder.Ask(installments=int(installments) if installments else None,
                      amount_minor=_minor(entities.get("amount"), currency),
                      frequency=entities.get("frequency") or None,
                      first_date=date.fromisoformat(str(when)) if when else None)


class _NeedsVerification(Action, abc.ABC):
    """Base: verify first, then `answer`. Abstract, so rasa_sdk does not register it."""

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        if not await is_verified(tracker):
            debtor = await debtor_of(tracker)
            if debtor is not None and await context().identity.locked_until(debtor.id, now_of(tracker)):
                return await locked_out(dispatcher, tracker)
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


# --- the negotiation ------------------------------------------------------------------------
async def _state(debtor: Debtor) -> ladder.Negotiation:
    """The negotiation so far; a new one knows whether the debtor told us of hardship."""
    ctx = context()
    state = await ctx.book.negotiation(debtor.id)
    if not state.offers and not state.asks:
        hardship = await ctx.book.hardship_noted(debtor.id)
        if hardship != state.hardship:
            state = ladder.Negotiation(hardship=hardship)
    return state


async def present(dispatcher: CollectingDispatcher, tracker: Tracker, debtor: Debtor,
                  step: ladder.Step) -> list[EventType]:
    """Say what a negotiation step decided: an offer (a proposed arrangement), agreement to
    the debtor's own figures, or a hand-over with the summary."""
    ctx = context()
    policy = ctx.policy_for(debtor)
    await ctx.book.save_negotiation(debtor.id, step.state)
    if step.outcome == "escalate":
        await ctx.events.append("negotiation_escalated", debtor.id,
                                {"reason": step.reason, "summary": step.summary},
                                creditor=debtor.creditor)
        await ctx.conversations.add_event(debtor.id, "negotiation_summary",
                                          {"reason": step.reason, "summary": step.summary})
        say(dispatcher, "handoff", reason="negotiation")
        return [SlotSet("pending_offer", None)] + await handoff_events(tracker, "negotiation")
    offer = step.offer
    assert offer is not None  # offer and agree steps carry one
    arrangement = await ctx.book.propose(
        debtor, offer, today_of(tracker), grace_days=policy.follow_up.grace_days,
        reminder_days_before=policy.follow_up.instalment_reminder_days_before)
    await ctx.events.append("offer_made", debtor.id, {
        "arrangement_id": arrangement.id, "reason": step.reason, "round": step.state.rounds,
        "kind": offer.kind, "total": money(offer.total_minor, debtor.currency),
        "installments": len(offer.amounts_minor), "agreed": step.outcome == "agree"},
        creditor=debtor.creditor)
    currency = debtor.currency
    if step.reason == "settlement_not_eligible":
        say(dispatcher, "settlement_not_available")
    if offer.kind == "settlement":
        say(dispatcher, "offer_settlement", amount=money(offer.total_minor, currency),
            balance=str(debtor.balance), discount=money(offer.discount_minor, currency),
            currency=currency, pay_by=offer.dates[0].isoformat())
    elif offer.kind == "full":
        say(dispatcher, "offer_full", amount=money(offer.total_minor, currency), currency=currency,
            pay_by=offer.dates[0].isoformat(), payment_link=ctx.pay_links.url(debtor.id))
    else:
        say(dispatcher, "offer_plan", installments=len(offer.amounts_minor),
            instalment_amount=money(offer.amounts_minor[0], currency),
            last_amount=money(offer.amounts_minor[-1], currency), currency=currency,
            frequency=offer.frequency, first_date=offer.dates[0].isoformat(),
            total=money(offer.total_minor, currency), agreed=step.outcome == "agree",
            hardship=step.state.hardship)
    return [SlotSet("pending_offer", arrangement.id)]


def _terms(tracker: Tracker, debtor: Debtor) -> dict[str, Any]:
    ctx = context()
    return {"balance_minor": debtor.balance_minor, "policy": ctx.policy_for(debtor),
            "today": today_of(tracker), "currency": debtor.currency}


class ActionOfferPlan(_NeedsVerification):
    """"Can I pay in instalments?": the debtor's own figures are a counter-offer; without
    any, the first plan on the ladder."""

    def name(self) -> str:
        return "action_offer_plan"

    async def answer(self, dispatcher, tracker, debtor):
        entities = request_entities(tracker)
        state = await _state(debtor)
        if any(entities.get(e) for e in ("installments", "amount")):
            return await _counter(dispatcher, tracker, debtor, state, ask_from(entities, debtor.currency))
        return await present(dispatcher, tracker, debtor, ladder.open_plan(state, **_terms(tracker, debtor)))


async def _counter(dispatcher, tracker, debtor, state, ask: ladder.Ask) -> list[EventType]:
    ctx = context()
    await ctx.events.append("counter_offer", debtor.id, {
        "installments": ask.installments, "frequency": ask.frequency,
        "amount": money(ask.amount_minor, debtor.currency) if ask.amount_minor is not None else None,
        "first_date": ask.first_date.isoformat() if ask.first_date else None},
        creditor=debtor.creditor)
    await ctx.book.decline(debtor, today_of(tracker))  # the offer on the table, if any
    return await present(dispatcher, tracker, debtor,
                         ladder.counter(state, ask, **_terms(tracker, debtor)))


class ActionCounterOffer(_NeedsVerification):
    """"I can do 50 a month", "3 payments of 100", "zwei Raten"."""

    def name(self) -> str:
        return "action_counter_offer"

    async def answer(self, dispatcher, tracker, debtor):
        ask = ask_from(request_entities(tracker), debtor.currency)
        if ask.amount_minor is None and ask.installments is None:
            say(dispatcher, "ask_affordable_amount", currency=debtor.currency)
            return []
        return await _counter(dispatcher, tracker, debtor, await _state(debtor), ask)


class ActionSettlement(_NeedsVerification):
    """"Can I settle for less?": a reduction when the portfolio allows one for this debt."""

    def name(self) -> str:
        return "action_settlement"

    async def answer(self, dispatcher, tracker, debtor):
        terms = _terms(tracker, debtor)
        step = ladder.settlement(await _state(debtor), debtor.days_past_due(terms["today"]), **terms)
        return await present(dispatcher, tracker, debtor, step)


class ActionPayInFull(_NeedsVerification):
    def name(self) -> str:
        return "action_pay_in_full"

    async def answer(self, dispatcher, tracker, debtor):
        ctx = context()
        say(dispatcher, "payment_link", amount=str(debtor.balance), currency=debtor.currency,
            payment_link=ctx.pay_links.url(debtor.id))
        await ctx.events.append("pay_option_chosen", debtor.id,
                                {"option": "full", "where": "chat",
                                 "amount": str(debtor.balance)}, creditor=debtor.creditor)
        await ctx.conversations.add_event(tracker.sender_id, "pay_in_full_chosen", {})
        return [SlotSet("pending_offer", None)]


class ActionPromiseToPay(_NeedsVerification):
    """"I'll pay on Friday": a promise within the portfolio's horizon, followed up."""

    def name(self) -> str:
        return "action_promise_to_pay"

    async def answer(self, dispatcher, tracker, debtor):
        ctx = context()
        policy = ctx.policy_for(debtor)
        today = today_of(tracker)
        latest = today + timedelta(days=policy.promises.horizon_days)
        entities = request_entities(tracker)
        when = entities.get("date")
        if not when:
            say(dispatcher, "ask_promise_date", amount=str(debtor.balance), currency=debtor.currency)
            return []
        promised = date.fromisoformat(str(when))
        if promised > latest:
            say(dispatcher, "promise_date_too_late", latest_date=latest.isoformat())
            return []
        promised = max(promised, today)
        amount_minor = _minor(entities.get("amount"), debtor.currency)
        if amount_minor is None or not 0 < amount_minor <= debtor.balance_minor:
            amount_minor = debtor.balance_minor
        await ctx.book.make_promise(debtor, amount_minor, promised, today,
                                    grace_days=policy.promises.grace_days,
                                    reminder_days_before=policy.promises.reminder_days_before)
        say(dispatcher, "promise_confirmed", amount=money(amount_minor, debtor.currency),
            currency=debtor.currency, date=promised.isoformat())
        return [SlotSet("pending_offer", None)]


class ActionMoreTime(_NeedsVerification):
    def name(self) -> str:
        return "action_more_time"

    async def answer(self, dispatcher, tracker, debtor):
        policy = context().policy_for(debtor)
        latest = today_of(tracker) + timedelta(days=policy.promises.horizon_days)
        say(dispatcher, "more_time_offer", latest_date=latest.isoformat())
        return []


class ActionAffirm(Action):
    """"Yes" accepts the offer on the table, if there is one."""

    def name(self) -> str:
        return "action_affirm"

    async def run(self, dispatcher, tracker, domain):
        debtor = await debtor_of(tracker)
        if not tracker.get_slot("pending_offer") or debtor is None or not await is_verified(tracker):
            say(dispatcher, "fallback")
            return []
        ctx = context()
        try:
            arrangement = await ctx.book.accept(debtor, today_of(tracker))
        except NoProposal:
            say(dispatcher, "fallback")
            return [SlotSet("pending_offer", None)]
        template, variables = confirmation_message(arrangement, ctx.pay_links.url(debtor.id))
        say(dispatcher, template, **variables)
        return [SlotSet("pending_offer", None)]


class ActionDeny(Action):
    """"No" to an offer: the next step down the ladder (or a person, when there is none)."""

    def name(self) -> str:
        return "action_deny"

    async def run(self, dispatcher, tracker, domain):
        debtor = await debtor_of(tracker)
        if not tracker.get_slot("pending_offer") or debtor is None or not await is_verified(tracker):
            say(dispatcher, "fallback")
            return []
        await context().book.decline(debtor, today_of(tracker))
        step = ladder.decline(await _state(debtor), **_terms(tracker, debtor))
        return await present(dispatcher, tracker, debtor, step)


class ActionWhoWeAre(Action):
    def name(self) -> str:
        return "action_who_we_are"

    async def run(self, dispatcher, tracker, domain):
        debtor = await debtor_of(tracker)
        creditor = debtor.creditor if (debtor and await is_verified(tracker)) else None
        say(dispatcher, "who_we_are", creditor=creditor)
        return []


class ActionPaymentMethods(_NeedsVerification):
    def name(self) -> str:
        return "action_payment_methods"

    async def answer(self, dispatcher, tracker, debtor):
        say(dispatcher, "payment_methods", payment_link=context().pay_links.url(debtor.id),
            iban="NL00NUDG0123456789", reference=debtor.reference)
        return []


# What each request that needs verification runs once the person is verified.
ANSWER_AFTER_VERIFICATION: dict[str, type[_NeedsVerification]] = {
    "ask_balance": ActionBalance,
    "request_payment_plan": ActionOfferPlan,
    "propose_amount": ActionCounterOffer,
    "request_settlement": ActionSettlement,
    "pay_in_full": ActionPayInFull,
    "promise_to_pay": ActionPromiseToPay,
    "request_more_time": ActionMoreTime,
    "ask_payment_methods": ActionPaymentMethods,
}
