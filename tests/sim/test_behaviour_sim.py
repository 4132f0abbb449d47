"""The debtor-behaviour simulator: a deterministic world of true tone effects, and a small but
real simulation of the campaign system (real Redis, contact rules, send path, campaigns,
bandit) in which the bandit must find each segment's best tone."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis

from bot.core.segments import load_segment_book
from sim.behaviour import DEFAULT_BASE, World
from sim.run import simulate

ROOT = Path(__file__).resolve().parents[2]
BOOK = load_segment_book(ROOT / "policies" / "segments.yml")
ALLOWED = {s.name: s.workflow.tones for s in BOOK.segments}

# The differences made large, so that four simulated weeks tell them apart reliably.
CLEAR = {
    "early": {"loss_aversion": 0.10, "social_proof": 0.40, "soft": 0.14},
    "mid": {"loss_aversion": 0.40, "social_proof": 0.10, "soft": 0.12},
    "late": {"loss_aversion": 0.08, "social_proof": 0.10, "soft": 0.40},
    "late_high": {"loss_aversion": 0.08, "social_proof": 0.40, "soft": 0.12},
    "broken_promise": {"loss_aversion": 0.40, "soft": 0.10},
}
LOW_OPT_OUT = {"loss_aversion": 0.004, "social_proof": 0.004, "soft": 0.004}


def _responses(world: World) -> list:
    out = []
    for i in range(400):
        segment = list(ALLOWED)[i % len(ALLOWED)]
        tone = ALLOWED[segment][i % len(ALLOWED[segment])]
        out.append(world.respond(message_id=f"cmp:c{i}:S-W1-{i:05d}", debtor_id=f"S-W1-{i:05d}",
                                 segment=segment, tone=tone, channel=("sms", "whatsapp",
                                                                      "email")[i % 3],
                                 local_hour=8 + i % 13, step=1 + i % 3, sent_at=1e9 + i))
    return out


def test_the_world_is_deterministic_and_says_the_best_tone_of_each_segment():
    assert _responses(World(seed=3)) == _responses(World(seed=3))
    assert _responses(World(seed=3)) != _responses(World(seed=4))
    # the answer to one message does not depend on what was drawn before it
    one = World(seed=3)
    one.respond(message_id="other", debtor_id="S-W9-00001", segment="mid", tone="soft",
                channel="sms", local_hour=12, step=1, sent_at=0)
    assert _responses(one) == _responses(World(seed=3))

    world = World(seed=1)
    best = {s: world.best_tone(s, ALLOWED[s]) for s in ALLOWED}
    assert best == {"early": "social_proof", "mid": "loss_aversion", "late": "soft",
                    "late_high": "social_proof", "broken_promise": "loss_aversion"}
    for segment, tones in ALLOWED.items():
        assert set(tones) == set(DEFAULT_BASE[segment])
        for debtor in ("S-W1-00001", "S-W2-00002", "S-W3-00042"):
            for channel in ("sms", "whatsapp", "email"):
                for hour in range(8, 21):
                    p = world.probabilities(segment, tones, channel=channel, local_hour=hour,
                                            step=1, debtor_id=debtor)
                    assert all(0 <= v <= 1 for v in p.values())
                    assert max(p, key=p.get) == best[segment]
    # evenings beat early mornings, WhatsApp beats email, for the same debtor and tone
    args = {"segment": "mid", "tone": "soft", "step": 1, "debtor_id": "S-W1-00001"}
    assert world.p_success(channel="sms", local_hour=19, **args) > \
        world.p_success(channel="sms", local_hour=8, **args)
    assert world.p_success(channel="whatsapp", local_hour=12, **args) > \
        world.p_success(channel="email", local_hour=12, **args)
    assert world.best_on_average(ALLOWED) == "loss_aversion"   # allowed in every segment
    # roughly the rates it says: successes, then opt-outs (more for loss aversion)
    many = World(seed=5)
    kinds: Counter[str] = Counter()
    for i in range(20000):
        for event in many.respond(message_id=f"m{i}", debtor_id=f"S-W1-{i % 500:05d}",
                                  segment="mid", tone="loss_aversion", channel="sms",
                                  local_hour=12, step=1, sent_at=0):
            first = not event.data.get("after_promise")
            kinds[event.kind if first else f"{event.kind}:later"] += 1
    successes = kinds["promise_made"] + kinds["payment_received"]
    assert 0.13 < successes / 20000 < 0.19            # base 0.16, noise of mean 1
    assert 0.015 < kinds["opted_out"] / 20000 < 0.03  # 0.025 of the rest
    assert kinds["payment_received:later"] + kinds["promise_broken:later"] == kinds["promise_made"]
    with pytest.raises(ValueError):
        World(seed=1, base={"mid": {"soft": 1.5}})


@pytest.mark.asyncio
async def test_a_small_real_simulation_learns_each_segments_best_tone(redis_url, tmp_path):
    world = World(seed=11, base=CLEAR, opt_out=LOW_OPT_OUT)
    result = await simulate(redis_url, weeks=4, debtors_per_week=250, seed=11, out_dir=tmp_path,
                            world=world, charts=True)
    # every campaign message went out once
    client = redis.Redis.from_url(redis_url)
    try:
        ids = [json.loads(f[b"data"])["message_id"] for _, f in client.xrange("nudge:outbox")]
    finally:
        client.close()
    assert ids and len(ids) == len(set(ids)) and not result.duplicate_message_ids
    assert result.counts["campaign_messages"] == len(ids)
    assert result.counts["campaign_steps_run"] > 0          # later steps ran from the arq queue
    assert result.counts["promise_made"] + result.counts["payment_received"] > 100
    # the bandit beats choosing at random, and most segments end on their true best tone
    assert result.regret["bandit"] < result.regret["uniform"]
    right = [name for name, seg in result.segments.items()
             if seg.allocation and max(seg.allocation, key=seg.allocation.get) == seg.best_tone]
    assert len(right) >= 4, {n: s.allocation for n, s in result.segments.items()}
    written = json.loads((tmp_path / "sim.json").read_text())
    assert set(written["segments"]) == set(ALLOWED)
    assert written["segments"]["mid"]["best_tone"] == "loss_aversion"
    for name in ("regret.png", "regret.svg", "allocation.png"):
        assert (tmp_path / name).stat().st_size > 1000
