"""Campaign planning throughput and memory at 10k, 100k and 1M debtors (issue 6).

For each size, in its own process (so its peak RSS is its own), against its own redis-server:

1. load N generated debtors straight into Redis (the debtor JSON and the index set; no address
   indexes, which planning does not read) — not timed as planning;
2. start a campaign for segment `late` step 1 and run `Campaigns.plan_batch` until done, as the
   worker does: SSCAN the index in batches, read each batch's debtors, touches and
   arrangements in one pipeline, segment each debtor, check eligibility, ask the contact rules
   (`ContactRules.decide`: opt-outs, stop-states, preferences, caps, the local contact window),
   queue each planned debtor at its paced slot;
3. send the first `--dispatch` queued messages through the real send path
   (`Campaigns.dispatch`: tone chosen by the bandit, contact rules again, render, outbox).

Reported: debtors read per second, debtors planned per second, dispatch messages per second,
the process's peak RSS above its baseline before planning (``/proc/self/clear_refs`` then
``ru_maxrss``) and Redis's memory. Flat memory means the planner streams: the peak must not
grow with N.

Every debtor is in the `late` segment and due (the worst case: each one gets a contact-rules
decision). Monday 10:00 UTC, so the contact window is open for GB/NL/DE.

Run: .venv/bin/python bench/campaigns.py [--sizes 10000 100000 1000000] [--dispatch 2000]
(writes bench/results/campaigns.json; 1M takes several minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from common import RESULTS, ROOT, PrivateRedis, machine, say, write_json

MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
PROFILES = (("GB", "en", "GBP", "+447400", 6), ("NL", "nl", "EUR", "+316", 8),
            ("DE", "de", "EUR", "+49151", 8))


def debtor_json(i: int) -> str:
    country, language, currency, prefix, digits = PROFILES[i % 3]
    return json.dumps({
        "id": f"B-{i:07d}", "first_name": "Sam", "last_name": f"Bench{i}",
        "phone": f"{prefix}{i % 10 ** digits:0{digits}d}", "email": f"bench{i:07d}@example.org",
        "language": language, "country": country, "date_of_birth": "1980-05-01",
        "postcode": "M1 1AE" if country == "GB" else ("1012 AB" if country == "NL" else "10115"),
        "reference": f"BR-{i:07d}", "creditor": "Northwind Mobile",
        "balance_minor": 20_000 + i % 70_000, "currency": currency, "due_date": "2026-06-01",
        "age_band": "41-65", "product": "telecom", "payment_history": "late",
        "preferred_channel": ("sms", "email", "whatsapp")[i % 3], "whatsapp_opt_in": i % 2 == 0,
        "segment": None})


async def load(url: str, count: int) -> float:
    import redis.asyncio as aioredis

    from service.keys import Keys

    keys, client = Keys(), aioredis.from_url(url)
    started = time.perf_counter()
    for start in range(0, count, 5000):
        async with client.pipeline(transaction=False) as pipe:
            ids = []
            for i in range(start, min(count, start + 5000)):
                ids.append(f"B-{i:07d}")
                pipe.set(keys.debtor(ids[-1]), debtor_json(i))
            pipe.sadd(keys.debtor_index, *ids)
            await pipe.execute()
    await client.aclose()
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


async def one_size(count: int, dispatch_n: int) -> dict:
    import random
    import shutil

    from arq import create_pool
    from arq.connections import RedisSettings

    from service.campaigns import Campaigns
    from service.engine import EngineClient
    from service.processing import Processor
    from service.settings import Settings
    from service.templates import TemplateRenderer
    from service.tone_chooser import ToneChooser

    redis = PrivateRedis()
    try:
        say(f"{count:,} debtors: loading")
        load_s = await load(redis.url, count)
        with tempfile.TemporaryDirectory() as tmp:
            templates = Path(tmp) / "templates"
            shutil.copytree(ROOT / "message_templates", templates)
            settings = Settings.from_env({"REDIS_URL": redis.url, "NUDGE_PSEUDONYM_KEY": "bench",
                                          "NUDGE_TEMPLATES_DIR": str(templates)})
            client = await create_pool(RedisSettings.from_dsn(redis.url))
            engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
            processor = Processor(settings, client, engine, TemplateRenderer(templates))

            async def told(plan):       # the engine is not part of this benchmark
                return None
            processor.sender.on_sent = told
            chooser = ToneChooser(client, processor.keys, processor.segments,
                                  rng=random.Random(1), clock=lambda: MONDAY_10)
            campaigns = Campaigns(client, processor.keys, processor.segments,
                                  rules=processor.rules, sender=processor.sender,
                                  chooser=chooser, queue_name=settings.queue_name,
                                  clock=lambda: MONDAY_10)
            campaign_id = await campaigns.start("late", 1, by="bench", follow=False)
            reset_peak()
            baseline = current_rss_mib()
            say(f"{count:,} debtors: planning")
            started, cpu = time.perf_counter(), time.process_time()
            while await campaigns.plan_batch(campaign_id, now=MONDAY_10):
                pass
            plan_s, plan_cpu = time.perf_counter() - started, time.process_time() - cpu
            planning_peak = peak_rss_mib()
            status = await campaigns.status(campaign_id)
            say(f"{count:,} debtors: sending {dispatch_n:,}")
            started, sent = time.perf_counter(), 0
            while sent < dispatch_n:
                done = await campaigns.dispatch(campaign_id, now=MONDAY_10 + 6 * 3600,
                                                limit=min(200, dispatch_n - sent))
                if not done:
                    break
                sent += done
            dispatch_s = time.perf_counter() - started
            info = await client.info("memory")
            await engine.close()
            await client.aclose()
    finally:
        redis.stop()
    return {"debtors": count, "load_seconds": round(load_s, 1),
            "planning_seconds": round(plan_s, 2), "planning_cpu_seconds": round(plan_cpu, 2),
            "debtors_read_per_second": round(status.scanned / plan_s),
            "planned": status.counts.get("planned", 0),
            "planned_per_second": round(status.counts.get("planned", 0) / plan_s),
            "rss_baseline_mib": round(baseline, 1),
            "planning_peak_rss_mib": round(planning_peak, 1),
            "planning_peak_above_baseline_mib": round(planning_peak - baseline, 1),
            "dispatched": sent, "dispatch_per_second": round(sent / dispatch_s, 1) if sent else 0,
            "redis_used_memory_mib": round(info["used_memory"] / 2 ** 20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dispatch", type=int, default=2000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)   # child process: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(one_size(args.one, args.dispatch))))
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size),
                              "--dispatch", str(args.dispatch)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        say(json.dumps(rows[-1]))
    from rich.console import Console
    from rich.table import Table
    table = Table(title="Campaign planning (segment late, step 1, every debtor due)")
    for column in ("debtors", "planning s", "read/s", "planned/s", "peak RSS +MiB",
                   "dispatch msg/s", "Redis MiB"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(f"{r['debtors']:,}", str(r["planning_seconds"]),
                      f"{r['debtors_read_per_second']:,}", f"{r['planned_per_second']:,}",
                      str(r["planning_peak_above_baseline_mib"]), str(r["dispatch_per_second"]),
                      str(r["redis_used_memory_mib"]))
    Console().print(table)
    write_json(RESULTS / "campaigns.json", {"machine": machine(), "when": date.today().isoformat(),
                                             "results": rows})


if __name__ == "__main__":
    main()
