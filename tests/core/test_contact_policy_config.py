"""policies/contact.yml is validated at start-up: each mistake is named with its place."""

from __future__ import annotations

import copy

import pytest
import yaml

from bot.core.contact_policy import ContactPolicyError, load_policy
from service.settings import PROJECT_ROOT

SHIPPED = yaml.safe_load((PROJECT_ROOT / "policies" / "contact.yml").read_text())


def test_the_shipped_policy_loads():
    policy = load_policy(SHIPPED)
    assert policy.creditor_party == "first" and policy.caps["sms"].per_day == 2
    assert set(policy.stop_states) == {"dispute", "attorney", "bankruptcy", "deceased",
                                       "vulnerability", "hardship", "cease_communication",
                                       "wrong_number"}


def _broken(change) -> dict:
    raw = copy.deepcopy(SHIPPED)
    change(raw)
    return raw


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(creditor_party=None), r"creditor_party: declare first or third"),
    (lambda r: r["caps"].update(fax={"per_day": 1, "per_7_days": 1}), r"caps\.fax: unknown channel"),
    (lambda r: r["caps"]["sms"].update(per_day=0), r"caps\.sms\.per_day: expected a whole number >= 1"),
    (lambda r: r["caps"]["sms"].update(per_7_days=1), r"caps\.sms: per_7_days \(1\) is below per_day"),
    (lambda r: r["night_reply"].update(mode="sometimes"), r"night_reply\.mode: expected answer_if_recent"),
    (lambda r: r["stop_states"].pop("attorney"), r"stop_states\.attorney: missing"),
    (lambda r: r["stop_states"].update(sulking={"allows": [], "lift_roles": ["admin"]}),
     r"stop_states\.sulking: unknown stop-state"),
    (lambda r: r["stop_states"]["dispute"].update(allows=["telegram"]),
     r"stop_states\.dispute\.allows: unknown message kinds"),
    (lambda r: r["stop_states"]["dispute"].update(lift_roles=[]), r"stop_states\.dispute\.lift_roles"),
    (lambda r: r.update(caps_per_hour=3), r"top level: unknown keys \['caps_per_hour'\]"),
    (lambda r: r.update(third_party_sms_blocked_countries="US"), r"expected a list of ISO country codes"),
])
def test_mistakes_are_named(change, message):
    with pytest.raises(ContactPolicyError, match=message):
        load_policy(_broken(change), source="contact.yml")
