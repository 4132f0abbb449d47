"""`nudge report`: volumes, conversions and their intervals, the lift over the holdout, the
inverse-propensity estimate, the charts and the command. Real Redis; the data goes in through
the real code paths (ToneOutcomes.record_sent / record / resolve_expired, ToneChooser.state)
except where a constructed tone log is the point."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from typer.testing import CliRunner

from bot.core.segments import load_segment_book
from bot.core.tone_choice import ArmCounts, thompson_allocation, wilson_interval
from service.cli import app
from service.keys import Keys
from service.report import (
    ALLOCATION_DRAWS,
    NO_DATA,
    Report,
    gather_report,
    newcombe_difference,
    write_charts,
)
from service.tone_chooser import ToneChooser
from service.tone_outcomes import CampaignTag, ToneOutcomes

ROOT = Path(__file__).resolve().parents[2]
BOOK = load_segment_book(ROOT / "policies" / "segments.yml")
KEYS = Keys()
T0 = 1_767_225_600.0          # 2026-01-01T00:00:00Z
DAY = 86400.0
HOUR = 3600.0


@pytest_asyncio.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def send(outcomes: ToneOutcomes, prefix: str, n: int, *, segment: str, tone: str,
               channel: str, group: str, p: float = 1.0, at: float = T0, step: int = 1,
               campaign: str = "c1") -> list[str]:
    """`n` campaign messages, one per debtor; the debtors' ids."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    for debtor in ids:
        assert await outcomes.record_sent(
            debtor, f"cmp:{campaign}:{debtor}",
            CampaignTag(campaign, segment, step, group, p, workflow_start=step == 1),
            tone=tone, channel=channel, at=at)
    return ids


async def outcome(outcomes: ToneOutcomes, debtors: list[str], name: str,
                  at: float = T0 + HOUR) -> None:
    for debtor in debtors:
        assert await outcomes.record(debtor, name, at=at), (debtor, name)


async def early_segment(redis) -> ToneOutcomes:
    """Segment `early`, hand-countable:

    loss_aversion / sms / bandit    10 sent, 9 delivered, 4 replied, 3 promised (one of them
                                    also paid), 1 opted out             -> 3 of 10 succeed
    loss_aversion / email / bandit   5 sent, 5 delivered, 1 paid        -> 1 of 5
    soft / sms / holdout             6 sent, 2 chose to pay later       -> 2 of 6
    """
    outcomes = ToneOutcomes(redis, KEYS, BOOK)
    la_sms = await send(outcomes, "la-sms", 10, segment="early", tone="loss_aversion",
                        channel="sms", group="bandit", p=0.4)
    await outcome(outcomes, la_sms[:9], "delivered")
    await outcome(outcomes, la_sms[:4], "replied", at=T0 + 2 * HOUR)
    await outcome(outcomes, la_sms[:3], "promise_made", at=T0 + 3 * HOUR)
    await outcome(outcomes, la_sms[:1], "paid", at=T0 + DAY)
    await outcome(outcomes, la_sms[9:], "opted_out", at=T0 + 2 * HOUR)
    la_email = await send(outcomes, "la-email", 5, segment="early", tone="loss_aversion",
                          channel="email", group="bandit", p=0.4)
    await outcome(outcomes, la_email, "delivered")
    await outcome(outcomes, la_email[:1], "paid", at=T0 + 2 * DAY)
    soft = await send(outcomes, "soft-sms", 6, segment="early", tone="soft", channel="sms",
                      group="holdout")
    await outcome(outcomes, soft[:2], "pay_later_chosen", at=T0 + 5 * HOUR)
    # every message is resolved when its window ends, successes too (same clock for both)
    assert await outcomes.resolve_expired(T0 + 8 * DAY) == 15 + 6
    return outcomes


async def report_now(redis, **kwargs) -> Report:
    return await gather_report(redis, KEYS, BOOK, now=T0 + 9 * DAY, **kwargs)


