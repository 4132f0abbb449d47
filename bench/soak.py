"""Soak: the whole product at a steady load for 30 minutes; every minute, the resident memory of
each process, Redis's memory and the reply latency of that minute (issue #8).

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 5]

Simulated debtors (sim/load.py) send signed Twilio webhooks at `--rate` per second without a
pause, each debtor through its four-turn script, fresh debtors as others finish. At the end
the same checks as the load run (every message answered once, in order, rightly) and, per
process, the slope of its memory over the second half of the run (MiB per 10 minutes): flat
means no leak. Results: bench/results/soak.json; bench/plots.py draws them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis  # noqa: E402

from common import RESULTS, machine, say, write_json  # noqa: E402
from load import Bench, summary, warm_up  # noqa: E402
from service.engine_model import ensure_model  # noqa: E402
from service.keys import Keys  # noqa: E402
from sim.load import Driver, check  # noqa: E402


def slope_per_10_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, MiB), in MiB per 10 minutes."""
    if len(points) < 3:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return round(10 * cov / var, 2) if var else 0.0


async def soak(minutes: int, rate: float) -> dict:
    layout = {"gateways": 1, "workers": 1, "engines": 1, "action_servers": 1}
    bench = Bench(layout, "soak.log")
    try:
        needed = int(rate * minutes * 60 / 4) + 200
        per_pool = 3000
        pools = {f"K{n}": (20 + n, per_pool, 0.25) for n in range(needed // per_pool + 1)}
        debtors = [d for pool in (await bench.import_debtors(pools)).values() for d in pool]
        await bench.start_fake_twilio()
        await asyncio.to_thread(bench.stack.start_services, model=ensure_model(log=say), **layout)
        await warm_up(bench, await bench.import_debtors({"W": (80, 12, 0.0)}))
        client = aioredis.from_url(bench.settings.redis_url)
        driver = Driver(bench.stack.gateway_urls, public_url=bench.settings.webhook_base_url,
                        auth_token=bench.settings.twilio_auth_token,
                        account_sid=bench.settings.twilio_account_sid, clock=bench.clock)
        started = time.time()
        # ~40 s between a debtor's turns: a steady mix of cheap and expensive turns
        run = asyncio.create_task(driver.run(debtors, rate=rate, seconds=minutes * 60,
                                             drain_seconds=120, active=int(rate * 40)))
        samples = []
        for minute in range(1, minutes + 1):
            await asyncio.sleep(max(0.0, started + minute * 60 - time.time()))
            window = (started + (minute - 1) * 60, started + minute * 60)
            latencies = [(bench.clock.first_reply[sid] - s.at) * 1000 for sid, s in list(driver.sent.items())
                         if window[0] <= s.at < window[1] and sid in bench.clock.first_reply
                         and not s.second_of_burst]
            info = await client.info("memory")
            sample = {"minute": minute, "sent": sum(1 for s in list(driver.sent.values())
                                                    if window[0] <= s.at < window[1]),
                      "reply_ms": summary(latencies), "rss_mib": bench.take_memory(),
                      "redis_used_memory_mib": round(info["used_memory"] / 2**20, 1),
                      # other work on the machine shows here (2 cores)
                      "loadavg_1min": round(os.getloadavg()[0], 2)}
            samples.append(sample)
            say(f"minute {minute}: sent {sample['sent']}, reply p50 {sample['reply_ms'].get('p50')} "
                f"p99 {sample['reply_ms'].get('p99')} ms, RSS " + ", ".join(
                    f"{k} {v:.0f}" for k, v in sample["rss_mib"].items()))
        try:
            await run
            driver_error = None
        except Exception as error:  # the samples so far are still worth keeping
            driver_error = repr(error)
        result = await check(client, Keys(bench.settings.key_prefix).transcript,
                             [d for d in debtors if d.sids], bench.clock)
        await client.aclose()
        half = samples[len(samples) // 2:]
        names = sorted({name for s in samples for name in s["rss_mib"]})
        slopes = {name: slope_per_10_min([(s["minute"], s["rss_mib"].get(name, 0.0)) for s in half])
                  for name in names}
        slopes["redis-used-memory"] = slope_per_10_min([(s["minute"], s["redis_used_memory_mib"])
                                                        for s in half])
        first, last = samples[:5], samples[-5:]
        return {"machine": machine(), "minutes": minutes, "rate": rate, "layout": layout,
                "sent": len(driver.sent), "unanswered": len(driver.unanswered()),
                "driver_error": driver_error,
                "starved_ticks": driver.starved_ticks, "check": result.summary(), "check_ok": result.ok,
                "rss_slope_mib_per_10min_second_half": slopes,
                "p50_first_5_min": statistics.fmean(s["reply_ms"].get("p50", 0) for s in first),
                "p50_last_5_min": statistics.fmean(s["reply_ms"].get("p50", 0) for s in last),
                "p99_first_5_min": statistics.fmean(s["reply_ms"].get("p99", 0) for s in first),
                "p99_last_5_min": statistics.fmean(s["reply_ms"].get("p99", 0) for s in last),
                "samples": samples}
    finally:
        await bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes, args.rate))
    write_json(args.out, result)
    print(f"\nSoak: {result['minutes']} min at {result['rate']}/s, {result['sent']} messages, "
          f"unanswered {result['unanswered']}, checks {'ok' if result['check_ok'] else result['check']}")
    print(f"reply p50 first 5 min {result['p50_first_5_min']:.1f} ms, last 5 min {result['p50_last_5_min']:.1f} ms; "
          f"p99 {result['p99_first_5_min']:.1f} -> {result['p99_last_5_min']:.1f} ms")
    print("RSS slope over the second half (MiB per 10 min): " + ", ".join(
        f"{k} {v:+.2f}" for k, v in result["rss_slope_mib_per_10min_second_half"].items()))


if __name__ == "__main__":
    main()
