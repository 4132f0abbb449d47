"""Properties of plans and negotiation over random balances (1 minor unit to 10^9), random
policies (built through the same validation as policies/arrangements.yml) and random asks.

Schedules sum exactly to the balance, keep to the minimum and the maximum, the window, weekends
and month ends; every offer any negotiation move returns is inside policy; hardship never gets a
payment in full or a shorter plan pushed on it; a settlement discount never exceeds the maximum.
"""

from __future__ import annotations

import calendar
import copy
import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.arrangement_policy import FREQUENCIES, ArrangementPolicy, policy_book_from_mapping
from bot.core.negotiation import (
    Ask, Negotiation, Step, counter, decline, offer_inside_policy, open_full, open_plan,
    settlement,
)
from bot.core.plans import (
    MAX_SCHEDULE, build_fixed_plan, build_plan, is_weekend, latest_first_date, minimum_instalment_minor,
    most_installments_allowed, plan_inside_policy, split_equal, split_fixed,
)
from service.settings import PROJECT_ROOT

SHIPPED = yaml.safe_load((PROJECT_ROOT / "policies" / "arrangements.yml").read_text(encoding="utf-8"))

balances = st.integers(min_value=1, max_value=10**9)
currencies = st.sampled_from(["EUR", "GBP", "JPY"])
days = st.dates(min_value=date(2024, 1, 1), max_value=date(2032, 12, 31))