# --- volumes and conversions -------------------------------------------------------------------
@pytest.mark.asyncio
async def test_volumes_and_conversions_match_hand_counts(redis):
    await early_segment(redis)
    report = await report_now(redis)
    assert [s.name for s in report.segments] == ["early"]
    early = report.segment("early")
    rows = {(r.tone, r.channel): r for r in early.rows}
    assert set(rows) == {("loss_aversion", "sms"), ("loss_aversion", "email"), ("soft", "sms")}

    la_sms = rows["loss_aversion", "sms"].counts
    assert {k: la_sms[k] for k in ("sent", "delivered", "read", "replied", "promise_made", "paid",
                                   "opted_out", "complained", "resolved", "success")} == {
        "sent": 10, "delivered": 9, "read": 0, "replied": 4, "promise_made": 3, "paid": 1,
        "opted_out": 1, "complained": 0, "resolved": 10, "success": 3}
    conversion = rows["loss_aversion", "sms"].conversion
    assert (conversion.count, conversion.of, conversion.rate) == (3, 10, 0.3)
    assert conversion.interval == pytest.approx(wilson_interval(3, 10))
    reply = rows["loss_aversion", "sms"].reply_rate
    assert (reply.count, reply.of) == (4, 10)

    total = early.total("loss_aversion")
    assert total.channel == "all"
    assert (total.counts["sent"], total.counts["delivered"], total.counts["paid"],
            total.counts["resolved"], total.counts["success"]) == (15, 14, 2, 15, 4)
    assert total.groups == {"bandit": {"sent": 15, "resolved": 15, "success": 4}}
    soft = early.total("soft")
    assert (soft.counts["sent"], soft.counts["pay_later_chosen"], soft.conversion.count,
            soft.conversion.of) == (6, 2, 2, 6)
    assert soft.groups == {"holdout": {"sent": 6, "resolved": 6, "success": 2}}
    never = early.total("social_proof")              # allowed, never sent: a zero row
    assert never.counts["sent"] == 0 and never.conversion.rate is None

    # lift: bandit 4 of 15 against the holdout's 2 of 6
    d, low, high = early.lift.difference
    assert (d, low, high) == pytest.approx(newcombe_difference(4, 15, 2, 6))
    assert d == pytest.approx(4 / 15 - 2 / 6)

    data = json.loads(report.to_json())
    seg = data["segments"][0]
    assert seg["counts"]["sent"] == 21 and seg["counts"]["success"] == 6
    la_row = next(r for r in seg["rows"] if (r["tone"], r["channel"]) == ("loss_aversion", "sms"))
    assert la_row["conversion"]["count"] == 3 and isinstance(la_row["conversion"]["rate"], float)
    assert la_row["conversion"]["low"] == pytest.approx(wilson_interval(3, 10)[0], abs=1e-6)
    assert seg["lift"]["method"] == "newcombe_hybrid_score"


@pytest.mark.asyncio
async def test_wilson_interval_of_8_in_10(redis):
    outcomes = ToneOutcomes(redis, KEYS, BOOK)
    ids = await send(outcomes, "w", 10, segment="late", tone="social_proof", channel="whatsapp",
                     group="bandit", p=0.5)
    await outcome(outcomes, ids[:8], "paid")
    await outcomes.resolve_expired(T0 + 8 * DAY)
    row = (await report_now(redis)).segment("late").total("social_proof")
    low, high = row.conversion.interval
    assert row.conversion.rate == 0.8
    assert low == pytest.approx(0.490, abs=5e-4) and high == pytest.approx(0.943, abs=5e-4)


# --- lift over the holdout ---------------------------------------------------------------------
def test_newcombe_matches_the_papers_worked_examples():
    # Newcombe (1998), Table II, method 10: 56/70 - 48/80 and 9/10 - 3/10
    assert newcombe_difference(56, 70, 48, 80) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)
    assert newcombe_difference(9, 10, 3, 10) == pytest.approx((0.6, 0.1705, 0.8090), abs=1e-4)
    with pytest.raises(ValueError):
        newcombe_difference(1, 0, 1, 2)


