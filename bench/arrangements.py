"""What payment arrangements cost: the pure core, the Redis book, payments, business events,
creditor webhooks and the follow-up sweep.

1. Pure core, per call (µs, median and p99): `build_plan` (12 instalments), the negotiation
   moves (`open_plan`, `decline`, `counter` inside and outside policy, `settlement`) and, on a
   12-instalment arrangement, `apply_payment` and `follow_ups`.
2. On a private Redis: `ArrangementBook.propose` + `accept` per debtor; `apply_payment`
   sequential, 8 tasks on distinct debtors, and 1 vs 8 tasks on ONE debtor (the WATCH
   transaction retried: conflicts counted); `PaymentRecorder.import_csv` of a generated CSV
   against the generated debtors (rows/s, peak RSS).
3. Business events: `append` with and without `event_id`, `export_jsonl` of the whole stream
   (events/s, peak RSS: it streams), `CreditorWebhooks.run_once` until a backlog is delivered
   to the fake creditor (sandbox/fake_creditor.py, its own process on a free port).
4. `FollowUps.sweep` over accepted arrangements whose first reminder is due (messages
   planned/s), through a real Processor and send path, at noon UTC on a plain Monday.

Debtors are generated (GB/NL/DE, one phone and email each) and stored with
`RedisDebtorStore.upsert`. Everything runs against its own redis-server on a free port; files
go to a temporary directory; both are gone at the end. Peak RSS is `ru_maxrss` after the
peak was reset (`/proc/self/clear_refs`), so each phase's peak is its own.

Next to each throughput: the client's round trips to Redis per operation (counted in
redis-py) and this process's CPU milliseconds per operation. CPU ms/op close to the wall time
per operation means the Python client, not Redis or the network, is the limit (and more
concurrent tasks cannot help on one process). The JSON also has the commands Redis ran, by
name (those inside MULTI/EXEC and Lua scripts included), and the load average: other work on
the machine slows every figure.

Run: .venv/bin/python bench/arrangements.py [--debtors N ...]   (writes
bench/results/arrangements.json; about 3-4 minutes on 2 cores with the default sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Self

import aiohttp
import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import RedisSettings
from common import RESULTS, ROOT, PrivateRedis, machine, say, write_json
from redis.exceptions import WatchError
from rich.console import Console
from rich.table import Table

from bot.core.arrangement_lifecycle import (
    Arrangement,
    apply_payment,
    follow_ups,
    new_arrangement,
)
from bot.core.arrangement_lifecycle import accept as accept_arrangement
from bot.core.arrangement_policy import load_policy_book
from bot.core.debtors import Debtor
from bot.core.negotiation import (
    Ask,
    Negotiation,
    Offer,
    counter,
    decline,
    open_plan,
    settlement,
)
from bot.core.plans import build_plan
from service.arrangements import ArrangementBook
from service.business_events import BusinessEvents
from service.creditor_config import CreditorConfig
from service.creditor_webhooks import CreditorWebhooks
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.follow_up import FollowUps
from service.keys import Keys
from service.logs import configure_logging
from service.pay_links import PayLinks
from service.payments import PaymentRecorder
from service.processing import Processor
from service.settings import Settings
from service.stack import APP_PYTHON, Stack, _port_open, free_port
from service.templates import TemplateRenderer

TODAY = date(2026, 11, 23)                 # a Monday: the arrangements are agreed on it
FIRST_DUE = date(2026, 12, 9)              # a Wednesday, away from bank holidays
REMINDER_DAY = date(2026, 12, 7)           # FIRST_DUE - instalment_reminder_days_before (2)
SWEEP_NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()   # noon UTC
PAID_ON = date(2026, 12, 8)
WEBHOOK_ENV = "NUDGE_CREDITOR_WEBHOOK_SECRET"

# Generated debtors: country, language, currency, phone prefix and digits after it, creditors
# (as in policies/*.yml).
PROFILES = (
    ("GB", "en", "GBP", "+447400", 6, ("Hollis & Vane", "Brightwater Energy", "Northwind Mobile")),
    ("NL", "nl", "EUR", "+3161", 7, ("Dijkstra Krediet", "Tulpnet Telecom", "Grachtenhuis Wonen")),
    ("DE", "de", "EUR", "+49151", 8, ("Elbtal Kredit", "Funkwerk Mobil", "Rheinstrom Energie")),
)
SEGMENTS = ("early", "mid", "late")


# --- helpers ---------------------------------------------------------------------------------

def rate(count: int, seconds: float) -> int:
    return round(count / seconds) if seconds > 0 else 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0), so ru_maxrss
    afterwards is this phase's peak, not an earlier one's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


class Memory:
    """RSS before a phase and its peak during it (MiB)."""

    def __enter__(self) -> Self:
        self.reset = reset_peak_rss()
        self.before = rss_mib()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = peak_rss_mib()
        self.after = rss_mib()

    def figures(self) -> dict:
        # (the kernel's RSS counters are batched: a peak a hair below "before" is no growth)
        return {"rss_before_mib": self.before, "peak_rss_mib": self.peak,
                "peak_growth_mib": max(0.0, round(self.peak - self.before, 1)),
                "rss_after_mib": self.after, "peak_reset": self.reset}


ROUND_TRIPS = [0]


def count_round_trips() -> None:
    """Count the client's round trips to Redis: a command on its own, a command a pipeline
    runs at once (while WATCHing) and a pipeline's execute (MULTI...EXEC in one go)."""
    from redis.asyncio.client import Pipeline, Redis

    def counted(method):
        async def call(self, *args, **kwargs):
            ROUND_TRIPS[0] += 1
            return await method(self, *args, **kwargs)
        return call

    original_execute = Pipeline.execute

    async def execute(self, *args, **kwargs):
        if self.command_stack or self.watching:
            ROUND_TRIPS[0] += 1
        return await original_execute(self, *args, **kwargs)

    Redis.execute_command = counted(Redis.execute_command)
    Pipeline.immediate_execute_command = counted(Pipeline.immediate_execute_command)
    Pipeline.execute = execute


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    """Calls per command name the private Redis has processed so far (nothing else uses it;
    commands inside MULTI/EXEC and inside Lua scripts count one each)."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


class Commands:
    """Per operation of a phase: the client's round trips to Redis, the commands Redis ran
    (by name) and the CPU time this process spent."""

    def __init__(self, client: aioredis.Redis):
        self.client = client

    async def __aenter__(self) -> Self:
        self.before = await command_calls(self.client)
        self.trips_before = ROUND_TRIPS[0]
        self.cpu_before = time.process_time()
        return self

    async def __aexit__(self, *exc) -> None:
        self.cpu = time.process_time() - self.cpu_before
        self.trips = ROUND_TRIPS[0] - self.trips_before
        after = await command_calls(self.client)
        self.calls = {name: count - self.before.get(name, 0) for name, count in after.items()}
        self.calls["info"] -= 1
        self.calls = {name: count for name, count in self.calls.items() if count}

    def figures(self, operations: int) -> dict:
        top = sorted(self.calls.items(), key=lambda item: -item[1])
        return {"round_trips_per_op": round(self.trips / operations, 1),
                "client_cpu_ms_per_op": round(self.cpu / operations * 1000, 2),
                "server_commands_per_op": round(sum(self.calls.values()) / operations, 1),
                "server_commands_by_name_per_op": {n: round(c / operations, 2) for n, c in top}}


async def ping_round_trip(client: aioredis.Redis, rounds: int = 2000) -> dict:
    """A PING's round trip through redis-py asyncio: the unit every figure below is made of."""
    await client.ping()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        await client.ping()
        samples.append(time.perf_counter_ns() - started)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    result = {"n": rounds, "median_us": round(statistics.median(samples) / 1000, 1),
              "p99_us": round(cuts[98] / 1000, 1)}
    say(f"redis PING round trip: median {result['median_us']} µs, p99 {result['p99_us']} µs")
    return result


