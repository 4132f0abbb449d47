"""policies/arrangements.yml: the shipped file loads, merges per creditor and segment, and every
mistake is named with the file, its dotted place and what is wrong with the value."""

from __future__ import annotations

import copy
import csv
import re
from decimal import Decimal

import pytest
import yaml

from bot.core.arrangement_policy import (
    ArrangementPolicyError, load_policy_book, money_to_minor, policy_book_from_mapping,
)
from service.settings import PROJECT_ROOT

PATH = PROJECT_ROOT / "policies" / "arrangements.yml"
SHIPPED = yaml.safe_load(PATH.read_text(encoding="utf-8"))
BOOK = load_policy_book(PATH)


def test_the_shipped_policy_loads_with_every_section():
    d = BOOK.defaults
    assert d.scope == "defaults"
    assert d.verification.methods == ("date_of_birth",)
    assert d.plans.min_instalment == Decimal("25.00") and d.plans.max_installments == 12
    assert d.plans.default_frequency in d.plans.frequencies
    assert d.promises.horizon_days == 30 and d.follow_up.grace_days == 5
    assert d.settlement.enabled is False and d.settlement.balance_max is None
    assert d.negotiation.ladder == (1, 3, 6, 12) and d.negotiation.far_outside_share == Decimal("0.5")
    assert "{reference}" in d.payment_page.url_template


def test_every_creditor_in_the_file_is_spelt_as_in_the_portfolio():
    with open(PROJECT_ROOT / "data" / "demo_portfolio.csv", encoding="utf-8") as f:
        creditors = {row["creditor"] for row in csv.DictReader(f)}
    assert set(BOOK.portfolios) <= creditors


def test_portfolios_override_the_defaults():
    dijkstra = BOOK.for_debtor("Dijkstra Krediet", "late")
    assert dijkstra.scope == "Dijkstra Krediet"     # no late override: the portfolio's policy
    assert dijkstra.settlement.enabled and dijkstra.settlement.min_days_past_due == 90
    assert dijkstra.settlement.max_discount == Decimal("0.20")
    assert dijkstra.plans.max_installments == 18
    assert dijkstra.plans.min_instalment == Decimal("25.00")        # inherited key by key
    northwind = BOOK.for_debtor("Northwind Mobile", "mid")
    assert northwind.plans.max_installments == 6 and northwind.plans.min_instalment == Decimal("20.00")
    elbtal = BOOK.for_debtor("Elbtal Kredit", None)
    assert elbtal.plans.weekend == "next_business_day"
    assert elbtal.verification.methods == ("date_of_birth", "postcode")
    assert elbtal.plans.frequencies == ("fortnightly", "monthly")   # a list replaces the list


def test_segments_override_their_portfolio():
    late = BOOK.for_debtor("Elbtal Kredit", "late")
    assert late.scope == "Elbtal Kredit/late"
    assert late.plans.max_installments == 18 and late.negotiation.ladder == (1, 3, 6, 12, 18)
    assert late.plans.frequencies == ("fortnightly", "monthly")     # the portfolio's, kept
    early = BOOK.for_debtor("Northwind Mobile", "early")
    assert early.plans.max_installments == 3 and early.plans.min_instalment == Decimal("20.00")


@pytest.mark.parametrize("creditor, segment, scope", [
    ("Nobody & Sons", "late", "defaults"),        # unknown creditor: the defaults
    ("Northwind Mobile", "unheard-of", "Northwind Mobile"),
    ("Northwind Mobile", None, "Northwind Mobile"),
    ("Northwind Mobile", "", "Northwind Mobile"),
    ("northwind mobile", "early", "defaults"),    # names are matched exactly, as in the file
])
def test_lookups_fall_back(creditor, segment, scope):
    assert BOOK.for_debtor(creditor, segment).scope == scope