@pytest.mark.asyncio
async def test_lift_when_the_bandit_clearly_beats_the_holdout(redis):
    outcomes = ToneOutcomes(redis, KEYS, BOOK)
    bandit = await send(outcomes, "b", 70, segment="mid", tone="loss_aversion", channel="sms",
                        group="bandit", p=0.8)
    pinned = await send(outcomes, "pin", 10, segment="mid", tone="social_proof", channel="sms",
                        group="pinned")
    holdout = await send(outcomes, "h", 80, segment="mid", tone="soft", channel="sms",
                         group="holdout")
    guardrail = await send(outcomes, "g", 20, segment="mid", tone="soft", channel="sms",
                           group="guardrail")
    await outcome(outcomes, bandit[:50] + pinned[:6], "promise_made")   # 56 of 80 treated
    await outcome(outcomes, holdout[:24], "paid")                        # 24 of 80 held out
    await outcome(outcomes, guardrail, "paid")          # not in the comparison at all
    await outcomes.resolve_expired(T0 + 8 * DAY)
    lift = (await report_now(redis)).segment("mid").lift
    assert (lift.treated.count, lift.treated.of, lift.holdout.count, lift.holdout.of) == (56, 80, 24, 80)
    d, low, high = lift.difference
    assert d == pytest.approx(0.4)
    assert 0.2 < low < d < high < 0.6
    assert (d, low, high) == pytest.approx(newcombe_difference(56, 80, 24, 80))
    assert lift.holdout_tone == "soft"


# --- inverse-propensity estimate ---------------------------------------------------------------
@pytest.mark.asyncio
async def test_ipw_recovers_the_true_rates_where_the_naive_rate_is_biased(redis):
    """Two periods of 1000 bandit messages in `late`. The debtors of the first convert more
    (loss_aversion 80 %, soft 60 %) than those of the second (40 %, 20 %); the bandit favoured
    loss_aversion in the first (p 0.9) and soft in the second (p 0.1). Over both periods the
    true rates are loss_aversion 60 %, soft 40 %; the naive rates are 76 % and 24 %."""
    outcomes = ToneOutcomes(redis, KEYS, BOOK)

    async def period(name: str, at: float, la: tuple[int, int, float], soft: tuple[int, int, float]):
        for tone, (n, wins, p) in (("loss_aversion", la), ("soft", soft)):
            ids = await send(outcomes, f"{name}-{tone}", n, segment="late", tone=tone,
                             channel="email", group="bandit", p=p, at=at, campaign=name)
            await outcome(outcomes, ids[:wins], "paid", at=at + HOUR)

    await period("one", T0, (900, 720, 0.9), (100, 60, 0.1))
    await outcomes.resolve_expired(T0 + 8 * DAY)
    await period("two", T0 + 10 * DAY, (100, 40, 0.1), (900, 180, 0.9))
    # holdout messages are not a random draw with their logged p (1.0): left out
    held = await send(outcomes, "held", 50, segment="late", tone="soft", channel="email",
                      group="holdout", at=T0 + 10 * DAY, campaign="two")
    await outcome(outcomes, held[:5], "paid", at=T0 + 10 * DAY + HOUR)
    await outcomes.resolve_expired(T0 + 18 * DAY)

    report = await gather_report(redis, KEYS, BOOK, now=T0 + 20 * DAY, chunk=97)
    late = report.segment("late")
    la, soft = late.ipw["loss_aversion"], late.ipw["soft"]
    assert late.ipw_assignments == 2000 and (la.assignments, soft.assignments) == (1000, 1000)
    assert la.estimate == pytest.approx(0.6) and la.ht_estimate == pytest.approx(0.6)
    assert soft.estimate == pytest.approx(0.4) and soft.ht_estimate == pytest.approx(0.4)
    assert la.successes / la.assignments == pytest.approx(0.76)     # the naive rates
    assert late.total("loss_aversion").conversion.rate == pytest.approx(0.76)
    low, high = la.interval
    assert low < 0.6 < high
    assert report.log.used == 2000 and report.log.joined == 2050
    assert report.log.open_assignments == 0 and report.log.orphan_resolutions == 0
    # streamed: never more open assignments in memory than one period's (1050), not all 2050
    assert report.log.max_open <= 1050
    data = json.loads(report.to_json())["segments"][0]["ipw"]
    assert data["assignments_used"] == 2000
    assert data["tones"]["soft"]["estimate"] == pytest.approx(0.4)


