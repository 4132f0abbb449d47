"""The results dashboard (#7): how the tones do per segment, the bandit's allocation over
time, campaign progress and the agent queue's health, as charts with the exact numbers in
tables under them. Read-only; supervisors, managers and admins (``dashboard.view``).

    GET /console/dashboard[?segment=NAME]                 the page (charts inline)
    GET /console/dashboard/charts/{name}.svg[?segment=]   one chart (service/console/charts.py)
    GET /console/api/dashboard[?segment=]                 the report (service/report.py) + queue

The figures come from :func:`service.report.gather_report` (what `nudge report` shows) and the
agent queue (``Keys.agent_queue`` and each conversation's hash). Gathering reads the whole tone
log, so one result per segment filter is kept for ``CACHE_SECONDS``; after that the old one is
still shown while one gathering (never two at once per filter) makes the next. The charts are
drawn in a worker thread, off the gateway's event loop. The queue figures hold no
conversation ids: this page is about volumes, the inbox is where people are.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup
from redis.asyncio import Redis

from bot.core.segments import SegmentBook, load_segment_book
from service import appkeys as K
from service.console import auth, charts
from service.console.charts import QueueHealth, QueueItem
from service.conversations import PRIORITY
from service.keys import Keys
from service.logs import get_logger
from service.report import Rate, Report, gather_report

log = get_logger("console.dashboard")

CACHE_SECONDS = 30.0
ALL = ""                                   # the cache key of "every segment"


async def queue_health(redis: Redis, keys: Keys, now: float) -> QueueHealth:
    """Every conversation in the agent queue, claimed or not, read in one round trip."""
    members = await redis.zrange(keys.agent_queue, 0, -1, withscores=True)
    ids = [m.decode() if isinstance(m, bytes) else str(m) for m, _score in members]
    async with redis.pipeline(transaction=False) as pipe:
        for conversation_id in ids:
            pipe.hmget(keys.conversation(conversation_id), ["reason", "agent", "waiting_since",
                                                             "priority"])
        rows = await pipe.execute() if ids else []
    items = []
    for (_member, score), (reason, agent, since, priority) in zip(members, rows, strict=True):
        reason_text = _s(reason) or "unknown"
        try:   # the queue's score is priority * 1e11 + the hand-off time
            level = int(_s(priority)) if priority else int(score // 1e11)
        except ValueError:
            level = PRIORITY.get(reason_text, 5)
        waiting = now - float(_s(since)) if since else None
        items.append(QueueItem(reason_text, level, bool(_s(agent)), waiting))
    return QueueHealth(tuple(items), now)


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Results:
    """One gathering: the report, the queue, the charts drawn from them."""

    report: Report
    queue: QueueHealth
    svgs: dict[str, str]
    at: float
    took: float


@dataclass
class Dashboard:
    redis: Redis
    keys: Keys
    book: SegmentBook
    ttl: float = CACHE_SECONDS
    clock: Callable[[], float] = time.time
    _cache: dict[str, Results] = field(default_factory=dict)
    _pending: dict[str, asyncio.Task[Results]] = field(default_factory=dict)

    async def results(self, segment: str | None) -> Results:
        """The figures for `segment` (None: all). Fresh ones (under `ttl` seconds old) at once;
        older ones at once too while new ones are gathered in the background (gathering reads
        the whole tone log: seconds on a big one); only the very first request waits. The
        gathering runs as its own task, so a request that goes away does not cancel it."""
        key = segment or ALL
        cached = self._cache.get(key)
        if cached is not None and self.clock() - cached.at < self.ttl:
            return cached
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._gather(segment))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        if cached is not None:
            return cached
        return await asyncio.shield(task)

    async def settled(self) -> None:
        """Wait for the gatherings under way (tests; shutdown)."""
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    def _finished(self, key: str, task: asyncio.Task[Results]) -> None:
        self._pending.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()        # retrieved here, so a background failure is not lost
        if error is None:
            self._cache[key] = task.result()
        else:
            log.warning("dashboard_gather_failed", segment=key or "all", error=repr(error)[:200])

    async def _gather(self, segment: str | None) -> Results:
        started = time.perf_counter()
        now = self.clock()
        report = await gather_report(self.redis, self.keys, self.book, now=now, segment=segment)
        queue = await queue_health(self.redis, self.keys, now)
        svgs = await asyncio.get_running_loop().run_in_executor(None, _draw, report, queue)
        took = time.perf_counter() - started
        log.info("dashboard_gathered", segment=segment or "all", seconds=round(took, 3),
                 tone_log_entries=report.log.entries)
        return Results(report, queue, svgs, now, took)


def _draw(report: Report, queue: QueueHealth) -> dict[str, str]:
    return {name: charts.render(name, report, queue) for name in charts.CHARTS}


DASHBOARD = web.AppKey("console_dashboard", Dashboard)


def add_routes(app: web.Application) -> None:
    async def dashboard_ctx(app: web.Application):
        book = load_segment_book(app[K.SETTINGS].policies_dir / "segments.yml")
        app[DASHBOARD] = Dashboard(app[K.REDIS], app[K.KEYS], book)
        yield
        for task in list(app[DASHBOARD]._pending.values()):
            task.cancel()
        await app[DASHBOARD].settled()

    app.cleanup_ctx.append(dashboard_ctx)
    app.router.add_get("/console/dashboard", dashboard_page)
    app.router.add_get("/console/dashboard/charts/{name}.svg", chart_svg)
    app.router.add_get("/console/api/dashboard", dashboard_json)


def _segment(request: web.Request) -> str | None:
    """The segment filter: one of segments.yml's names, or None for all."""
    name = request.query.get("segment", "").strip()
    if not name:
        return None
    if name not in request.app[DASHBOARD].book.names:
        raise _BadSegment(name)
    return name


