"""Payment plans inside a creditor's policy: pure arithmetic on minor units, no I/O, no clock.

Amounts are integers of minor units (cents, pence) so a schedule always sums exactly to the
balance. One remainder rule everywhere: THE LAST INSTALMENT ABSORBS THE DIFFERENCE, so every
instalment before it is the regular amount the offer names.

* n equal instalments: ``[base] * (n - 1) + [balance - base * (n - 1)]`` with ``base =
  balance // n`` (the last is the largest, by less than n minor units);
* a fixed amount A: ``ceil(balance / A)`` instalments of A, the last ``0 < last <= A``.

Dates are computed from the first date (monthly: the same day of the month clamped to the month
end, so 31 Jan -> 28 Feb -> 31 Mar, never drifting to the 28th), then moved off weekends when the
policy says so. The rules (:class:`~bot.core.arrangement_policy.PlanRules`) come from
policies/arrangements.yml.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_CEILING, Decimal
from itertools import pairwise

from bot.core.arrangement_policy import FREQUENCIES, WEEKEND_RULES, PlanRules

#: Longest gap first: the order "most affordable" prefers.
LONGEST_FIRST = ("monthly", "fortnightly", "weekly")
_STEP_DAYS = {"weekly": 7, "fortnightly": 14}
#: No schedule is built longer than this: "1 cent a week" on a large balance must not make a
#: list of a billion instalments (policies allow at most 60).
MAX_SCHEDULE = 1000


def require_minor(name: str, value: object, *, low: int = 0) -> int:
    """Money enters as an int of minor units; a float (or bool) is a bug, not a rounding issue."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int of minor units, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return value


@dataclass(frozen=True)
class Plan:
    installments: int
    frequency: str
    amounts_minor: tuple[int, ...]
    dates: tuple[date, ...]

    @property
    def total_minor(self) -> int:
        return sum(self.amounts_minor)

    @property
    def instalment_minor(self) -> int:
        """The regular instalment (the last one absorbs any difference)."""
        return self.amounts_minor[0]

    @property
    def last_minor(self) -> int:
        return self.amounts_minor[-1]


# --- splitting ---------------------------------------------------------------------------------

def split_equal(balance_minor: int, installments: int) -> list[int]:
    require_minor("balance_minor", balance_minor, low=1)
    if isinstance(installments, bool) or not isinstance(installments, int) or installments < 1:
        raise ValueError(f"a plan has at least one instalment, got {installments!r}")
    base = balance_minor // installments
    return [base] * (installments - 1) + [balance_minor - base * (installments - 1)]