@pytest.mark.asyncio
async def test_ipw_on_a_constructed_log_with_known_propensities(redis):
    """20 000 assignments written straight to the tone log: propensities drift over time with
    the debtors' base rate; the estimate lands near the true rate, the naive one does not."""
    rng = random.Random(7)
    truth = {"loss_aversion": 0.0, "soft": 0.0}
    n = 20_000
    pending: dict[int, bool] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            drift = i / n                         # the debtors get harder over time
            rates = {"loss_aversion": 0.8 - 0.6 * drift, "soft": 0.6 - 0.4 * drift}
            for tone in truth:
                truth[tone] += rates[tone] / n
            p_la = 0.9 - 0.8 * drift             # and the bandit moves away from loss_aversion
            tone = "loss_aversion" if rng.random() < p_la else "soft"
            p = p_la if tone == "loss_aversion" else 1 - p_la
            success = rng.random() < rates[tone]
            pipe.xadd(KEYS.tone_log, {"kind": "assign", "aid": f"a{i}", "campaign": "c",
                                      "segment": "mid", "step": "1", "tone": tone,
                                      "channel": "sms", "group": "bandit", "p": repr(round(p, 6)),
                                      "at": repr(T0 + i)})
            if i >= 50:                           # resolutions arrive 50 assignments later
                pipe.xadd(KEYS.tone_log, {"kind": "resolve", "aid": f"a{i - 50}",
                                          "success": "1" if pending.pop(i - 50) else "0",
                                          "at": repr(T0 + i)})
            pending[i] = success
        await pipe.execute()
    # resolved, but their success window is not over: not counted (successes come at once,
    # failures only at the window's end)
    young = await gather_report(redis, KEYS, BOOK, now=T0 + n)
    assert young.log.used == 0 and young.log.unmatured == n - 50 and not young.segment("mid").ipw
    report = await gather_report(redis, KEYS, BOOK, now=T0 + n + 8 * DAY)
    mid = report.segment("mid")
    # the last 50 were never resolved: their window closed without a success, so failures
    assert report.log.used == n and report.log.open_assignments == 50
    assert report.log.matured_unresolved == 50
    assert report.log.max_open <= 51
    for tone, true_rate in truth.items():
        estimate = mid.ipw[tone]
        assert estimate.estimate == pytest.approx(true_rate, abs=0.02), tone
        low, high = estimate.interval
        assert low <= true_rate <= high
        naive = estimate.successes / estimate.assignments
        assert abs(naive - true_rate) > 0.04, tone     # 0.08 and 0.05 off: why IPW is worth it


# --- allocation --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_allocation_recomputed_reproducibly_and_the_last_snapshot(redis):
    chooser_at = [T0 - HOUR]
    chooser = ToneChooser(redis, KEYS, BOOK, rng=random.Random(3), clock=lambda: chooser_at[0])
    await chooser.state(BOOK.get("early"))                       # snapshot 1: no data yet
    await early_segment(redis)
    chooser_at[0] = T0 + 8 * DAY
    await chooser.state(BOOK.get("early"), fresh=True)           # snapshot 2
    await redis.hset(KEYS.tone_pins, "early", "social_proof")

    first, second = await report_now(redis), await report_now(redis)
    alloc = first.segment("early").allocation
    assert alloc.current == second.segment("early").allocation.current
    assert alloc.arms == {"loss_aversion": ArmCounts(4, 11), "social_proof": ArmCounts(0, 0),
                          "soft": ArmCounts(2, 4)}
    expected = thompson_allocation(alloc.arms, floor=BOOK.bandit.exploration_floor,
                                   rng=random.Random("nudge-report:early"), draws=ALLOCATION_DRAWS)
    assert alloc.current == pytest.approx(expected)
    assert sum(alloc.current.values()) == pytest.approx(1.0)
    assert min(alloc.current.values()) >= BOOK.bandit.exploration_floor / 3 - 1e-9
    assert alloc.pinned == "social_proof"
    assert alloc.snapshots == 2 and alloc.last.at == T0 + 8 * DAY
    assert [s.at for s in alloc.history] == [T0 - HOUR, T0 + 8 * DAY]
    assert set(alloc.last.allocation) == {"loss_aversion", "social_proof", "soft"}


