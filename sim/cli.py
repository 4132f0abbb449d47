"""`nudge simulate`: simulated debtors answering the real campaign system for some weeks, and
how the tone bandit did against fixed tones and uniform random choice (sim/run.py).

  nudge simulate [--weeks 8] [--debtors-per-week 600] [--seed 1] [--out reports/sim]
                 [--redis-url URL]
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
DEFAULT_OUT = Path("reports/sim")
err = Console(stderr=True)


def simulate_command(
    weeks: int = typer.Option(8, "--weeks", min=1, max=52, help="Simulated weeks."),
    debtors_per_week: int = typer.Option(600, "--debtors-per-week", min=1, max=99_999,
                                         help="New synthetic debtors each week."),
    seed: int = typer.Option(1, "--seed", help="Seeds the debtors, their behaviour and the bandit."),
    out: Annotated[Path, typer.Option(
        "--out", file_okay=False,
        help="Directory for sim.json, regret.png/.svg and allocation.png.")] = DEFAULT_OUT,
    redis_url: Optional[str] = typer.Option(
        None, "--redis-url",
        help="A SCRATCH Redis database to run in: it is FLUSHED first. Refused when it holds "
             "debtors that are not the simulator's (ids not starting with S-) or other data. "
             "Default: a temporary redis-server of its own, stopped at the end."),
) -> None:
    """Simulate debtors answering the real campaign system (contact rules, send path,
    campaigns, tone bandit) over simulated weeks, and measure the bandit's regret against
    always-soft, the best fixed tone and uniform random choice. Needs a scratch Redis: the
    one it runs in is flushed (by default it starts its own)."""
    from service.logs import configure_logging
    from sim.run import simulate

    configure_logging("WARNING")
    server: subprocess.Popen | None = None
    scratch: tempfile.TemporaryDirectory | None = None
    if redis_url is None:
        server, scratch, redis_url = _start_redis()
    else:
        problem = _not_scratch(redis_url)
        if problem:
            err.print(f"[red]refused:[/red] {problem}")
            raise typer.Exit(2)
    total_days = weeks * 7
    began = time.monotonic()
    try:
        with Progress(TextColumn("simulated days"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            task = bar.add_task("days", total=total_days)
            result = asyncio.run(simulate(
                redis_url, weeks=weeks, debtors_per_week=debtors_per_week, seed=seed,
                out_dir=out, progress=lambda done, _total: bar.update(task, completed=done)))
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if scratch is not None:
            scratch.cleanup()
    _print(result, time.monotonic() - began)


def _print(result, elapsed: float) -> None:
    fixed = result.fixed_best_tone
    policies = ["bandit", "fixed_soft"] + ([f"fixed_{fixed}"] if fixed != "soft" else []) + ["uniform"]
    table = Table(title=f"Tone bandit, {result.parameters['weeks']} simulated weeks: cumulative "
                        "regret (expected successes lost against the best tone)",
                  box=box.SIMPLE_HEAD)
    table.add_column("segment", no_wrap=True)
    table.add_column("messages\n(bandit)", justify="right", no_wrap=True)
    table.add_column("best tone", no_wrap=True)
    table.add_column("P(best)\nat end", justify="right")
    table.add_column("best picks\nlast week", justify="right")
    for policy in policies:
        table.add_column("regret\n" + {"bandit": "bandit", "fixed_soft": "always\nsoft",
                                       "uniform": "uniform"}.get(policy, f"always\n{policy[6:]}"),
                         justify="right")

    def regrets(values: dict[str, float]) -> list[str]:
        return [f"{values.get(p, 0.0):.1f}" for p in policies]

    for name, seg in result.segments.items():
        share = seg.best_share_last_week
        table.add_row(name, f"{seg.messages}\n({seg.bandit_messages})", seg.best_tone,
                      f"{seg.allocation.get(seg.best_tone, 0):.0%}" if seg.allocation else "-",
                      f"{share:.0%}" if share is not None else "-", *regrets(seg.regret))
    table.add_row("[bold]overall[/bold]",
                  f"{sum(s.messages for s in result.segments.values())}\n"
                  f"({sum(s.bandit_messages for s in result.segments.values())})", "", "", "",
                  *regrets(result.regret), end_section=True)
    console.print(table)
    counts = result.counts
    console.print(f"{counts.get('debtors', 0)} debtors, {counts.get('campaign_messages', 0)} "
                  f"campaign messages ({counts.get('group:holdout', 0)} holdout), "
                  f"{counts.get('promise_made', 0)} promises, "
                  f"{counts.get('payment_received', 0)} payments, "
                  f"{counts.get('replied', 0)} other replies, {counts.get('opted_out', 0)} opt-outs; "
                  f"duplicate message ids: {len(result.duplicate_message_ids)}", highlight=False)
    for name, path in result.files.items():
        console.print(f"{name}: {path}", highlight=False)
    console.print(f"took {elapsed:.0f} s", highlight=False)


def _not_scratch(url: str) -> str | None:
    """Why this Redis database must not be flushed, or None."""
    import redis

    from service.keys import Keys
    from sim.run import MARKER_KEY

    client = redis.Redis.from_url(url)
    try:
        keys = Keys()
        foreign = [i.decode() for i in client.sscan_iter(keys.debtor_index, count=1000)
                   if not i.decode().startswith("S-")]
        if foreign:
            return (f"{url} holds debtors that are not the simulator's (e.g. {foreign[0]}); "
                    "the simulation flushes its database: name another db, e.g. "
                    f"{url.rsplit('/', 1)[0]}/15, or leave --redis-url out")
        size = client.dbsize()
        if size and not client.exists(MARKER_KEY):
            return (f"{url} holds {size} keys and no earlier simulation; the simulation flushes "
                    "its database: name an empty db, or leave --redis-url out")
    except redis.RedisError as error:
        return f"no Redis answers at {url} ({error})"
    finally:
        client.close()
    return None


def _start_redis() -> tuple[subprocess.Popen, tempfile.TemporaryDirectory, str]:
    from service.stack import free_port, redis_answers

    binary = shutil.which("redis-server")
    if binary is None:
        err.print("[red]redis-server is not installed[/red] (run `make setup`), or pass "
                  "--redis-url with a scratch database")
        raise typer.Exit(2)
    scratch = tempfile.TemporaryDirectory(prefix="nudge-sim-redis-")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", scratch.name,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while not redis_answers(url):
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            scratch.cleanup()
            err.print("[red]the temporary redis-server did not start[/red]")
            raise typer.Exit(1)
        time.sleep(0.05)
    return server, scratch, url
