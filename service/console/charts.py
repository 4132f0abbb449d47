"""The results dashboard's charts, as SVG text: pure functions of what service/report.py
computes (Report, SegmentReport, ToneRow, Allocation, Snapshot, the campaign dicts) and of the
agent queue's health (:class:`QueueHealth`, gathered by service/console/dashboard.py).

    svg = render("conversion", report, queue)        # one of CHARTS

Drawn by hand rather than with matplotlib (which `nudge report` uses for its files): the
console puts these inline in the page, where they must be accessible (``role="img"``, a
``<title>`` and a ``<desc>`` that reads the figures out, a ``<title>`` tooltip on every mark),
crisp at any zoom, with real text a screen reader and the browser's search can find, a few
kilobytes each, and allowed by the console's CSP (``style-src 'self'``: presentation
attributes only, no ``style``). Text and axes use ``currentColor``, so they follow the page's
colours. The SVG builder and axis helpers are in service/console/svg.py. A chart takes 1-2 ms
to draw; the allocation chart of a long, busy history (thinned to one snapshot per 3 pixels)
up to ~25 ms, so the gateway draws them in a worker thread.

Colours: one per tone everywhere (:func:`tone_colour`, the Okabe-Ito palette, distinguishable
with the common colour-vision deficiencies), and every mark is labelled in text as well.
A chart with nothing to show says so inside the chart.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.core.segments import TONES
from service.console.svg import (
    WIDTH,
    Svg,
    compact,
    count_ticks,
    desc_join,
    empty,
    iso_minute,
    legend,
    nice_top,
    num,
    pct,
    time_ticks,
    wrapped,
)
from service.report import Rate, Report, SegmentReport, Snapshot, ToneRow

CHARTS = ("funnel", "conversion", "allocation", "campaigns", "queue")
TONE_COLOURS = {"loss_aversion": "#D55E00", "social_proof": "#0072B2", "soft": "#009E73"}
_SPARE_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#882255", "#44AA99", "#999933")
#: The dashboard's funnel (the report's own has promise / plan and paid apart).
FUNNEL = ("sent", "delivered", "replied", "success")
#: Campaign progress: what became of each debtor a campaign considered.
CAMPAIGN_COLOURS = {"sent": "#332288", "deferred": "#88CCEE", "refused": "#CC6677",
                    "skipped": "#BBBBBB", "cancelled": "#777777", "other": "#DDCC77"}
CAMPAIGN_LIMIT = 12
QUEUE_COLOURS = {"unclaimed": "#CC3311", "claimed": "#0077BB"}
#: Waiting-time buckets of the agent queue: (upper bound in seconds, label).
WAIT_BUCKETS = ((900, "< 15 min"), (3600, "15–60 min"), (4 * 3600, "1–4 h"),
                (86400, "4–24 h"), (3 * 86400, "1–3 days"), (math.inf, "> 3 days"))


def tone_colour(tone: str) -> str:
    """The tone's colour, the same in every chart and table (an unknown tone: a stable spare)."""
    return TONE_COLOURS.get(tone) or _SPARE_COLOURS[zlib.crc32(tone.encode()) % len(_SPARE_COLOURS)]


