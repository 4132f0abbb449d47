"""`nudge payments|events|arrangements`: the command line of payment arrangements.

  nudge payments import FILE              record payments from a CSV (duplicates skipped)
  nudge events export --format csv|jsonl  the business events stream, streamed to a file
  nudge events status                     delivery of events to creditors: due, retrying
  nudge arrangements show DEBTOR          the debtor's arrangement, schedule and negotiation
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import redis.asyncio as aioredis
import typer
from rich.console import Console
from rich.table import Table

from service.arrangements import ArrangementBook, money
from service.business_events import BusinessEvents
from service.cli_common import settings_or_exit as _settings
from service.keys import Keys
from service.settings import Settings

payments_app = typer.Typer(no_args_is_help=True, help="Payments received (CSV import).")
events_app = typer.Typer(no_args_is_help=True, help="Business events: export, delivery status.")
arrangements_app = typer.Typer(no_args_is_help=True, help="Arrangements agreed with debtors.")
console = Console()
err = Console(stderr=True)


async def _with_redis(settings: Settings, work):
    client = aioredis.from_url(settings.redis_url)
    try:
        return await work(client, Keys(settings.key_prefix))
    finally:
        await client.aclose()


@payments_app.command("import")
def payments_import(path: Path = typer.Argument(..., exists=True, dir_okay=False,
                                                help="CSV: payment_id, debtor_id or reference, "
                                                     "amount, currency, paid_at")) -> None:
    """Record every good row; report every broken one with its line. Exit 1 if any broke."""
    from arq import create_pool
    from arq.connections import RedisSettings

    from service.payments import PaymentRecorder

    settings = _settings()

    async def work():
        pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
        try:
            recorder = PaymentRecorder(pool, Keys(settings.key_prefix), settings.queue_name)
            return await recorder.import_csv(path)
        finally:
            await pool.aclose()

    report = asyncio.run(work())
    console.print(f"{len(report.recorded)} recorded, {len(report.duplicates)} already recorded "
                  f"(skipped), {len(report.errors)} with errors")
    for error in report.errors:
        err.print(f"  line {error.line}: {error.message}")
    if report.errors:
        raise typer.Exit(1)


@events_app.command("export")
def events_export(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default: stdout)."),
    since: Optional[datetime] = typer.Option(None, help="Occurred at or after (ISO)."),
    until: Optional[datetime] = typer.Option(None, help="Occurred before (ISO)."),
    types: Optional[list[str]] = typer.Option(None, "--type", help="Only these types (repeat)."),
) -> None:
    """Every arrangement and payment event, oldest first, streamed (never all in memory)."""
    if fmt not in ("jsonl", "csv"):
        err.print("--format must be jsonl or csv")
        raise typer.Exit(2)
    settings = _settings()

    async def work(client, keys):
        events = BusinessEvents(client, keys)
        export = events.export_csv if fmt == "csv" else events.export_jsonl
        handle = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
        try:
            return await export(handle, since=since, until=until, types=types or None)
        finally:
            if out:
                handle.close()

    count = asyncio.run(_with_redis(settings, work))
    if out:
        console.print(f"{count} events written to {out}")


@events_app.command("status")
def events_status() -> None:
    """How delivery to the creditors' systems is going."""
    from service.creditor_config import load_creditor_config
    from service.creditor_webhooks import CreditorWebhooks

    settings = _settings()

    async def work(client, keys):
        hooks = CreditorWebhooks(client, keys, load_creditor_config(settings.policies_dir / "creditors.yml"), {})
        try:
            return await hooks.pending_summary()
        finally:
            await hooks.close()

    summary = asyncio.run(_with_redis(settings, work))
    table = Table("what", "value")
    for name, value in summary.items():
        table.add_row(str(name), str(value))
    console.print(table)


@arrangements_app.command("show")
def arrangements_show(debtor: str) -> None:
    """The debtor's current arrangement with its schedule, and the negotiation so far."""
    settings = _settings()

    async def work(client, keys):
        book = ArrangementBook(client, keys)
        return await book.current(debtor), await book.history(debtor), await book.negotiation(debtor)

    current, history, negotiation = asyncio.run(_with_redis(settings, work))
    if current is None:
        console.print(f"{debtor} has no arrangement")
    else:
        console.print(f"[bold]{current.id}[/bold] {current.kind}, {current.state}: "
                      f"{money(current.total_minor, current.currency)} {current.currency}")
        table = Table("#", "due", "amount", "paid", "state")
        today = datetime.now().date()
        for inst in current.instalments:
            table.add_row(str(inst.number), inst.due.isoformat(),
                          money(inst.amount_minor, current.currency),
                          money(inst.paid_minor, current.currency), inst.state(today))
        console.print(table)
    for old in history:
        console.print(f"earlier: {old.id} {old.kind} {old.state} "
                      f"{money(old.total_minor, old.currency)} {old.currency}")
    if negotiation.offers or negotiation.asks:
        console.print(f"negotiation: {negotiation.rounds} rounds, {len(negotiation.offers)} offers, "
                      f"{len(negotiation.asks)} counter-offers"
                      + (", hardship" if negotiation.hardship else ""))
