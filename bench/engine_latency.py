"""Engine latency, cold start and memory: our model and the `rasa init` model side by side.

For each model an action server and an engine (Redis tracker and lock store, as in
production) are started on free ports against a private redis-server. Then, after 10 warm-up
messages, a fixed sample of 150 debtor replies (50 per language, from tests/nlu_eval/) is
sent one at a time, alternating between the two engines message by message so that any other
load on the machine hits both alike:

  * REST raw:    POST /webhooks/rest/webhook with the raw text (NLU + dialogue + actions);
  * REST worker: the same endpoint with what the worker really sends, `/intent{entities}`
                 from service.understanding (NLU already done; dialogue + actions only);
                 carrier keywords (STOP, ...) never reach the engine and are left out;
  * parse:       POST /model/parse with the raw text (NLU only).

Every message uses a new sender id, so the verification form never chains replies. Also
measured: cold start (spawn until /status answers) and VmRSS/VmHWM of engine and action
server after the run; with --full the gateway and worker are started as well and measured.

    .venv/bin/python bench/engine_latency.py [--full]   # prints a table, writes bench/results/engine_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    RESULTS, ROOT, RUN_DIR, PrivateRedis, ensure_model, ensure_spec_model, machine,
    percentiles, proc_memory, rasa_init_one, sample_replies, say, size_mb, start_actions_and_engine,
    start_gateway_and_worker, write_json,
)
from service.engine import EngineClient  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.stack import Stack  # noqa: E402
from service.understanding import understand  # noqa: E402
from tests.conftest import stack_env  # noqa: E402

SEED = 20261122
PER_LANGUAGE = 50
WARM_UP = 10
TODAY = date(2026, 11, 18)


class Target:
    """One model with its own action server and engine (and gateway + worker with --full)."""

    def __init__(self, key: str, label: str, model: Path, redis_url: str, index: int):
        self.key, self.label, self.model = key, label, model
        self.env = stack_env(f"{redis_url}/0", NUDGE_STATE_DIR=str(RUN_DIR),
                             NUDGE_KEY_PREFIX=f"bench{index}", NUDGE_ENGINE_KEY_PREFIX=f"benchengine{index}")
        self.settings = Settings.from_env(self.env)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = RUN_DIR / f"engine_latency-{key}.log"
        self.log = open(self.log_path, "w")
        self.stack = Stack(self.settings, self.env, out=self.log)
        self.samples: dict[str, list[float]] = {"rest_raw": [], "rest_worker": [], "parse": []}
        self.responses = 0
        self.by_intent: dict[str, list[float]] = {}   # REST raw ms by the understood intent
        self.empty_replies = 0
        self.errors: list[str] = []
        self.cold_start = 0.0

    def start(self, full: bool) -> None:
        self.cold_start = start_actions_and_engine(self.stack, self.model)
        if full:
            start_gateway_and_worker(self.stack)
        say(f"{self.label}: engine answered /status {self.cold_start:.1f} s after spawning")

    def memory(self) -> dict[str, dict]:
        return {child.name: proc_memory(child.process.pid) for child in self.stack.children
                if child.process.poll() is None}

    def stop(self) -> None:
        self.stack.stop()
        self.log.close()

    def log_errors(self) -> int:
        text = self.log_path.read_text(errors="replace")
        markers = (" ERROR ", "Traceback", '"level": "error"')
        return sum(1 for line in text.splitlines() if any(m in line for m in markers))


def _metadata(text: str, language: str, index: int) -> dict:
    return {"message_id": f"bench-{index}", "channel": "sms", "address": "+31600000000",
            "language": language, "today": TODAY.isoformat(), "text": text, "urgent": False}


async def _timed(target: Target, kind: str, call) -> object:
    started = time.perf_counter()
    try:
        result = await call
    except Exception as error:  # noqa: BLE001 - counted and reported, never hidden
        target.errors.append(f"{kind}: {error!r}"[:300])
        return None
    target.samples[kind].append((time.perf_counter() - started) * 1000)
    return result


async def run(targets: list[Target], warm_up: list[tuple[str, str]],
              sample: list[tuple[str, str]]) -> None:
    clients = {t.key: EngineClient(t.settings.engine_url, t.settings.engine_token, timeout=60)
               for t in targets}
    try:
        for target in targets:
            engine = clients[target.key]
            for index, (text, language) in enumerate(warm_up):
                await engine.send(f"warmup-{index}", text, _metadata(text, language, index))
                await engine.parse(text)
        # Message by message, alternating which engine goes first.
        for index, (text, language) in enumerate(sample):
            order = targets if index % 2 == 0 else list(reversed(targets))
            for target in order:
                engine = clients[target.key]
                meta = _metadata(text, language, index)
                replies = await _timed(target, "rest_raw", engine.send(f"raw-{index}", text, meta))
                if replies is not None:
                    target.responses += len(replies)
                    target.empty_replies += not replies
                    raw_ms = target.samples["rest_raw"][-1]
                await _timed(target, "parse", engine.parse(text))
                understanding = await understand(text, language, engine, today=TODAY)
                if replies is not None:
                    target.by_intent.setdefault(understanding.intent, []).append(raw_ms)
                if not understanding.is_keyword:
                    await _timed(target, "rest_worker", engine.send(
                        f"worker-{index}", understanding.engine_message(), meta))
    finally:
        for client in clients.values():
            await client.close()


def render(results: list[dict], full: bool) -> str:
    width = 34
    col = max(16, *(len(r["label"]) + 2 for r in results))
    lines = [f"{'':<{width}}" + "".join(f"{r['label']:>{col}}" for r in results),
             "-" * (width + col * len(results))]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{col}}" for v in values))

    row("model archive MB", [f"{r['model_size_mb']:.1f}" for r in results])
    row("engine cold start s", [f"{r['engine_cold_start_seconds']:.1f}" for r in results])
    for kind, title in (("rest_raw", "REST raw text"), ("rest_worker", "REST /intent{} (worker)"),
                        ("parse", "/model/parse")):
        stats = [r["latency_ms"][kind] for r in results]
        row(f"{title} n", [str(s["n"]) for s in stats])
        for metric in ("p50", "p95", "p99", "mean"):
            row(f"{title} {metric} ms", [f"{s[metric]:.1f}" for s in stats])
    names = ["engine", "actions"] + (["gateway", "worker"] if full else [])
    for name in names:
        row(f"{name} VmRSS MiB (peak)", [
            f"{r['memory_mib'].get(name, {}).get('VmRSS', float('nan')):.0f} "
            f"({r['memory_mib'].get(name, {}).get('VmHWM', float('nan')):.0f})" for r in results])
    row("bot messages per reply (mean)", [f"{r['bot_messages_per_reply']:.2f}" for r in results])
    row("replies without answer", [str(r["replies_without_answer"]) for r in results])
    row("request errors / log errors", [f"{len(r['request_errors'])} / {r['log_error_lines']}" for r in results])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also start gateway and worker and measure them")
    args = parser.parse_args()

    models = [("ours", "ours (config.yml)", ensure_model(log=say)),
              ("rasa-init", "rasa init config", ensure_spec_model(rasa_init_one())[0])]
    warm_up, sample = sample_replies(SEED, PER_LANGUAGE, WARM_UP)
    redis = PrivateRedis()
    targets = [Target(key, label, model, redis.url, index) for index, (key, label, model) in enumerate(models)]
    load_before = os.getloadavg()
    try:
        for target in targets:          # one at a time, so each cold start has the CPU to itself
            target.start(args.full)
        say(f"sending {len(warm_up)} warm-up and {len(sample)} measured replies to each engine...")
        started = time.monotonic()
        asyncio.run(run(targets, warm_up, sample))
        say(f"done in {time.monotonic() - started:.0f} s")
        results = []
        for target in targets:
            answered = len(target.samples["rest_raw"])
            results.append({
                "key": target.key, "label": target.label, "model": target.model.name,
                "model_size_mb": size_mb(target.model),
                "engine_cold_start_seconds": round(target.cold_start, 2),
                "latency_ms": {kind: percentiles(values) for kind, values in target.samples.items()},
                "rest_raw_ms_by_intent": {
                    intent: {"n": len(v), "median": round(statistics.median(v), 1)}
                    for intent, v in sorted(target.by_intent.items(),
                                            key=lambda item: -statistics.median(item[1]))},
                "memory_mib": target.memory(),
                "bot_messages_per_reply": round(target.responses / max(1, answered), 2),
                "replies_without_answer": target.empty_replies,
                "request_errors": target.errors,
                "log_error_lines": target.log_errors(),
                "process_log": str(target.log_path.relative_to(ROOT)),
            })
    finally:
        for target in targets:
            target.stop()
        redis.stop()
    table = render(results, args.full)
    print("\n" + table, flush=True)
    write_json(RESULTS / "engine_latency.json", {
        "machine": machine(), "full": args.full, "sample": {
            "per_language": PER_LANGUAGE, "total": len(sample), "warm_up": len(warm_up), "seed": SEED,
            "source": "tests/nlu_eval/{en,nl,de}.yml"},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "table": table.splitlines(), "models": results})
    say(f"wrote {(RESULTS / 'engine_latency.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