def counting_watch_errors(client: aioredis.Redis) -> list[int]:
    """Count the WATCH conflicts (EXEC aborted) of transactions made through `client`."""
    conflicts = [0]
    original = client.pipeline

    def pipeline(*args, **kwargs):
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a, **kw):
            try:
                return await execute(*a, **kw)
            except WatchError:
                conflicts[0] += 1
                raise
        pipe.execute = counted
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    return conflicts


def make_debtors(count: int, seed: int = 7) -> list[Debtor]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        country, language, currency, prefix, digits, creditors = PROFILES[i % len(PROFILES)]
        out.append(Debtor(
            id=f"B-{i:06d}", first_name="Sam", last_name=f"Bench{i}",
            phone=f"{prefix}{i:0{digits}d}", email=f"bench{i:06d}@example.org",
            language=language, country=country,   # type: ignore[arg-type]
            date_of_birth=date(1960 + i % 40, 1 + i % 12, 1 + i % 28),
            postcode="M1 1AE" if country == "GB" else ("1012 AB" if country == "NL" else "10115"),
            reference=f"BR-2026-{i:06d}", creditor=creditors[(i // 3) % len(creditors)],
            balance_minor=rng.randrange(30_000, 300_000), currency=currency,
            due_date=date(2026, 6, 1), age_band="41-65", product="telecom",
            payment_history="late", preferred_channel="sms", whatsapp_opt_in=False,
            segment=SEGMENTS[i % 3]))
    return out


def twelve_monthly(balance_minor: int, weekend: str) -> Offer:
    plan = build_plan(balance_minor, 12, "monthly", FIRST_DUE, weekend)
    return Offer("plan", plan.total_minor, plan.amounts_minor, plan.dates, "monthly", rung=3)


async def run_tasks(items: list, worker: Callable, concurrency: int) -> float:
    """Seconds to run `worker(item)` over every item with `concurrency` tasks."""
    queue = list(reversed(items))

    async def loop() -> None:
        while queue:
            await worker(queue.pop())
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - started


# --- 1. the pure core --------------------------------------------------------------------------

def time_calls(fn: Callable[[], object], rounds: int) -> dict:
    for _ in range(min(500, rounds)):
        fn()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(rounds):
        started = clock()
        fn()
        samples.append(clock() - started)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"n": rounds, "median_us": round(statistics.median(samples) / 1000, 1),
            "p99_us": round(cuts[98] / 1000, 1),
            "calls_per_s": round(rounds * 1e9 / sum(samples))}


def bench_core(book, rounds: int) -> dict:
    policy = book.for_debtor("Hollis & Vane", "late")          # the defaults: up to 12 monthly
    loans = book.for_debtor("Dijkstra Krediet", "late")        # settlements allowed
    balance, currency = 123_456, "GBP"
    opened = open_plan(Negotiation(), balance, policy, TODAY, currency)
    inside = counter(opened.state, Ask(installments=6), balance, policy, TODAY, currency)
    outside = counter(opened.state, Ask(installments=18), balance, policy, TODAY, currency)
    declined = decline(opened.state, balance, policy, TODAY, currency)
    settled = settlement(Negotiation(), 200, balance, loans, TODAY, "EUR")
    # Measure the intended paths, not an early exit.
    assert opened.reason == "opening", opened.reason
    assert inside.outcome == "agree", inside.reason
    assert outside.outcome == "offer" and outside.reason == "nearest_inside_policy", outside.reason
    assert declined.reason == "next_rung", declined.reason
    assert settled.reason == "settlement_offered", settled.reason

    plan = build_plan(balance, 12, "monthly", FIRST_DUE, policy.plans.weekend)
    arrangement = accept_arrangement(new_arrangement(
        "B-1", "B", "plan", currency, balance, list(plan.amounts_minor), list(plan.dates), TODAY,
        frequency="monthly", grace_days=5, reminder_days_before=2), TODAY)
    first = plan.amounts_minor[0]
    stored = json.dumps(arrangement.to_json())
    assert apply_payment(arrangement, "P1", first, PAID_ON).events
    assert len(follow_ups(arrangement, REMINDER_DAY)[1]) == 1

    cases = {
        "build_plan (12 monthly)": lambda: build_plan(balance, 12, "monthly", FIRST_DUE,
                                                      "next_business_day"),
        "negotiation.open_plan": lambda: open_plan(Negotiation(), balance, policy, TODAY,
                                                   currency),
        "negotiation.decline": lambda: decline(opened.state, balance, policy, TODAY, currency),
        "negotiation.counter (inside)": lambda: counter(opened.state, Ask(installments=6),
                                                        balance, policy, TODAY, currency),
        "negotiation.counter (outside)": lambda: counter(opened.state, Ask(installments=18),
                                                         balance, policy, TODAY, currency),
        "negotiation.settlement": lambda: settlement(Negotiation(), 200, balance, loans, TODAY,
                                                     "EUR"),
        "apply_payment (12 inst.)": lambda: apply_payment(arrangement, "P1", first, PAID_ON),
        "follow_ups (12 inst.)": lambda: follow_ups(arrangement, REMINDER_DAY),
        # every Redis change of an arrangement reads it and writes it back as JSON:
        "Arrangement.to_json (12 inst.)": arrangement.to_json,
        "Arrangement.from_json (12 inst.)": lambda: Arrangement.from_json(json.loads(stored)),
    }
    out = {}
    for name, fn in cases.items():
        out[name] = time_calls(fn, rounds)
        say(f"core {name:34} median {out[name]['median_us']:7.1f} µs   "
            f"p99 {out[name]['p99_us']:7.1f} µs")
    return out


# --- 2. arrangements and payments on Redis -------------------------------------------------------

async def store_debtors(client, keys: Keys, debtors: list[Debtor]) -> dict:
    store = RedisDebtorStore(client, keys)
    async with Commands(client) as commands:
        seconds = await run_tasks(debtors, store.upsert, 8)
    result = {"debtors": len(debtors), "concurrency": 8, "upserts_per_s": rate(len(debtors), seconds),
              **commands.figures(len(debtors))}
    say(f"stored {len(debtors)} debtors: {result['upserts_per_s']} upserts/s (8 tasks)")
    return result


async def bench_propose_accept(book: ArrangementBook, policies, debtors: list[Debtor]) -> dict:
    async def one(debtor: Debtor) -> None:
        policy = policies.for_debtor(debtor.creditor, debtor.segment)
        await book.propose(debtor, twelve_monthly(debtor.balance_minor, policy.plans.weekend),
                           TODAY, grace_days=policy.follow_up.grace_days,
                           reminder_days_before=policy.follow_up.instalment_reminder_days_before)
        await book.accept(debtor, TODAY)
    async with Commands(book.redis) as commands:
        seconds = await run_tasks(debtors, one, 1)
    result = {"debtors": len(debtors), "propose_accept_per_s": rate(len(debtors), seconds),
              "ms_per_debtor": round(seconds / len(debtors) * 1000, 2),
              **commands.figures(len(debtors))}
    say(f"propose+accept: {result['propose_accept_per_s']} debtors/s "
        f"({result['ms_per_debtor']} ms each, sequential)")
    return result


async def payment_run(redis_url: str, keys: Keys, run: int, targets: list[Debtor], tasks: int,
                      small: bool) -> dict:
    """`tasks` tasks paying into `targets` (a debtor once per payment) on a client of its own,
    whose WATCH conflicts are counted."""
    client = aioredis.from_url(redis_url)
    conflicts = counting_watch_errors(client)
    book = ArrangementBook(client, keys)
    current = {d.id: await book.current(d.id) for d in set(targets)}
    numbers = iter(range(len(targets)))
    gave_up = 0

    async def pay(debtor: Debtor) -> None:
        nonlocal gave_up
        amount = 100 if small else current[debtor.id].instalments[0].amount_minor
        try:
            await book.apply_payment(debtor, f"PAY-{run}-{next(numbers)}", amount, PAID_ON,
                                     source="webhook")
        except RuntimeError:   # "too much contention": MAX_ATTEMPTS conflicts in a row
            gave_up += 1

    async with Commands(client) as commands:
        seconds = await run_tasks(targets, pay, tasks)
    result = {"payments": len(targets), "tasks": tasks,
              "amount": "1.00" if small else "the first instalment",
              "payments_per_s": rate(len(targets), seconds), **commands.figures(len(targets)),
              "watch_conflicts": conflicts[0],
              "retries_per_payment": round(conflicts[0] / len(targets), 2), "gave_up": gave_up}
    if small:
        last = await book.current(targets[0].id)
        result["payment_ids_on_arrangement"] = len(last.payment_ids)
        result["arrangement_json_kib"] = round(len(json.dumps(last.to_json())) / 1024, 1)
    await client.aclose()
    return result


async def bench_payments(redis_url: str, keys: Keys, debtors: list[Debtor], sequential: int,
                         concurrent: int, one_debtor: int) -> dict:
    """Payments straight into ArrangementBook.apply_payment (no ledger): the first instalment
    of a 12-instalment arrangement each, then many 1.00 payments into one debtor."""
    out = {}
    runs = (("sequential, distinct debtors", debtors[:sequential], 1, False),
            ("8 tasks, distinct debtors", debtors[sequential:sequential + concurrent], 8, False),
            ("1 task, one debtor", [debtors[sequential + concurrent]] * one_debtor, 1, True),
            ("8 tasks, one debtor", [debtors[sequential + concurrent + 1]] * one_debtor, 8, True))
    for run, (label, targets, tasks, small) in enumerate(runs):
        result = out[label] = await payment_run(redis_url, keys, run, targets, tasks, small)
        say(f"apply_payment {label:30} {result['payments_per_s']:6} payments/s  "
            f"conflicts {result['watch_conflicts']} ({result['retries_per_payment']}/payment)"
            + (f", gave up {result['gave_up']}" if result["gave_up"] else ""))
    return out


async def bench_csv_import(redis_url: str, keys: Keys, settings: Settings, debtors: list[Debtor],
                           rows: int, tmp: Path) -> dict:
    path = tmp / "payments.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("payment_id,debtor_id,reference,amount,currency,paid_at,method\n")
        for i in range(rows):
            debtor = debtors[i % len(debtors)]
            by_id, by_ref = (debtor.id, "") if i % 2 == 0 else ("", debtor.reference)
            handle.write(f"CSV-{i:07d},{by_id},{by_ref},5.00,{debtor.currency},"
                         f"2026-12-08T09:00:00Z,bank_transfer\n")
    queue = await create_pool(RedisSettings.from_dsn(redis_url),
                              default_queue_name=settings.queue_name)
    recorder = PaymentRecorder(queue, keys, settings.queue_name)
    async with Commands(queue) as commands:
        with Memory() as memory:
            started = time.perf_counter()
            report = await recorder.import_csv(path)
            seconds = time.perf_counter() - started
    assert not report.errors, report.errors[:3]
    result = {"rows": rows, "file_mib": round(path.stat().st_size / 2**20, 2),
              "recorded": len(report.recorded), "duplicates": len(report.duplicates),
              "errors": len(report.errors), "seconds": round(seconds, 1),
              "rows_per_s": rate(rows, seconds), **commands.figures(rows),
              "receipt_jobs_queued": True,
              **memory.figures()}
    say(f"import_csv {rows} rows: {result['rows_per_s']} rows/s, peak RSS "
        f"{result['peak_rss_mib']} MiB (+{result['peak_growth_mib']})")
    await queue.aclose()
    return result


# --- 3. business events and webhooks ---------------------------------------------------------

def sample_event_data(i: int) -> dict:
    return {"payment_id": f"PAY-{i}", "amount": "25.00", "currency": "EUR",
            "paid_on": "2026-12-08", "source": "webhook", "balance": "975.00",
            "arrangement_id": f"B-{i:06d}-1"}


async def bench_business_events(client, appends: int, export_size: int, tmp: Path) -> dict:
    keys = Keys("benchev")
    events = BusinessEvents(client, keys)
    out = {}
    for label, with_id in (("append, no event_id", False), ("append, with event_id", True)):
        async with Commands(client) as commands:
            started = time.perf_counter()
            for i in range(appends):
                await events.append("payment_received", f"B-{i % 1000:06d}", sample_event_data(i),
                                    creditor="Dijkstra Krediet",
                                    event_id=f"payment_received:PAY-{i}" if with_id else None)
            seconds = time.perf_counter() - started
        out[label] = {"events": appends, "events_per_s": rate(appends, seconds),
                      **commands.figures(appends)}
        say(f"business events {label:24} {out[label]['events_per_s']} events/s")
    # Fill the stream up to `export_size` with the same shape of event, pipelined (fast).
    have = await client.xlen(keys.business_events)
    template = json.loads(json.dumps({"id": "", "type": "payment_received", "debtor_id": "",
                                      "creditor": "Dijkstra Krediet",
                                      "occurred_at": "2026-12-08T09:00:00.000Z", "data": {}}))
    for start in range(have, export_size, 2000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 2000, export_size)):
                event = {**template, "id": secrets.token_hex(16), "debtor_id": f"B-{i % 1000:06d}",
                         "data": sample_event_data(i)}
                pipe.xadd(keys.business_events, {"data": json.dumps(event, separators=(",", ":"))})
            await pipe.execute()
    total = await client.xlen(keys.business_events)
    path = tmp / "business_events.jsonl"
    async with Commands(client) as commands:
        with Memory() as memory:
            started = time.perf_counter()
            with path.open("w", encoding="utf-8") as handle:
                written = await events.export_jsonl(handle)
            seconds = time.perf_counter() - started
    assert written == total, (written, total)
    out["export_jsonl"] = {"events": written, "file_mib": round(path.stat().st_size / 2**20, 1),
                           "seconds": round(seconds, 1), "events_per_s": rate(written, seconds),
                           **commands.figures(written), **memory.figures()}
    say(f"export_jsonl {written} events: {out['export_jsonl']['events_per_s']} events/s, "
        f"{out['export_jsonl']['file_mib']} MiB file, peak RSS "
        f"{memory.peak} MiB (+{out['export_jsonl']['peak_growth_mib']})")
    path.unlink()
    return out


