"""Plans are exact: amounts in minor units sum to the balance; dates respect month ends."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bot.core.plans import PlanPolicy, add_months, propose_plan, schedule_dates, split_minor


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=60))
def test_split_sums_exactly_and_only_the_first_differs(total, parts):
    amounts = split_minor(total, parts)
    assert sum(amounts) == total and len(amounts) == parts
    assert len(set(amounts[1:])) <= 1 and amounts[0] >= amounts[-1]
    assert amounts[0] - amounts[-1] < parts


def test_month_ends_are_clamped():
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert schedule_dates(date(2026, 12, 31), 3, "monthly") == [
        date(2026, 12, 31), date(2027, 1, 31), date(2027, 2, 28)]
    assert schedule_dates(date(2026, 11, 29), 3, "fortnightly")[-1] == date(2026, 12, 27)


@given(st.integers(min_value=100, max_value=10**8),
       st.one_of(st.none(), st.integers(min_value=1, max_value=40)),
       st.one_of(st.none(), st.integers(min_value=1, max_value=10**7)))
def test_every_proposal_is_inside_policy_and_sums_to_the_balance(balance, installments, per_instalment):
    policy = PlanPolicy()
    plan, as_asked = propose_plan(balance, policy, date(2026, 11, 18), installments=installments,
                                  amount_per_instalment_minor=per_instalment)
    assert plan.total_minor == balance
    assert 1 <= plan.installments <= policy.max_installments
    assert plan.installments == 1 or plan.instalment_minor >= policy.min_instalment_minor
    assert plan.first_date <= date(2026, 11, 18) + timedelta(days=policy.first_payment_within_days)
    if installments and not per_instalment and as_asked:
        assert plan.installments == installments


def test_a_request_inside_policy_is_granted_as_asked():
    plan, as_asked = propose_plan(30000, PlanPolicy(), date(2026, 11, 18), installments=3,
                                  frequency="monthly")
    assert as_asked and plan.amounts_minor == (10000, 10000, 10000)


def test_too_small_an_offer_gets_the_nearest_plan_inside_policy():
    plan, as_asked = propose_plan(100000, PlanPolicy(), date(2026, 11, 18),
                                  amount_per_instalment_minor=1000)       # 10.00 on 1,000.00
    assert not as_asked and plan.installments == 12
