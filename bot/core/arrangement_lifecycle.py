"""An arrangement's life: proposed -> accepted -> active -> completed, or broken. Pure: no I/O,
no clock (every function takes `today`, the debtor's local date).

One record shape serves the three kinds the bot agrees with a debtor:

* ``plan``: instalments on a schedule;
* ``settlement``: one reduced payment by a date, the rest written off once it is paid;
* ``promise``: the debtor's own promise to pay an amount by a date (accepted when made).

Payments are allocated to the earliest instalment not yet paid; a payment larger than that
instalment carries over to the next ones, a smaller one leaves it ``partial``. An instalment is
*missed* the day after its due date when not fully paid; the arrangement is *broken* when a
missed instalment is still not paid ``grace_days`` after its due date.

`follow_ups` says which messages are due (a reminder before an instalment, a note the day after
a miss, the notice that the arrangement ended), each once: the record remembers what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import date, timedelta
from typing import Any, Literal

Kind = Literal["plan", "settlement", "promise"]
State = Literal["proposed", "accepted", "active", "completed", "broken", "declined", "superseded"]

OPEN_STATES = frozenset({"accepted", "active"})
FINAL_STATES = frozenset({"completed", "broken", "declined", "superseded"})


@dataclass(frozen=True)
class Instalment:
    number: int            # 1-based
    due: date
    amount_minor: int
    paid_minor: int = 0
    reminded: bool = False          # the reminder before `due` was sent
    missed_notified: bool = False   # the note after a miss was sent

    @property
    def outstanding_minor(self) -> int:
        return max(0, self.amount_minor - self.paid_minor)

    @property
    def is_paid(self) -> bool:
        return self.paid_minor >= self.amount_minor

    def state(self, today: date) -> str:
        if self.is_paid:
            return "paid"
        if today > self.due:
            return "missed"
        return "partial" if self.paid_minor else "due"


@dataclass(frozen=True)
class Arrangement:
    id: str
    debtor_id: str
    kind: Kind
    state: State
    currency: str
    total_minor: int               # what the debtor pays under this arrangement
    balance_minor: int             # the debt when it was agreed (settlement: the rest is written off)
    instalments: tuple[Instalment, ...]
    frequency: str | None = None
    grace_days: int = 5
    reminder_days_before: int = 1
    created_on: str = ""           # ISO dates, the debtor's local day
    accepted_on: str | None = None
    ended_on: str | None = None
    payment_ids: tuple[str, ...] = ()
    broken_notified: bool = False

    # --- reading --------------------------------------------------------------------
    @property
    def paid_minor(self) -> int:
        return sum(i.paid_minor for i in self.instalments)

    @property
    def outstanding_minor(self) -> int:
        return sum(i.outstanding_minor for i in self.instalments)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def next_unpaid(self) -> Instalment | None:
        return next((i for i in self.instalments if not i.is_paid), None)

    def schedule(self) -> list[dict[str, Any]]:
        return [{"number": i.number, "date": i.due.isoformat(), "amount_minor": i.amount_minor,
                 "paid_minor": i.paid_minor} for i in self.instalments]

    # --- JSON -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: that deep-copies every field and was 6x the cost
        # of reading (bench/arrangements.py), on every write of an arrangement.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["instalments"] = [{"number": i.number, "due": i.due.isoformat(),
                                "amount_minor": i.amount_minor, "paid_minor": i.paid_minor,
                                "reminded": i.reminded, "missed_notified": i.missed_notified}
                               for i in self.instalments]
        data["payment_ids"] = list(self.payment_ids)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Arrangement":
        instalments = tuple(Instalment(**{**i, "due": date.fromisoformat(i["due"])})
                            for i in data["instalments"])
        return cls(**{**data, "instalments": instalments,
                      "payment_ids": tuple(data.get("payment_ids") or ())})


def new_arrangement(arrangement_id: str, debtor_id: str, kind: Kind, currency: str,
                    balance_minor: int, amounts_minor: tuple[int, ...] | list[int],
                    dates: tuple[date, ...] | list[date], today: date, *,
                    frequency: str | None = None, grace_days: int = 5,
                    reminder_days_before: int = 1, state: State = "proposed") -> Arrangement:
    if len(amounts_minor) != len(dates) or not amounts_minor:
        raise ValueError("an arrangement needs one date per amount, at least one")
    if any(not isinstance(a, int) or isinstance(a, bool) or a <= 0 for a in amounts_minor):
        raise TypeError("instalment amounts are positive whole minor units")
    instalments = tuple(Instalment(n, d, a) for n, (d, a) in enumerate(zip(dates, amounts_minor), 1))
    return Arrangement(arrangement_id, debtor_id, kind, state, currency, sum(amounts_minor),
                       balance_minor, instalments, frequency, grace_days, reminder_days_before,
                       created_on=today.isoformat(),
                       accepted_on=today.isoformat() if state == "accepted" else None)


# --- transitions --------------------------------------------------------------------------
class TransitionError(ValueError):
    """A change the arrangement's state does not allow (accepting a broken one...)."""