def test_money_converts_to_minor_units_of_the_debtors_currency():
    policy = BOOK.for_debtor("Northwind Mobile", None)
    assert policy.min_instalment_minor("GBP") == 2000
    assert policy.to_minor(Decimal("12.34"), "EUR") == 1234
    assert policy.to_minor(Decimal("12.5"), "JPY") == 13          # a minimum rounds up
    assert BOOK.for_debtor("Dijkstra Krediet", None).settlement_band_minor("EUR") == (25000, None)
    assert money_to_minor(7, "EUR") == 700
    with pytest.raises(TypeError):
        money_to_minor(12.34, "EUR")   # type: ignore[arg-type]
    with pytest.raises(TypeError):
        policy.to_minor("12.34", "EUR")  # type: ignore[arg-type]


def test_the_payment_link_quotes_its_values():
    page = BOOK.defaults.payment_page
    url = page.url_for(reference="NWM/2026&1", amount_minor=24850, currency="GBP", debtor_id="D-1")
    assert url == "https://pay.nudge.example/p/NWM%2F2026%261?amount=248.50&currency=GBP"


def test_numbers_written_as_yaml_numbers_are_read_without_float_arithmetic():
    raw = _broken(lambda r: r["defaults"]["plans"].update(min_instalment=25.1,
                                                          min_instalment_share=0.07))
    plans = policy_book_from_mapping(raw).defaults.plans
    assert plans.min_instalment == Decimal("25.1") and plans.min_instalment_share == Decimal("0.07")


def _broken(change) -> dict:
    raw = copy.deepcopy(SHIPPED)
    change(raw)
    return raw


def _plans(**values):
    return lambda r: r["defaults"]["plans"].update(values)


def _settlement(**values):
    return lambda r: r["defaults"]["settlement"].update(values)


NW = "portfolios.Northwind Mobile"


