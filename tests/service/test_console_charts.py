"""The dashboard's SVG charts (service/console/charts.py): well-formed, accessible, the labels
and figures present, one colour per tone everywhere, and a message instead of a chart when
there is nothing to draw. The report comes from a real Redis filled through the real code
(tests/service/results_data.py)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.core.tone_choice import wilson_interval
from service.console import charts
from service.console.charts import QueueHealth, QueueItem
from service.keys import Keys
from service.report import Allocation, LogScan, Report, SegmentReport, Snapshot
from tests.service.results_data import REPORT_AT, report_of, seed_results

SVG = "{http://www.w3.org/2000/svg}"
KEYS = Keys("charttest")
EMPTY_QUEUE = QueueHealth((), REPORT_AT)
QUEUE = QueueHealth((
    QueueItem("vulnerability_urgent", 0, False, 400.0),
    QueueItem("dispute", 2, True, 5_000.0),
    QueueItem("dispute", 2, False, 20_000.0),
    QueueItem("dispute", 2, False, 200_000.0),
    QueueItem("request_human", 5, False, 100.0),
    QueueItem("request_human", 5, True, 1_000.0),
    QueueItem("hardship", 3, True, None),
), REPORT_AT)


@pytest_asyncio.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def report(redis):
    await seed_results(redis, KEYS)
    return await report_of(redis, KEYS)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"{SVG}title").get("id") == title_id
    assert root.find(f"{SVG}desc").get("id") == desc_id
    assert root.find(f"{SVG}title").text and root.find(f"{SVG}desc").text
    # the console's CSP allows no inline style and no script
    assert "style=" not in svg and "<script" not in svg and "<style" not in svg
    return root


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{SVG}text")]


def tips(root: ET.Element) -> dict[str, list[str]]:
    """fill colour -> the tooltips of the marks drawn in it."""
    out: dict[str, list[str]] = {}
    for el in root.iter():
        title = el.find(f"{SVG}title")
        if el.tag != f"{SVG}svg" and title is not None and el.get("fill") not in (None, "none"):
            out.setdefault(el.get("fill"), []).append(title.text)
    return out


# --- with data ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_funnel_has_every_stage_segment_and_count(report):
    root = parse(charts.funnel_chart(report))
    words = texts(root)
    for label in ("early", "mid", "sent", "delivered", "replied", "success", "loss_aversion",
                  "social_proof", "soft"):
        assert label in words, label
    # early / loss_aversion: 20 sent, 18 delivered, 8 replied, 6 successes (counts on the bars)
    marks = tips(root)[charts.tone_colour("loss_aversion")]
    assert "early · loss_aversion · delivered: 18 of 20 sent (90.0%)" in marks
    assert "early · loss_aversion · success: 6 of 20 sent (30.0%)" in marks
    assert "none sent: loss_aversion, social_proof" in words     # mid had only soft
    assert "early, loss_aversion: sent 20 (100.0%), delivered 18 (90.0%)" in root.find(f"{SVG}desc").text


@pytest.mark.asyncio
async def test_conversion_has_wilson_intervals_and_marks_the_holdout(report):
    svg = charts.conversion_chart(report)
    root = parse(svg)
    words = texts(root)
    low, high = wilson_interval(6, 20)
    assert f"30.0% [{low * 100:.0f}%–{high * 100:.0f}%] n=20" in words
    assert "holdout (soft)" in words                      # its own row, and in the legend
    assert "no resolved messages yet" in words            # mid: loss_aversion never sent
    # the holdout is a hollow diamond on a dashed whisker, and a dashed line across the segment
    hollow = [p for p in root.iter(f"{SVG}path") if p.get("fill") == "none"]
    assert hollow and "holdout (soft)" in hollow[0].find(f"{SVG}title").text
    assert any("holdout conversion 25.0%" in (line.find(f"{SVG}title").text or "")
               for line in root.iter(f"{SVG}line") if line.find(f"{SVG}title") is not None)
    lift = report.segment("early").lift.difference[0]
    assert any(w.startswith(f"lift over holdout {lift * 100:+.1f} pts") for w in words)
    desc = root.find(f"{SVG}desc").text
    assert "early, loss_aversion: 30.0%" in desc and "95%" in desc


@pytest.mark.asyncio
async def test_allocation_over_time_per_segment_with_the_pin(report):
    root = parse(charts.allocation_chart(report))
    words = texts(root)
    assert "early" in words and "mid" in words
    assert any(w.startswith("now: loss_aversion") and "pinned: soft" in w for w in words)
    areas = [p for p in root.iter(f"{SVG}path") if p.get("fill") != "none"]
    assert len(areas) == 6                                 # three tones in each of two segments
    marks = tips(root)
    assert any("mid: pinned to soft" in t for t in marks[charts.tone_colour("soft")])
    assert "Nov" in " ".join(words)                        # a time axis in days


@pytest.mark.asyncio
async def test_campaign_progress_bars_count_every_debtor_considered(report):
    assert len(report.campaigns) == 2
    root = parse(charts.campaign_chart(report.campaigns))
    words = texts(root)
    running, cancelled = (next(c for c in report.campaigns if c["state"] == s)
                          for s in ("running", "cancelled"))
    assert f"{running['id']} · step 1 · running" in words
    assert f"{cancelled['id']} · step 1 · cancelled" in words
    assert f"0 sent of {running['queued']} planned · {running['queued']} remaining" in words
    parts = charts.campaign_parts(cancelled)
    assert parts == [("cancelled", "cancelled", cancelled["queued"])]
    assert sum(n for _c, _l, n in charts.campaign_parts(running)) >= running["queued"]


def test_campaign_parts_by_reason_in_order():
    campaign = {"id": "c", "queued": 10, "handled": 7,
                "counts": {"planned": 10, "sent": 5, "deferred": 1, "refused:quiet_hours": 3,
                           "refused:opted_out": 4, "skipped:not_due": 2, "cancelled": 0,
                           "skipped:unreadable_record": 1, "surprise": 1}}
    assert charts.campaign_parts(campaign) == [
        ("sent", "sent", 5), ("deferred", "deferred", 1),
        ("refused", "refused: opted_out", 4), ("refused", "refused: quiet_hours", 3),
        ("skipped", "skipped: not_due", 2), ("skipped", "skipped: unreadable_record", 1),
        ("other", "surprise", 1), ("remaining", "remaining", 3)]
    words = texts(parse(charts.campaign_chart([campaign])))
    assert "deferred 1 · refused: opted_out 4 · refused: quiet_hours 3 · skipped: not_due 2 · " \
           "skipped: unreadable_record 1 · surprise 1" in words
    assert "5 sent of 10 planned · 3 remaining" in words


def test_campaign_chart_shows_the_latest_only():
    campaigns = [{"id": f"c{i}", "state": "done", "step": 1, "queued": 1, "handled": 1,
                  "counts": {"planned": 1, "sent": 1}} for i in range(20)]
    words = texts(parse(charts.campaign_chart(campaigns, limit=5)))
    assert "Campaign progress (the latest 5 of 20)" in words
    assert "c4 · step 1 · done" in words and "c5 · step 1 · done" not in words


def test_queue_health_figures_and_chart():
    assert (QUEUE.waiting, QUEUE.claimed, QUEUE.unclaimed) == (7, 3, 4)
    assert QUEUE.oldest() == 200_000.0 and QUEUE.oldest(claimed=True) == 5_000.0
    assert QUEUE.by_reason() == [(0, "vulnerability_urgent", 1, 0), (2, "dispute", 2, 1),
                                 (3, "hardship", 0, 1), (5, "request_human", 1, 1)]
    assert QUEUE.by_wait() == [("< 15 min", 2, 0), ("15–60 min", 0, 1), ("1–4 h", 0, 1),
                               ("4–24 h", 1, 0), ("1–3 days", 1, 0), ("> 3 days", 0, 0)]
    data = QUEUE.to_dict()
    assert data["oldest_unclaimed_seconds"] == 200_000.0 and data["by_reason"][0]["priority"] == 0
    root = parse(charts.queue_chart(QUEUE))
    words = texts(root)
    assert "7 waiting for a person: 4 unclaimed, 3 claimed · oldest unclaimed wait 2 d 7 h" in words
    for label in ("P0 · vulnerability_urgent", "P2 · dispute", "P5 · request_human", "> 3 days"):
        assert label in words
    marks = tips(root)
    assert "dispute: 2 unclaimed" in marks[charts.QUEUE_COLOURS["unclaimed"]]
    assert "dispute: 1 claimed" in marks[charts.QUEUE_COLOURS["claimed"]]


@pytest.mark.asyncio
async def test_one_colour_per_tone_in_every_chart(report):
    for name in ("funnel", "conversion", "allocation"):
        root = parse(charts.render(name, report, QUEUE))
        for colour, marks in tips(root).items():
            tones = {t for t in ("loss_aversion", "social_proof", "soft")
                     if all(t in m for m in marks)}
            assert len(tones) == 1, (name, colour, marks[:3])
            assert colour == charts.tone_colour(tones.pop())
    assert charts.tone_colour("brand_new") == charts.tone_colour("brand_new")
    assert charts.tone_colour("brand_new") not in charts.TONE_COLOURS.values()
    swatch = ET.fromstring(charts.tone_swatch("soft"))
    assert swatch.find(f"{SVG}rect").get("fill") == charts.TONE_COLOURS["soft"]


@pytest.mark.asyncio
async def test_a_segment_filter_draws_only_that_segment(redis, report):
    mid = await report_of(redis, KEYS, segment="mid")
    words = texts(parse(charts.funnel_chart(mid)))
    assert "mid" in words and "early" not in words


def test_a_long_allocation_history_stays_a_small_svg():
    """Thousands of snapshots, each moving: at most one drawn per 3 pixels, runs merged."""
    tones = ["loss_aversion", "social_proof", "soft"]
    history = []
    for k in range(5000):
        share = 0.2 + 0.6 * ((k * 37) % 100) / 100
        history.append(Snapshot(1_000_000.0 + 600 * k, {"loss_aversion": share,
                                                          "social_proof": (1 - share) / 2,
                                                          "soft": (1 - share) / 2}, {},
                                "soft" if 2000 <= k < 2500 else None))
    allocation = Allocation(tones=tones, arms={}, current=dict.fromkeys(tones, 1 / 3), suspended={},
                            pinned=None, seed="s", history=history, snapshots=5000, last=history[-1])
    segment = SegmentReport(name="late", in_book=True, tones=tones, rows=[], totals=[],
                            allocation=allocation, lift=None, ipw={}, ipw_assignments=0)
    report = Report(generated_at=history[-1].at, source="segments.yml", success_outcomes=["paid"],
                    success_days=7, exploration_floor=0.1, holdout_share=0.1, holdout_tone="soft",
                    segments=[segment], campaigns=[], log=LogScan())
    svg = charts.allocation_chart(report)
    root = parse(svg)
    assert len(svg) < 40_000
    for area in (p for p in root.iter(f"{SVG}path") if p.get("fill") != "none"):
        assert area.get("d").count("L") < 4 * 700 / 3 + 10       # ~2 vertices per edge per step
    strips = [t for t in tips(root)[charts.tone_colour("soft")] if "pinned" in t]
    assert len(strips) == 1 and " to " in strips[0]              # one run, one strip


# --- without data ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_every_chart_says_when_there_is_nothing_to_draw(redis):
    report = await report_of(redis, KEYS)
    assert report.empty
    expected = {"funnel": "No campaign messages yet.",
                "conversion": "No resolved campaign messages yet",
                "allocation": "No allocation logged yet",
                "campaigns": "No campaigns yet.",
                "queue": "No conversation is waiting for a person."}
    for name in charts.CHARTS:
        root = parse(charts.render(name, report, EMPTY_QUEUE))
        assert any(w.startswith(expected[name]) for w in texts(root)), name
        assert expected[name] in root.find(f"{SVG}desc").text
    with pytest.raises(KeyError):
        charts.render("pie", report, EMPTY_QUEUE)


def test_names_from_outside_are_escaped():
    hostile = {"id": '<script>alert("x")</script>&', "state": "running", "step": 1, "queued": 2,
               "handled": 1, "counts": {"sent": 1, 'refused:<b>"': 1}}
    svg = charts.campaign_chart([hostile])
    root = parse(svg)
    assert '<script>alert("x")</script>& · step 1 · running' in texts(root)
    assert not re.search(r"<script|<b>", svg)
