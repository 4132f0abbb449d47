"""Plans are exact: amounts in minor units sum to the balance, the last instalment absorbs the
difference, dates keep to month ends and off weekends, and the checks name what is outside."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest

from bot.core.arrangement_policy import PlanRules
from bot.core.plans import (
    Plan, add_months, apply_weekend_rule, build_fixed_plan, build_plan, latest_first_date,
    minimum_instalment_minor, most_affordable_frequency, most_installments_allowed,
    nearest_first_date, plan_inside_policy, schedule_dates, split_equal, split_fixed,
)

RULES = PlanRules(min_instalment=Decimal("25.00"), min_instalment_share=Decimal("0.05"),
                  max_installments=12, frequencies=("weekly", "fortnightly", "monthly"),
                  default_frequency="monthly", first_payment_within_days=14,
                  weekend="next_business_day")
WEDNESDAY = date(2026, 11, 18)
NBD = "next_business_day"


@pytest.mark.parametrize("balance, parts, expected", [
    (30000, 3, [10000, 10000, 10000]),
    (10000, 3, [3333, 3333, 3334]),          # the last absorbs the difference
    (24850, 4, [6212, 6212, 6212, 6214]),
    (5, 5, [1, 1, 1, 1, 1]),
    (7, 1, [7]),
])
def test_equal_split_puts_the_difference_on_the_last(balance, parts, expected):
    assert split_equal(balance, parts) == expected


@pytest.mark.parametrize("balance, amount, expected", [
    (10000, 2500, [2500, 2500, 2500, 2500]),
    (10000, 3000, [3000, 3000, 3000, 1000]),  # the last is what is left
    (10000, 10000, [10000]),
    (10000, 25000, [10000]),                  # more than the balance: one payment of it
])
def test_fixed_split_pays_the_amount_until_the_balance_is_paid(balance, amount, expected):
    assert split_fixed(balance, amount) == expected


@pytest.mark.parametrize("bad", [100.0, Decimal(100), True, "100"])
def test_money_must_be_int_minor_units(bad):
    with pytest.raises(TypeError):
        split_equal(bad, 2)
    with pytest.raises(TypeError):
        split_fixed(10000, bad)
    with pytest.raises(TypeError):
        minimum_instalment_minor(bad, RULES, "EUR")


def test_month_ends_are_clamped_from_the_first_date():
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    # 31 Jan -> 28 Feb -> 31 Mar: computed from the first date, never drifting to the 28th
    assert schedule_dates(date(2027, 1, 31), 3, "monthly") == [
        date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31)]
    assert schedule_dates(date(2026, 12, 31), 3, "monthly") == [
        date(2026, 12, 31), date(2027, 1, 31), date(2027, 2, 28)]
    assert schedule_dates(date(2026, 11, 29), 3, "fortnightly")[-1] == date(2026, 12, 27)
    assert schedule_dates(date(2026, 11, 29), 2, "weekly")[-1] == date(2026, 12, 6)


def test_weekend_rules():
    saturday, sunday = date(2026, 11, 21), date(2026, 11, 22)
    assert apply_weekend_rule(saturday, "allow") == saturday
    assert apply_weekend_rule(saturday, "next_business_day") == date(2026, 11, 23)
    assert apply_weekend_rule(sunday, "next_business_day") == date(2026, 11, 23)
    assert apply_weekend_rule(saturday, "previous_business_day") == date(2026, 11, 20)
    assert apply_weekend_rule(sunday, "previous_business_day") == date(2026, 11, 20)
    # 31 Jan 2027 is a Sunday; 28 Feb a Sunday; 31 Mar a Wednesday
    assert schedule_dates(date(2027, 1, 31), 3, "monthly", "next_business_day") == [
        date(2027, 2, 1), date(2027, 3, 1), date(2027, 3, 31)]
    assert schedule_dates(date(2027, 1, 31), 3, "monthly", "previous_business_day") == [
        date(2027, 1, 29), date(2027, 2, 26), date(2027, 3, 31)]


def test_the_first_date_stays_within_the_window_and_off_weekends():
    # 18 Nov + 14 = 2 Dec, a Wednesday
    assert latest_first_date(WEDNESDAY, RULES) == date(2026, 12, 2)
    # 21 Nov + 14 = 5 Dec, a Saturday: back to Friday 4 Dec rather than past the window
    assert latest_first_date(date(2026, 11, 21), RULES) == date(2026, 12, 4)
    assert latest_first_date(date(2026, 11, 21), replace(RULES, weekend="allow")) == date(2026, 12, 5)
    assert nearest_first_date(None, WEDNESDAY, RULES) == date(2026, 12, 2)
    assert nearest_first_date(date(2026, 11, 1), WEDNESDAY, RULES) == WEDNESDAY
    assert nearest_first_date(date(2027, 1, 1), WEDNESDAY, RULES) == date(2026, 12, 2)
    assert nearest_first_date(date(2026, 11, 21), WEDNESDAY, RULES) == date(2026, 11, 23)
    # on a Saturday with a 2-day window the only business day is Monday
    tight = replace(RULES, first_payment_within_days=2, weekend="previous_business_day")
    assert nearest_first_date(date(2026, 11, 21), date(2026, 11, 21), tight) == date(2026, 11, 23)


@pytest.mark.parametrize("balance, currency, minimum, most", [
    (100000, "EUR", 5000, 12),   # 5% of 1,000.00 beats 25.00
    (30000, "EUR", 2500, 12),    # 25.00 beats 5% of 300.00 (15.00)
    (7500, "EUR", 2500, 3),
    (2000, "EUR", 2000, 1),      # never above the balance
    (1, "EUR", 1, 1),
    (100000, "JPY", 5000, 12),   # 25 yen minimum, 5% share wins
    (1000, "JPY", 50, 12),       # 25.00 is 25 yen; 5% of 1000 yen is 50
])
def test_minimum_instalment_and_most_installments(balance, currency, minimum, most):
    assert minimum_instalment_minor(balance, RULES, currency) == minimum
    assert most_installments_allowed(balance, RULES, currency) == most


def test_most_affordable_frequency_prefers_the_longest_gap():
    assert most_affordable_frequency(RULES) == "monthly"
    assert most_affordable_frequency(replace(RULES, frequencies=("weekly", "fortnightly"))) == "fortnightly"


def test_a_plan_names_its_regular_and_last_instalment():
    plan = build_plan(10000, 3, "monthly", date(2026, 12, 2), "next_business_day")
    assert (plan.instalment_minor, plan.last_minor, plan.total_minor) == (3333, 3334, 10000)
    assert plan.dates == (date(2026, 12, 2), date(2027, 1, 4), date(2027, 2, 2))
    fixed = build_fixed_plan(10000, 3000, "weekly", date(2026, 12, 2))
    assert fixed.installments == 4 and fixed.last_minor == 1000


def test_a_plan_inside_policy_has_no_reasons():
    plan = build_plan(30000, 3, "monthly", date(2026, 12, 2), "next_business_day")
    assert plan_inside_policy(plan, 30000, RULES, WEDNESDAY, "EUR") == []


@pytest.mark.parametrize("plan, reasons", [
    (build_plan(30000, 13, "monthly", date(2026, 12, 2), NBD),
     ["too_many_installments", "instalment_below_minimum"]),
    (build_plan(30000, 3, "monthly", date(2026, 12, 3), NBD), ["first_date_too_late"]),
    (build_plan(30000, 3, "monthly", date(2026, 11, 17), NBD), ["first_date_in_past"]),
    (build_plan(30000, 3, "monthly", date(2026, 11, 21)), ["date_on_weekend"]),  # Saturday,
    (build_fixed_plan(30000, 2000, "monthly", date(2026, 12, 2), NBD),
     ["too_many_installments", "instalment_below_minimum"]),
    (Plan(2, "monthly", (10000, 10000), (date(2026, 12, 2), date(2027, 1, 4))),
     ["total_not_balance"]),
    (Plan(2, "monthly", (30000, 0), (date(2026, 12, 2), date(2027, 1, 4))),
     ["amount_not_positive"]),
    (Plan(2, "monthly", (15000, 15000), (date(2026, 12, 2), date(2026, 12, 2))),
     ["dates_not_increasing"]),
    (Plan(2, "monthly", (15000,), (date(2026, 12, 2),)), ["malformed_plan"]),
])
def test_plans_outside_policy_say_why(plan, reasons):
    assert plan_inside_policy(plan, 30000, RULES, WEDNESDAY, "EUR") == reasons


def test_a_frequency_the_creditor_does_not_allow_is_outside():
    rules = replace(RULES, frequencies=("monthly",))
    plan = build_plan(30000, 3, "weekly", date(2026, 12, 2))
    assert plan_inside_policy(plan, 30000, rules, WEDNESDAY, "EUR") == ["frequency_not_allowed"]
    single = build_plan(30000, 1, "weekly", date(2026, 12, 2))
    assert plan_inside_policy(single, 30000, rules, WEDNESDAY, "EUR") == []


def test_the_last_instalment_may_be_below_the_minimum():
    plan = build_fixed_plan(10100, 2500, "monthly", WEDNESDAY + timedelta(days=1), NBD)
    assert plan.amounts_minor == (2500, 2500, 2500, 2500, 100)
    assert plan_inside_policy(plan, 10100, RULES, WEDNESDAY, "EUR") == []
