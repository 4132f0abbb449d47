"""Payment plans inside a creditor's policy: pure arithmetic on minor units, no I/O.

Amounts are integers of minor units (cents, pence) so a schedule always sums exactly to the
balance; the remainder of an uneven split goes to the first instalment, so every later
instalment is the same amount, the one the offer names.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta

FREQUENCIES = ("weekly", "fortnightly", "monthly")


@dataclass(frozen=True)
class PlanPolicy:
    """What the creditor allows. Issue #4 loads this per portfolio and segment from YAML."""

    min_instalment_minor: int = 2500
    max_installments: int = 12
    allowed_frequencies: tuple[str, ...] = ("weekly", "fortnightly", "monthly")
    default_installments: int = 3
    default_frequency: str = "monthly"
    first_payment_within_days: int = 14
    promise_horizon_days: int = 30


@dataclass(frozen=True)
class Plan:
    installments: int
    frequency: str
    first_date: date
    amounts_minor: tuple[int, ...] = field(default=())
    dates: tuple[date, ...] = field(default=())

    @property
    def total_minor(self) -> int:
        return sum(self.amounts_minor)

    @property
    def instalment_minor(self) -> int:
        """The regular instalment (the first one carries any remainder)."""
        return self.amounts_minor[-1]

    @property
    def first_minor(self) -> int:
        return self.amounts_minor[0]


def split_minor(total_minor: int, parts: int) -> list[int]:
    if parts < 1:
        raise ValueError("a plan has at least one instalment")
    if total_minor < 0:
        raise ValueError("a balance cannot be negative")
    base, remainder = divmod(total_minor, parts)
    return [base + remainder] + [base] * (parts - 1)


def add_months(start: date, months: int) -> date:
    """Same day of the month, clamped to the month's last day (31 Jan + 1 → 28/29 Feb)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


def schedule_dates(first: date, count: int, frequency: str) -> list[date]:
    if frequency == "monthly":
        return [add_months(first, i) for i in range(count)]
    step = {"weekly": 7, "fortnightly": 14}.get(frequency)
    if step is None:
        raise ValueError(f"unknown frequency {frequency!r}")
    return [first + timedelta(days=step * i) for i in range(count)]


def build_plan(balance_minor: int, installments: int, frequency: str, first: date) -> Plan:
    amounts = split_minor(balance_minor, installments)
    return Plan(installments, frequency, first, tuple(amounts),
                tuple(schedule_dates(first, installments, frequency)))


def _fits(balance_minor: int, installments: int, policy: PlanPolicy) -> bool:
    smallest = balance_minor // installments
    return 1 <= installments <= policy.max_installments and (
        smallest >= policy.min_instalment_minor or installments == 1
    )


def most_installments_allowed(balance_minor: int, policy: PlanPolicy) -> int:
    by_minimum = max(1, balance_minor // max(policy.min_instalment_minor, 1))
    return max(1, min(policy.max_installments, by_minimum))


def propose_plan(
    balance_minor: int,
    policy: PlanPolicy,
    today: date,
    *,
    installments: int | None = None,
    frequency: str | None = None,
    amount_per_instalment_minor: int | None = None,
) -> tuple[Plan, bool]:
    """The plan to offer and whether it is exactly what the debtor asked for.

    A request inside policy is granted as asked; outside, the nearest plan inside policy is
    offered instead (fewer instalments when the instalment would be too small, the most
    instalments allowed when the debtor asks for too many or offers too little).
    """
    chosen_frequency = frequency if frequency in policy.allowed_frequencies else policy.default_frequency
    as_asked = frequency is None or frequency == chosen_frequency
    if amount_per_instalment_minor is not None and amount_per_instalment_minor > 0:
        wanted = -(-balance_minor // amount_per_instalment_minor)  # ceiling division
    elif installments is not None:
        wanted = installments
    else:
        wanted = min(policy.default_installments, most_installments_allowed(balance_minor, policy))
        as_asked = as_asked and (installments is None)
    if not _fits(balance_minor, wanted, policy):
        as_asked = False
        wanted = min(max(wanted, 1), most_installments_allowed(balance_minor, policy))
    first = today + timedelta(days=min(7, policy.first_payment_within_days))
    return build_plan(balance_minor, wanted, chosen_frequency, first), as_asked