def _amount(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _share(percent: int) -> str:
    return str(Decimal(percent) / 100)


@st.composite
def policies(draw) -> ArrangementPolicy:
    """A random valid policy, written as YAML values and loaded like the real file."""
    raw = copy.deepcopy(SHIPPED["defaults"])
    frequencies = draw(st.lists(st.sampled_from(FREQUENCIES), min_size=1, max_size=3, unique=True))
    weekend = draw(st.sampled_from(["allow", "next_business_day", "previous_business_day"]))
    raw["plans"] = {
        "min_instalment": _amount(draw(st.integers(0, 100_000))),
        "min_instalment_share": _share(draw(st.integers(0, 100))),
        "max_installments": draw(st.integers(1, 60)),
        "frequencies": frequencies,
        "default_frequency": draw(st.sampled_from(frequencies)),
        "first_payment_within_days": draw(st.integers(0 if weekend == "allow" else 2, 60)),
        "weekend": weekend,
    }
    first, most = sorted(draw(st.lists(st.integers(0, 89), min_size=2, max_size=2)))
    low = draw(st.none() | st.integers(0, 10**8))
    high = draw(st.none() | st.integers(low or 0, 10**9))
    raw["settlement"] = {
        "enabled": draw(st.booleans()), "min_days_past_due": draw(st.integers(0, 400)),
        "balance_min": None if low is None else _amount(low),
        "balance_max": None if high is None else _amount(high),
        "first_discount": _share(first), "max_discount": _share(most),
        "pay_within_days": draw(st.integers(1, 60)),
    }
    rungs = draw(st.lists(st.integers(2, 60), max_size=6, unique=True))
    raw["negotiation"] = {"max_rounds": draw(st.integers(1, 10)), "ladder": [1] + sorted(rungs),
                          "far_outside_share": _share(draw(st.integers(0, 100)))}
    return policy_book_from_mapping({"defaults": raw}, source="random.yml").defaults


@st.composite
def asks(draw, today: date) -> Ask:
    installments = draw(st.none() | st.integers(-2, 150))
    amount = draw(st.none() | st.integers(0, 10**9 + 10))
    frequency = draw(st.none() | st.sampled_from(FREQUENCIES))
    first = draw(st.none() | st.integers(-10, 90).map(lambda d: today + timedelta(days=d)))
    if (installments, amount, frequency, first) == (None, None, None, None):
        installments = 3
    return Ask(installments, amount, frequency, first)


# --- schedules ---------------------------------------------------------------------------------

@given(balances, st.integers(1, 60))
def test_equal_split_sums_exactly_and_only_the_last_differs(balance, parts):
    amounts = split_equal(balance, parts)
    assert sum(amounts) == balance and len(amounts) == parts
    assert len(set(amounts[:-1])) <= 1 and 0 <= amounts[-1] - amounts[0] < parts


@given(balances, st.integers(1, 10**9))
def test_fixed_split_sums_exactly_and_the_last_is_at_most_the_amount(balance, amount):
    if -(-balance // amount) > MAX_SCHEDULE:
        with pytest.raises(ValueError):
            split_fixed(balance, amount)
        amount = -(-balance // MAX_SCHEDULE)
    amounts = split_fixed(balance, amount)
    assert sum(amounts) == balance
    assert all(a == amount for a in amounts[:-1]) and 0 < amounts[-1] <= amount


@settings(max_examples=300, deadline=None)
@given(balances, policies(), currencies, days, st.data())
def test_every_plan_the_policy_allows_is_a_sound_schedule(balance, policy, currency, today, data):
    rules = policy.plans
    most = most_installments_allowed(balance, rules, currency)
    count = data.draw(st.integers(1, most))
    frequency = data.draw(st.sampled_from(rules.frequencies))
    latest = latest_first_date(today, rules)
    first = data.draw(st.dates(min_value=today, max_value=latest).filter(
        lambda d: rules.weekend == "allow" or not is_weekend(d)))
    plan = build_plan(balance, count, frequency, first, rules.weekend)
    minimum = minimum_instalment_minor(balance, rules, currency)

    assert plan.total_minor == balance and len(plan.amounts_minor) == plan.installments == count
    assert all(a > 0 for a in plan.amounts_minor)
    assert count == 1 or all(a >= minimum for a in plan.amounts_minor[:-1])
    assert count <= rules.max_installments
    assert all(a < b for a, b in zip(plan.dates, plan.dates[1:]))
    assert today <= plan.dates[0] <= today + timedelta(days=rules.first_payment_within_days)
    if rules.weekend != "allow":
        assert not any(is_weekend(d) for d in plan.dates)
    assert plan_inside_policy(plan, balance, rules, today, currency) == []
    if frequency == "monthly":
        # The same day of the month as the first date, clamped to the month end, give or take
        # the two days a weekend can move it: it never drifts.
        for i, day in enumerate(build_plan(balance, count, "monthly", first).dates):
            month_end = calendar.monthrange(day.year, day.month)[1]
            assert day.day == min(first.day, month_end)
            assert abs((plan.dates[i] - day).days) <= 2


@settings(max_examples=200, deadline=None)
@given(balances, policies(), currencies, days, st.integers(1, 10**9))
def test_fixed_amount_plans_at_the_minimum_keep_every_rule(balance, policy, currency, today, amount):
    rules = policy.plans
    minimum = minimum_instalment_minor(balance, rules, currency)
    amount = max(amount, minimum, -(-balance // rules.max_installments))
    plan = build_fixed_plan(balance, amount, rules.default_frequency, latest_first_date(today, rules),
                            rules.weekend)
    assert plan.total_minor == balance and plan.installments <= rules.max_installments
    assert plan_inside_policy(plan, balance, rules, today, currency) == []


# --- negotiation -------------------------------------------------------------------------------

def _check(step: Step, balance: int, policy: ArrangementPolicy, today: date, currency: str,
           dpd: int, ask: Ask | None = None) -> None:
    json.dumps(step.summary)
    assert step.summary["outcome"] == step.outcome and step.summary["reason"] == step.reason
    assert Negotiation.from_json(json.loads(json.dumps(step.state.to_json()))) == step.state
    if step.outcome == "escalate":
        assert step.offer is None
        return
    offer = step.offer
    assert offer is not None and step.state.offers[-1] == offer
    assert offer_inside_policy(offer, balance, policy, today, currency,
                               days_past_due=dpd if offer.kind == "settlement" else None) == []
    if offer.kind == "settlement":
        ceiling = int(policy.settlement.max_discount * balance)
        assert 0 <= offer.discount_minor <= ceiling
        assert offer.total_minor + offer.discount_minor == balance
    else:
        assert offer.total_minor == balance
    if step.state.hardship and step.outcome == "offer":
        assert offer.kind != "full"
        if ask is None and offer.kind == "plan":
            # opened or after a "no": never shorter than the most affordable plan
            assert offer.installments >= most_installments_allowed(balance, policy.plans, currency)
        if ask is not None and ask.amount_minor is not None and offer.kind == "plan":
            assert offer.instalment_minor <= ask.amount_minor       # never pushed up
        if ask is not None and ask.amount_minor is None and ask.installments is not None:
            assert offer.installments >= ask.installments
    if step.outcome == "agree":
        assert offer.as_asked


@settings(max_examples=300, deadline=None)
@given(balances, policies(), currencies, days, st.booleans(), st.integers(0, 500), st.data())
def test_every_offer_of_every_move_is_inside_policy(balance, policy, currency, today, hardship,
                                                     dpd, data):
    state = Negotiation(hardship=hardship)
    opener = data.draw(st.sampled_from(["full", "plan", "settlement"]))
    if opener == "settlement":
        step = settlement(state, dpd, balance, policy, today, currency)
    else:
        step = (open_full if opener == "full" else open_plan)(state, balance, policy, today, currency)
    _check(step, balance, policy, today, currency, dpd)
    for _ in range(data.draw(st.integers(0, 8))):
        if data.draw(st.booleans()):
            ask = data.draw(asks(today))
            step = counter(step.state, ask, balance, policy, today, currency)
            _check(step, balance, policy, today, currency, dpd, ask)
        else:
            before = step.state.on_table
            step = decline(step.state, balance, policy, today, currency)
            _check(step, balance, policy, today, currency, dpd)
            if before is not None and step.outcome == "offer":
                if before.kind == "settlement":
                    assert step.offer.discount_minor > before.discount_minor
                else:
                    assert step.offer.installments > before.installments
        if step.outcome == "escalate":
            break
    assert step.state.rounds <= policy.negotiation.max_rounds + 1


@settings(max_examples=200, deadline=None)
@given(balances, policies(), currencies, days, st.data())
def test_a_counter_inside_policy_is_agreed_as_asked(balance, policy, currency, today, data):
    rules = policy.plans
    count = data.draw(st.integers(1, most_installments_allowed(balance, rules, currency)))
    frequency = data.draw(st.sampled_from(rules.frequencies))
    ask = Ask(installments=count, frequency=frequency, first_date=latest_first_date(today, rules))
    rounds = data.draw(st.integers(0, 20))    # agreeing never runs out of rounds
    step = counter(Negotiation(rounds=rounds), ask, balance, policy, today, currency)
    assert step.outcome == "agree" and step.offer.as_asked and step.offer.installments == count
    assert step.offer.dates[0] == ask.first_date and step.state.rounds == rounds


@settings(max_examples=200, deadline=None)
@given(balances, policies(), currencies, days, st.integers(0, 500))
def test_settlement_discount_steps_up_and_never_above_the_max(balance, policy, currency, today, dpd):
    step = settlement(Negotiation(), dpd, balance, policy, today, currency)
    discounts = []
    while step.outcome == "offer" and step.offer.kind == "settlement":
        discounts.append(step.offer.discount_minor)
        step = decline(step.state, balance, policy, today, currency)
    assert discounts == sorted(set(discounts))
    assert all(d <= policy.settlement.max_discount * balance for d in discounts)
    if discounts:
        assert discounts[0] == int(policy.settlement.first_discount * balance)


# --- no floats in money ------------------------------------------------------------------------

@given(st.floats(min_value=1, max_value=1e9, allow_nan=False))
def test_a_float_where_money_enters_is_refused(amount):
    policy = policy_book_from_mapping({"defaults": SHIPPED["defaults"]}).defaults
    for call in (lambda: split_equal(amount, 3), lambda: split_fixed(10**6, amount),
                 lambda: Ask(amount_minor=amount),
                 lambda: open_full(Negotiation(), amount, policy, date(2026, 11, 18), "EUR"),
                 lambda: counter(Negotiation(), Ask(installments=3), amount, policy,
                                 date(2026, 11, 18), "EUR")):
        try:
            call()
        except TypeError:
            continue
        raise AssertionError(f"a float {amount!r} was accepted as money")
