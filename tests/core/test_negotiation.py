"""The negotiation ladder, table by table: openings, "no"s, counter-offers, settlements.

Today is Wednesday 18 Nov 2026 throughout; with 14 days to start, the latest first date is
Wednesday 2 Dec 2026. Amounts are minor units (cents, pence).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import pytest

from bot.core.arrangement_policy import load_policy_book
from bot.core.negotiation import (
    Ask, Negotiation, Offer, counter, decline, offer_inside_policy, open_full, open_plan,
    settlement,
)
from service.settings import PROJECT_ROOT

BOOK = load_policy_book(PROJECT_ROOT / "policies" / "arrangements.yml")
TODAY = date(2026, 11, 18)
LATEST = date(2026, 12, 2)

STANDARD = BOOK.defaults                                   # min 25.00 / 5%, max 12, [1,3,6,12]
PATIENT = replace(STANDARD, negotiation=replace(STANDARD.negotiation, max_rounds=10))
NORTHWIND = BOOK.for_debtor("Northwind Mobile", "mid")     # min 20.00, max 6, [1,2,4,6]
ELBTAL_LATE = BOOK.for_debtor("Elbtal Kredit", "late")     # fortnightly/monthly, max 18
DIJKSTRA = BOOK.for_debtor("Dijkstra Krediet", "late")     # settlements 10%..20% from 90 dpd
NO_MONTHLY = replace(STANDARD, plans=replace(STANDARD.plans, frequencies=("weekly", "fortnightly"),
                                             default_frequency="weekly"))
POLICIES = {"standard": STANDARD, "patient": PATIENT, "northwind": NORTHWIND,
            "elbtal_late": ELBTAL_LATE, "dijkstra": DIJKSTRA, "no_monthly": NO_MONTHLY}


def _shape(step) -> str:
    """A step in a few characters: "full", "plan 3x10000 monthly", "escalate:max_rounds"."""
    if step.outcome == "escalate":
        return f"escalate:{step.reason}"
    o = step.offer
    if o.kind == "full":
        text = "full"
    elif o.kind == "settlement":
        text = f"settlement -{o.discount_minor}"
    else:
        text = f"plan {o.installments}x{o.instalment_minor} {o.frequency}"
    return text if step.outcome == "offer" else f"agree {text}"


def _inside(step, balance, policy, currency="EUR"):
    if step.offer is not None:
        assert offer_inside_policy(step.offer, balance, policy, TODAY, currency) == []


# --- openings ----------------------------------------------------------------------------------

OPENINGS = [
    # policy        balance  hardship opener     shape                               reason
    ("standard",    30000,   False,  open_full,  "full",                             "opening"),
    ("standard",    30000,   False,  open_plan,  "plan 3x10000 monthly",             "opening"),
    ("standard",    5000,    False,  open_plan,  "plan 2x2500 monthly",              "opening"),
    ("standard",    3000,    False,  open_plan,  "full",                 "only_full_payment_allowed"),
    ("standard",    30000,   True,   open_full,  "plan 12x2500 monthly",             "most_affordable"),
    ("standard",    100000,  True,   open_plan,  "plan 12x8333 monthly",             "most_affordable"),
    ("standard",    3000,    True,   open_plan,  "escalate:no_affordable_plan",      "no_affordable_plan"),
    ("northwind",   24850,   False,  open_plan,  "plan 2x12425 monthly",             "opening"),
    ("northwind",   24850,   True,   open_plan,  "plan 6x4141 monthly",              "most_affordable"),
    ("elbtal_late", 100000,  True,   open_plan,  "plan 18x5555 monthly",             "most_affordable"),
    ("no_monthly",  100000,  True,   open_plan,  "plan 12x8333 fortnightly",         "most_affordable"),
    ("no_monthly",  100000,  False,  open_plan,  "plan 3x33333 weekly",              "opening"),
]


@pytest.mark.parametrize("policy, balance, hardship, opener, shape, reason", OPENINGS)
def test_openings(policy, balance, hardship, opener, shape, reason):
    step = opener(Negotiation(hardship=hardship), balance, POLICIES[policy], TODAY, "EUR")
    assert (_shape(step), step.reason) == (shape, reason)
    _inside(step, balance, POLICIES[policy])
    if step.offer is not None:
        assert step.offer.dates[0] == LATEST and step.state.offers == (step.offer,)
        assert step.offer.total_minor == balance == sum(step.offer.amounts_minor)


# --- a "no" at every turn ----------------------------------------------------------------------

DECLINES = [
    # policy       balance hardship opener     what each step offers, first the opening
    ("standard",   100000, False, open_full,  ["full", "plan 3x33333 monthly", "plan 6x16666 monthly",
                                               "plan 12x8333 monthly", "escalate:max_rounds"]),
    ("patient",    100000, False, open_full,  ["full", "plan 3x33333 monthly", "plan 6x16666 monthly",
                                               "plan 12x8333 monthly", "escalate:bottom_of_ladder"]),
    ("standard",   7500,   False, open_full,  ["full", "plan 3x2500 monthly",
                                               "escalate:bottom_of_ladder"]),
    ("standard",   3000,   False, open_full,  ["full", "escalate:bottom_of_ladder"]),
    ("northwind",  24850,  False, open_plan,  ["plan 2x12425 monthly", "plan 4x6212 monthly",
                                               "plan 6x4141 monthly", "escalate:bottom_of_ladder"]),
    ("standard",   30000,  True,  open_full,  ["plan 12x2500 monthly", "escalate:bottom_of_ladder"]),
]


@pytest.mark.parametrize("policy, balance, hardship, opener, shapes", DECLINES)
def test_each_no_goes_one_rung_down(policy, balance, hardship, opener, shapes):
    rules = POLICIES[policy]
    step = opener(Negotiation(hardship=hardship), balance, rules, TODAY, "EUR")
    seen = [_shape(step)]
    while step.outcome == "offer":
        step = decline(step.state, balance, rules, TODAY, "EUR")
        _inside(step, balance, rules)
        seen.append(_shape(step))
    assert seen == shapes
    assert step.state.rounds == len(shapes) - 1


def test_a_no_in_hardship_to_a_shorter_plan_gets_the_most_affordable():
    table = Offer("plan", 100000, (33333, 33333, 33334), (LATEST, date(2027, 1, 4), date(2027, 2, 2)),
                  "monthly", rung=1)
    step = decline(Negotiation(offers=(table,), hardship=True), 100000, STANDARD, TODAY, "EUR")
    assert (_shape(step), step.reason) == ("plan 12x8333 monthly", "most_affordable")


def test_a_no_with_nothing_on_the_table_opens_with_a_plan():
    step = decline(Negotiation(), 30000, STANDARD, TODAY, "EUR")
    assert (_shape(step), step.reason, step.state.rounds) == ("plan 3x10000 monthly", "opening", 0)


# --- counter-offers ----------------------------------------------------------------------------

COUNTERS = [
    # policy  balance hardship ask                                      shape                          reason
    ("standard", 100000, False, Ask(installments=6),                    "agree plan 6x16666 monthly",  "counter_inside_policy"),
    ("standard", 100000, False, Ask(amount_minor=10000),                "agree plan 10x10000 monthly", "counter_inside_policy"),
    ("standard", 100000, False, Ask(installments=6, frequency="weekly"), "agree plan 6x16666 weekly",  "counter_inside_policy"),
    ("standard", 100000, False, Ask(amount_minor=100000),               "agree full",                  "counter_pays_in_full"),
    ("standard", 100000, False, Ask(amount_minor=150000),               "agree full",                  "counter_pays_in_full"),
    ("standard", 100000, False, Ask(installments=1),                    "agree full",                  "counter_pays_in_full"),
    ("standard", 100000, False, Ask(first_date=date(2026, 11, 30)),     "agree full",                  "counter_pays_in_full"),
    # a frequency for a single payment asks for a plan: we pick the count, so it is an offer
    ("standard", 100000, False, Ask(frequency="fortnightly"),           "plan 3x33333 fortnightly",    "nearest_inside_policy"),
    # near: the nearest plan inside policy
    ("standard", 100000, False, Ask(amount_minor=4500),                 "plan 12x8334 monthly",        "nearest_inside_policy"),
    ("standard", 100000, False, Ask(installments=20),                   "plan 12x8333 monthly",        "nearest_inside_policy"),
    ("standard", 100000, False, Ask(installments=6, amount_minor=10000), "plan 10x10000 monthly",      "nearest_inside_policy"),
    ("standard", 7500,   False, Ask(installments=5),                    "plan 3x2500 monthly",         "nearest_inside_policy"),
    ("northwind", 24850, False, Ask(amount_minor=3000),                 "plan 6x4142 monthly",         "nearest_inside_policy"),
    ("northwind", 24850, False, Ask(installments=6, frequency="fortnightly"), "agree plan 6x4141 fortnightly", "counter_inside_policy"),
    ("elbtal_late", 100000, False, Ask(installments=3, frequency="weekly"), "plan 3x33333 monthly",    "nearest_inside_policy"),
    # far: a person
    ("standard", 100000, False, Ask(amount_minor=2000),                 "escalate:far_outside_policy", "far_outside_policy"),
    ("standard", 100000, False, Ask(amount_minor=4000),                 "escalate:far_outside_policy", "far_outside_policy"),
    ("standard", 100000, False, Ask(installments=25),                   "escalate:far_outside_policy", "far_outside_policy"),
    ("standard", 100000, False, Ask(installments=0),                    "escalate:far_outside_policy", "far_outside_policy"),
    ("standard", 100000, False, Ask(amount_minor=0),                    "escalate:far_outside_policy", "far_outside_policy"),
    # hardship: agree to their figures, never push them up
    ("standard", 100000, True,  Ask(installments=6),                    "agree plan 6x16666 monthly",  "counter_inside_policy"),
    ("standard", 100000, True,  Ask(amount_minor=4500),                 "escalate:hardship_below_minimum", "hardship_below_minimum"),
    ("standard", 100000, True,  Ask(installments=20),                   "escalate:hardship_below_minimum", "hardship_below_minimum"),
    ("standard", 100000, True,  Ask(installments=12, frequency="weekly"), "agree plan 12x8333 weekly", "counter_inside_policy"),
    ("no_monthly", 100000, True, Ask(installments=10, frequency="monthly"), "plan 10x10000 weekly",    "nearest_inside_policy"),
]


@pytest.mark.parametrize("policy, balance, hardship, ask, shape, reason", COUNTERS)
def test_counter_offers(policy, balance, hardship, ask, shape, reason):
    rules = POLICIES[policy]
    opened = (open_plan if hardship else open_full)(Negotiation(hardship=hardship), balance, rules,
                                                    TODAY, "EUR")
    step = counter(opened.state, ask, balance, rules, TODAY, "EUR")
    assert (_shape(step), step.reason) == (shape, reason)
    _inside(step, balance, rules)
    assert step.state.asks[-1] == ask
    if step.outcome == "agree":
        assert step.offer.as_asked and step.state.rounds == 0
    else:
        assert step.state.rounds == 1
    if step.offer is not None:
        assert step.offer.total_minor == balance


DATES = [
    # ask's first date                 outcome   first date of the step's offer
    (date(2026, 11, 20), "agree", date(2026, 11, 20)),   # a Friday inside the window
    (date(2026, 11, 21), "offer", date(2026, 11, 23)),   # a Saturday: the Monday after
    (date(2027, 1, 15),  "offer", LATEST),               # too late: the latest allowed
    (date(2026, 11, 1),  "offer", TODAY),                # in the past: today
]


@pytest.mark.parametrize("first, outcome, offered", DATES)
def test_counter_offer_dates(first, outcome, offered):
    opened = open_full(Negotiation(), 30000, STANDARD, TODAY, "EUR")
    step = counter(opened.state, Ask(installments=3, first_date=first), 30000, STANDARD, TODAY, "EUR")
    assert step.outcome == outcome and step.offer.dates[0] == offered
    assert step.offer.installments == 3
    _inside(step, 30000, STANDARD)


def test_paying_in_full_later_than_allowed_gets_the_latest_date_but_not_in_hardship():
    ask = Ask(amount_minor=30000, first_date=date(2027, 3, 1))
    step = counter(Negotiation(), ask, 30000, STANDARD, TODAY, "EUR")
    assert (_shape(step), step.offer.dates) == ("full", (LATEST,))
    step = counter(Negotiation(hardship=True), ask, 30000, STANDARD, TODAY, "EUR")
    assert (step.outcome, step.reason) == ("escalate", "hardship_needs_person")


def test_rounds_run_out_on_counters_but_an_agreement_is_always_taken():
    state = Negotiation(rounds=3)
    step = counter(state, Ask(installments=20), 100000, STANDARD, TODAY, "EUR")
    assert (step.outcome, step.reason, step.state.rounds) == ("escalate", "max_rounds", 4)
    step = counter(state, Ask(installments=6), 100000, STANDARD, TODAY, "EUR")
    assert step.outcome == "agree"


def test_a_changed_date_keeps_the_plan_on_the_table():
    opened = open_plan(Negotiation(), 60000, STANDARD, TODAY, "EUR")
    step = counter(opened.state, Ask(first_date=date(2026, 11, 27)), 60000, STANDARD, TODAY, "EUR")
    assert _shape(step) == "agree plan 3x20000 monthly"
    assert step.offer.dates == (date(2026, 11, 27), date(2026, 12, 28), date(2027, 1, 27))


# --- settlements -------------------------------------------------------------------------------

SETTLEMENTS = [
    # policy     dpd  balance hardship shape                             reason
    ("dijkstra", 200, 100000, False, "settlement -10000",               "settlement_offered"),
    ("dijkstra", 90,  100000, True,  "settlement -10000",               "settlement_offered"),
    ("dijkstra", 89,  100000, False, "plan 3x33333 monthly",            "settlement_not_eligible"),
    ("dijkstra", 200, 20000,  False, "plan 3x6666 monthly",             "settlement_not_eligible"),
    ("dijkstra", 60,  100000, True,  "plan 18x5555 monthly",            "settlement_not_eligible"),
    ("standard", 400, 100000, False, "plan 3x33333 monthly",            "settlement_not_eligible"),
    ("standard", 400, 2000,   True,  "escalate:no_affordable_plan",     "no_affordable_plan"),
]


@pytest.mark.parametrize("policy, dpd, balance, hardship, shape, reason", SETTLEMENTS)
def test_settlements(policy, dpd, balance, hardship, shape, reason):
    rules = POLICIES[policy]
    step = settlement(Negotiation(hardship=hardship), dpd, balance, rules, TODAY, "EUR")
    assert (_shape(step), step.reason) == (shape, reason)
    if step.offer is not None:
        assert offer_inside_policy(step.offer, balance, rules, TODAY, "EUR", days_past_due=dpd) == []


def test_a_declined_settlement_steps_its_discount_up_to_the_max():
    step = settlement(Negotiation(), 200, 100000, DIJKSTRA, TODAY, "EUR")
    assert step.offer.dates == (date(2026, 12, 9),) and step.offer.total_minor == 90000
    seen = [_shape(step)]
    while step.outcome == "offer":
        step = decline(step.state, 100000, DIJKSTRA, TODAY, "EUR")
        seen.append(_shape(step))
        _inside(step, 100000, DIJKSTRA)
    assert seen == ["settlement -10000", "settlement -15000", "settlement -20000",
                    "escalate:max_discount_declined"]


def test_offers_outside_policy_say_why():
    too_deep = Offer("settlement", 70000, (70000,), (date(2026, 12, 9),), None, discount_minor=30000)
    assert offer_inside_policy(too_deep, 100000, DIJKSTRA, TODAY, "EUR") == ["discount_above_max"]
    assert "settlement_disabled" in offer_inside_policy(too_deep, 100000, STANDARD, TODAY, "EUR")
    mislabelled = Offer("plan", 30000, (30000,), (LATEST,), "monthly")
    assert offer_inside_policy(mislabelled, 30000, STANDARD, TODAY, "EUR") == [
        "kind_does_not_match_installments"]
    wrong_total = Offer("full", 20000, (30000,), (LATEST,), None)
    assert offer_inside_policy(wrong_total, 30000, STANDARD, TODAY, "EUR") == [
        "total_not_sum_of_amounts"]


# --- state and summary -------------------------------------------------------------------------

def test_the_summary_tells_an_agent_what_was_offered_and_asked():
    step = open_full(Negotiation(), 24850, NORTHWIND, TODAY, "GBP")
    step = counter(step.state, Ask(amount_minor=500, frequency="weekly"), 24850, NORTHWIND, TODAY, "GBP")
    assert step.outcome == "escalate"
    assert step.summary == {
        "outcome": "escalate", "reason": "far_outside_policy", "rounds": 1, "hardship": False,
        "currency": "GBP", "balance": "248.50",
        "offers": [{"kind": "full", "total": "248.50", "installments": 1, "instalment": "248.50",
                    "last_instalment": "248.50", "frequency": None, "first_date": "2026-12-02",
                    "last_date": "2026-12-02", "discount": "0.00", "rung": 0, "as_asked": False}],
        "asks": [{"installments": None, "amount": "5.00", "frequency": "weekly", "first_date": None}],
    }
    json.dumps(step.summary)  # JSON-friendly as it is


def test_the_state_survives_json():
    step = open_full(Negotiation(hardship=False), 100000, STANDARD, TODAY, "EUR")
    step = counter(step.state, Ask(installments=20, first_date=date(2026, 11, 30)), 100000,
                   STANDARD, TODAY, "EUR")
    step = decline(step.state, 100000, STANDARD, TODAY, "EUR")
    raw = json.loads(json.dumps(step.state.to_json()))
    assert Negotiation.from_json(raw) == step.state
    assert Negotiation.from_json({}) == Negotiation()


@pytest.mark.parametrize("make", [
    lambda: Ask(amount_minor=25.0),
    lambda: Ask(installments=3.0),
    lambda: open_full(Negotiation(), 100.0, STANDARD, TODAY, "EUR"),
    lambda: open_plan(Negotiation(), 100.0, STANDARD, TODAY, "EUR"),
    lambda: decline(Negotiation(), 100.0, STANDARD, TODAY, "EUR"),
    lambda: counter(Negotiation(), Ask(installments=3), 100.0, STANDARD, TODAY, "EUR"),
    lambda: settlement(Negotiation(), 200, 100.0, DIJKSTRA, TODAY, "EUR"),
    lambda: Offer("full", 100.0, (100,), (TODAY,), None),
    lambda: Offer.from_json({"kind": "full", "total_minor": 100, "amounts_minor": [100.0],
                             "dates": ["2026-12-02"], "frequency": None}),
    lambda: Negotiation.from_json({"rounds": 1.0}),
])
def test_floats_are_refused_where_money_enters(make):
    with pytest.raises(TypeError):
        make()


def test_an_ask_must_say_something_sensible():
    with pytest.raises(ValueError):
        Ask()
    with pytest.raises(ValueError):
        Ask(installments=3, frequency="daily")
