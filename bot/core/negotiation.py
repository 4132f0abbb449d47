"""The negotiation ladder: what to offer next, pure functions over a JSON-serialisable state.

No I/O, no clock: the caller passes ``today`` and keeps :class:`Negotiation` between turns
(service/arrangements.py stores ``to_json()``). Every function returns a :class:`Step`:

* ``offer``    — put ``step.offer`` to the debtor;
* ``agree``    — the debtor's own figures are inside policy: ``step.offer`` is exactly that;
* ``escalate`` — a person takes over; ``step.summary`` tells them what was offered and asked.

The ladder (``negotiation.ladder`` in policies/arrangements.yml, e.g. ``[1, 3, 6, 12]``) is the
order of offers: pay in full, then plans of more and more instalments, each capped to what the
plan rules allow for the balance. A "no" goes one rung down; a counter-offer inside policy is
agreed as asked, one near it gets the nearest plan inside policy, one far from it goes to a
person, and so does anything after ``max_rounds`` "no"s and counters.

Hardship (the debtor said they cannot afford it) changes the direction, never the limits: we
open with the most affordable plan allowed, never ask for payment in full, never push a
counter-offer up (one below the minimum goes to a person, who judges affordability), and a "no"
to the most affordable plan goes to a person.

Every offer a step returns is inside policy (:func:`offer_inside_policy` says why one is not).
First dates default to the latest the policy allows: the debtor can always pay earlier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from bot.core.arrangement_policy import FREQUENCIES, ArrangementPolicy, PlanRules
from bot.core.debtors import minor_to_decimal
from bot.core.plans import (
    Plan, build_fixed_plan, build_plan, is_weekend, minimum_instalment_minor,
    most_affordable_frequency, most_installments_allowed, nearest_first_date,
    plan_inside_policy, require_minor,
)

OfferKind = Literal["full", "plan", "settlement"]
Outcome = Literal["offer", "agree", "escalate"]


def _whole(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _day(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(value)


@dataclass(frozen=True)
class Offer:
    kind: OfferKind
    total_minor: int                      # what the debtor pays (a settlement: after discount)
    amounts_minor: tuple[int, ...]
    dates: tuple[date, ...]
    frequency: str | None                 # None for a single payment
    discount_minor: int = 0
    rung: int = 0                         # ladder index; a settlement's discount step
    as_asked: bool = False                # exactly the figures the debtor proposed

    def __post_init__(self) -> None:
        for name in ("total_minor", "discount_minor", "rung"):
            _whole(name, getattr(self, name))
        for amount in self.amounts_minor:
            _whole("amounts_minor", amount)

    @property
    def installments(self) -> int:
        return len(self.amounts_minor)

    @property
    def instalment_minor(self) -> int:
        return self.amounts_minor[0]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "total_minor": self.total_minor,
                "amounts_minor": list(self.amounts_minor),
                "dates": [d.isoformat() for d in self.dates], "frequency": self.frequency,
                "discount_minor": self.discount_minor, "rung": self.rung,
                "as_asked": self.as_asked}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Offer:
        return cls(kind=raw["kind"], total_minor=raw["total_minor"],
                   amounts_minor=tuple(raw["amounts_minor"]),
                   dates=tuple(date.fromisoformat(d) for d in raw["dates"]),
                   frequency=raw.get("frequency"), discount_minor=raw.get("discount_minor", 0),
                   rung=raw.get("rung", 0), as_asked=bool(raw.get("as_asked", False)))


@dataclass(frozen=True)
class Ask:
    """The debtor's own figures: "I can do 50 a month", "6 payments", "from the 1st"."""

    installments: int | None = None
    amount_minor: int | None = None       # per instalment
    frequency: str | None = None
    first_date: date | None = None

    def __post_init__(self) -> None:
        _whole("installments", self.installments, optional=True)
        _whole("amount_minor", self.amount_minor, optional=True)
        if self.frequency is not None and self.frequency not in FREQUENCIES:
            raise ValueError(f"unknown frequency {self.frequency!r}")
        if (self.installments, self.amount_minor, self.frequency, self.first_date) == (None,) * 4:
            raise ValueError("an ask names at least one figure")

    def to_json(self) -> dict[str, Any]:
        return {"installments": self.installments, "amount_minor": self.amount_minor,
                "frequency": self.frequency,
                "first_date": self.first_date.isoformat() if self.first_date else None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Ask:
        return cls(raw.get("installments"), raw.get("amount_minor"), raw.get("frequency"),
                   _day(raw.get("first_date")))


@dataclass(frozen=True)
class Negotiation:
    rounds: int = 0                       # "no"s and counters answered so far
    offers: tuple[Offer, ...] = ()        # every offer made (and agreed), oldest first
    asks: tuple[Ask, ...] = ()
    hardship: bool = False

    @property
    def on_table(self) -> Offer | None:
        return self.offers[-1] if self.offers else None

    def to_json(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "offers": [o.to_json() for o in self.offers],
                "asks": [a.to_json() for a in self.asks], "hardship": self.hardship}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Negotiation:
        return cls(rounds=_whole("rounds", raw.get("rounds", 0)),  # type: ignore[arg-type]
                   offers=tuple(Offer.from_json(o) for o in raw.get("offers", ())),
                   asks=tuple(Ask.from_json(a) for a in raw.get("asks", ())),
                   hardship=bool(raw.get("hardship", False)))


@dataclass(frozen=True)
class Step:
    outcome: Outcome
    offer: Offer | None
    reason: str
    state: Negotiation
    summary: dict[str, Any] = field(default_factory=dict)


# --- the public moves --------------------------------------------------------------------------

def open_full(state: Negotiation, balance_minor: int, policy: ArrangementPolicy, today: date,
              currency: str) -> Step:
    """Rung 0: the whole balance by the latest first date. In hardship: :func:`open_plan`."""
    require_minor("balance_minor", balance_minor, low=1)
    if state.hardship:
        return open_plan(state, balance_minor, policy, today, currency)
    offer = _full(balance_minor, nearest_first_date(None, today, policy.plans))
    return _finish("offer", offer, "opening", state, balance_minor, currency)


def open_plan(state: Negotiation, balance_minor: int, policy: ArrangementPolicy, today: date,
              currency: str) -> Step:
    """The first plan rung, capped to the plan rules; in hardship the most affordable plan."""
    require_minor("balance_minor", balance_minor, low=1)
    outcome, offer, reason = _opening_plan(state, balance_minor, policy, today, currency)
    return _finish(outcome, offer, reason, state, balance_minor, currency)


def decline(state: Negotiation, balance_minor: int, policy: ArrangementPolicy, today: date,
            currency: str) -> Step:
    """A "no" to the offer on the table: one rung down, a settlement's discount one step up."""
    require_minor("balance_minor", balance_minor, low=1)
    table = state.on_table
    if table is None:  # nothing was offered yet: a "no" is no answer to anything
        return open_plan(state, balance_minor, policy, today, currency)
    state = replace(state, rounds=state.rounds + 1)
    if state.rounds > policy.negotiation.max_rounds:
        return _finish("escalate", None, "max_rounds", state, balance_minor, currency)
    if table.kind == "settlement":
        offer = _next_settlement(table, balance_minor, policy, today)
        reason = "discount_step" if offer else "max_discount_declined"
    elif state.hardship:
        offer = _most_affordable(balance_minor, policy, today, currency)
        if offer is not None and offer.installments <= table.installments:
            offer = None
        reason = "most_affordable" if offer else "bottom_of_ladder"
    else:
        offer = _next_rung(table, balance_minor, policy, today, currency)
        reason = "next_rung" if offer else "bottom_of_ladder"
    return _finish("offer" if offer else "escalate", offer, reason, state, balance_minor, currency)


def counter(state: Negotiation, ask: Ask, balance_minor: int, policy: ArrangementPolicy,
            today: date, currency: str) -> Step:
    """The debtor proposes figures: agree when inside policy, offer the nearest plan inside
    policy when near, hand to a person when far or after too many rounds."""
    require_minor("balance_minor", balance_minor, low=1)
    rules = policy.plans
    state = replace(state, asks=state.asks + (ask,))
    table = state.on_table
    minimum = minimum_instalment_minor(balance_minor, rules, currency)

    if _far_outside(ask, balance_minor, minimum, policy):
        state = replace(state, rounds=state.rounds + 1)
        return _finish("escalate", None, "far_outside_policy", state, balance_minor, currency)

    # What the debtor's figures describe; what they leave out comes from the offer on the table
    # (a date they did not name is one the policy allows, so it never spoils an agreement).
    count, theirs = _wanted_count(ask, state, balance_minor, policy, today, currency)
    frequency = ask.frequency or _table_frequency(table, rules)
    table_first = table.dates[0] if table is not None and table.kind != "settlement" else None
    first = ask.first_date or nearest_first_date(table_first, today, rules)
    wanted = _shape(balance_minor, ask, count, frequency, first, rules)
    consistent = theirs and (ask.installments is None or wanted.installments == ask.installments)
    if consistent and wanted.dates[0] == first \
            and not plan_inside_policy(wanted, balance_minor, rules, today, currency):
        offer = _offer_of(wanted, policy, as_asked=True)
        reason = "counter_pays_in_full" if count == 1 else "counter_inside_policy"
        return _finish("agree", offer, reason, state, balance_minor, currency)

    # Outside policy: the nearest plan inside it.
    state = replace(state, rounds=state.rounds + 1)
    if state.rounds > policy.negotiation.max_rounds:
        return _finish("escalate", None, "max_rounds", state, balance_minor, currency)
    nearest = _nearest(ask, balance_minor, count, minimum, frequency, first, policy, today,
                       currency)
    if state.hardship:
        # Never push someone in hardship to pay more, or all at once: a person judges.
        if _asks_more(nearest, ask, count):
            return _finish("escalate", None, "hardship_below_minimum", state, balance_minor,
                           currency)
        if nearest.kind == "full":
            return _finish("escalate", None, "hardship_needs_person", state, balance_minor,
                           currency)
    return _finish("offer", nearest, "nearest_inside_policy", state, balance_minor, currency)


def settlement(state: Negotiation, days_past_due: int, balance_minor: int,
               policy: ArrangementPolicy, today: date, currency: str) -> Step:
    """A discounted single payment at ``first_discount`` when the debt is eligible; otherwise
    the opening plan, with reason ``settlement_not_eligible``."""
    require_minor("balance_minor", balance_minor, low=1)
    _whole("days_past_due", days_past_due)
    if not settlement_eligible(days_past_due, balance_minor, policy, currency):
        outcome, offer, reason = _opening_plan(state, balance_minor, policy, today, currency)
        if outcome == "offer":
            reason = "settlement_not_eligible"
        return _finish(outcome, offer, reason, state, balance_minor, currency)
    offer = _settlement_offer(balance_minor, 0, policy, today)
    return _finish("offer", offer, "settlement_offered", state, balance_minor, currency)


def settlement_eligible(days_past_due: int, balance_minor: int, policy: ArrangementPolicy,
                        currency: str) -> bool:
    rules = policy.settlement
    low, high = rules.balance_band_minor(currency)
    return (rules.enabled and days_past_due >= rules.min_days_past_due
            and (low is None or balance_minor >= low) and (high is None or balance_minor <= high))


def offer_inside_policy(offer: Offer, balance_minor: int, policy: ArrangementPolicy, today: date,
                        currency: str, *, days_past_due: int | None = None) -> list[str]:
    """Why ``offer`` is outside policy (empty: inside). A settlement's eligibility is checked
    only when ``days_past_due`` is given."""
    require_minor("balance_minor", balance_minor, low=1)
    reasons: list[str] = []
    if offer.total_minor != sum(offer.amounts_minor):
        reasons.append("total_not_sum_of_amounts")
    if offer.kind == "settlement":
        return reasons + _settlement_reasons(offer, balance_minor, policy, today, currency,
                                             days_past_due)
    if offer.discount_minor:
        reasons.append("discount_outside_settlement")
    if (offer.kind == "full") != (offer.installments == 1):
        reasons.append("kind_does_not_match_installments")
    plan = Plan(offer.installments, offer.frequency or policy.plans.default_frequency,
                offer.amounts_minor, offer.dates)
    return reasons + plan_inside_policy(plan, balance_minor, policy.plans, today, currency)


# --- building offers ---------------------------------------------------------------------------

def _full(balance_minor: int, when: date, *, as_asked: bool = False) -> Offer:
    return Offer("full", balance_minor, (balance_minor,), (when,), None, as_asked=as_asked)


def _offer_of(plan: Plan, policy: ArrangementPolicy, *, as_asked: bool = False) -> Offer:
    if plan.installments == 1:
        return _full(plan.total_minor, plan.dates[0], as_asked=as_asked)
    return Offer("plan", plan.total_minor, plan.amounts_minor, plan.dates, plan.frequency,
                 rung=_rung(plan.installments, policy), as_asked=as_asked)


def _rung(installments: int, policy: ArrangementPolicy) -> int:
    """The ladder index of the highest rung not above ``installments``."""
    return max(i for i, count in enumerate(policy.negotiation.ladder) if count <= installments)


def _equal(balance_minor: int, count: int, frequency: str, first: date,
           policy: ArrangementPolicy) -> Offer:
    plan = build_plan(balance_minor, count, frequency, first, policy.plans.weekend)
    return _offer_of(plan, policy)


def _opening_plan(state: Negotiation, balance_minor: int, policy: ArrangementPolicy, today: date,
                  currency: str) -> tuple[Outcome, Offer | None, str]:
    if state.hardship:
        offer = _most_affordable(balance_minor, policy, today, currency)
        if offer is None:  # the balance is too small for any plan: a person decides
            return "escalate", None, "no_affordable_plan"
        return "offer", offer, "most_affordable"
    ladder = policy.negotiation.ladder
    count = min(ladder[1] if len(ladder) > 1 else 1,
                most_installments_allowed(balance_minor, policy.plans, currency))
    first = nearest_first_date(None, today, policy.plans)
    offer = _equal(balance_minor, count, policy.plans.default_frequency, first, policy)
    return "offer", offer, "opening" if count > 1 else "only_full_payment_allowed"


def _most_affordable(balance_minor: int, policy: ArrangementPolicy, today: date,
                     currency: str) -> Offer | None:
    """Most instalments, the longest gap, the latest start; None when only one payment fits."""
    rules = policy.plans
    count = most_installments_allowed(balance_minor, rules, currency)
    if count < 2:
        return None
    return _equal(balance_minor, count, most_affordable_frequency(rules),
                  nearest_first_date(None, today, rules), policy)


def _next_rung(table: Offer, balance_minor: int, policy: ArrangementPolicy, today: date,
               currency: str) -> Offer | None:
    rules = policy.plans
    higher = [c for c in policy.negotiation.ladder if c > table.installments]
    if not higher:
        return None
    count = min(higher[0], most_installments_allowed(balance_minor, rules, currency))
    if count <= table.installments:
        return None
    first = nearest_first_date(table.dates[0], today, rules)
    return _equal(balance_minor, count, _table_frequency(table, rules), first, policy)


def _table_frequency(table: Offer | None, rules: PlanRules) -> str:
    if table is not None and table.frequency in rules.frequencies:
        return table.frequency  # type: ignore[return-value]
    return rules.default_frequency


# --- settlements -------------------------------------------------------------------------------

def _discount_rates(policy: ArrangementPolicy) -> list[Decimal]:
    """first -> halfway -> max (fewer when they coincide)."""
    first, most = policy.settlement.first_discount, policy.settlement.max_discount
    return sorted({first, (first + most) / 2, most})


def _discount_minor(balance_minor: int, rate: Decimal) -> int:
    # Rounded down: the discount never exceeds the share the creditor allows.
    return int((rate * balance_minor).to_integral_value(rounding=ROUND_FLOOR))


def _pay_by(today: date, days: int, rules: PlanRules) -> date:
    """``days`` ahead, pulled back off a weekend when weekends are not allowed (forward when
    pulling back would land before today)."""
    day = today + timedelta(days=days)
    if rules.weekend == "allow" or not is_weekend(day):
        return day
    back = day - timedelta(days=day.weekday() - 4)
    return back if back >= today else day + timedelta(days=7 - day.weekday())


def _settlement_offer(balance_minor: int, level: int, policy: ArrangementPolicy,
                      today: date) -> Offer:
    discount = _discount_minor(balance_minor, _discount_rates(policy)[level])
    total = balance_minor - discount
    when = _pay_by(today, policy.settlement.pay_within_days, policy.plans)
    return Offer("settlement", total, (total,), (when,), None, discount_minor=discount, rung=level)


def _next_settlement(table: Offer, balance_minor: int, policy: ArrangementPolicy,
                     today: date) -> Offer | None:
    """The next discount step that is actually larger (on a tiny balance steps can round alike)."""
    for level in range(table.rung + 1, len(_discount_rates(policy))):
        offer = _settlement_offer(balance_minor, level, policy, today)
        if offer.discount_minor > table.discount_minor:
            return offer
    return None


def _settlement_reasons(offer: Offer, balance_minor: int, policy: ArrangementPolicy, today: date,
                        currency: str, days_past_due: int | None) -> list[str]:
    reasons = []
    if not policy.settlement.enabled:
        reasons.append("settlement_disabled")
    if days_past_due is not None and not settlement_eligible(days_past_due, balance_minor,
                                                             policy, currency):
        reasons.append("settlement_not_eligible")
    if offer.installments != 1 or offer.total_minor + offer.discount_minor != balance_minor:
        reasons.append("settlement_does_not_add_up")
    if not 0 <= offer.discount_minor <= _discount_minor(balance_minor,
                                                        policy.settlement.max_discount):
        reasons.append("discount_above_max")
    if offer.total_minor <= 0:
        reasons.append("amount_not_positive")
    if offer.dates and not today <= offer.dates[0] <= _pay_by(
            today, policy.settlement.pay_within_days, policy.plans):
        reasons.append("pay_date_outside_window")
    return reasons


# --- counter-offers ----------------------------------------------------------------------------

def _far_outside(ask: Ask, balance_minor: int, minimum: int, policy: ArrangementPolicy) -> bool:
    """Too far apart to haggle over: nothing (or less) per instalment, an instalment well below
    the minimum, or more than twice the most instalments allowed."""
    limit = 2 * policy.plans.max_installments
    if ask.installments is not None and (ask.installments < 1 or ask.installments > limit):
        return True
    amount = ask.amount_minor
    if amount is None or amount >= balance_minor:
        return False
    return (amount < 1 or amount < policy.negotiation.far_outside_share * minimum
            or -(-balance_minor // amount) > limit)


def _wanted_count(ask: Ask, state: Negotiation, balance_minor: int, policy: ArrangementPolicy,
                  today: date, currency: str) -> tuple[int, bool]:
    """How many instalments the ask means (an amount: as many as it takes), and whether the
    debtor settled that (their figures, or a change to the offer on the table) or we filled it in."""
    if ask.amount_minor is not None:
        return -(-balance_minor // ask.amount_minor), True
    if ask.installments is not None:
        return ask.installments, True
    table = state.on_table
    if table is not None and table.kind == "plan":
        return table.installments, True
    if table is not None and table.kind == "full" and ask.frequency is None:
        return 1, True  # "can I pay it on the 30th?"
    # A frequency for a single payment means they want a plan: the opening plan's count.
    _, opening, _ = _opening_plan(state, balance_minor, policy, today, currency)
    return (opening.installments if opening else 1), False


def _shape(balance_minor: int, ask: Ask, count: int, frequency: str, first: date,
           rules: PlanRules) -> Plan:
    """The plan the debtor's figures describe, exactly (it may be outside policy)."""
    if count == 1:
        return Plan(1, frequency, (balance_minor,), (first,))
    if ask.amount_minor is not None:
        return build_fixed_plan(balance_minor, ask.amount_minor, frequency, first, rules.weekend)
    return build_plan(balance_minor, count, frequency, first, rules.weekend)


def _nearest(ask: Ask, balance_minor: int, count: int, minimum: int, frequency: str, first: date,
             policy: ArrangementPolicy, today: date, currency: str) -> Offer:
    """The plan inside policy nearest the ask: an allowed frequency and first date, at least the
    minimum instalment, at most the most instalments allowed."""
    rules = policy.plans
    if frequency not in rules.frequencies:
        frequency = rules.default_frequency
    start = nearest_first_date(first, today, rules)
    if count == 1:
        return _full(balance_minor, start)
    if ask.amount_minor is not None:
        # Their amount if it is enough, else the minimum, else what fits the most instalments.
        amount = max(ask.amount_minor, minimum, -(-balance_minor // rules.max_installments))
        plan = build_fixed_plan(balance_minor, amount, frequency, start, rules.weekend)
        return _offer_of(plan, policy)
    count = min(count, most_installments_allowed(balance_minor, rules, currency))
    return _equal(balance_minor, count, frequency, start, policy)


def _asks_more(offer: Offer, ask: Ask, count: int) -> bool:
    """Would ``offer`` have the debtor pay more per instalment than they proposed?"""
    if ask.amount_minor is not None:
        return offer.instalment_minor > ask.amount_minor
    return offer.installments < count


# --- the step and its summary ------------------------------------------------------------------

def _finish(outcome: Outcome, offer: Offer | None, reason: str, state: Negotiation,
            balance_minor: int, currency: str) -> Step:
    if offer is not None:
        state = replace(state, offers=state.offers + (offer,))
    return Step(outcome, offer, reason, state,
                summarise(state, balance_minor, currency, outcome=outcome, reason=reason))


def _money(amount_minor: int | None, currency: str) -> str | None:
    return None if amount_minor is None else str(minor_to_decimal(amount_minor, currency))


def _offer_summary(offer: Offer, currency: str) -> dict[str, Any]:
    return {"kind": offer.kind, "total": _money(offer.total_minor, currency),
            "installments": offer.installments,
            "instalment": _money(offer.amounts_minor[0], currency),
            "last_instalment": _money(offer.amounts_minor[-1], currency),
            "frequency": offer.frequency, "first_date": offer.dates[0].isoformat(),
            "last_date": offer.dates[-1].isoformat(),
            "discount": _money(offer.discount_minor, currency), "rung": offer.rung,
            "as_asked": offer.as_asked}


def summarise(state: Negotiation, balance_minor: int, currency: str, *, outcome: str = "",
              reason: str = "") -> dict[str, Any]:
    """What an agent reads on escalation: every offer and ask, amounts as decimal strings."""
    return {"outcome": outcome, "reason": reason, "rounds": state.rounds,
            "hardship": state.hardship, "currency": currency,
            "balance": _money(balance_minor, currency),
            "offers": [_offer_summary(o, currency) for o in state.offers],
            "asks": [{"installments": a.installments, "amount": _money(a.amount_minor, currency),
                      "frequency": a.frequency,
                      "first_date": a.first_date.isoformat() if a.first_date else None}
                     for a in state.asks]}