def accept(arr: Arrangement, today: date) -> Arrangement:
    if arr.state != "proposed":
        raise TransitionError(f"cannot accept an arrangement that is {arr.state}")
    return replace(arr, state="accepted", accepted_on=today.isoformat())


def end(arr: Arrangement, state: State, today: date) -> Arrangement:
    """Decline a proposal, or supersede an arrangement by a new one."""
    if arr.state in FINAL_STATES:
        return arr
    return replace(arr, state=state, ended_on=today.isoformat())


@dataclass(frozen=True)
class PaymentEffect:
    """What one payment did to an arrangement: the new record and the events it caused."""

    arrangement: Arrangement
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    unallocated_minor: int = 0     # more than the arrangement still wanted (stays on the balance)


def apply_payment(arr: Arrangement, payment_id: str, amount_minor: int, today: date) -> PaymentEffect:
    """Allocate a payment to the earliest unpaid instalments. Idempotent by payment id."""
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise TypeError("a payment amount is whole minor units")
    if payment_id in arr.payment_ids or arr.state not in OPEN_STATES | {"broken"}:
        return PaymentEffect(arr, [], amount_minor if payment_id not in arr.payment_ids else 0)
    left = amount_minor
    events: list[tuple[str, dict[str, Any]]] = []
    instalments = []
    for inst in arr.instalments:
        take = min(left, inst.outstanding_minor)
        if take:
            left -= take
            inst = replace(inst, paid_minor=inst.paid_minor + take)
            if inst.is_paid:
                events.append(("instalment_paid", {"number": inst.number, "due": inst.due.isoformat(),
                                                   "amount_minor": inst.amount_minor}))
        instalments.append(inst)
    updated = replace(arr, instalments=tuple(instalments), payment_ids=arr.payment_ids + (payment_id,))
    if updated.state == "accepted":
        updated = replace(updated, state="active")
        events.append(("arrangement_active", {}))
    if updated.outstanding_minor == 0 and updated.state in OPEN_STATES:
        updated = replace(updated, state="completed", ended_on=today.isoformat())
        events.append(("promise_kept" if arr.kind == "promise" else "arrangement_completed",
                       {"total_minor": updated.total_minor,
                        "written_off_minor": max(0, arr.balance_minor - arr.total_minor)}))
    return PaymentEffect(updated, events, left)


# --- follow-up --------------------------------------------------------------------------
@dataclass(frozen=True)
class FollowUp:
    """A message due now: `kind` names the template, `number` the instalment it is about."""

    kind: str      # instalment_reminder | instalment_missed | arrangement_broken | promise_reminder | promise_broken
    number: int
    amount_minor: int
    due: date


def follow_ups(arr: Arrangement, today: date) -> tuple[Arrangement, list[FollowUp], list[tuple[str, dict]]]:
    """The messages due today and the state changes they come with, each once.

    Returns the arrangement marked with what is now sent, the follow-ups to send, and the
    events (instalment_missed, arrangement_broken / promise_broken)."""
    if not arr.is_open:
        return arr, [], []
    promise = arr.kind == "promise"
    todo: list[FollowUp] = []
    events: list[tuple[str, dict]] = []
    instalments = []
    broken = False
    for inst in arr.instalments:
        if inst.is_paid:
            instalments.append(inst)
            continue
        if today > inst.due + timedelta(days=arr.grace_days):
            broken = True
        elif today > inst.due and not inst.missed_notified:
            events.append(("instalment_missed", {"number": inst.number, "due": inst.due.isoformat(),
                                                 "outstanding_minor": inst.outstanding_minor}))
            if not promise:  # a promise gets one reminder and, if broken, one notice
                todo.append(FollowUp("instalment_missed", inst.number, inst.outstanding_minor, inst.due))
            inst = replace(inst, missed_notified=True, reminded=True)
        elif (not inst.reminded and today <= inst.due
              and today >= inst.due - timedelta(days=arr.reminder_days_before)):
            kind = "promise_reminder" if promise else "instalment_reminder"
            todo.append(FollowUp(kind, inst.number, inst.outstanding_minor, inst.due))
            inst = replace(inst, reminded=True)
        instalments.append(inst)
    updated = replace(arr, instalments=tuple(instalments))
    if broken:
        first = updated.next_unpaid()
        assert first is not None  # broken implies an unpaid instalment
        updated = replace(updated, state="broken", ended_on=today.isoformat(), broken_notified=True)
        name = "promise_broken" if promise else "arrangement_broken"
        events.append((name, {"number": first.number, "due": first.due.isoformat(),
                              "outstanding_minor": updated.outstanding_minor}))
        todo = [FollowUp(name, first.number, updated.outstanding_minor, first.due)]
    return updated, todo, events


def next_follow_up_date(arr: Arrangement) -> date | None:
    """The next day `follow_ups` may have something to do (the sweep's schedule)."""
    if not arr.is_open:
        return None
    days: list[date] = []
    for inst in arr.instalments:
        if inst.is_paid:
            continue
        if not inst.reminded:
            days.append(inst.due - timedelta(days=arr.reminder_days_before))
        elif not inst.missed_notified:
            days.append(inst.due + timedelta(days=1))
        else:
            days.append(inst.due + timedelta(days=arr.grace_days + 1))
    return min(days) if days else None