def tone_swatch(tone: str, size: int = 10) -> str:
    """A small square of the tone's colour for a table cell (CSP-safe: no style attribute)."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="swatch" width="{size}" '
            f'height="{size}" viewBox="0 0 10 10" aria-hidden="true" focusable="false">'
            f'<rect width="10" height="10" rx="2" '
            f'fill="{tone_colour(tone)}"/></svg>')


# --- the agent queue's health ------------------------------------------------------------------
@dataclass(frozen=True)
class QueueItem:
    """One conversation in the agent queue, without who it is."""

    reason: str
    priority: int                    # lower = more urgent (service/conversations.py PRIORITY)
    claimed: bool
    waiting_seconds: float | None    # since the hand-off


@dataclass(frozen=True)
class QueueHealth:
    items: tuple[QueueItem, ...]
    measured_at: float

    @property
    def waiting(self) -> int:
        return len(self.items)

    @property
    def claimed(self) -> int:
        return sum(1 for item in self.items if item.claimed)

    @property
    def unclaimed(self) -> int:
        return self.waiting - self.claimed

    def oldest(self, *, claimed: bool | None = False) -> float | None:
        """The longest wait in seconds (of the unclaimed ones by default; None: everyone)."""
        waits = [i.waiting_seconds for i in self.items
                 if i.waiting_seconds is not None and claimed in (None, i.claimed)]
        return max(waits) if waits else None

    def by_reason(self) -> list[tuple[int, str, int, int]]:
        """(priority, reason, unclaimed, claimed), most urgent first."""
        rows: dict[tuple[int, str], list[int]] = {}
        for item in self.items:
            counts = rows.setdefault((item.priority, item.reason), [0, 0])
            counts[1 if item.claimed else 0] += 1
        return [(p, r, u, c) for (p, r), (u, c) in sorted(rows.items())]

    def by_wait(self) -> list[tuple[str, int, int]]:
        """(bucket label, unclaimed, claimed) for every bucket of WAIT_BUCKETS."""
        counts = [[0, 0] for _ in WAIT_BUCKETS]
        for item in self.items:
            if item.waiting_seconds is None:
                continue
            index = next(i for i, (bound, _) in enumerate(WAIT_BUCKETS) if item.waiting_seconds < bound)
            counts[index][1 if item.claimed else 0] += 1
        return [(label, u, c) for (_bound, label), (u, c) in zip(WAIT_BUCKETS, counts, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        oldest, oldest_any = self.oldest(), self.oldest(claimed=None)
        return {"measured_at": self.measured_at, "waiting": self.waiting,
                "claimed": self.claimed, "unclaimed": self.unclaimed,
                "oldest_unclaimed_seconds": None if oldest is None else round(oldest, 1),
                "oldest_waiting_seconds": None if oldest_any is None else round(oldest_any, 1),
                "by_reason": [{"priority": p, "reason": r, "unclaimed": u, "claimed": c}
                              for p, r, u, c in self.by_reason()],
                "by_wait": [{"bucket": b, "unclaimed": u, "claimed": c}
                            for b, u, c in self.by_wait()]}


# --- entry point --------------------------------------------------------------------------------
def render(name: str, report: Report, queue: QueueHealth, *,
           campaign_limit: int = CAMPAIGN_LIMIT) -> str:
    """The chart `name` (one of CHARTS) as an SVG document."""
    if name == "funnel":
        return funnel_chart(report)
    if name == "conversion":
        return conversion_chart(report)
    if name == "allocation":
        return allocation_chart(report)
    if name == "campaigns":
        return campaign_chart(report.campaigns, limit=campaign_limit)
    if name == "queue":
        return queue_chart(queue)
    raise KeyError(name)


# --- the SVG builder ----------------------------------------------------------------------------
def _interval(rate: Rate) -> str:
    if rate.rate is None or rate.interval is None:
        return "no resolved messages"
    low, high = rate.interval
    return f"{pct(rate.rate)} [{pct(low)}–{pct(high)}], {rate.count} of {rate.of}"


def _all_tones(segments: Iterable[SegmentReport]) -> list[str]:
    names = {t for s in segments for t in s.tones}
    return [t for t in TONES if t in names] + sorted(names - set(TONES))


# --- funnel -------------------------------------------------------------------------------------
def _stage_count(row: ToneRow, stage: str) -> int:
    return row.counts.get(stage, 0)


def funnel_chart(report: Report) -> str:
    """Per segment, per tone: the share of messages sent that were delivered, replied to and
    ended in a success (grouped bars, one panel per segment)."""
    title = "Funnel per segment and tone: sent → delivered → replied → success"
    panels = [(seg, [row for row in seg.totals if row.counts.get("sent")]) for seg in report.segments]
    panels = [(seg, rows) for seg, rows in panels if rows]
    if not panels:
        return empty("funnel", title, "No campaign messages yet.")
    success = ", ".join(report.success_outcomes)
    descs = []
    for seg, rows in panels:
        for row in rows:
            sent = row.counts["sent"]
            descs.append(f"{seg.name}, {row.tone}: " + ", ".join(
                f"{stage} {_stage_count(row, stage)} ({pct(_stage_count(row, stage) / sent)})"
                for stage in FUNNEL))
    svg = Svg("funnel", title, f"Share of the messages sent reaching each stage; success = "
                                f"{success} within {report.success_days} days. " + desc_join(descs))
    svg.text(16, 22, title, size=14, weight="600")
    below = wrapped(svg, 16, 40, f"bars: % of messages sent; numbers: messages. success = "
                                 f"{success} within {report.success_days} days (counted once "
                                 "the message is resolved)")
    tones = _all_tones(seg for seg, _ in panels)
    y = legend(svg, 16, below + 8, [(t, tone_colour(t)) for t in tones]) + 6
    left, right, plot_h = 64, WIDTH - 16, 120
    group_w = (right - left) / len(FUNNEL)
    for seg, rows in panels:
        counts = seg.counts()
        svg.text(16, y + 12, f"{seg.name}", size=13, weight="600")
        svg.text(16 + 9 * len(seg.name) + 10, y + 12, f"{counts['sent']} sent, "
                 f"{counts['resolved']} resolved, {counts['success']} successes", size=11, muted=True)
        top = y + 30
        for tick in (0, 0.25, 0.5, 0.75, 1.0):
            ty = top + plot_h * (1 - tick)
            svg.add("line", x1=float(left), x2=float(right), y1=ty, y2=ty, stroke="currentColor",
                    stroke_opacity=0.25 if tick else 0.6, stroke_width=1)
            svg.text(left - 6, ty, pct(tick, 0), size=10, anchor="end", dy="0.35em", muted=True)
        bar_w = group_w * 0.8 / len(rows)
        for k, stage in enumerate(FUNNEL):
            gx = left + group_w * k + group_w * 0.1
            for i, row in enumerate(rows):
                sent, n = row.counts["sent"], _stage_count(row, stage)
                share = n / sent
                h = plot_h * min(share, 1.0)
                x = gx + bar_w * i
                svg.add("rect", f"{seg.name} · {row.tone} · {stage}: {n} of {sent} sent ({pct(share)})",
                        x=x + 1, y=top + plot_h - h, width=max(bar_w - 2, 1.0), height=h,
                        fill=tone_colour(row.tone))
                if bar_w >= 16:
                    svg.text(x + bar_w / 2, top + plot_h - h - 3, str(n), size=9, anchor="middle")
            svg.text(left + group_w * (k + 0.5), top + plot_h + 15, stage, size=11, anchor="middle")
        missing = [t for t in seg.tones if t not in {r.tone for r in rows}]
        if missing:
            svg.text(right, y + 12, "none sent: " + ", ".join(missing), size=10, anchor="end",
                     muted=True)
        y = top + plot_h + 30
    return svg.render(y)


# --- conversion ---------------------------------------------------------------------------------
def holdout_rate(seg: SegmentReport) -> Rate:
    """The holdout group's conversion in the segment (every tone it got, steps and channels)."""
    resolved = sum(row.groups.get("holdout", {}).get("resolved", 0) for row in seg.totals)
    success = sum(row.groups.get("holdout", {}).get("success", 0) for row in seg.totals)
    return Rate(success, resolved)