async def bench_webhooks(client, redis_url: str, backlog: int, tmp: Path) -> dict:
    keys = Keys("benchwh")
    secret = "whsec_" + secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}/events"
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_STATE_DIR": str(tmp)})
    stack = Stack(settings, {**os.environ, WEBHOOK_ENV: secret}, quiet=True)
    stack._spawn("creditor", [APP_PYTHON, "-m", "sandbox.fake_creditor", "--port", str(port)])
    try:
        stack._wait("creditor", lambda: _port_open("127.0.0.1", port), 30)
        events = BusinessEvents(client, keys)
        creditors = [c for profile in PROFILES for c in profile[5]]
        for i in range(backlog):
            await events.append("payment_received", f"B-{i:06d}", sample_event_data(i),
                                creditor=creditors[i % len(creditors)])
        config = CreditorConfig.load(ROOT / "policies").all_to(url)
        hooks = CreditorWebhooks(client, keys, config, {WEBHOOK_ENV: secret})
        rounds = 0
        deadline = time.monotonic() + 300
        async with Commands(client) as costs:
            started = time.perf_counter()
            while time.monotonic() < deadline:
                count = await hooks.run_once()
                rounds += 1
                if count == 0:   # nothing new: done unless retries are waiting
                    summary = await hooks.pending_summary()
                    if not (summary["due"] or summary["retrying"] or summary["unread"]
                            or summary["pending"]):
                        break
                    await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
        await hooks.close()
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/_fake/events") as response:
            received = await response.json()
        delivered = len(received["events"])
        failed_posts = sum(1 for post in received["wire"] if post["status"] != 200)
    finally:
        stack.stop()
    result = {"backlog": backlog, "delivered": delivered, "posts": len(received["wire"]),
              "failed_posts": failed_posts, "duplicates": received["duplicates"],
              "run_once_rounds": rounds, "batch": hooks.batch,
              "seconds": round(seconds, 1), "events_per_s": rate(delivered, seconds),
              **costs.figures(max(1, delivered))}
    say(f"webhooks: {delivered}/{backlog} delivered, {result['events_per_s']} events/s "
        f"({rounds} rounds of run_once)")
    return result