class _BadSegment(Exception):
    pass


def _no_segment(request: web.Request, name: str) -> web.Response:
    names = ", ".join(request.app[DASHBOARD].book.names)
    return auth.error(request, 400, f"There is no segment {name[:40]!r}; the segments are {names}.")


@auth.requires("dashboard.view")
async def chart_svg(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in charts.CHARTS:
        return auth.error(request, 404, f"No chart {name[:40]!r}; the charts are "
                                        f"{', '.join(charts.CHARTS)}.")
    try:
        segment = _segment(request)
    except _BadSegment as bad:
        return _no_segment(request, str(bad))
    results = await request.app[DASHBOARD].results(segment)
    return web.Response(text=results.svgs[name], content_type="image/svg+xml", headers={
        "Content-Disposition": f'inline; filename="{name}{"-" + segment if segment else ""}.svg"'})


@auth.requires("dashboard.view")
async def dashboard_json(request: web.Request) -> web.Response:
    try:
        segment = _segment(request)
    except _BadSegment as bad:
        return _no_segment(request, str(bad))
    results = await request.app[DASHBOARD].results(segment)
    return web.json_response({"generated_at": results.at, "report": results.report.to_dict(),
                              "queue": results.queue.to_dict()},
                             dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


@auth.requires("dashboard.view")
async def dashboard_page(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    try:
        segment = _segment(request)
    except _BadSegment as bad:
        return _no_segment(request, str(bad))
    results = await dashboard.results(segment)
    report = results.report
    return auth.render(request, "console/dashboard.html", {
        "segments": list(dashboard.book.names),
        "segment": segment or "",
        "query": "?" + urlencode({"segment": segment}) if segment else "",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(results.at)),
        "refresh_seconds": int(dashboard.ttl),
        "empty": report.empty,
        "charts": {name: Markup(svg) for name, svg in results.svgs.items()},   # built escaped
        "chart_names": charts.CHARTS,
        "swatch": lambda tone: Markup(charts.tone_swatch(tone)),
        "tables": tables(report, results.queue),
    })


# --- the numbers under the charts ----------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _rate(rate: Rate) -> dict[str, str]:
    low, high = rate.interval or (None, None)
    return {"rate": _pct(rate.rate), "interval": "–" if low is None else f"{_pct(low)}–{_pct(high)}",
            "count": str(rate.count), "of": str(rate.of)}


def tables(report: Report, queue: QueueHealth) -> dict[str, Any]:
    """What the tables under the charts show, as plain rows (the template only prints)."""
    funnel: list[dict[str, Any]] = []
    conversion: list[dict[str, Any]] = []
    allocation: list[dict[str, Any]] = []
    allocation_logs: list[dict[str, Any]] = []
    for seg in report.segments:
        for row in seg.totals:
            sent = row.counts.get("sent", 0)
            funnel.append({"segment": seg.name, "tone": row.tone, "sent": sent, "stages": [
                (row.counts.get(stage, 0), _pct(row.counts.get(stage, 0) / sent) if sent else "–")
                for stage in charts.FUNNEL[1:]]})
            groups = ", ".join(f"{g} {c['success']}/{c['resolved']}" for g, c in row.groups.items())
            conversion.append({"segment": seg.name, "tone": row.tone, "kind": "tone",
                               **_rate(row.conversion), "groups": groups})
        holdout = charts.holdout_rate(seg)
        if holdout.of:
            conversion.append({"segment": seg.name, "tone": report.holdout_tone, "kind": "holdout",
                               **_rate(holdout), "groups": "holdout"})
        if seg.lift is not None:
            d, low, high = seg.lift.difference
            conversion.append({"segment": seg.name, "tone": "", "kind": "lift",
                               "rate": f"{d * 100:+.1f} pts",
                               "interval": f"{low * 100:+.1f} to {high * 100:+.1f} pts",
                               "count": str(seg.lift.treated.count), "of": str(seg.lift.treated.of),
                               "groups": f"bandit + pinned {seg.lift.treated.count}/"
                                         f"{seg.lift.treated.of} vs holdout "
                                         f"{seg.lift.holdout.count}/{seg.lift.holdout.of}"})
        alloc = seg.allocation
        if alloc is not None:
            last = alloc.last
            for tone in alloc.tones:
                arm = alloc.arms.get(tone)
                notes = []
                if tone in alloc.suspended:
                    notes.append(f"suspended: {alloc.suspended[tone]}")
                if alloc.pinned == tone:
                    notes.append("pinned")
                allocation.append({
                    "segment": seg.name, "tone": tone, "now": _pct(alloc.current.get(tone)),
                    "logged": _pct(last.allocation.get(tone)) if last else "–",
                    "successes": arm.successes if arm else 0, "failures": arm.failures if arm else 0,
                    "notes": "; ".join(notes)})
            allocation_logs.append({
                "segment": seg.name, "snapshots": alloc.snapshots,
                "last_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last.at)) if last else "never"})
    campaigns = []
    for campaign in report.campaigns[:charts.CAMPAIGN_LIMIT]:
        parts = charts.campaign_parts(campaign)
        counts = campaign.get("counts") or {}

        def total(category: str, parts=parts) -> int:
            return sum(n for c, _label, n in parts if c == category)

        campaigns.append({
            "id": campaign["id"], "segment": campaign["segment"], "step": campaign["step"],
            "state": campaign["state"],
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(campaign["created_at"])),
            "planned": counts.get("planned", campaign.get("queued", 0)), "sent": total("sent"),
            "deferred": total("deferred"), "refused": total("refused"), "skipped": total("skipped"),
            "cancelled": total("cancelled"), "remaining": total("remaining"),
            "reasons": ", ".join(f"{label} {n}" for c, label, n in parts
                                 if c not in ("sent", "remaining"))})
    return {"funnel": funnel, "funnel_stages": charts.FUNNEL[1:], "conversion": conversion,
            "allocation": allocation, "allocation_logs": allocation_logs, "campaigns": campaigns,
            "campaigns_total": len(report.campaigns),
            "queue": {"waiting": queue.waiting, "claimed": queue.claimed,
                      "unclaimed": queue.unclaimed,
                      "oldest_unclaimed": charts.duration(queue.oldest()),
                      "oldest": charts.duration(queue.oldest(claimed=None)),
                      "by_reason": queue.by_reason(), "by_wait": queue.by_wait()}}
