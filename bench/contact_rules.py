"""What the contact rules cost per message.

1. The pure decision (`bot/core/contact_policy.decide`) for a mix of situations: open window,
   night deferral (next-opening search), a US debtor with every US zone, capped.
2. The whole send path (`Sender.send`: read the situation from Redis, decide, render, send
   once, count) against a private Redis, per message, p50/p99, and the same for deferrals
   and for releasing deferred messages.

Run: .venv/bin/python bench/contact_rules.py    (writes bench/results/contact_rules.json)
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from common import RESULTS, ROOT, PrivateRedis, machine, percentiles, say, write_json

import redis.asyncio as aioredis

from bot.core.contact_policy import Situation, decide
from bot.core.contact_windows import candidate_zones
from service.contact_rules import ContactConfig
from service.debtor_store import RedisDebtorStore
from service.engine import EngineClient
from service.importer import import_file
from service.keys import Keys
from service.logs import configure_logging
from service.processing import Processor
from service.sending import PlannedMessage
from service.settings import Settings
from service.templates import TemplateRenderer

MONDAY_10_UTC = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
MONDAY_23_UTC = datetime(2026, 11, 23, 23, 0, tzinfo=timezone.utc)


def bench_decide(config: ContactConfig, rounds: int = 20000) -> dict:
    policy, packs = config.policy, config.jurisdictions
    cases = {
        "open_window": Situation(MONDAY_10_UTC, "reminder", "sms", ("Europe/London",), packs.pack_for("GB")),
        "night_deferral": Situation(MONDAY_23_UTC, "reminder", "sms", ("Europe/London",), packs.pack_for("GB")),
        "us_all_zones": Situation(MONDAY_10_UTC, "reminder", "email", candidate_zones("US", None),
                                  packs.pack_for("US")),
        "capped": Situation(MONDAY_10_UTC, "campaign", "sms", ("Europe/Amsterdam",), packs.pack_for("NL"),
                            recent_unsolicited=[MONDAY_10_UTC - timedelta(hours=h) for h in (1, 2)]),
    }
    out = {}
    for name, situation in cases.items():
        started = time.perf_counter()
        for _ in range(rounds if name != "us_all_zones" else rounds // 20):
            decide(policy, situation)
        n = rounds if name != "us_all_zones" else rounds // 20
        out[name] = {"decisions_per_s": round(n / (time.perf_counter() - started)),
                     "us_per_decision": round((time.perf_counter() - started) / n * 1e6, 1)}
        say(f"decide {name:15} {out[name]['us_per_decision']:8.1f} µs")
    return out


async def bench_send_path(redis_url: str, messages: int = 2000) -> dict:
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_PSEUDONYM_KEY": "bench"})
    client = aioredis.from_url(redis_url)
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(client, Keys()))
    engine = EngineClient("http://127.0.0.1:9", "unused", timeout=1)
    processor = Processor(settings, client, engine, TemplateRenderer(settings.templates_dir))
    debtors = [d for d in [await processor.debtors.get(i) for i in await processor.debtors.all_ids()]
               if d and d.phone]
    results = {}
    for label, now in (("sent", MONDAY_10_UTC), ("deferred", MONDAY_23_UTC)):
        samples = []
        for index in range(messages):
            debtor = debtors[index % len(debtors)]
            plan = PlannedMessage(f"bench-{label}-{index}", debtor.id, "sms", debtor.phone,
                                  "help_reply" if label == "sent" else "reminder_first",
                                  "reply" if label == "sent" else "reminder")
            started = time.perf_counter()
            await processor.sender.send(plan, debtor=debtor, now=now)
            samples.append((time.perf_counter() - started) * 1000)
        results[label] = percentiles(samples)
        say(f"send path {label:9} p50 {results[label]['p50']} ms  p99 {results[label]['p99']} ms")
    started = time.perf_counter()
    released = 0
    while True:
        batch = await processor.sender.release_due(MONDAY_23_UTC + timedelta(hours=9), batch=500)
        if not batch:
            break
        released += batch
    seconds = time.perf_counter() - started
    results["release"] = {"messages": released, "per_s": round(released / seconds)}
    say(f"release of deferred: {results['release']['per_s']} messages/s ({released})")
    await engine.close()
    await client.aclose()
    return results


def main() -> None:
    configure_logging("WARNING")
    config = ContactConfig.load()
    decide_figures = bench_decide(config)
    redis = PrivateRedis()
    try:
        send_figures = asyncio.run(bench_send_path(redis.url + "/0"))
    finally:
        redis.stop()
    write_json(RESULTS / "contact_rules.json", {"machine": machine(), "decide": decide_figures,
                                                "send_path_ms": send_figures})


if __name__ == "__main__":
    main()