# --- 4. the follow-up sweep ----------------------------------------------------------------------

async def bench_sweep(follow: FollowUps, processor: Processor, expected: int) -> dict:
    client, keys = processor.redis, processor.keys
    due_before = await client.zcount(keys.arrangement_due, "-inf", SWEEP_NOW)
    outbox_before = await client.xlen(keys.outbox)
    planned, sweeps = 0, 0
    async with Commands(client) as costs:
        started = time.perf_counter()
        while True:   # sweep() takes up to 200 due arrangements a call
            count = await follow.sweep(SWEEP_NOW)
            sweeps += 1
            planned += count
            if count == 0 or sweeps > expected:
                break
        seconds = time.perf_counter() - started
    sent = await client.xlen(keys.outbox) - outbox_before
    deferred = await client.zcard(keys.deferred)
    result = {"arrangements_due": due_before, "messages_planned": planned, "sent_to_outbox": sent,
              "deferred": deferred, "sweep_calls": sweeps, "seconds": round(seconds, 1),
              "messages_per_s": rate(planned, seconds),
              **costs.figures(max(1, planned)),
              "still_due": await client.zcount(keys.arrangement_due, "-inf", SWEEP_NOW)}
    say(f"sweep: {planned} planned ({sent} sent, {deferred} deferred) of {due_before} due, "
        f"{result['messages_per_s']} messages/s, {sweeps} sweep() calls")
    return result


