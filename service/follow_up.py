"""Messages that follow an arrangement: reminders before a due date, a note after a miss, the
notice that it ended, and receipts for payments. Sent by the worker, through the send path
(contact rules, channel rules, outbox), so a night-time reminder waits for the morning and a
stop-state silences them all.

Each message id is derived from what it is about (``arr:<arrangement>:<kind>:<instalment>``,
``pay:<payment id>:receipt``): a sweep or job that runs twice after a crash sends nothing
twice, because the send path refuses an id that already went out.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bot.core.arrangement_lifecycle import Arrangement, FollowUp
from bot.core.arrangement_policy import PolicyBook
from bot.core.debtors import Debtor
from service.arrangements import ArrangementBook, confirmation_message, money
from service.logs import get_logger
from service.pay_links import PayLinks
from service.processing import Processor
from service.sending import PlannedMessage

log = get_logger("follow_up")


class FollowUps:
    def __init__(self, processor: Processor, book: ArrangementBook, policies: PolicyBook,
                 pay_links: PayLinks):
        self.processor = processor
        self.book = book
        self.policies = policies
        self.pay_links = pay_links

    async def sweep(self, now: float | None = None) -> int:
        """Follow up every arrangement whose day has come. Returns the messages planned."""
        now = time.time() if now is None else now
        planned = 0
        for debtor_id in await self.book.due(now):
            debtor = await self.processor.debtors.get(debtor_id)
            if debtor is None:  # erased meanwhile
                await self.processor.redis.zrem(self.processor.keys.arrangement_due, debtor_id)
                continue
            today = self.processor.local_today(debtor, now)
            sent = await self.book.follow_up(debtor, today, self._sender_for(debtor, now))
            planned += len(sent)
        if planned:
            log.info("follow_ups_planned", messages=planned)
        return planned

    def _sender_for(self, debtor: Debtor, now: float):
        async def send(arrangement: Arrangement, item: FollowUp) -> None:
            variables = self._variables(debtor, arrangement, item)
            await self._send(debtor, f"arr:{arrangement.id}:{item.kind}:{item.number}",
                             item.kind, variables, now=now)
        return send

    def _variables(self, debtor: Debtor, arr: Arrangement, item: FollowUp) -> dict[str, Any]:
        currency = arr.currency
        link = self.pay_links.url(debtor.id)
        if item.kind == "instalment_reminder":
            return {"amount": money(item.amount_minor, currency), "currency": currency,
                    "due_date": item.due.isoformat(), "payment_link": link,
                    "number": item.number, "of": len(arr.instalments)}
        if item.kind == "instalment_missed":
            return {"amount": money(item.amount_minor, currency), "currency": currency,
                    "due_date": item.due.isoformat(), "payment_link": link,
                    "grace_until": (item.due + timedelta(days=arr.grace_days)).isoformat()}
        if item.kind == "arrangement_broken":
            return {"balance": money(debtor.balance_minor, currency), "currency": currency,
                    "payment_link": link}
        # promise_reminder, promise_broken
        return {"amount": money(item.amount_minor, currency), "currency": currency,
                "date": item.due.isoformat(), "payment_link": link}

    async def confirmation(self, debtor_id: str, arrangement_id: str) -> str | None:
        """The plain-language confirmation with the whole schedule, for an arrangement agreed
        on the payment page (the chat confirms its own)."""
        debtor = await self.processor.debtors.get(debtor_id)
        arrangement = await self.book.current(debtor_id)
        if debtor is None or arrangement is None or arrangement.id != arrangement_id:
            return None
        template, variables = confirmation_message(arrangement, self.pay_links.url(debtor.id))
        return await self._send(debtor, f"arr:{arrangement.id}:confirmed", template, variables,
                                kind="confirmation")

    async def receipt(self, debtor_id: str, payment_id: str, amount_minor: int,
                      now: float | None = None) -> str | None:
        """Thank the debtor for a payment: what is left and the next instalment, or that
        nothing more is owed."""
        debtor = await self.processor.debtors.get(debtor_id)
        if debtor is None:
            return None
        arrangement = await self.book.current(debtor_id)
        currency = debtor.currency
        if debtor.balance_minor == 0:  # nothing more owed (a settlement's rest is written off)
            total = arrangement.total_minor if arrangement is not None else amount_minor
            return await self._send(debtor, f"pay:{payment_id}:receipt", "arrangement_completed",
                                    {"total": money(total, currency), "currency": currency},
                                    kind="confirmation", now=now)
        variables: dict[str, Any] = {"amount": money(amount_minor, currency), "currency": currency,
                                     "remaining": money(debtor.balance_minor, currency)}
        upcoming = arrangement.next_unpaid() if arrangement is not None and arrangement.is_open else None
        if upcoming is not None:
            variables |= {"next_amount": money(upcoming.outstanding_minor, currency),
                          "next_date": upcoming.due.isoformat()}
        return await self._send(debtor, f"pay:{payment_id}:receipt", "payment_received", variables,
                                kind="confirmation", now=now)

    async def _send(self, debtor: Debtor, message_id: str, template: str,
                    variables: dict[str, Any], *, kind: str = "reminder",
                    now: float | None = None) -> str | None:
        """`kind`: reminders follow the contact windows and caps; a receipt is a confirmation
        (no collection content), which no cap should hold back."""
        channel, address = await self._channel(debtor)
        if address is None:
            log.warning("follow_up_no_address", debtor=debtor.id, template=template)
            return None
        decision = await self.processor.sender.send(PlannedMessage(
            message_id, debtor.id, channel, address, template, kind, variables), debtor=debtor,
            now=datetime.fromtimestamp(now, timezone.utc) if now is not None else None)
        return decision.verdict

    async def _channel(self, debtor: Debtor) -> tuple[str, str | None]:
        """The channel the debtor last wrote on, else the one they prefer; the send path's
        fallback moves on from there when it fails."""
        state = await self.processor.conversations.get(debtor.id)
        for channel in (state.channel, debtor.preferred_channel, "sms", "email"):
            if channel:
                address = debtor.email if channel == "email" else debtor.phone
                if address:
                    return channel, address
        return debtor.preferred_channel, None