def split_fixed(balance_minor: int, amount_minor: int) -> list[int]:
    require_minor("balance_minor", balance_minor, low=1)
    require_minor("amount_minor", amount_minor, low=1)
    count = -(-balance_minor // amount_minor)  # ceiling division
    if count > MAX_SCHEDULE:
        raise ValueError(f"{amount_minor} a time would take {count} instalments")
    return [amount_minor] * (count - 1) + [balance_minor - amount_minor * (count - 1)]


# --- dates -------------------------------------------------------------------------------------

def add_months(start: date, months: int) -> date:
    """Same day of the month, clamped to the month's last day (31 Jan + 1 -> 28/29 Feb)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def is_weekend(day: date) -> bool:
    return day.weekday() >= 5


def apply_weekend_rule(day: date, rule: str) -> date:
    """Move a Saturday or Sunday to the next or previous business day, or leave it ("allow")."""
    if rule not in WEEKEND_RULES:
        raise ValueError(f"unknown weekend rule {rule!r}")
    if rule == "allow" or not is_weekend(day):
        return day
    if rule == "next_business_day":
        return day + timedelta(days=7 - day.weekday())     # Sat +2, Sun +1 -> Monday
    return day - timedelta(days=day.weekday() - 4)         # Sat -1, Sun -2 -> Friday


def schedule_dates(first: date, count: int, frequency: str, weekend: str = "allow") -> list[date]:
    """Every due date from the first. Moving a date off a weekend shifts it at most two days and
    instalments are at least a week apart, so the dates stay strictly increasing."""
    if frequency == "monthly":
        nominal = [add_months(first, i) for i in range(count)]
    elif frequency in _STEP_DAYS:
        nominal = [first + timedelta(days=_STEP_DAYS[frequency] * i) for i in range(count)]
    else:
        raise ValueError(f"unknown frequency {frequency!r}")
    return [apply_weekend_rule(d, weekend) for d in nominal]


def latest_first_date(today: date, rules: PlanRules) -> date:
    """The last day the first payment may fall on: ``first_payment_within_days`` ahead, pulled
    back to a business day when weekends are not allowed (the policy guarantees one exists)."""
    day = today + timedelta(days=rules.first_payment_within_days)
    if rules.weekend != "allow":
        while is_weekend(day):
            day -= timedelta(days=1)
    return day


def nearest_first_date(wanted: date | None, today: date, rules: PlanRules) -> date:
    """The allowed first date closest to ``wanted`` (None: the latest allowed; the debtor can
    always pay earlier). Allowed: from today to :func:`latest_first_date`, not on a weekend
    unless the rule is "allow"."""
    latest = latest_first_date(today, rules)
    if wanted is None:
        return latest
    day = min(max(wanted, today), latest)
    if rules.weekend == "allow" or not is_weekend(day):
        return day
    moved = apply_weekend_rule(day, rules.weekend)
    if today <= moved <= latest:
        return moved
    other = "previous_business_day" if rules.weekend == "next_business_day" else "next_business_day"
    return apply_weekend_rule(day, other)  # the window holds a business day, so this one is in it


# --- policy limits -----------------------------------------------------------------------------

def minimum_instalment_minor(balance_minor: int, rules: PlanRules, currency: str) -> int:
    """max(absolute minimum, share of the balance rounded up), never above the balance and at
    least one minor unit."""
    require_minor("balance_minor", balance_minor, low=1)
    by_share = int((rules.min_instalment_share * Decimal(balance_minor))
                   .to_integral_value(rounding=ROUND_CEILING))
    return max(1, min(balance_minor, max(rules.min_instalment_minor(currency), by_share)))


def most_installments_allowed(balance_minor: int, rules: PlanRules, currency: str) -> int:
    """The most equal instalments whose regular amount still meets the minimum."""
    minimum = minimum_instalment_minor(balance_minor, rules, currency)
    return max(1, min(rules.max_installments, balance_minor // minimum))


def most_affordable_frequency(rules: PlanRules) -> str:
    """Monthly if allowed, else the longest gap allowed: the smallest outgoing per week."""
    return next(f for f in LONGEST_FIRST if f in rules.frequencies)


# --- building and checking ---------------------------------------------------------------------

def build_plan(balance_minor: int, installments: int, frequency: str, first: date,
               weekend: str = "allow") -> Plan:
    """``installments`` equal instalments (the last absorbs the difference)."""
    amounts = split_equal(balance_minor, installments)
    return Plan(installments, frequency, tuple(amounts),
                tuple(schedule_dates(first, installments, frequency, weekend)))


def build_fixed_plan(balance_minor: int, amount_minor: int, frequency: str, first: date,
                     weekend: str = "allow") -> Plan:
    """Instalments of ``amount_minor`` until the balance is paid (the last may be smaller)."""
    amounts = split_fixed(balance_minor, amount_minor)
    return Plan(len(amounts), frequency, tuple(amounts),
                tuple(schedule_dates(first, len(amounts), frequency, weekend)))


def plan_inside_policy(plan: Plan, balance_minor: int, rules: PlanRules, today: date,
                       currency: str) -> list[str]:
    """Why ``plan`` is outside the policy (snake_case reasons); empty when it is inside."""
    require_minor("balance_minor", balance_minor, low=1)
    reasons: list[str] = []
    amounts, dates = plan.amounts_minor, plan.dates
    if not amounts or len(amounts) != plan.installments or len(dates) != plan.installments:
        return ["malformed_plan"]
    if any(isinstance(a, bool) or not isinstance(a, int) for a in amounts):
        raise TypeError("plan amounts must be ints of minor units")
    if sum(amounts) != balance_minor:
        reasons.append("total_not_balance")
    if any(a <= 0 for a in amounts):
        reasons.append("amount_not_positive")
    if plan.installments > rules.max_installments:
        reasons.append("too_many_installments")
    if plan.installments > 1:
        if plan.frequency not in rules.frequencies:
            reasons.append("frequency_not_allowed")
        minimum = minimum_instalment_minor(balance_minor, rules, currency)
        if any(a < minimum for a in amounts[:-1]):
            reasons.append("instalment_below_minimum")
    if dates[0] < today:
        reasons.append("first_date_in_past")
    if dates[0] > latest_first_date(today, rules):
        reasons.append("first_date_too_late")
    if any(a >= b for a, b in pairwise(dates)):
        reasons.append("dates_not_increasing")
    if rules.weekend != "allow" and any(is_weekend(d) for d in dates):
        reasons.append("date_on_weekend")
    return reasons


__all__ = [
    "FREQUENCIES", "MAX_SCHEDULE", "Plan", "add_months", "apply_weekend_rule", "build_fixed_plan",
    "build_plan", "is_weekend", "latest_first_date", "minimum_instalment_minor", "most_affordable_frequency",
    "most_installments_allowed", "nearest_first_date", "plan_inside_policy", "require_minor",
    "schedule_dates", "split_equal", "split_fixed",
]
