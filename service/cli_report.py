"""`nudge report`: how the tones do per segment: tables in the terminal, report.json and charts.

  nudge report [--out DIR] [--segment NAME] [--json-only]

DIR defaults to reports/<UTC timestamp>. The numbers and how they are made: service/report.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import redis.asyncio as aioredis
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from service.cli_common import segment_book_or_exit as _book
from service.cli_common import settings_or_exit as _settings
from service.keys import Keys
from service.report import NO_DATA, Rate, Report, SegmentReport, ToneRow, gather_report, write_charts

console = Console()
err = Console(stderr=True)


def report_command(
    out: Annotated[Optional[Path], typer.Option(
        "--out", file_okay=False,
        help="Directory for report.json and the charts (default: reports/<UTC timestamp>).")] = None,
    segment: Annotated[Optional[str], typer.Option("--segment", help="Only this segment.")] = None,
    json_only: Annotated[bool, typer.Option(
        "--json-only", help="Write report.json only: no tables, no charts.")] = False,
) -> None:
    """Conversion, reply rate, allocation and lift over the holdout per segment and tone (95 %
    intervals), from the outcomes Redis holds. Writes report.json and charts (PNG, SVG)."""
    settings = _settings()
    book = _book(settings)
    now = time.time()
    out = out or Path("reports") / datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")

    async def gather() -> Report:
        client = aioredis.from_url(settings.redis_url)
        try:
            return await gather_report(client, Keys(settings.key_prefix), book, now=now,
                                       segment=segment)
        finally:
            await client.aclose()

    try:
        report = asyncio.run(gather())
    except RedisError as error:
        err.print(f"[red]cannot read Redis at {settings.redis_url}:[/red] {error}")
        raise typer.Exit(1) from None
    if segment and segment not in book.names and not report.segments:
        err.print(f"[red]no segment {segment!r}[/red]; the segments are {', '.join(book.names)}")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(report.to_json(), encoding="utf-8")
    if report.empty:
        where = f" in segment {segment}" if segment else ""
        console.print(NO_DATA if not where else NO_DATA.replace(" yet", f"{where} yet"))
        console.print(f"wrote {json_path}", highlight=False)
        return
    if json_only:
        console.print(f"wrote {json_path}", highlight=False)
        return
    for seg in report.segments:
        console.print(_segment_table(seg, report))
        console.print()
    if report.campaigns:
        console.print(_campaign_table(report))
    charts = write_charts(report, out)
    console.print("wrote:", highlight=False)
    for path in [json_path, *charts]:
        console.print(f"  {path}", highlight=False)


# --- tables ----------------------------------------------------------------------------------
def _segment_table(seg: SegmentReport, report: Report) -> Table:
    counts = seg.counts()
    title = (f"[bold]{seg.name}[/bold]: {counts['sent']} sent, {counts['resolved']} resolved, "
             f"{counts['success']} successes")
    if not seg.in_book:
        title += " (not in segments.yml)"
    table = Table(title=title, caption=_caption(seg, report), caption_justify="left",
                  title_justify="left")
    for name, justify in (("tone", "left"), ("channel", "left"), ("sent", "right"),
                          ("delivered", "right"), ("replied", "right"), ("resolved", "right"),
                          ("conversion [95 % CI]", "right"), ("allocation", "right"),
                          ("IPW conv. [95 % CI]", "right")):
        table.add_column(name, justify=justify)
    alloc = seg.allocation
    for tone in seg.tones:
        for row in (r for r in seg.rows if r.tone == tone):
            table.add_row(*_cells(row), "", "")
        total = seg.total(tone)
        if total is None:
            continue
        share = ""
        if alloc is not None and tone in alloc.current:
            share = f"{alloc.current[tone]:.0%}"
            if tone in alloc.suspended:
                share += " (suspended)"
            elif alloc.pinned == tone:
                share += " (pinned)"
        ipw = seg.ipw.get(tone)
        ipw_cell = ""
        if ipw is not None and ipw.estimate is not None and ipw.interval is not None:
            low, high = ipw.interval
            ipw_cell = f"{ipw.estimate:.1%} [{low:.1%}–{high:.1%}] n={ipw.assignments}"
        table.add_row(*_cells(total), share, ipw_cell, style="bold")
    return table


def _cells(row: ToneRow) -> list[str]:
    c = row.counts
    return [row.tone, row.channel, str(c["sent"]), _percent(row.delivered_rate),
            _percent(row.reply_rate), str(c["resolved"]), _with_interval(row.conversion)]


def _percent(rate: Rate) -> str:
    return "–" if rate.rate is None else f"{rate.rate:.1%}"


def _with_interval(rate: Rate) -> str:
    if rate.rate is None or rate.interval is None:
        return "–"
    low, high = rate.interval
    return f"{rate.rate:.1%} [{low:.1%}–{high:.1%}]"


def _caption(seg: SegmentReport, report: Report) -> str:
    lines = []
    if seg.lift is not None:
        d, low, high = seg.lift.difference
        t, h = seg.lift.treated, seg.lift.holdout
        lines.append(f"lift over holdout ({seg.lift.holdout_tone}): {d * 100:+.1f} pts "
                     f"[{low * 100:+.1f} to {high * 100:+.1f}] — bandit+pinned {t.rate:.1%} of "
                     f"{t.of} vs holdout {h.rate:.1%} of {h.of} resolved (Newcombe 95 %)")
    else:
        lines.append("lift over holdout: not yet (needs resolved messages in both the holdout "
                     "and the bandit/pinned groups)")
    alloc = seg.allocation
    if alloc is not None:
        if alloc.last is not None:
            shares = ", ".join(f"{t} {v:.0%}" for t, v in alloc.last.allocation.items())
            lines.append(f"last logged allocation ({alloc.last.to_dict()['at_iso']}): {shares}"
                         f" — {alloc.snapshots} snapshots")
        if alloc.pinned:
            lines.append(f"pinned to {alloc.pinned} by a manager")
        for tone, why in alloc.suspended.items():
            lines.append(f"{tone} suspended: {why}")
    counts = seg.counts()
    still_open = counts["sent"] - counts["resolved"]
    if still_open > 0:
        lines.append(f"{still_open} messages still in their {report.success_days}-day success window: "
                     "conversion already counts their successes but not yet their failures "
                     "(reads high until they close)")
    lines.append(f"IPW: {seg.ipw_assignments} bandit assignments from the tone log whose window has "
                 "closed; allocation = the bandit's share now (recomputed, seeded)")
    return "\n".join(lines)


def _campaign_table(report: Report) -> Table:
    table = Table(title="campaigns (newest first)", title_justify="left")
    for name in ("id", "segment", "step", "state", "created (UTC)", "sent"):
        table.add_column(name)
    for c in report.campaigns[:20]:
        table.add_row(c["id"], c["segment"], str(c["step"]), c["state"], c["created_at_iso"],
                      str(c["sent"]))
    return table
