"""The product under load (issue #8): one command, one table.

    .venv/bin/python bench/load.py                     # everything, one engine (~25 min)
    .venv/bin/python bench/load.py --scale-out         # 2 gateways, workers, engines, actions
    .venv/bin/python bench/load.py --phases e2e --rates 5 10 --seconds 20

Phases, each on its own private redis-server (no persistence) with the product's processes
started by `service.stack.Stack` on free loopback ports:

- **ack**: signed Twilio webhooks at 50/200/500 per second against the gateway(s) alone (no
  worker, so the acknowledgement is measured on its own: signature, routing, the Lua store,
  the enqueue, the empty TwiML). Open loop: requests leave on schedule whatever the answers do.
- **e2e**: the whole product. Simulated debtors (sim/load.py) at 5/10/20 messages per second;
  latency from the signed webhook leaving to the first reply's call reaching the fake Twilio
  API (in this process, one clock). Then, in the same run, the **raw engine** round trip for
  the same scripts (other debtors, same texts, same rate) straight to the engine's REST
  channel: our overhead is the ratio of the two. After each rate, the checks of sim/load.py:
  every turn answered once, in order, with the right template.
- **builtin**: the same model behind Rasa's own Twilio channel
  (bench/rasa_channels/nudge_bench_twilio.py) at the same rates: the webhook answers only
  when the turn is done, so its answer time is what Twilio waits for. Twilio gives up on a
  webhook after 15 s (error 11200).
- **campaigns**: campaign planning at 10k/100k/1M debtors, from bench/campaigns.py (run again
  with --campaigns, ~8 min; otherwise its last results are read).
- resident memory (VmRSS) of every process, sampled every second: peak per phase.

Results: bench/results/load.json (or load-scale-out.json); `bench/plots.py` draws the figures
in docs/performance.md from it. Pacing is off in this run's channel policy: pacing is the
provider's rate limit, not our latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from common import (RESULTS, ROOT, RUN_DIR, PrivateRedis, machine, percentiles,  # noqa: E402
                    proc_memory, say, write_json)
from service.debtor_store import RedisDebtorStore  # noqa: E402
from service.engine_model import ENGINE_VENV, ensure_model  # noqa: E402
from service.importer import import_file  # noqa: E402
from service.keys import Keys  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.stack import APP_PYTHON, Stack, _http_ok, free_port  # noqa: E402
from sim.load import (Driver, LoadDebtor, ProviderClock, ack_only, check, script,  # noqa: E402
                      start_fake_twilio, write_portfolio)
from tests.conftest import always_open_policies, stack_env  # noqa: E402

TWILIO_TIMEOUT_S = 15.0


# --- set-up ----------------------------------------------------------------------------------

def bench_policies(directory: Path) -> Path:
    """The real policies with every contact window open (the run may be at night) and pacing
    off (the provider's rate limit is not our latency)."""
    always_open_policies(directory)
    channels = yaml.safe_load((directory / "channels.yml").read_text())
    for name in ("sms", "whatsapp"):
        channels[name]["pacing_per_second"] = 0
    (directory / "channels.yml").write_text(yaml.safe_dump(channels, sort_keys=False))
    return directory


class Bench:
    """One private Redis, one stack, the fake Twilio in this process, and memory sampling."""

    def __init__(self, layout: dict[str, int], log_name: str):
        self.layout = layout
        self.redis = PrivateRedis()
        self.policies = bench_policies(Path(tempfile.mkdtemp(prefix="nudge-load-policies-")))
        self.env = stack_env(self.redis.url, NUDGE_POLICIES_DIR=str(self.policies),
                             NUDGE_LOG_LEVEL="warning")
        self.settings = Settings.from_env(self.env)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.log = open(RUN_DIR / log_name, "w")
        self.stack = Stack(self.settings, self.env, out=self.log)
        self.clock = ProviderClock()
        self.memory: dict[str, float] = {}
        self._sampling = threading.Event()
        self._runner: web.AppRunner | None = None
        self._extra: list[Stack] = []

    async def start_fake_twilio(self) -> None:
        self._runner, self.fake_twilio = await start_fake_twilio(self.settings, self.clock)
        # a creditor's system for the business events (they would otherwise retry forever)
        creditor_port = self.settings.creditor_events_url.split(":")[2].split("/")[0]
        self.stack._spawn("creditor", [APP_PYTHON, "-m", "sandbox.fake_creditor", "--port",
                                       creditor_port])

    async def import_debtors(self, pools: dict[str, tuple[int, int, float]]) -> dict[str, list[LoadDebtor]]:
        """pools: name -> (pool number, count, burst share)."""
        client = aioredis.from_url(self.settings.redis_url)
        store = RedisDebtorStore(client, Keys(self.settings.key_prefix))
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, (number, count, burst) in pools.items():
                path = Path(tmp) / f"{name}.csv"
                out[name] = write_portfolio(path, name, count, pool_number=number, burst_share=burst)
                report = await import_file(path, store, as_of=date.today())
                if report.errors:
                    raise RuntimeError(f"import of pool {name}: {report.errors[:3]}")
        await client.aclose()
        return out

    def sample_memory(self) -> None:
        def loop():
            while not self._sampling.wait(1.0):
                self.take_memory()
        threading.Thread(target=loop, daemon=True).start()

    def take_memory(self) -> dict[str, float]:
        now = {}
        for stack in (self.stack, *self._extra):
            for name, pid in stack.pids().items():
                figures = proc_memory(pid)
                rss = figures.get("VmRSS", 0) + figures.get("descendants_VmRSS", 0)
                now[name] = rss
                self.memory[name] = max(self.memory.get(name, 0.0), rss)
        now["redis-server"] = proc_memory(self.redis.process.pid).get("VmRSS", 0)
        self.memory["redis-server"] = max(self.memory.get("redis-server", 0.0), now["redis-server"])
        now["bench (load driver + fake Twilio)"] = proc_memory(os.getpid()).get("VmRSS", 0)
        return now

    async def close(self) -> None:
        self._sampling.set()
        for stack in (*self._extra, self.stack):
            await asyncio.to_thread(stack.stop)
        if self._runner is not None:
            await self._runner.cleanup()
        self.redis.stop()
        self.log.close()


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    figures = percentiles(values)
    figures["max"] = round(max(values), 1)
    return figures


# --- phase: acknowledgement ------------------------------------------------------------------

async def phase_ack(layout: dict[str, int], rates: list[int], seconds: float) -> dict:
    bench = Bench(layout, "load-ack.log")
    try:
        pools = await bench.import_debtors({"A": (1, 3000, 0.0)})
        bench.stack.spawn_gateways(layout["gateways"])
        await asyncio.to_thread(bench.stack.wait_ready)
        bench.sample_memory()
        out = {}
        for rate in rates:
            say(f"ack: {rate} webhooks/s for {seconds:.0f} s...")
            latencies, statuses = await ack_only(
                bench.stack.gateway_urls, public_url=bench.settings.webhook_base_url,
                auth_token=bench.settings.twilio_auth_token,
                account_sid=bench.settings.twilio_account_sid,
                phones=[d.phone for d in pools["A"]], rate=rate, seconds=seconds)
            out[str(rate)] = {"rate": rate, "sent": len(latencies), "non_200": statuses,
                              "latency_ms": summary(latencies)}
            await asyncio.sleep(2)
        client = aioredis.from_url(bench.settings.redis_url)
        out["queued_jobs"] = await client.zcard(bench.settings.queue_name)
        await client.aclose()
        return {"rates": out, "memory_peak_mib": dict(bench.memory)}
    finally:
        await bench.close()


# --- phase: end to end, and the raw engine ---------------------------------------------------

async def raw_engine(engine_url: str, debtors: list[LoadDebtor], *, rate: float, seconds: float) -> dict:
    """The same scripts straight to the engine's REST channel (NLU + dialogue + actions): the
    answer to the HTTP request is the reply. Same open-loop schedule as the driver."""
    ready = list(reversed(debtors))
    latencies, errors, starved = [], 0, 0
    today = date.today().isoformat()

    async def turn(session, debtor: LoadDebtor) -> None:
        nonlocal errors
        text = script(debtor.language)[debtor.turn].text
        debtor.turn += 1
        body = {"sender": debtor.id, "message": text,
                "metadata": {"channel": "sms", "address": debtor.phone, "language": debtor.language,
                             "today": today}}
        started = time.perf_counter()
        try:
            async with session.post(f"{engine_url}/webhooks/rest/webhook", json=body) as response:
                answer = await response.json(content_type=None)
                if response.status != 200 or not answer:
                    errors += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            errors += 1
        latencies.append((time.perf_counter() - started) * 1000)
        if not debtor.done:
            ready.insert(0, debtor)

    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        for tick in range(int(rate * seconds)):
            delay = started + tick / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not ready:
                starved += 1
                continue
            tasks.append(asyncio.create_task(turn(session, ready.pop())))
        await asyncio.gather(*tasks)
    return {"sent": len(latencies), "errors": errors, "starved_ticks": starved,
            "latency_ms": summary(latencies)}


async def phase_e2e(layout: dict[str, int], rates: list[int], seconds: float, *,
                    with_raw: bool = True) -> dict:
    bench = Bench(layout, "load-e2e.log")
    try:
        per_rate = max(120, int(max(rates) * seconds / 2))
        pools = {}
        for index, rate in enumerate(rates):
            pools[f"E{rate}"] = (10 + index, per_rate, 0.25)
            pools[f"R{rate}"] = (30 + index, per_rate, 0.0)
        debtors = await bench.import_debtors(pools)
        await bench.start_fake_twilio()
        model = ensure_model(log=say)
        say(f"starting the product: {layout}...")
        await asyncio.to_thread(bench.stack.start_services, model=model, **layout)
        bench.sample_memory()
        await warm_up(bench, await bench.import_debtors({"W": (50, 12, 0.0)}))
        client = aioredis.from_url(bench.settings.redis_url)
        keys = Keys(bench.settings.key_prefix)
        out = {}
        for rate in rates:
            say(f"e2e: {rate} debtor messages/s for {seconds:.0f} s...")
            driver = Driver(bench.stack.gateway_urls, public_url=bench.settings.webhook_base_url,
                            auth_token=bench.settings.twilio_auth_token,
                            account_sid=bench.settings.twilio_account_sid, clock=bench.clock)
            started = time.monotonic()
            await driver.run(debtors[f"E{rate}"], rate=rate, seconds=seconds)
            elapsed = time.monotonic() - started
            checked = await check(client, keys.transcript, debtors[f"E{rate}"], bench.clock)
            replies = driver.reply_ms()
            row = {"rate": rate, "sent": len(driver.sent), "answered": len(driver.sent) - len(driver.unanswered()),
                   "non_200": driver.bad_status(), "starved_ticks": driver.starved_ticks,
                   "seconds_until_all_answered": round(elapsed, 1),
                   "reply_ms": summary(replies), "ack_ms": summary(driver.acks_ms()),
                   "check": checked.summary(), "check_ok": checked.ok}
            if with_raw:
                say(f"raw engine: the same scripts at {rate}/s...")
                row["raw_engine"] = await raw_engine(bench.stack.engine_urls[0], debtors[f"R{rate}"],
                                                     rate=rate, seconds=seconds)
                raw_p50 = row["raw_engine"]["latency_ms"].get("p50")
                if raw_p50 and replies:
                    row["overhead_ratio_p50"] = round(row["reply_ms"]["p50"] / raw_p50, 2)
                    row["overhead_ratio_p99"] = round(row["reply_ms"]["p99"] /
                                                      row["raw_engine"]["latency_ms"]["p99"], 2)
            out[str(rate)] = row
            say(f"  reply p50 {row['reply_ms'].get('p50')} ms, p99 {row['reply_ms'].get('p99')} ms; "
                f"check {'ok' if checked.ok else checked.summary()}")
        await client.aclose()
        return {"rates": out, "memory_peak_mib": dict(bench.memory), "layout": layout}
    finally:
        await bench.close()


async def warm_up(bench: Bench, pools: dict[str, list[LoadDebtor]]) -> None:
    """Each engine's first turns load TensorFlow graphs: not part of any figure."""
    driver = Driver(bench.stack.gateway_urls, public_url=bench.settings.webhook_base_url,
                    auth_token=bench.settings.twilio_auth_token,
                    account_sid=bench.settings.twilio_account_sid, clock=bench.clock)
    await driver.run(pools["W"], rate=4, seconds=10, drain_seconds=60)


# --- phase: Rasa's built-in Twilio channel ----------------------------------------------------

class BuiltinDriver(Driver):
    """Webhooks to Rasa's Twilio channel. From is the debtor id (the built-in channel uses it
    as the conversation id, and our actions find the debtor by it); the reply is matched by
    the "<recipient> <template>" body the bench channel sends."""

    def form_for(self, debtor: LoadDebtor, text: str, sid: str) -> dict[str, str]:
        return dict(super().form_for(debtor, text, sid), From=debtor.id)

    def on_message(self, message) -> None:
        recipient = message.resource["body"].split(" ", 1)[0]
        debtor = self.by_debtor.get(recipient)
        if debtor is None or not debtor.waiting:
            return
        sid = min(debtor.waiting, key=lambda s: self.sent[s].at)
        self.clock.first_reply.setdefault(sid, time.time())
        self._answered(sid)


async def phase_builtin(layout: dict[str, int], rates: list[int], seconds: float) -> dict:
    bench = Bench(layout, "load-builtin.log")
    try:
        per_rate = max(120, int(max(rates) * seconds / 2))
        debtors = await bench.import_debtors({f"B{rate}": (60 + i, per_rate, 0.0)
                                              for i, rate in enumerate(rates)})
        await bench.start_fake_twilio()
        model = ensure_model(log=say)
        action_ports = bench.stack.spawn_action_servers(1)
        credentials = Path(tempfile.mkdtemp(prefix="nudge-builtin-")) / "credentials.yml"
        credentials.write_text(yaml.safe_dump({"nudge_bench_twilio.RedirectedTwilioInput": {
            "account_sid": bench.settings.twilio_account_sid,
            "auth_token": bench.settings.twilio_auth_token,
            "twilio_number": "+3197010520000"}}))
        port = free_port()
        env = dict(bench.stack.engine_env(action_ports[0]),
                   PYTHONPATH=str(ROOT / "bench" / "rasa_channels"),
                   NUDGE_BENCH_TWILIO_API_URL=bench.settings.twilio_api_url)
        bench.stack._spawn("engine-builtin", [
            str(ENGINE_VENV / "bin" / "rasa"), "run", "--port", str(port), "--interface", "127.0.0.1",
            "--model", str(model), "--credentials", str(credentials),
            "--endpoints", "engine/endpoints.yml"], env=env)
        engine = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(bench.stack.wait_ready, action_ports)
        # no --enable-api here (Rasa's channel as shipped): ready when its webhook answers
        await asyncio.to_thread(bench.stack._wait, "engine-builtin",
                                lambda: _http_ok(f"{engine}/webhooks/twilio/"), 240)
        bench.sample_memory()
        out = {}
        for rate in rates:
            say(f"built-in Twilio channel: {rate} messages/s for {seconds:.0f} s...")
            driver = BuiltinDriver([engine], public_url=engine, auth_token="unused",
                                   account_sid=bench.settings.twilio_account_sid,
                                   clock=ProviderClock(), path="/webhooks/twilio/webhook")
            bench.clock.listeners = []
            previous = bench.fake_twilio.on_create
            bench.fake_twilio.on_create = driver.on_message
            started = time.monotonic()
            await driver.run(debtors[f"B{rate}"], rate=rate, seconds=seconds, drain_seconds=300)
            elapsed = time.monotonic() - started
            bench.fake_twilio.on_create = previous
            acks = driver.acks_ms()
            answered = len(driver.sent) - len(driver.unanswered())
            out[str(rate)] = {
                "rate": rate, "sent": len(driver.sent), "answered": answered,
                "non_2xx": {k: v for k, v in driver.bad_status().items() if k not in (200, 204)},
                "webhook_answer_ms": summary(acks),
                "over_twilio_15s": sum(1 for a in acks if a > TWILIO_TIMEOUT_S * 1000),
                "reply_ms": summary(driver.reply_ms()),
                "throughput_per_s": round(answered / elapsed, 2) if elapsed else None,
                "seconds_until_all_answered": round(elapsed, 1)}
            say(f"  webhook answer p50 {out[str(rate)]['webhook_answer_ms'].get('p50')} ms, "
                f"p99 {out[str(rate)]['webhook_answer_ms'].get('p99')} ms, "
                f"over 15 s: {out[str(rate)]['over_twilio_15s']}")
        return {"rates": out, "memory_peak_mib": dict(bench.memory)}
    finally:
        await bench.close()


# --- campaigns -------------------------------------------------------------------------------

def phase_campaigns(run_again: bool) -> dict:
    path = RESULTS / "campaigns.json"
    if run_again:
        subprocess.run([sys.executable, str(ROOT / "bench" / "campaigns.py")], check=True, cwd=ROOT)
    data = json.loads(path.read_text())
    return {"from": str(path.relative_to(ROOT)), "measured_at": data.get("when") or
            data.get("machine", {}).get("measured_at"),
            "sizes": data.get("results")}


# --- the table -------------------------------------------------------------------------------

def _ms(figures: dict, key: str) -> str:
    value = figures.get(key)
    return "-" if value is None else (f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"
                                      if value >= 100 else f"{value:.1f} ms")


def table(results: dict) -> str:
    lines = []

    def section(title: str) -> None:
        lines.append("")
        lines.append(title)
        lines.append("-" * len(title))

    if "ack" in results:
        section("Webhook acknowledgement (gateway alone; signed Twilio webhooks, open loop)")
        lines.append(f"{'rate/s':>8} {'sent':>6} {'p50':>9} {'p99':>9} {'max':>9} {'non-200':>8}")
        for rate, row in results["ack"]["rates"].items():
            if not isinstance(row, dict):
                continue
            lat = row["latency_ms"]
            lines.append(f"{rate:>8} {row['sent']:>6} {_ms(lat, 'p50'):>9} {_ms(lat, 'p99'):>9} "
                         f"{_ms(lat, 'max'):>9} {sum(row['non_200'].values()):>8}")
    if "e2e" in results:
        layout = results["e2e"]["layout"]
        section("End-to-end reply (signed webhook in -> provider API call out) vs raw engine "
                f"round trip; layout {layout}")
        lines.append(f"{'rate/s':>8} {'sent':>5} {'answered':>8} {'p50':>9} {'p99':>9} "
                     f"{'raw p50':>9} {'raw p99':>9} {'ratio50':>7} {'ratio99':>7}  checks")
        for rate, row in results["e2e"]["rates"].items():
            raw = row.get("raw_engine", {}).get("latency_ms", {})
            check = row["check"]
            verdict = "ok" if row["check_ok"] else (f"lost {check['lost']} doubled {check['doubled']} "
                                                     f"order {check['out_of_order']} wrong {check['wrong_replies']}")
            lines.append(f"{rate:>8} {row['sent']:>5} {row['answered']:>8} {_ms(row['reply_ms'], 'p50'):>9} "
                         f"{_ms(row['reply_ms'], 'p99'):>9} {_ms(raw, 'p50'):>9} {_ms(raw, 'p99'):>9} "
                         f"{row.get('overhead_ratio_p50', '-'):>7} {row.get('overhead_ratio_p99', '-'):>7}  "
                         f"{verdict}")
    if "builtin" in results:
        section("Rasa's built-in Twilio channel, same model, same machine (webhook answers after the turn)")
        lines.append(f"{'rate/s':>8} {'sent':>5} {'answered':>8} {'answer p50':>10} {'answer p99':>10} "
                     f"{'>15 s':>6} {'reply p99':>9} {'done/s':>7}")
        for rate, row in results["builtin"]["rates"].items():
            lines.append(f"{rate:>8} {row['sent']:>5} {row['answered']:>8} "
                         f"{_ms(row['webhook_answer_ms'], 'p50'):>10} {_ms(row['webhook_answer_ms'], 'p99'):>10} "
                         f"{row['over_twilio_15s']:>6} {_ms(row['reply_ms'], 'p99'):>9} "
                         f"{row['throughput_per_s']:>7}")
    if "campaigns" in results and results["campaigns"].get("sizes"):
        section(f"Campaign planning ({results['campaigns']['from']}, {results['campaigns']['measured_at'] or ''})")
        lines.append(f"{'debtors':>9} {'planned/s':>10} {'peak RSS +MiB':>13} {'Redis MiB':>10} {'dispatch/s':>10}")
        for row in results["campaigns"]["sizes"]:
            lines.append(f"{row.get('debtors', '?'):>9} {row.get('planned_per_second', '-'):>10} "
                         f"{row.get('planning_peak_above_baseline_mib', '-'):>13} "
                         f"{row.get('redis_used_memory_mib', '-'):>10} "
                         f"{row.get('dispatch_per_second', '-'):>10}")
    section("Resident memory, peak per process (MiB)")
    for phase in ("ack", "e2e", "builtin"):
        if phase in results:
            memory = results[phase]["memory_peak_mib"]
            lines.append(f"{phase:>8}: " + ", ".join(f"{name} {value:.0f}" for name, value in sorted(memory.items())))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="+", default=["ack", "e2e", "builtin", "campaigns"],
                        choices=["ack", "e2e", "builtin", "campaigns"])
    parser.add_argument("--ack-rates", nargs="+", type=int, default=[50, 200, 500])
    parser.add_argument("--ack-seconds", type=float, default=10)
    parser.add_argument("--rates", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--scale-out", action="store_true",
                        help="2 gateways, 2 workers, 2 engines, 2 action servers")
    parser.add_argument("--engines", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--campaigns", action="store_true", help="run bench/campaigns.py again")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--merge", action="store_true",
                        help="keep the other phases' results already in the output file")
    args = parser.parse_args()
    layout = ({"gateways": 2, "workers": 2, "engines": 2, "action_servers": 2} if args.scale_out else
              {"gateways": 1, "workers": args.workers, "engines": args.engines, "action_servers": 1})
    out = args.out or RESULTS / ("load-scale-out.json" if args.scale_out else
                                 f"load-{layout['engines']}engine.json")
    results: dict = json.loads(out.read_text()) if args.merge and out.exists() else {}
    results.update({"machine": machine(), "layout": layout})
    phases = {"ack": lambda: asyncio.run(phase_ack(layout, args.ack_rates, args.ack_seconds)),
              "e2e": lambda: asyncio.run(phase_e2e(layout, args.rates, args.seconds)),
              "builtin": lambda: asyncio.run(phase_builtin(layout, args.rates, args.seconds)),
              "campaigns": lambda: phase_campaigns(args.campaigns)}
    for name in args.phases:
        before = os.getloadavg()
        results[name] = phases[name]()
        results[name]["loadavg_before_after"] = [before, os.getloadavg()]
        write_json(out, results)              # each phase kept as soon as it is done
    text = table(results)
    results["table"] = text.splitlines()
    write_json(out, results)
    print(text)
    say(f"results in {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