def conversion_chart(report: Report) -> str:
    """Per segment, per tone: conversion (success / resolved) with its 95 % Wilson interval;
    the holdout's own row (hollow, dashed) and a dashed line at its rate across the segment."""
    title = "Conversion per segment and tone, with 95% Wilson intervals"
    segments = [s for s in report.segments if s.totals]
    if not any(row.counts.get("resolved") for s in segments for row in s.totals):
        return empty("conversion", title, "No resolved campaign messages yet: a message is "
                                           f"resolved when its {report.success_days}-day window "
                                           "ends or it succeeds.")
    label_w, text_w = 150, 200
    left, right = 16 + label_w, WIDTH - 16 - text_w
    top_value = max((row.conversion.interval or (0, 0))[1] for s in segments for row in s.totals)
    holdouts = {s.name: holdout_rate(s) for s in segments}
    top_value = max([top_value] + [(h.interval or (0, 0))[1] for h in holdouts.values()])
    scale, step = nice_top(top_value)

    def x_of(value: float) -> float:
        return left + (right - left) * min(value / scale, 1.0)

    descs = []
    svg = Svg("conversion", title, "")
    svg.text(16, 22, title, size=14, weight="600")
    below = wrapped(svg, 16, 40, f"success = {', '.join(report.success_outcomes)} within "
                                 f"{report.success_days} days, of resolved messages (n). Holdout: "
                                 f"a random {pct(report.holdout_share, 0)} of debtors always get "
                                 f"{report.holdout_tone}.")
    tones = _all_tones(segments)
    y = legend(svg, 16, below + 8, [(t, tone_colour(t)) for t in tones]
               + [(f"holdout ({report.holdout_tone})", tone_colour(report.holdout_tone))],
               hollow=[f"holdout ({report.holdout_tone})"])
    plot_top = y
    y += 4
    row_h = 24
    for seg in segments:
        y += 22
        svg.text(16, y, seg.name, size=13, weight="600")
        if seg.lift is not None:
            d, low, high = seg.lift.difference
            svg.text(WIDTH - 16, y, f"lift over holdout {d * 100:+.1f} pts "
                                    f"[{low * 100:+.1f}, {high * 100:+.1f}]",
                     size=11, anchor="end", muted=True)
            descs.append(f"{seg.name}: lift of bandit and pinned over the holdout {d * 100:+.1f} "
                         f"points, 95% interval {low * 100:+.1f} to {high * 100:+.1f}")
        block_top = y + 6
        rows: list[tuple[str, Rate, str, bool]] = [
            (row.tone, row.conversion, row.tone, False) for row in seg.totals]
        holdout = holdouts[seg.name]
        if holdout.of:
            rows.append((f"holdout ({report.holdout_tone})", holdout, report.holdout_tone, True))
        for label, rate, tone, is_holdout in rows:
            y += row_h
            cy = y - 8
            colour = tone_colour(tone)
            svg.text(16 + 12, cy, label, size=12, dy="0.35em")
            summary = _interval(rate)
            descs.append(f"{seg.name}, {label}: {summary}")
            if rate.rate is None or rate.interval is None:
                svg.text(left, cy, "no resolved messages yet", size=11, dy="0.35em", muted=True)
                continue
            low, high = rate.interval
            tip = f"{seg.name} · {label}: conversion {summary} (95% Wilson interval)"
            svg.open("g")
            svg.add("line", x1=x_of(low), x2=x_of(high), y1=cy, y2=cy, stroke=colour,
                    stroke_width=2, stroke_dasharray="4 3" if is_holdout else None)
            for end in (low, high):
                svg.add("line", x1=x_of(end), x2=x_of(end), y1=cy - 5, y2=cy + 5, stroke=colour,
                        stroke_width=2)
            if is_holdout:
                x = x_of(rate.rate)
                svg.add("path", tip, d=f"M{num(x)} {num(cy - 6)} L{num(x + 6)} {num(cy)} "
                                      f"L{num(x)} {num(cy + 6)} L{num(x - 6)} {num(cy)} Z",
                        fill="none", stroke=colour, stroke_width=2)
            else:
                svg.add("circle", tip, cx=x_of(rate.rate), cy=cy, r=5, fill=colour)
            svg.close("g")
            digits = 1 if scale <= 0.2 else 0          # small rates: whole percents say little
            svg.text(right + 12, cy, f"{pct(rate.rate)} [{pct(low, digits)}–{pct(high, digits)}] n={rate.of}",
                     size=11, dy="0.35em")
        if holdout.rate is not None:
            hx = x_of(holdout.rate)
            svg.add("line", f"{seg.name}: holdout conversion {pct(holdout.rate)}", x1=hx, x2=hx,
                    y1=block_top, y2=y, stroke="currentColor", stroke_opacity=0.55,
                    stroke_dasharray="2 3", stroke_width=1.2)
        y += 8
    # the x axis, under everything, with its grid
    ticks = [step * i for i in range(round(scale / step) + 1)]
    for tick in ticks:
        x = x_of(tick)
        svg.add("line", x1=x, x2=x, y1=plot_top, y2=y, stroke="currentColor",
                stroke_opacity=0.12 if tick else 0.5)
        svg.text(x, y + 14, pct(tick, 0), size=10, anchor="middle", muted=True)
    svg.text((left + right) / 2, y + 32, "conversion (share of resolved messages that succeeded)",
             size=11, anchor="middle")
    svg.desc = ("Dots: each tone's conversion over every group; whiskers: 95% Wilson interval; "
                "hollow diamond: the holdout. " + desc_join(descs))
    return svg.render(y + 44)


