"""Tone choice: Thompson sampling with a floor, holdout, pins, guardrails; social-proof figures."""

from __future__ import annotations

import random

import pytest

from bot.core.segments import BanditSettings, Guardrails, SocialProofSettings
from bot.core.tone_choice import (
    ArmCounts,
    choose_tone,
    in_holdout,
    proof_percent,
    suspended_tones,
    thompson_allocation,
    wilson_interval,
)

SETTINGS = BanditSettings(exploration_floor=0.1, holdout_share=0.1, holdout_tone="soft",
                          guardrails=Guardrails(min_sample=50, max_opt_out_rate=0.05,
                                                max_complaint_rate=0.02))
TONES = ("loss_aversion", "social_proof", "soft")


def test_without_data_every_tone_is_equally_likely():
    allocation = thompson_allocation({t: ArmCounts() for t in TONES}, floor=0.1,
                                     rng=random.Random(1), draws=6000)
    assert sum(allocation.values()) == pytest.approx(1)
    for share in allocation.values():
        assert share == pytest.approx(1 / 3, abs=0.03)


def test_a_clearly_better_tone_gets_most_but_the_floor_keeps_the_others_alive():
    arms = {"loss_aversion": ArmCounts(30, 170), "social_proof": ArmCounts(80, 120),
            "soft": ArmCounts(35, 165)}
    allocation = thompson_allocation(arms, floor=0.1, rng=random.Random(2))
    assert allocation["social_proof"] > 0.9
    assert min(allocation.values()) >= 0.1 / 3 - 1e-9
    assert sum(allocation.values()) == pytest.approx(1)


def test_close_tones_share_the_traffic():
    arms = {"loss_aversion": ArmCounts(10, 40), "soft": ArmCounts(11, 39)}
    allocation = thompson_allocation(arms, floor=0.0, rng=random.Random(3))
    assert 0.3 < allocation["soft"] < 0.75


def test_holdout_is_stable_and_about_the_configured_share():
    ids = [f"D-{i}" for i in range(20_000)]
    share = sum(in_holdout(i, 0.1) for i in ids) / len(ids)
    assert share == pytest.approx(0.1, abs=0.01)
    assert [in_holdout(i, 0.1) for i in ids[:100]] == [in_holdout(i, 0.1) for i in ids[:100]]
    assert not any(in_holdout(i, 0.0) for i in ids[:1000])


def _a_debtor(holdout: bool) -> str:
    return next(f"D-{i}" for i in range(10_000) if in_holdout(f"D-{i}", 0.1) == holdout)


def test_rules_in_order_protected_holdout_pinned_bandit():
    allocation = {"loss_aversion": 0.8, "social_proof": 0.1, "soft": 0.1}
    regular, held = _a_debtor(False), _a_debtor(True)
    rng = random.Random(4)

    def choose(debtor_id, **kw):
        return choose_tone(debtor_id=debtor_id, allowed=TONES, settings=SETTINGS,
                           allocation=allocation, rng=rng, **kw)

    protected = choose(held, protected=True, pinned="loss_aversion")
    assert (protected.tone, protected.group, protected.probability) == ("soft", "guardrail", 1.0)
    assert (choose(held, pinned="loss_aversion").group) == "holdout"
    pinned = choose(regular, pinned="social_proof")
    assert (pinned.tone, pinned.group) == ("social_proof", "pinned")
    # a pin on a suspended tone does not override the suspension
    assert choose(regular, pinned="social_proof", suspended={"social_proof"}).group == "bandit"
    picks = [choose(regular) for _ in range(2000)]
    assert {p.group for p in picks} == {"bandit"}
    assert sum(p.tone == "loss_aversion" for p in picks) / 2000 == pytest.approx(0.8, abs=0.04)
    assert all(p.probability == allocation[p.tone] for p in picks)   # logged propensity
    nothing_left = choose(regular, suspended=set(TONES))
    nothing_left = choose_tone(debtor_id=regular, allowed=TONES, settings=SETTINGS,
                               allocation={}, rng=rng)
    assert (nothing_left.tone, nothing_left.group) == ("soft", "guardrail")


def test_a_tone_is_suspended_only_when_surely_past_its_rate_and_minimum_sample():
    rails = SETTINGS.guardrails       # opt-outs 5 %, complaints 2 %, at least 50 sent
    sent = {"loss_aversion": 100, "social_proof": 40, "soft": 100}
    opted = {"loss_aversion": 15, "social_proof": 20, "soft": 6}
    complained = {"soft": 8}
    suspended = suspended_tones(sent, opted, complained, rails)
    assert set(suspended) == {"loss_aversion", "soft"}      # social_proof: too few to judge
    assert "opt-out rate 15.0% (at least 9.3%)" in suspended["loss_aversion"]
    assert "complaint rate 8.0%" in suspended["soft"]
    # 6 of 100 is over 5 %, but not surely (lower bound 2.8 %): not suspended
    assert suspended_tones({"soft": 100}, {"soft": 6}, {}, rails) == {}


@pytest.mark.parametrize(("s", "n", "low", "high"), [
    (8, 10, 0.4902, 0.9433),       # the textbook example (Newcombe 1998, table I)
    (0, 10, 0.0, 0.2775),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_interval(s, n, low, high):
    got = wilson_interval(s, n, 0.95)
    assert got == pytest.approx((low, high), abs=5e-4)


PROOF = SocialProofSettings(min_sample=200, confidence=0.95, round_down_to=5, min_percent=30)


@pytest.mark.parametrize(("s", "n", "figure"), [
    (150, 199, None),      # below the minimum sample: no figure, however good
    (150, 200, 65),        # 75 % measured; lower bound 68.6 % -> 65
    (700, 1000, 65),       # lower bound 67.1 % -> 65
    (60, 200, None),       # lower bound 24 %: below the minimum worth saying
    (0, 500, None),
])
def test_social_proof_figure_is_the_rounded_down_lower_bound(s, n, figure):
    assert proof_percent(s, n, PROOF) == figure