@pytest.mark.parametrize("change, message", [
    # the example from the spec, word for word
    (lambda r: r["portfolios"]["Northwind Mobile"]["plans"].update(max_installments="twelve"),
     f"arrangements.yml: {NW}.plans.max_installments: must be a whole number from 1 to 60, "
     "got 'twelve'"),
    # structure
    (lambda r: r.update(portfolio={}), "top level: unknown keys ['portfolio']"),
    (lambda r: r.pop("defaults"), "defaults: missing"),
    (lambda r: r["defaults"].pop("promises"), "defaults.promises: missing"),
    (lambda r: r["defaults"]["plans"].pop("weekend"), "defaults.plans.weekend: missing"),
    (lambda r: r["defaults"]["plans"].update(max_instalments=6),
     "defaults.plans: unknown keys ['max_instalments']"),
    (lambda r: r["defaults"].update(plan={}), "defaults: unknown keys ['plan']"),
    (lambda r: r["portfolios"]["Northwind Mobile"].update(segmnets={}),
     f"{NW}: unknown keys ['segmnets']"),
    (lambda r: r["portfolios"]["Northwind Mobile"]["segments"]["early"]["plans"].update(maxinstallments=2),
     f"{NW}.segments.early.plans: unknown keys ['maxinstallments']"),
    (lambda r: r["portfolios"]["Northwind Mobile"]["segments"]["early"].update(segments={}),
     f"{NW}.segments.early: unknown keys ['segments']"),
    (lambda r: r["portfolios"].update({"Northwind Mobile": ["plans"]}),
     f"{NW}: expected a mapping, got list"),
    (lambda r: r["defaults"].update(plans="monthly"), "defaults.plans: expected a mapping, got str"),
    # verification
    (lambda r: r["defaults"]["verification"].update(methods=["shoe_size"]),
     "defaults.verification.methods: must be a list of one or more of date_of_birth, postcode, "
     "reference without repeats, got ['shoe_size']"),
    (lambda r: r["defaults"]["verification"].update(methods=[]), "defaults.verification.methods"),
    (lambda r: r["defaults"]["verification"].update(methods=["postcode", "postcode"]),
     "defaults.verification.methods"),
    (lambda r: r["defaults"]["verification"].update(max_attempts=0),
     "defaults.verification.max_attempts: must be a whole number from 1 to 10, got 0"),
    (lambda r: r["defaults"]["verification"].update(lock_minutes=True),
     "defaults.verification.lock_minutes: must be a whole number >= 1, got True"),
    # plans
    (_plans(min_instalment="-5.00"),
     'defaults.plans.min_instalment: must be an amount such as "25.00" (not negative, '
     "at most 2 decimals), got '-5.00'"),
    (_plans(min_instalment="25.001"), "defaults.plans.min_instalment: must be an amount"),
    (_plans(min_instalment="twenty"), "defaults.plans.min_instalment: must be an amount"),
    (_plans(min_instalment=".nan"), "defaults.plans.min_instalment: must be an amount"),
    (_plans(min_instalment=None), "defaults.plans.min_instalment: must be an amount"),
    (_plans(min_instalment_share="1.5"),
     "defaults.plans.min_instalment_share: must be a share from 0 to 1 such as \"0.05\", got '1.5'"),
    (_plans(max_installments=61), "defaults.plans.max_installments: must be a whole number from 1 to 60, got 61"),
    (_plans(max_installments=12.0), "got 12.0"),
    (_plans(frequencies=["daily"]), "defaults.plans.frequencies: must be a list of one or more of "
                                    "weekly, fortnightly, monthly"),
    (_plans(default_frequency="yearly"),
     "defaults.plans.default_frequency: must be one of weekly, fortnightly, monthly, got 'yearly'"),
    (_plans(frequencies=["weekly"]),
     "defaults.plans.default_frequency: must be one of frequencies ['weekly'], got 'monthly'"),
    (_plans(first_payment_within_days=61), "defaults.plans.first_payment_within_days: must be a whole "
                                           "number from 0 to 60, got 61"),
    (_plans(first_payment_within_days=1),
     "defaults.plans.first_payment_within_days: must be at least 2 when weekend is "
     "next_business_day, got 1"),
    (_plans(weekend="skip"), "defaults.plans.weekend: must be one of allow, next_business_day, "
                             "previous_business_day, got 'skip'"),
    # promises and follow-up
    (lambda r: r["defaults"]["promises"].update(horizon_days=91),
     "defaults.promises.horizon_days: must be a whole number from 1 to 90, got 91"),
    (lambda r: r["defaults"]["promises"].update(reminder_days_before=-1),
     "defaults.promises.reminder_days_before: must be a whole number from 0 to 14, got -1"),
    (lambda r: r["defaults"]["promises"].update(grace_days=31), "defaults.promises.grace_days"),
    (lambda r: r["defaults"]["follow_up"].update(grace_days=61), "defaults.follow_up.grace_days"),
    (lambda r: r["defaults"]["follow_up"].update(instalment_reminder_days_before=15),
     "defaults.follow_up.instalment_reminder_days_before"),
    # settlement
    (_settlement(enabled="yes"), "defaults.settlement.enabled: must be true or false, got 'yes'"),
    (_settlement(min_days_past_due=-1), "defaults.settlement.min_days_past_due: must be a whole "
                                        "number >= 0, got -1"),
    (_settlement(balance_max="100.00"),
     "defaults.settlement.balance_min: must not be above balance_max (100.00), got '500.00'"),
    (_settlement(first_discount="0.30"),
     "defaults.settlement.first_discount: must not be above max_discount (0.10), got '0.30'"),
    (_settlement(max_discount="0.95"),
     "defaults.settlement.max_discount: must be a share from 0 to below 0.9 such as \"0.05\", "
     "got '0.95'"),
    (_settlement(pay_within_days=0), "defaults.settlement.pay_within_days"),
    # negotiation
    (lambda r: r["defaults"]["negotiation"].update(max_rounds=11),
     "defaults.negotiation.max_rounds: must be a whole number from 1 to 10, got 11"),
    (lambda r: r["defaults"]["negotiation"].update(ladder=[3, 6]),
     "defaults.negotiation.ladder: must start with 1 (pay in full), got [3, 6]"),
    (lambda r: r["defaults"]["negotiation"].update(ladder=[1, 6, 3]),
     "defaults.negotiation.ladder: must go up step by step (more instalments each time), got [1, 6, 3]"),
    (lambda r: r["defaults"]["negotiation"].update(ladder=[1, 1, 3]), "defaults.negotiation.ladder"),
    (lambda r: r["defaults"]["negotiation"].update(ladder=[1, 61]),
     "defaults.negotiation.ladder: must be a list of instalment counts from 1 to 60, got [1, 61]"),
    (lambda r: r["defaults"]["negotiation"].update(far_outside_share="-0.1"),
     "defaults.negotiation.far_outside_share"),
    # payment page
    (lambda r: r["defaults"]["payment_page"].update(url_template="pay.example/{reference}"),
     "defaults.payment_page.url_template: must be an http(s) address, got 'pay.example/{reference}'"),
    (lambda r: r["defaults"]["payment_page"].update(url_template="https://pay.example/{name}"),
     "defaults.payment_page.url_template: unknown placeholder {name}; use {reference} {amount} "
     "{currency} {debtor_id}"),
    (lambda r: r["defaults"]["payment_page"].update(url_template="https://pay.example/{ref"),
     "defaults.payment_page.url_template: is not a valid template"),
    (lambda r: r["defaults"]["payment_page"].update(link_valid_days=91),
     "defaults.payment_page.link_valid_days"),
    # merged layers are checked too: the place named is the layer that makes it wrong
    (lambda r: r["portfolios"]["Elbtal Kredit"]["plans"].update(default_frequency="weekly"),
     "portfolios.Elbtal Kredit.plans.default_frequency: must be one of frequencies "
     "['fortnightly', 'monthly'], got 'weekly'"),
    (lambda r: r["portfolios"]["Dijkstra Krediet"]["settlement"].update(max_discount="0.08"),
     "portfolios.Dijkstra Krediet.settlement.first_discount: must not be above max_discount (0.08), "
     "got '0.10'"),
    (lambda r: r["portfolios"]["Elbtal Kredit"]["segments"]["late"]["plans"].update(frequencies=["weekly"]),
     "portfolios.Elbtal Kredit.segments.late.plans.default_frequency: must be one of frequencies "
     "['weekly'], got 'monthly'"),
    (lambda r: r["portfolios"]["Elbtal Kredit"]["segments"]["late"]["plans"].update(max_installments=0),
     "portfolios.Elbtal Kredit.segments.late.plans.max_installments: must be a whole number "
     "from 1 to 60, got 0"),
])
def test_mistakes_are_named(change, message):
    with pytest.raises(ArrangementPolicyError, match=re.escape(message)) as caught:
        policy_book_from_mapping(_broken(change), source="arrangements.yml")
    assert str(caught.value).startswith("arrangements.yml: ")


def test_an_unreadable_or_broken_file_is_named(tmp_path):
    with pytest.raises(ArrangementPolicyError, match=r"^missing\.yml: cannot be read"):
        load_policy_book(tmp_path / "missing.yml")
    broken = tmp_path / "arrangements.yml"
    broken.write_text("defaults: [\n", encoding="utf-8")
    with pytest.raises(ArrangementPolicyError, match=r"^arrangements\.yml: is not valid YAML"):
        load_policy_book(broken)
    broken.write_text("", encoding="utf-8")
    with pytest.raises(ArrangementPolicyError, match=r"^arrangements\.yml: defaults: missing"):
        load_policy_book(broken)


def test_a_policy_with_only_defaults_is_enough():
    book = policy_book_from_mapping({"defaults": SHIPPED["defaults"]})
    assert book.for_debtor("Northwind Mobile", "early") == book.defaults
