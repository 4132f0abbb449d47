"""`nudge campaign|segments|tone`: segments, campaigns and the tone bandit from the command line.

  nudge segments check                       validate policies/segments.yml, list the segments
  nudge segments count                       how many debtors each segment has today
  nudge campaign start --segment S --step N  start a campaign (the worker plans and sends it);
                                             shows its progress until done (--no-watch: return)
  nudge campaign status|watch|pause|resume|cancel ID
  nudge campaign list
  nudge tone pin --segment S --tone T --by USER   a manager pins a tone (password asked)
  nudge tone unpin --segment S --by USER
  nudge tone show                            the bandit's allocation, pins and suspensions
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.campaigns import CampaignError, Campaigns, CampaignStatus
from service.cli_common import segment_book_or_exit as _book
from service.cli_common import settings_or_exit as _settings
from service.keys import Keys
from service.settings import Settings

campaign_app = typer.Typer(no_args_is_help=True, help="Campaigns: one workflow step for a segment.")
segments_app = typer.Typer(no_args_is_help=True, help="Segments (policies/segments.yml).")
tone_app = typer.Typer(no_args_is_help=True, help="The tone bandit: allocation, pins.")
console = Console()
err = Console(stderr=True)


async def _with(settings: Settings, work):
    from arq import create_pool
    from arq.connections import RedisSettings

    client = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    try:
        keys = Keys(settings.key_prefix)
        return await work(client, keys, Campaigns(client, keys, _book(settings),
                                                  queue_name=settings.queue_name))
    finally:
        await client.aclose()


def _fail(error: Exception) -> None:
    err.print(f"[red]{error}[/red]")
    raise typer.Exit(1) from None


# --- segments ------------------------------------------------------------------------------
@segments_app.command("check")
def segments_check() -> None:
    """Validate policies/segments.yml and show each segment's rules and workflow."""
    book = _book(_settings())
    table = Table(title=f"{len(book.segments)} segments (first match wins)")
    for column in ("segment", "when", "steps (day: template)", "channels", "tones"):
        table.add_column(column)
    for seg in book.segments:
        when = {k: v for k, v in seg.when.__dict__.items() if v not in (None, (None, None))}
        table.add_row(seg.name, ", ".join(f"{k}={_show(v)}" for k, v in when.items()) or "everyone else",
                      ", ".join(f"{s.day}: {s.template}" for s in seg.workflow.steps),
                      " > ".join(seg.workflow.channels), ", ".join(seg.workflow.tones))
    console.print(table)
    console.print(f"success: {', '.join(sorted(book.success_outcomes))} within {book.success_days} days; "
                  f"holdout {book.bandit.holdout_share:.0%} on {book.bandit.holdout_tone}; "
                  f"exploration floor {book.bandit.exploration_floor:.0%}")


def _show(value) -> str:
    if isinstance(value, tuple):
        low, high = value
        return f"{low if low is not None else ''}..{high if high is not None else ''}"
    if isinstance(value, frozenset):
        return "|".join(sorted(value))
    return str(value)


@segments_app.command("count")
def segments_count() -> None:
    """How many debtors fall in each segment today (streams the portfolio)."""
    from bot.core.debtors import Debtor

    settings = _settings()

    async def count(client, keys, campaigns):
        book, counts, today = campaigns.book, dict.fromkeys(campaigns.book.names, 0), datetime.now(UTC).date()
        counts["(none)"] = 0
        async for batch in _batches(client.sscan_iter(keys.debtor_index, count=1000), 1000):
            for raw in await client.mget([keys.debtor(i.decode()) for i in batch]):
                if raw:
                    seg = book.segment_of(Debtor.from_json(raw), today)
                    counts[seg.name if seg else "(none)"] += 1
        return counts

    table = Table("segment", "debtors")
    for name, n in _run(settings, count).items():
        table.add_row(name, str(n))
    console.print(table)


async def _batches(iterator, size: int):
    batch = []
    async for item in iterator:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run(settings: Settings, work):
    return asyncio.run(_with(settings, work))