# --- the run ---------------------------------------------------------------------------------

async def bench_redis(args, redis_url: str, tmp: Path, policies) -> dict:
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "bench-arr",
                                  "NUDGE_PAY_LINK_SECRET": secrets.token_hex(16),
                                  "NUDGE_STATE_DIR": str(tmp)})
    keys = Keys(settings.key_prefix)
    client = aioredis.from_url(redis_url)
    count_round_trips()
    data: dict = {"ping": await ping_round_trip(client)}
    say(f"generating {args.debtors} debtors...")
    debtors = make_debtors(args.debtors)
    data["debtor_upsert"] = await store_debtors(client, keys, debtors)

    with_arrangements = debtors[:args.arrangements]
    book = ArrangementBook(client, keys)
    data["propose_accept"] = await bench_propose_accept(book, policies, with_arrangements)

    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    processor = Processor(settings, client, engine, TemplateRenderer(settings.templates_dir))
    follow = FollowUps(processor, book, policies,
                       PayLinks(settings.pay_link_secret, settings.public_url))
    data["follow_up_sweep"] = await bench_sweep(follow, processor, len(with_arrangements))
    await engine.close()

    data["apply_payment"] = await bench_payments(redis_url, keys, with_arrangements,
                                                 args.payments, args.payments, args.one_debtor)
    data["import_csv"] = await bench_csv_import(redis_url, keys, settings, debtors,
                                                args.csv_rows, tmp)
    data["business_events"] = await bench_business_events(client, args.appends,
                                                          args.export_events, tmp)
    data["webhooks"] = await bench_webhooks(client, redis_url, args.webhook_events, tmp)
    info = await client.info("memory")
    data["redis_used_memory_mib"] = round(info["used_memory"] / 2**20, 1)
    await client.aclose()
    return data


