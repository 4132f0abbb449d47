"""policies/segments.yml: the rules that put a debtor in a segment, and every mistake named."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import yaml

from bot.core.debtors import Debtor
from bot.core.segments import SegmentConfigError, load_segment_book, segment_book_from_mapping

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "policies" / "segments.yml").read_text())
BOOK = load_segment_book(ROOT / "policies" / "segments.yml")
AS_OF = date(2026, 11, 23)

DEBTOR = Debtor(
    id="D-1", first_name="Anna", last_name="Smit", phone="+31612345678", email="a@example.org",
    language="nl", country="NL", date_of_birth=date(1980, 1, 1), postcode="1012 AB",
    reference="R-1", creditor="Energie Direct", balance_minor=50_000, currency="EUR",
    due_date=date(2026, 11, 1), age_band="41-65", product="energy", payment_history="good",
    preferred_channel="whatsapp", whatsapp_opt_in=True)


def debtor(**changes) -> Debtor:
    return replace(DEBTOR, **changes)


@pytest.mark.parametrize(("changes", "segment"), [
    ({}, "early"),                                                      # 22 days
    ({"due_date": date(2026, 10, 24)}, "early"),                        # 30 days: max included
    ({"due_date": date(2026, 10, 23)}, "mid"),                          # 31 days
    ({"due_date": date(2026, 8, 25)}, "mid"),                           # 90
    ({"due_date": date(2026, 8, 24)}, "late"),                          # 91, balance 500
    ({"due_date": date(2026, 1, 1), "balance_minor": 100_000}, "late_high"),   # 1000.00: min included
    ({"due_date": date(2026, 1, 1), "balance_minor": 99_999}, "late"),
    ({"payment_history": "broken_promise"}, "broken_promise"),           # first rule wins
    ({"segment": "late_high"}, "late_high"),                            # the creditor's own label
    ({"segment": "vip"}, "early"),                                      # not one of ours: rules
])
def test_segment_of(changes, segment):
    assert BOOK.segment_of(debtor(**changes), AS_OF).name == segment


def test_balance_bands_count_in_the_debtors_currency_minor_units():
    # JPY has no minor unit: 1000 yen is balance_minor 1000
    yen = debtor(currency="JPY", balance_minor=1000, due_date=date(2026, 1, 1))
    assert BOOK.segment_of(yen, AS_OF).name == "late_high"


def test_workflow_channel_order_resolves_preferred_once():
    mid = BOOK.get("mid").workflow
    assert mid.channel_order(debtor()) == ("whatsapp", "sms", "email")
    assert mid.channel_order(debtor(preferred_channel="sms")) == ("sms", "whatsapp", "email")
    assert [s.day for s in mid.steps] == [0, 4, 10]
    with pytest.raises(ValueError, match="steps 1 to 3"):
        mid.step(4)


def test_the_demo_file_loads_with_three_to_five_segments_and_all_three_tones():
    assert 3 <= len(BOOK.segments) <= 5
    assert {t for s in BOOK.segments for t in s.workflow.tones} == {"loss_aversion", "social_proof", "soft"}
    assert BOOK.segments[-1].when.match(debtor(payment_history="late"), AS_OF)  # a catch-all last


def _broken(path: str, value):
    raw = copy.deepcopy(RAW)
    target = raw
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    target[parts[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "message"), [
    ("segments.1.when.days_past_due", {"min": 40, "max": 30}, "segments.early.when.days_past_due: min 40 is above max 30"),
    ("segments.1.when.balance", {"min": 10.5}, "write amounts as text"),
    ("segments.1.when.age_band", ["teen"], "'teen' is not one of 18-25"),
    ("segments.1.when.colour", ["red"], "unknown setting 'colour'"),
    ("segments.1.workflow.tones", ["shouty"], "segments.early.workflow.tones: 'shouty' is not one of"),
    ("segments.1.workflow.steps", [{"day": 3, "template": "reminder_first"}], "the first step is day 0"),
    ("segments.1.workflow.steps", [{"day": 0, "template": "a"}, {"day": 0, "template": "b"}],
     "must come after the step before"),
    ("segments.1.name", "broken_promise", "the name 'broken_promise' is used twice"),
    ("bandit.exploration_floor", 1.5, "bandit.exploration_floor: must be a share from 0 to 1"),
    ("bandit.holdout_share", 1, "below 1"),
    ("bandit.holdout_tone", "angry", "bandit.holdout_tone: must be one of"),
    ("success.outcomes", ["sent"], "sent and delivered say nothing"),
    ("social_proof.confidence", 0.8, "must be 0.90, 0.95 or 0.99"),
    ("campaigns.pace_per_second", {"sms": 0}, "campaigns.pace_per_second.sms"),
])
def test_every_mistake_is_named(path, value, message):
    with pytest.raises(SegmentConfigError) as error:
        segment_book_from_mapping(_broken(path, value))
    assert message in str(error.value)
    assert str(error.value).startswith("segments.yml: ")