# --- campaigns -----------------------------------------------------------------------------
@campaign_app.command("start")
def campaign_start(
    segment: str = typer.Option(..., help="A segment of policies/segments.yml."),
    step: int = typer.Option(1, min=1, help="The workflow step (1 = the first message)."),
    by: str = typer.Option(os.environ.get("USER", "cli"), "--by", help="Who starts it (audit)."),
    follow: bool = typer.Option(True, help="Schedule the later steps at their day offsets."),
    watch: bool = typer.Option(True, help="Show progress until it is done (Ctrl-C only stops watching)."),
) -> None:
    """Start a campaign: the worker selects the segment's debtors due this step, plans each
    message through the contact rules and sends them paced per sender."""
    settings = _settings()

    async def start(client, keys, campaigns):
        from service.audit import AuditLog

        campaign_id = await campaigns.start(segment, step, by=by, follow=follow)
        await AuditLog(client, keys, settings.pseudonym_key).record(
            by, "campaign.start", campaign=campaign_id, segment=segment, step=step)
        return campaign_id

    try:
        campaign_id = _run(settings, start)
    except CampaignError as error:
        _fail(error)
    console.print(f"campaign [bold]{campaign_id}[/bold] started "
                  f"(segment {segment}, step {step}); the worker plans and sends it")
    if watch:
        _watch(settings, campaign_id)


@campaign_app.command("watch")
def campaign_watch(campaign_id: str) -> None:
    """Show a campaign's progress until it is done, paused or cancelled."""
    _watch(_settings(), campaign_id)


def _watch(settings: Settings, campaign_id: str, *, interval: float = 0.5) -> None:
    async def watch(client, keys, campaigns):
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[detail]}"))
        with Progress(*columns, console=console, transient=False) as progress:
            planning = progress.add_task("planning", total=None, detail="")
            sending = progress.add_task("sending ", total=None, detail="")
            quiet_since = time.monotonic()
            while True:
                status = await campaigns.status(campaign_id)
                progress.update(planning, completed=status.scanned,
                                total=max(status.total_debtors, status.scanned),
                                detail=f"{status.counts.get('planned', 0)} planned")
                progress.update(sending, completed=status.handled, total=status.queued or None,
                                detail=_summary(status))
                if status.state in ("done", "cancelled", "paused"):
                    return status
                if status.scanned == 0 and time.monotonic() - quiet_since > 10:
                    progress.update(planning, detail="waiting for a worker (is `make run` up?)")
                await asyncio.sleep(interval)

    try:
        status = _run(settings, watch)
    except KeyboardInterrupt:
        console.print("stopped watching; the campaign goes on")
        return
    except CampaignError as error:
        _fail(error)
    console.print(f"{campaign_id}: {status.state}")
    _print_status(status)


def _summary(status: CampaignStatus) -> str:
    c = status.counts
    refused = sum(v for k, v in c.items() if k.startswith("refused:"))
    return f"sent {c.get('sent', 0)} · deferred {c.get('deferred', 0)} · refused {refused}"