def print_tables(data: dict) -> None:
    console = Console(width=160)
    core = Table(title="1. Pure core, per call", title_justify="left")
    for column in ("call", "median µs", "p99 µs", "calls/s"):
        core.add_column(column, justify="left" if column == "call" else "right")
    for name, row in data["core"].items():
        core.add_row(name, f"{row['median_us']:.1f}", f"{row['p99_us']:.1f}",
                     f"{row['calls_per_s']:,}")
    console.print(core)

    r = data["redis"]

    def table(title: str, size: str) -> Table:
        out = Table(title=title, title_justify="left")
        out.add_column("measure")
        out.add_column(size, justify="right")
        out.add_column("throughput", justify="right")
        out.add_column("round trips/op", justify="right")
        out.add_column("CPU ms/op", justify="right")
        out.add_column("notes")
        return out

    ping = r["ping"]
    redis = table(f"2. On Redis (a PING round trip: median {ping['median_us']} µs, "
                  f"p99 {ping['p99_us']} µs)", "size")
    up = r["debtor_upsert"]
    redis.add_row("RedisDebtorStore.upsert, 8 tasks", f"{up['debtors']:,}",
                  f"{up['upserts_per_s']:,} /s", f"{up['round_trips_per_op']}", f"{up['client_cpu_ms_per_op']}",
                  "setup: the generated debtors")
    pa = r["propose_accept"]
    redis.add_row("ArrangementBook.propose + accept", f"{pa['debtors']:,}",
                  f"{pa['propose_accept_per_s']:,} debtors/s", f"{pa['round_trips_per_op']}", f"{pa['client_cpu_ms_per_op']}",
                  f"{pa['ms_per_debtor']} ms per debtor, sequential")
    for label, row in r["apply_payment"].items():
        notes = (f"pays {row['amount']}; WATCH conflicts {row['watch_conflicts']:,} "
                 f"({row['retries_per_payment']}/payment)")
        if row.get("gave_up"):
            notes += f", gave up {row['gave_up']}"
        if "payment_ids_on_arrangement" in row:
            notes += (f"; ends with {row['payment_ids_on_arrangement']} payment ids, "
                      f"{row['arrangement_json_kib']} KiB JSON")
        redis.add_row(f"apply_payment, {label}", f"{row['payments']:,}",
                      f"{row['payments_per_s']:,} payments/s", f"{row['round_trips_per_op']}",
                      f"{row['client_cpu_ms_per_op']}", notes)
    imp = r["import_csv"]
    redis.add_row("PaymentRecorder.import_csv", f"{imp['rows']:,} rows",
                  f"{imp['rows_per_s']:,} rows/s", f"{imp['round_trips_per_op']}", f"{imp['client_cpu_ms_per_op']}",
                  f"{imp['seconds']} s; peak RSS {imp['peak_rss_mib']} MiB "
                  f"(+{imp['peak_growth_mib']} over {imp['rss_before_mib']})")
    console.print(redis)

    events = table("3. Business events and creditor webhooks", "events")
    be = r["business_events"]
    for label in ("append, no event_id", "append, with event_id"):
        events.add_row(f"BusinessEvents.{label}", f"{be[label]['events']:,}",
                       f"{be[label]['events_per_s']:,} events/s",
                       f"{be[label]['round_trips_per_op']}",
                       f"{be[label]['client_cpu_ms_per_op']}", "sequential")
    ex = be["export_jsonl"]
    events.add_row("BusinessEvents.export_jsonl", f"{ex['events']:,}",
                   f"{ex['events_per_s']:,} events/s", f"{ex['round_trips_per_op']}",
                   f"{ex['client_cpu_ms_per_op']}",
                   f"{ex['file_mib']} MiB file; peak RSS {ex['peak_rss_mib']} MiB "
                   f"(+{ex['peak_growth_mib']} over {ex['rss_before_mib']})")
    wh = r["webhooks"]
    events.add_row("CreditorWebhooks.run_once, looped", f"{wh['delivered']:,}/{wh['backlog']:,}",
                   f"{wh['events_per_s']:,} events/s", f"{wh['round_trips_per_op']}", f"{wh['client_cpu_ms_per_op']}",
                   f"to the fake creditor (own process); {wh['run_once_rounds']} rounds of "
                   f"batch {wh['batch']}; {wh['failed_posts']} failed, "
                   f"{wh['duplicates']} duplicates")
    console.print(events)

    sweep = r["follow_up_sweep"]
    follow = table("4. Follow-up sweep (noon UTC, Monday 7 Dec 2026)", "due")
    follow.add_row("FollowUps.sweep", f"{sweep['arrangements_due']:,}",
                   f"{sweep['messages_per_s']:,} messages/s", f"{sweep['round_trips_per_op']}",
                   f"{sweep['client_cpu_ms_per_op']}",
                   f"{sweep['messages_planned']:,} planned: {sweep['sent_to_outbox']:,} sent, "
                   f"{sweep['deferred']:,} deferred; {sweep['sweep_calls']} sweep() calls, "
                   f"{sweep['still_due']} still due")
    console.print(follow)
    console.print(f"load average (1 min) before / after: {data['loadavg_before']} / "
                  f"{data['loadavg_after']} on {data['machine']['cpus']} cores; "
                  f"{data['wall_seconds']} s in all")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000, help="calls per pure-core case")
    parser.add_argument("--debtors", type=int, default=10000, help="generated debtors stored")
    parser.add_argument("--arrangements", type=int, default=5000,
                        help="debtors given an accepted 12-instalment plan (and swept)")
    parser.add_argument("--payments", type=int, default=2000,
                        help="payments for the sequential and the 8-task distinct-debtor runs")
    parser.add_argument("--one-debtor", type=int, default=800,
                        help="payments into ONE debtor (1 task, then 8 tasks)")
    parser.add_argument("--csv-rows", type=int, default=10000)
    parser.add_argument("--appends", type=int, default=10000,
                        help="business events appended, with and without event_id each")
    parser.add_argument("--export-events", type=int, default=100000)
    parser.add_argument("--webhook-events", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS / "arrangements.json")
    args = parser.parse_args()
    if args.arrangements > args.debtors or 2 * args.payments + 2 > args.arrangements:
        parser.error("need debtors >= arrangements >= 2 * payments + 2")
    return args