# --- allocation over time -----------------------------------------------------------------------
def _thinned(history: Sequence[Snapshot], x_of: Callable[[float], float], px: float = 3.0
             ) -> list[Snapshot]:
    """At most one snapshot per `px` pixels (the last of each: the one in force at the end of
    that sliver); more cannot be seen, and a long history would make a large SVG."""
    kept: dict[int, Snapshot] = {}
    for snapshot in history:
        kept[int(x_of(snapshot.at) // px)] = snapshot
    return list(kept.values())


def allocation_chart(report: Report) -> str:
    """Per segment: the bandit's allocation over time (stacked steps from the logged snapshots;
    each share holds until the next snapshot), with pinned periods marked above."""
    title = "The bandit's allocation over time, per segment"
    panels = [s for s in report.segments if s.allocation is not None and s.allocation.history]
    if not panels:
        return empty("allocation", title, "No allocation logged yet: the tone chooser logs one "
                                           "when a campaign first chooses a tone in a segment.")
    start = min(s.allocation.history[0].at for s in panels)        # type: ignore[union-attr]
    last_at = max(s.allocation.history[-1].at for s in panels)     # type: ignore[union-attr]
    # the last allocation holds until now, but a quiet month must not squash the history into
    # a sliver: the tail after the last snapshot is at most a quarter of the span (6 h at least)
    # and at least an hour
    end = last_at + max(min(report.generated_at - last_at, max((last_at - start) / 4, 6 * 3600)),
                        3600)
    left, right, plot_h = 64, WIDTH - 16, 90

    def x_of(at: float) -> float:
        return left + (right - left) * (at - start) / (end - start)

    descs = []
    svg = Svg("allocation", title, "")
    svg.text(16, 22, title, size=14, weight="600")
    below = wrapped(svg, 16, 40, "share of the bandit group's messages each tone would get, as "
                                 "logged by the tone chooser (times in UTC); a strip above marks "
                                 "a manager's pin")
    tones = _all_tones(panels)
    y = legend(svg, 16, below + 8, [(t, tone_colour(t)) for t in tones]) + 6
    ticks = time_ticks(start, end)
    for seg in panels:
        alloc = seg.allocation
        assert alloc is not None
        history = _thinned(alloc.history, x_of)
        now_text = " · ".join(f"{t} {pct(alloc.current.get(t, 0.0), 0)}" for t in alloc.tones)
        extra = []
        if alloc.pinned:
            extra.append(f"pinned: {alloc.pinned}")
        if alloc.suspended:
            extra.append("suspended: " + ", ".join(alloc.suspended))
        svg.text(16, y + 12, seg.name, size=13, weight="600")
        svg.text(16 + 9 * len(seg.name) + 10, y + 12,
                 f"now: {now_text}" + (f" · {'; '.join(extra)}" if extra else ""), size=11, muted=True)
        top = y + 30
        for tick in (0.0, 0.5, 1.0):
            ty = top + plot_h * (1 - tick)
            svg.add("line", x1=float(left), x2=float(right), y1=ty, y2=ty, stroke="currentColor",
                    stroke_opacity=0.25 if tick else 0.6)
            svg.text(left - 6, ty, pct(tick, 0), size=10, anchor="end", dy="0.35em", muted=True)
        seg_tones = [t for t in tones if t in alloc.tones or any(t in s.allocation for s in history)]
        xs = [x_of(s.at) for s in history] + [x_of(end)]
        lower = [0.0] * len(history)
        for tone in seg_tones:
            shares = [s.allocation.get(tone, 0.0) for s in history]
            if not any(shares):
                continue
            upper = [lo + sh for lo, sh in zip(lower, shares, strict=True)]
            points: list[tuple[float, float]] = []
            for i, value in enumerate(upper):
                points += [(xs[i], value), (xs[i + 1], value)]
            for i in range(len(lower) - 1, -1, -1):
                points += [(xs[i + 1], lower[i]), (xs[i], lower[i])]
            d = "M" + " L".join(f"{px:g} {py:g}" for px, py in compact(
                [(px, top + plot_h * (1 - min(v, 1.0))) for px, v in points])) + " Z"
            final = history[-1]
            svg.add("path", f"{seg.name} · {tone}: {pct(final.allocation.get(tone, 0.0), 0)} at the "
                            f"last snapshot ({iso_minute(final.at)})",
                    d=d, fill=tone_colour(tone), stroke=tone_colour(tone), stroke_width=0.5)
            lower = upper
        i = 0
        while i < len(history):          # one strip per run of snapshots pinned to one tone
            pinned, j = history[i].pinned, i + 1
            while j < len(history) and history[j].pinned == pinned:
                j += 1
            if pinned:
                svg.add("rect", f"{seg.name}: pinned to {pinned} from {iso_minute(history[i].at)}"
                                + (f" to {iso_minute(history[j].at)}" if j < len(history) else ""),
                        x=xs[i], y=top - 7.0, width=max(xs[j] - xs[i], 1.5), height=4.0,
                        fill=tone_colour(pinned))
            i = j
        for at, label in ticks:
            tx = x_of(at)
            svg.add("line", x1=tx, x2=tx, y1=top + plot_h, y2=top + plot_h + 4, stroke="currentColor",
                    stroke_opacity=0.6)
            svg.text(tx, top + plot_h + 16, label, size=10, anchor="middle", muted=True)
        last = alloc.last or history[-1]
        descs.append(f"{seg.name}: {alloc.snapshots} snapshots from {iso_minute(history[0].at)} "
                     f"to {iso_minute(last.at)}; last: " + ", ".join(
                         f"{t} {pct(v, 0)}" for t, v in last.allocation.items())
                     + (f"; pinned to {alloc.pinned}" if alloc.pinned else ""))
        y = top + plot_h + 28
    svg.desc = "Stacked shares over time, per segment. " + desc_join(descs)
    return svg.render(y)


# --- campaign progress --------------------------------------------------------------------------
def campaign_parts(campaign: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """What became of the debtors a campaign considered, in bar order: (category, label,
    count); refused and skipped by reason; 'remaining' = queued, not yet handled."""
    counts: Mapping[str, int] = campaign.get("counts") or {}
    parts: list[tuple[str, str, int]] = []
    for name in ("sent", "deferred"):
        if counts.get(name):
            parts.append((name, name, int(counts[name])))
    for prefix in ("refused", "skipped"):
        reasons = sorted(((k.split(":", 1)[1], int(n)) for k, n in counts.items()
                          if k.startswith(prefix + ":") and n), key=lambda kv: (-kv[1], kv[0]))
        parts += [(prefix, f"{prefix}: {reason}", n) for reason, n in reasons]
    if counts.get("cancelled"):
        parts.append(("cancelled", "cancelled", int(counts["cancelled"])))
    known = {"sent", "deferred", "cancelled", "planned", "planned_later"}
    for name, n in sorted(counts.items()):
        if n and name not in known and not name.startswith(("refused:", "skipped:")):
            parts.append(("other", name, int(n)))
    remaining = max(int(campaign.get("queued", 0)) - int(campaign.get("handled", 0)), 0)
    if remaining:
        parts.append(("remaining", "remaining", remaining))
    return parts


def campaign_chart(campaigns: Sequence[Mapping[str, Any]], *, limit: int = CAMPAIGN_LIMIT) -> str:
    """The latest campaigns, newest first: one bar each, 100 % = every debtor of the segment
    the campaign considered (sent, deferred, refused and skipped by reason, cancelled,
    remaining), with its state and the counts in text."""
    title = "Campaign progress"
    if not campaigns:
        return empty("campaigns", title, "No campaigns yet.")
    shown = list(campaigns[:limit])
    svg = Svg("campaigns", title, "")
    svg.text(16, 22, title + (f" (the latest {len(shown)} of {len(campaigns)})"
                              if len(campaigns) > len(shown) else ""), size=14, weight="600")
    below = wrapped(svg, 16, 40, "each bar: every debtor of the segment the campaign considered; "
                                 "refused = the contact rules said no; skipped = not due or not "
                                 "eligible")
    items = [(name, colour) for name, colour in CAMPAIGN_COLOURS.items() if name != "other"]
    y = legend(svg, 16, below + 8, [*items, ("remaining", "currentColor")], hollow=["remaining"]) + 4
    left, right = 16, WIDTH - 16
    descs = []
    for campaign in shown:
        parts = campaign_parts(campaign)
        total = sum(n for _c, _l, n in parts)
        counts = campaign.get("counts") or {}
        planned = int(counts.get("planned", campaign.get("queued", 0)))
        sent = int(counts.get("sent", 0))
        remaining = next((n for c, _l, n in parts if c == "remaining"), 0)
        y += 18
        head = f"{campaign.get('id', '?')} · step {campaign.get('step', '?')} · {campaign.get('state', '?')}"
        svg.text(left, y, head, size=12, weight="600")
        svg.text(right, y, f"{sent} sent of {planned} planned · {remaining} remaining", size=11,
                 anchor="end")
        bar_y = y + 6
        if total == 0:
            svg.text(left, bar_y + 12, "nothing considered yet (planning has not read a batch)",
                     size=11, muted=True)
        else:
            x = float(left)
            for category, label, n in parts:
                w = (right - left) * n / total
                tip = f"{campaign.get('id')}: {label} {n} ({pct(n / total)})"
                if category == "remaining":
                    svg.add("rect", tip, x=x + 0.5, y=bar_y + 0.5, width=max(w - 1, 0.5), height=15.0,
                            fill="currentColor", fill_opacity=0.06, stroke="currentColor",
                            stroke_opacity=0.5, stroke_dasharray="3 2")
                else:
                    svg.add("rect", tip, x=x, y=bar_y, width=w, height=16.0,
                            fill=CAMPAIGN_COLOURS[category], stroke="#FFFFFF", stroke_width=0.75)
                x += w
        detail = [f"{label} {n}" for category, label, n in parts
                  if category in ("refused", "skipped", "deferred", "cancelled", "other")]
        svg.text(left, bar_y + 30, " · ".join(detail) if detail else "nothing refused or skipped",
                 size=10, muted=True)
        descs.append(f"{head}: " + ", ".join(f"{label} {n}" for _c, label, n in parts))
        y = bar_y + 38
    svg.desc = "Progress of each campaign. " + desc_join(descs)
    return svg.render(y + 8)


# --- agent queue health -------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def queue_chart(queue: QueueHealth) -> str:
    """Conversations waiting for a person: by reason (most urgent first) and by how long they
    have waited, unclaimed and claimed apart; the oldest unclaimed wait in the heading."""
    title = "Agent queue health"
    if not queue.waiting:
        return empty("queue", title, "No conversation is waiting for a person.")
    heading = (f"{queue.waiting} waiting for a person: {queue.unclaimed} unclaimed, "
               f"{queue.claimed} claimed · oldest unclaimed wait {duration(queue.oldest())}")
    svg = Svg("queue", title, "")
    svg.text(16, 22, title, size=14, weight="600")
    below = wrapped(svg, 16, 40, heading, size=12, muted=False)
    y = legend(svg, 16, below + 8, [("unclaimed", QUEUE_COLOURS["unclaimed"]),
                                    ("claimed by an agent", QUEUE_COLOURS["claimed"])]) + 8
    reasons = queue.by_reason()
    label_w = 190
    left, right = 16 + label_w, WIDTH - 150
    ticks = count_ticks(max(u + c for _p, _r, u, c in reasons))
    top_count = ticks[-1]
    svg.text(16, y + 4, "by reason (priority: 0 = most urgent)", size=12, weight="600")
    y += 14
    block_top = y
    descs = []
    for priority, reason, unclaimed, claimed in reasons:
        y += 22
        cy = y - 7
        svg.text(16, cy, f"P{priority} · {reason}", size=12, dy="0.35em")
        x = float(left)
        for kind, n in (("unclaimed", unclaimed), ("claimed", claimed)):
            if n:
                w = (right - left) * n / top_count
                svg.add("rect", f"{reason}: {n} {kind}", x=x, y=cy - 7, width=w, height=14.0,
                        fill=QUEUE_COLOURS[kind])
                x += w
        svg.text(x + 6, cy, f"{unclaimed} unclaimed, {claimed} claimed", size=10, dy="0.35em")
        descs.append(f"priority {priority} {reason}: {unclaimed} unclaimed, {claimed} claimed")
    for tick in ticks:
        x = left + (right - left) * tick / top_count
        svg.add("line", x1=x, x2=x, y1=block_top, y2=y + 2, stroke="currentColor",
                stroke_opacity=0.12 if tick else 0.5)
        svg.text(x, y + 14, str(tick), size=10, anchor="middle", muted=True)
    svg.text((left + right) / 2, y + 28, "conversations", size=11, anchor="middle")
    # waiting-time distribution
    y += 52
    svg.text(16, y, "how long they have waited (since the hand-off)", size=12, weight="600")
    buckets = queue.by_wait()
    plot_top, plot_h = y + 26, 110
    bleft, bright = 56, WIDTH - 16
    ticks = count_ticks(max(u + c for _b, u, c in buckets))
    top_count = ticks[-1]
    for tick in ticks:
        ty = plot_top + plot_h * (1 - tick / top_count)
        svg.add("line", x1=float(bleft), x2=float(bright), y1=ty, y2=ty, stroke="currentColor",
                stroke_opacity=0.12 if tick else 0.5)
        svg.text(bleft - 6, ty, str(tick), size=10, anchor="end", dy="0.35em", muted=True)
    slot = (bright - bleft) / len(buckets)
    for k, (label, unclaimed, claimed) in enumerate(buckets):
        base = plot_top + plot_h
        for kind, n in (("unclaimed", unclaimed), ("claimed", claimed)):
            if n:
                h = plot_h * n / top_count
                svg.add("rect", f"waiting {label}: {n} {kind}", x=bleft + slot * k + slot * 0.2,
                        y=base - h, width=slot * 0.6, height=h, fill=QUEUE_COLOURS[kind])
                base -= h
        if unclaimed + claimed:
            svg.text(bleft + slot * (k + 0.5), base - 4, str(unclaimed + claimed), size=10,
                     anchor="middle")
        svg.text(bleft + slot * (k + 0.5), plot_top + plot_h + 15, label, size=11, anchor="middle")
        descs.append(f"waiting {label}: {unclaimed} unclaimed, {claimed} claimed")
    svg.desc = heading + ". " + desc_join(descs)
    return svg.render(plot_top + plot_h + 28)