def _print_status(status: CampaignStatus) -> None:
    table = Table(title=f"{status.id} — segment {status.segment}, step {status.step} "
                        f"(run {status.run}) — {status.state}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("debtors read", f"{status.scanned} of {status.total_debtors}")
    table.add_row("queued", str(status.queued))
    table.add_row("handled", str(status.handled))
    for name, n in sorted(status.counts.items()):
        table.add_row(name, str(n))
    console.print(table)
    if status.next_step_at:
        at = datetime.fromtimestamp(status.next_step_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"next step scheduled for {at}")


@campaign_app.command("status")
def campaign_status(campaign_id: str) -> None:
    """A campaign's state and counts: planned, sent, deferred, refused (by reason), skipped."""
    try:
        status = _run(_settings(), lambda c, k, campaigns: campaigns.status(campaign_id))
    except CampaignError as error:
        _fail(error)
    _print_status(status)


@campaign_app.command("list")
def campaign_list(limit: int = typer.Option(20, min=1)) -> None:
    """The latest campaigns."""
    rows = _run(_settings(), lambda c, k, campaigns: campaigns.list(limit))
    table = Table("campaign", "segment", "step", "state", "handled / queued", "sent", "started by")
    for s in rows:
        table.add_row(s.id, s.segment, str(s.step), s.state, f"{s.handled} / {s.queued}",
                      str(s.counts.get("sent", 0)), s.created_by)
    console.print(table if rows else "no campaigns yet — `nudge campaign start --segment ... --step 1`")


def _control(action: str):
    def command(campaign_id: str,
                by: str = typer.Option(os.environ.get("USER", "cli"), "--by", help="Who (audit).")) -> None:
        settings = _settings()

        async def act(client, keys, campaigns):
            from service.audit import AuditLog

            state = await campaigns.set_state(campaign_id, action, by=by)
            await AuditLog(client, keys, settings.pseudonym_key).record(
                by, f"campaign.{action}", campaign=campaign_id)
            return state

        try:
            state = _run(settings, act)
        except CampaignError as error:
            _fail(error)
        console.print(f"{campaign_id}: {state}")
    command.__doc__ = {"pause": "Pause: nothing more is planned or sent until resumed.",
                       "resume": "Resume a paused campaign where it stopped.",
                       "cancel": "Cancel: what was not sent yet is dropped."}[action]
    return command


for _action in ("pause", "resume", "cancel"):
    campaign_app.command(_action)(_control(_action))


# --- tone ----------------------------------------------------------------------------------
def _pin(segment: str, tone: str | None, by: str) -> None:
    from service.audit import AuditLog
    from service.tone_chooser import ToneChooser
    from service.users import UserError, Users

    settings = _settings()
    password = os.environ.get("NUDGE_PASSWORD") or typer.prompt("Password", hide_input=True)

    async def pin(client, keys, campaigns):
        role = await Users(client, keys).authenticate(by, password)
        if role not in ("manager", "admin"):
            await AuditLog(client, keys, settings.pseudonym_key).record(
                by, "tone.pin.refused", segment=segment, role=role)
            raise UserError(f"{by} is {role}; only a manager or an admin may pin a tone")
        await ToneChooser(client, keys, campaigns.book).pin(segment, tone)
        await AuditLog(client, keys, settings.pseudonym_key).record(
            by, "tone.pin" if tone else "tone.unpin", segment=segment, tone=tone or "")

    try:
        _run(settings, pin)
    except (UserError, ValueError, KeyError) as error:
        _fail(error)
    console.print(f"{segment}: {'pinned to ' + tone if tone else 'back to the bandit'}")


@tone_app.command("pin")
def tone_pin(segment: str = typer.Option(...), tone: str = typer.Option(...),
             by: str = typer.Option(..., "--by", help="Your username (a manager).")) -> None:
    """Pin a segment's tone (the bandit is bypassed; holdout and guardrails still apply)."""
    _pin(segment, tone, by)


@tone_app.command("unpin")
def tone_unpin(segment: str = typer.Option(...),
               by: str = typer.Option(..., "--by", help="Your username (a manager).")) -> None:
    """Give the segment back to the bandit."""
    _pin(segment, None, by)


@tone_app.command("show")
def tone_show() -> None:
    """Per segment: each tone's successes and failures, its share now, pins and suspensions."""
    from service.tone_chooser import ToneChooser

    async def show(client, keys, campaigns):
        chooser = ToneChooser(client, keys, campaigns.book)
        rows = []
        for seg in campaigns.book.segments:
            state = await chooser.state(seg)
            arms = await chooser.outcomes.arms(seg.name, seg.workflow.tones)
            for tone in seg.workflow.tones:
                rows.append((seg.name, tone, arms[tone], state.allocation.get(tone),
                             state.suspended.get(tone, ""), state.pinned == tone))
        return rows

    table = Table("segment", "tone", "successes", "failures", "share now", "note")
    for segment, tone, arm, share, suspended, pinned in _run(_settings(), show):
        note = "pinned" if pinned else (f"suspended: {suspended}" if suspended else "")
        table.add_row(segment, tone, str(arm.successes), str(arm.failures),
                      f"{share:.0%}" if share is not None else "—", note)
    console.print(table)