# --- charts --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_charts_are_valid_png_and_svg(redis, tmp_path):
    chooser = ToneChooser(redis, KEYS, BOOK, rng=random.Random(3), clock=lambda: T0 - HOUR)
    await chooser.state(BOOK.get("early"))
    await early_segment(redis)
    outcomes = ToneOutcomes(redis, KEYS, BOOK)
    ids = await send(outcomes, "m", 4, segment="mid", tone="social_proof", channel="whatsapp",
                     group="bandit", p=0.3)
    await outcome(outcomes, ids[:1], "paid")
    await outcomes.resolve_expired(T0 + 8 * DAY)
    paths = write_charts(await report_now(redis), tmp_path / "charts")
    names = sorted(p.name for p in paths)
    assert names == ["allocation.png", "allocation.svg", "conversion.png", "conversion.svg",
                     "funnel.png", "funnel.svg"]
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, _height = struct.unpack(">II", data[16:24])
            assert width == 1000
        else:
            root = ET.fromstring(data)
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert root.find(".//{http://www.w3.org/2000/svg}path") is not None


# --- the command ---------------------------------------------------------------------------
def _run(coro):
    return asyncio.run(coro)


async def _populate(url: str) -> None:
    client = aioredis.from_url(url)
    try:
        await ToneChooser(client, KEYS, BOOK, rng=random.Random(3),
                          clock=lambda: T0 - HOUR).state(BOOK.get("early"))
        await early_segment(client)
    finally:
        await client.aclose()


def test_cli_prints_tables_and_writes_json_and_charts(redis_url, tmp_path):
    _run(_populate(redis_url))
    env = {"REDIS_URL": redis_url, "COLUMNS": "220"}
    runner = CliRunner()
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "early: 21 sent, 21 resolved, 6 successes" in text
    assert "conversion [95 % CI]" in text
    assert "30.0% [10.8%–60.3%]" in text                 # 3 of 10, Wilson
    assert "lift over holdout (soft)" in text
    assert "last logged allocation" in text
    assert "no campaign messages yet" not in text
    data = json.loads((out / "report.json").read_text())
    assert data["segments"][0]["segment"] == "early" and data["empty"] is False
    for name in ("conversion", "allocation", "funnel"):
        assert (out / f"{name}.png").exists() and (out / f"{name}.svg").exists()
        assert str(out / f"{name}.png") in text

    only = tmp_path / "only"
    result = runner.invoke(app, ["report", "--out", str(only), "--segment", "early", "--json-only"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in only.iterdir()) == ["report.json"]
    assert json.loads((only / "report.json").read_text())["segment_filter"] == "early"

    result = runner.invoke(app, ["report", "--out", str(tmp_path / "x"), "--segment", "late"],
                           env=env)
    assert result.exit_code == 0 and "no campaign messages in segment late yet" in result.output

    result = runner.invoke(app, ["report", "--out", str(tmp_path / "y"), "--segment", "nope"],
                           env=env)
    assert result.exit_code == 2


def test_cli_with_no_data_says_so_and_writes_an_empty_json(redis_url, tmp_path):
    out = tmp_path / "empty"
    result = CliRunner().invoke(app, ["report", "--out", str(out)],
                                env={"REDIS_URL": redis_url, "COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert NO_DATA in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["empty"] is True and data["segments"] == [] and data["campaigns"] == []
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
