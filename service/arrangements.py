"""Arrangements in Redis: what the debtor agreed, the negotiation on the way there, payments.

One hash per debtor (``Keys.arrangement(debtor_id)``) holds everything about their deal, so an
erasure or an export finds it in one place:

* ``current``      JSON of the latest arrangement (bot/core/arrangement_lifecycle.py), any state
* ``history``      JSON list of the arrangements it replaced
* ``negotiation``  JSON of the negotiation state (bot/core/negotiation.py) while one is going on
* ``seq``          counter for arrangement ids (``<debtor id>-<n>``)
* ``payment:<id>``  amount of each payment applied (a payment lowers the balance once)
* ``hardship``     present once the debtor told us of hardship

``Keys.arrangement_due`` (sorted set) schedules the follow-up sweep: debtor id scored by the
epoch of the day the next reminder, miss or break is due.

Every change is one WATCH/MULTI transaction over the hash and the debtor document, retried when
another client wrote in between, so a payment and the sweep running at once cannot lose each
other's update. Every change is also a business event (service/business_events.py) and a
transcript event, so creditors and agents see it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timezone
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from bot.core.arrangement_lifecycle import (
    Arrangement, FollowUp, accept, apply_payment, end, follow_ups, new_arrangement,
    next_follow_up_date,
)
from bot.core.debtors import Debtor, minor_to_decimal
from bot.core.negotiation import Negotiation, Offer
from service.business_events import BusinessEvents
from service.conversations import ConversationStore
from service.keys import Keys

MAX_ATTEMPTS = 50
#: The worker job that confirms an arrangement agreed outside the chat (the payment page).
CONFIRMATION_JOB = "arrangement_confirmation"


class NoProposal(LookupError):
    """There is no proposed arrangement to accept or decline."""


@dataclass(frozen=True)
class PaymentOutcome:
    debtor_id: str
    balance_minor: int               # the debt left after this payment
    arrangement: Arrangement | None  # after the payment, when one was open
    events: list[tuple[str, dict[str, Any]]]


def _day_epoch(day: date) -> float:
    return datetime.combine(day, time(0), tzinfo=timezone.utc).timestamp()


def money(minor: int, currency: str) -> str:
    """A decimal string for events and templates ("123.40"): never a float."""
    return format(minor_to_decimal(minor, currency), "f")


class ArrangementBook:
    def __init__(self, redis: Redis, keys: Keys, events: BusinessEvents | None = None):
        self.redis = redis
        self.keys = keys
        self.events = events or BusinessEvents(redis, keys)
        self.conversations = ConversationStore(redis, keys)

    # --- reading ------------------------------------------------------------------------
    async def current(self, debtor_id: str) -> Arrangement | None:
        raw = await self.redis.hget(self.keys.arrangement(debtor_id), "current")
        return Arrangement.from_json(json.loads(raw)) if raw else None

    async def history(self, debtor_id: str) -> list[Arrangement]:
        raw = await self.redis.hget(self.keys.arrangement(debtor_id), "history")
        return [Arrangement.from_json(a) for a in json.loads(raw)] if raw else []

    async def negotiation(self, debtor_id: str) -> Negotiation:
        raw = await self.redis.hget(self.keys.arrangement(debtor_id), "negotiation")
        return Negotiation.from_json(json.loads(raw)) if raw else Negotiation()

    async def save_negotiation(self, debtor_id: str, state: Negotiation) -> None:
        await self.redis.hset(self.keys.arrangement(debtor_id), "negotiation",
                              json.dumps(state.to_json()))

    async def forget_negotiation(self, debtor_id: str) -> None:
        await self.redis.hdel(self.keys.arrangement(debtor_id), "negotiation")

    async def note_hardship(self, debtor_id: str) -> None:
        """The debtor told us of hardship: every negotiation from now on puts affordable
        options first (CONC 7.3.10), also after an agent lifted the stop-state."""
        await self.redis.hset(self.keys.arrangement(debtor_id), "hardship", "1")

    async def hardship_noted(self, debtor_id: str) -> bool:
        return bool(await self.redis.hget(self.keys.arrangement(debtor_id), "hardship"))

    # --- the deal -----------------------------------------------------------------------
    async def propose(self, debtor: Debtor, offer: Offer, today: date, *,
                      grace_days: int, reminder_days_before: int) -> Arrangement:
        """Put an offer on the table as a proposed arrangement (replacing an earlier proposal)."""
        seq = await self.redis.hincrby(self.keys.arrangement(debtor.id), "seq", 1)
        kind = "settlement" if offer.kind == "settlement" else "plan"  # "full" is a 1-payment plan
        arr = new_arrangement(f"{debtor.id}-{seq}", debtor.id, kind, debtor.currency,
                              debtor.balance_minor, list(offer.amounts_minor), list(offer.dates), today, frequency=offer.frequency,
                              grace_days=grace_days, reminder_days_before=reminder_days_before)

        await self._update(debtor.id, lambda current: arr)
        await self._announce(debtor, "arrangement_proposed", arr, {"offer": _offer_data(offer, debtor.currency)})
        return arr

    async def accept(self, debtor: Debtor, today: date) -> Arrangement:
        def change(current: Arrangement | None) -> Arrangement:
            if current is None or current.state != "proposed":
                raise NoProposal(f"{debtor.id} has no proposed arrangement")
            return accept(current, today)
        arr = await self._update(debtor.id, change)
        await self.forget_negotiation(debtor.id)
        await self._announce(debtor, "arrangement_accepted", arr, {"schedule": _schedule(arr)})
        return arr

    async def decline(self, debtor: Debtor, today: date) -> Arrangement | None:
        """The debtor said no to the proposal on the table (if any)."""
        def change(current: Arrangement | None) -> Arrangement | None:
            if current is None or current.state != "proposed":
                return current
            return end(current, "declined", today)
        arr = await self._update(debtor.id, change)
        if arr is not None and arr.state == "declined":
            await self._announce(debtor, "offer_declined", arr, {})
        return arr

    async def make_promise(self, debtor: Debtor, amount_minor: int, when: date, today: date, *,
                           grace_days: int, reminder_days_before: int) -> Arrangement:
        """A promise to pay is accepted when made: the debtor set its terms."""
        seq = await self.redis.hincrby(self.keys.arrangement(debtor.id), "seq", 1)
        promise = new_arrangement(f"{debtor.id}-{seq}", debtor.id, "promise", debtor.currency,
                                  debtor.balance_minor, [amount_minor], [when], today,
                                  grace_days=grace_days, reminder_days_before=reminder_days_before,
                                  state="accepted")
        arr = await self._update(debtor.id, lambda current: promise, end_open=True)
        await self.forget_negotiation(debtor.id)
        await self._announce(debtor, "promise_made", arr, {"date": when.isoformat(),
                                                           "amount": money(amount_minor, debtor.currency)})
        return arr

    # --- payments -----------------------------------------------------------------------
    async def apply_payment(self, debtor: Debtor, payment_id: str, amount_minor: int,
                            paid_on: date, *, source: str) -> PaymentOutcome:
        """Lower the balance and allocate the payment to the open arrangement. Idempotent by
        payment id for the arrangement; the payment ledger (service/payment_intake.py) makes
        sure each payment id reaches here once."""
        key, debtor_key = self.keys.arrangement(debtor.id), self.keys.debtor(debtor.id)
        applied_field = f"payment:{payment_id}"
        for _ in range(MAX_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key, debtor_key)
                    raw_debtor = await pipe.get(debtor_key)
                    if raw_debtor is None:
                        raise LookupError(f"no debtor {debtor.id}")
                    fresh = Debtor.from_json(raw_debtor)
                    raw = await pipe.hget(key, "current")
                    current = Arrangement.from_json(json.loads(raw)) if raw else None
                    if await pipe.hexists(key, applied_field):
                        # Applied before (a retry after a crash between here and the ledger's
                        # "recorded"): the balance must not go down twice.
                        await pipe.unwatch()
                        return PaymentOutcome(debtor.id, fresh.balance_minor, current, [])
                    events: list[tuple[str, Any]] = []
                    if current is not None:
                        effect = apply_payment(current, payment_id, amount_minor, paid_on)
                        current, events = effect.arrangement, effect.events
                    balance = max(0, fresh.balance_minor - amount_minor)
                    if current is not None and current.kind == "settlement" and current.state == "completed":
                        balance = 0  # the rest is written off
                    pipe.multi()
                    pipe.set(debtor_key, replace(fresh, balance_minor=balance).to_json())
                    pipe.hset(key, applied_field, amount_minor)
                    if current is not None:
                        pipe.hset(key, "current", json.dumps(current.to_json()))
                        self._schedule(pipe, current)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        else:
            raise RuntimeError(f"could not record payment {payment_id}: too much contention")
        await self.events.append("payment_received", debtor.id, {
            "payment_id": payment_id, "amount": money(amount_minor, debtor.currency),
            "currency": debtor.currency, "paid_on": paid_on.isoformat(), "source": source,
            "balance": money(balance, debtor.currency),
            "arrangement_id": current.id if current else None},
            creditor=debtor.creditor, event_id=f"payment_received:{payment_id}")
        await self.conversations.add_event(debtor.id, "payment_received", {
            "amount": money(amount_minor, debtor.currency), "source": source})
        for name, data in events:
            await self._announce(debtor, name, current, data, event_id=f"{name}:{payment_id}:{data.get('number', '')}")
        return PaymentOutcome(debtor.id, balance, current, events)

    # --- follow-up ----------------------------------------------------------------------
    async def due(self, now: float, limit: int = 200) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else m for m in
                await self.redis.zrangebyscore(self.keys.arrangement_due, "-inf", now, 0, limit)]

    async def follow_up(self, debtor: Debtor, today: date,
                        send: Callable[[Arrangement, FollowUp], Awaitable[None]]) -> list[FollowUp]:
        """Send what is due for this debtor's arrangement today, each message once.

        The messages go out before the record says they went: `send` must be idempotent (the
        send path is, by message id) so a crash in between sends nothing twice."""
        current = await self.current(debtor.id)
        if current is None:
            await self.redis.zrem(self.keys.arrangement_due, debtor.id)
            return []
        updated, todo, events = follow_ups(current, today)
        for item in todo:
            await send(updated, item)

        def change(latest: Arrangement | None) -> Arrangement | None:
            # a payment came in meanwhile: keep it, and recompute on the next sweep
            return updated if latest == current else latest
        saved = await self._update(debtor.id, change)
        if saved is updated:
            for name, data in events:
                await self._announce(debtor, name, updated, data,
                                     event_id=f"{name}:{updated.id}:{data.get('number', '')}")
            if updated.state == "broken":
                await self.forget_negotiation(debtor.id)  # a new negotiation starts afresh
        return todo if saved is updated else []

    # --- internals ----------------------------------------------------------------------
    async def _update(self, debtor_id: str,
                      change: Callable[[Arrangement | None], Arrangement | None],
                      *, end_open: bool = False) -> Arrangement | None:
        """Apply `change` to the current arrangement atomically. When it puts a new arrangement
        in place, the one it replaces goes to the history: superseded if it was a proposal
        (or, with `end_open`, an accepted or active one: a new promise replaces a plan)."""
        key = self.keys.arrangement(debtor_id)
        for _ in range(MAX_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "current")
                    current = Arrangement.from_json(json.loads(raw)) if raw else None
                    history = json.loads(await pipe.hget(key, "history") or "[]")
                    updated = change(current)
                    pipe.multi()
                    if updated is not None and current is not None and updated.id != current.id:
                        old = current
                        if old.state == "proposed" or (end_open and old.is_open):
                            old = end(old, "superseded", date.fromisoformat(updated.created_on))
                        pipe.hset(key, "history", json.dumps(history + [old.to_json()]))
                    if updated is not None:
                        pipe.hset(key, "current", json.dumps(updated.to_json()))
                        self._schedule(pipe, updated)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue
        raise RuntimeError(f"could not update the arrangement of {debtor_id}: too much contention")

    def _schedule(self, pipe, arr: Arrangement) -> None:
        when = next_follow_up_date(arr)
        if when is None:
            pipe.zrem(self.keys.arrangement_due, arr.debtor_id)
        else:
            pipe.zadd(self.keys.arrangement_due, {arr.debtor_id: _day_epoch(when)})

    async def _announce(self, debtor: Debtor, name: str, arr: Arrangement | None,
                        data: dict[str, Any], *, event_id: str | None = None) -> None:
        payload = {**_amounts_as_money(data, debtor.currency)}
        if arr is not None:
            payload |= {"arrangement_id": arr.id, "kind": arr.kind, "state": arr.state,
                        "total": money(arr.total_minor, arr.currency), "currency": arr.currency}
        await self.events.append(name, debtor.id, payload, creditor=debtor.creditor,
                                 event_id=event_id)
        await self.conversations.add_event(debtor.id, name, {
            k: v for k, v in payload.items() if k in ("arrangement_id", "kind", "state", "number")})


def confirmation_message(arr: Arrangement, payment_link: str) -> tuple[str, dict[str, Any]]:
    """The template and variables of the written confirmation of an accepted arrangement,
    with the whole schedule (the chat's "yes" and a plan chosen on the payment page)."""
    currency = arr.currency
    if arr.kind == "settlement":
        return "settlement_confirmed", {
            "amount": money(arr.total_minor, currency), "currency": currency,
            "pay_by": arr.instalments[0].due.isoformat(), "payment_link": payment_link,
            "balance": money(arr.balance_minor, currency)}
    return "plan_confirmed", {
        "schedule": [{"date": i.due.isoformat(), "amount": money(i.amount_minor, currency)}
                     for i in arr.instalments],
        "currency": currency, "frequency": arr.frequency or "monthly",
        "total": money(arr.total_minor, currency), "payment_link": payment_link}


def _amounts_as_money(data: dict[str, Any], currency: str) -> dict[str, Any]:
    """Events carry decimal strings: `*_minor` integers become their money strings."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name.endswith("_minor") and isinstance(value, int):
            out[name[: -len("_minor")]] = money(value, currency)
        else:
            out[name] = value
    return out


def _schedule(arr: Arrangement) -> list[dict[str, str]]:
    return [{"number": i.number, "date": i.due.isoformat(), "amount": money(i.amount_minor, arr.currency)}
            for i in arr.instalments]


def _offer_data(offer: Offer, currency: str) -> dict[str, Any]:
    return {"kind": offer.kind, "total": money(offer.total_minor, currency),
            "installments": len(offer.amounts_minor), "frequency": offer.frequency,
            "discount": money(offer.discount_minor, currency), "as_asked": offer.as_asked}