def main() -> None:
    args = parse_args()
    configure_logging("WARNING")
    policies = load_policy_book(ROOT / "policies" / "arrangements.yml")
    started = time.monotonic()
    load_before = round(os.getloadavg()[0], 2)
    core = bench_core(policies, args.rounds)
    redis = PrivateRedis()
    try:
        with tempfile.TemporaryDirectory(prefix="nudge-bench-arrangements-") as tmp:
            redis_figures = asyncio.run(bench_redis(args, redis.url + "/0", Path(tmp), policies))
    finally:
        redis.stop()
    data = {"machine": machine(),
            "sizes": {k: v for k, v in vars(args).items() if k != "out"},
            "dates": {"agreed": TODAY.isoformat(), "first_due": FIRST_DUE.isoformat(),
                      "sweep_at": datetime.fromtimestamp(SWEEP_NOW, UTC).isoformat()},
            "core": core, "redis": redis_figures,
            # other work on the machine slows every figure: the 1-minute load average
            "loadavg_before": load_before, "loadavg_after": round(os.getloadavg()[0], 2),
            "wall_seconds": round(time.monotonic() - started, 1)}
    print_tables(data)
    write_json(args.out, data)
    say(f"written to {args.out} ({data['wall_seconds']} s)")


if __name__ == "__main__":
    main()
