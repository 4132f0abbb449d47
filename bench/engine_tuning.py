"""Engine tuning for this job: dialogue policies by measurement, and a second engine process.

The worker calls the engine twice per debtor reply: `/model/parse` (NLU only, ~10 ms) and the
REST channel with `/intent{entities}` (dialogue + actions, no NLU). The NLU pipeline was
chosen by measurement already (bench/nlu_variants.py, docs/nlu.md), so every variant here
keeps config.yml's pipeline exactly and differs only in its policies:

  A  product    the product's model (service.engine_model.ensure_model(); config.yml:
                RulePolicy, MemoizationPolicy max_history 4, TEDPolicy max_history 4, 40 epochs)
  B  no-ted     RulePolicy + MemoizationPolicy only            (bench/configs/tuning_no_ted.yml)
  C  small-ted  TEDPolicy max_history 3, 20 epochs, smaller dimensions
                                                               (bench/configs/tuning_small_ted.yml)

B and C are config.yml with its `policies` replaced by those of their file. They are trained
with the project's warm Rasa cache (`.rasa/cache`, cwd = project root, RASA_CACHE_DIRECTORY
not set), so DIET and the featurisers are restored and only the changed policies train; the
training log is checked for that. Each is cached as
~/.cache/nudge/models/bench-tuning-<name>-<hash of composed config, domain, data>.tar.gz with a
`.bench.json` sidecar (training time, restored and trained components), so a second run only
evaluates. The product model's warm-cache training time comes from retraining config.yml once
into a temporary directory (sidecar `<product model>.tuning.json`; `--no-retime` skips it).

For every variant:
  * accuracy: `rasa test core --e2e` on tests/engine_stories, staged exactly as
    tests/e2e/test_rasa_stories.py does (files renamed test_*.yml): stories correct / total,
    and action-level accuracy and F1 from story_report.json (intent accuracy too: the NLU is
    the same in all three, so it must not move);
  * latency: action server + engine (Redis tracker and lock store) per variant on one private
    redis-server; 10 warm-up messages, then ~120 debtor replies from tests/nlu_eval/ (40 per
    language, seeded) in the form the worker sends (`/intent{entities}` from
    service.understanding against the product engine, so all variants get the same strings;
    carrier keywords never reach the engine and are left out), one at a time, each with a new
    sender id, alternating between the engines message by message so other load on the
    machine hits all alike: p50/p95/p99/mean ms, cold start, VmRSS, and how many replies are
    the same as the product's;
  * training wall seconds with the warm cache, TED's own training seconds, model size.

A second engine process: with the product model, the same messages are sent open-loop at fixed
rates (default 10 and 20 messages/s for 15 s each; each message a new conversation) to one
engine, then to two engines sharing the private Redis (each with its own action server, as
`nudge up --engines 2 --action-servers 2` lays them out; `--shared-actions` for one), split by
conversation as service.engine.EngineClient splits them (crc32 of the sender id). Latency is
counted from each message's scheduled send time, so queueing behind a busy engine shows.
The 1- and 2-engine runs alternate per rate.

The machine has 2 cores and other benchmarks may be running: the 1-minute load average before
and after every phase is recorded and printed.

    .venv/bin/python bench/engine_tuning.py [--rates 10,20] [--seconds 15] [--no-retime] [--shared-actions]

Prints one table (variants as columns) and the 1-vs-2-engine rows, writes
bench/results/engine_tuning.json; process logs in .run/bench/engine_tuning-*.log.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    CONFIGS, DOMAIN, RESULTS, ROOT, RUN_DIR, PrivateRedis, _train_lock, component_seconds,
    machine, percentiles, proc_memory, read_sidecar, sample_replies, say, sidecar_path, size_mb,
    start_actions_and_engine, timed_rasa_train, write_json,
)
from service.engine import EngineClient  # noqa: E402
from service.engine_model import MODELS_DIR, RASA, RASA_VERSION, ensure_model, model_inputs  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.stack import APP_PYTHON, Stack, _http_ok, free_port  # noqa: E402
from service.understanding import understand  # noqa: E402
from tests.conftest import stack_env  # noqa: E402

SEED = 20261123
PER_LANGUAGE = 40
WARM_UP = 10
TODAY = date(2026, 11, 18)
STORIES = ROOT / "tests" / "engine_stories"
POLICY_NAMES = ("RulePolicy", "MemoizationPolicy", "TEDPolicy", "UnexpecTEDIntentPolicy")


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    policies: Path | None        # None: the product's model (config.yml as it is)


VARIANTS = (
    Variant("product", "A product", None),
    Variant("no-ted", "B no TED", CONFIGS / "tuning_no_ted.yml"),
    Variant("small-ted", "C smaller TED", CONFIGS / "tuning_small_ted.yml"),
)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- models ---------------------------------------------------------------------------------

def composed_config(variant: Variant) -> str:
    """config.yml with its policies replaced by the variant's: same pipeline, same cache keys."""
    config = yaml.safe_load((ROOT / "config.yml").read_text())
    config["policies"] = yaml.safe_load(variant.policies.read_text())["policies"]
    return (f"# Composed by bench/engine_tuning.py: config.yml with the policies of "
            f"{variant.policies.relative_to(ROOT)}.\n"
            + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def variant_hash(config_text: str) -> str:
    """Like service.engine_model.inputs_hash, with the composed config in place of config.yml."""
    digest = hashlib.sha256(f"rasa=={RASA_VERSION}\n".encode())
    digest.update(b"config\0" + config_text.encode() + b"\0")
    for path in model_inputs()[1:]:          # domain, bot/data, nlu_data (not config.yml)
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def rasa_train_warm(config: str, out_dir: Path, model_name: str, train_log: Path) -> tuple[float, float]:
    """`rasa train` as ensure_model() runs it (same data order), with the project's Rasa cache
    (`.rasa/cache`), so unchanged components are restored. Returns wall and CPU seconds."""
    return timed_rasa_train(["--config", config, "--domain", "bot/domain.yml", "--data", "nlu_data", "bot/data"],
                            out_dir, model_name, train_log, cache_dir=None, what=config)


def log_components(train_log: Path) -> dict:
    text = train_log.read_text(errors="replace")
    restored = re.findall(r"Restored component '(\w+)' from cache", text)
    trained = re.findall(r"Finished training component '(\w+)'", text)
    seconds = component_seconds(text)
    return {"restored": restored, "trained": trained, "component_seconds": seconds,
            "ted_train_seconds": seconds.get("TEDPolicy"),
            # the point of the warm cache: DIET (minutes) must come from it, not be retrained
            "diet_restored": "DIETClassifier" in restored and "DIETClassifier" not in trained}


def _record(seconds: float, cpu: float, train_log: Path, how: str, **extra) -> dict:
    return {"train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu, 1), "timed": how,
            **log_components(train_log), "train_log": str(train_log),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "loadavg_1min_after": round(os.getloadavg()[0], 2), **extra}


def ensure_variant_model(variant: Variant, *, retime_product: bool) -> tuple[Path, dict]:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    if variant.policies is None:
        target = ensure_model(log=say)
        sidecar = target.with_name(target.name + ".tuning.json")
        record = json.loads(sidecar.read_text()) if sidecar.exists() else None
        if record is None and retime_product:
            say(f"{variant.label}: timing a warm-cache training of config.yml (temporary output; "
                "the product model is kept)...")
            with _train_lock(), tempfile.TemporaryDirectory(prefix="nudge-tuning-retime-") as tmp:
                log = MODELS_DIR / f"{target.name}.tuning-retime.log"
                seconds, cpu = rasa_train_warm("config.yml", Path(tmp), "retimed", log)
                record = _record(seconds, cpu, log, "warm cache, config.yml retrained into a temporary directory")
            sidecar.write_text(json.dumps(record, indent=2))
        record = dict(record or {"train_seconds": None, "timed": "not retimed (--no-retime)"})
        # TED's own training time is in the log of the model's original training (where
        # everything was trained); the warm retrain restored TED as well.
        original = MODELS_DIR / f"{target.name}.train.log"
        if original.exists():
            record["ted_train_seconds"] = component_seconds(original.read_text(errors="replace")).get("TEDPolicy")
            record["ted_train_seconds_from"] = str(original)
        return target, record
    config_text = composed_config(variant)
    digest = variant_hash(config_text)
    target = MODELS_DIR / f"bench-tuning-{variant.key}-{digest}.tar.gz"
    config_file = MODELS_DIR / f"bench-tuning-{variant.key}-{digest}.config.yml"
    with _train_lock():
        record = read_sidecar(target)
        if target.exists() and record is not None:
            say(f"{variant.label}: cached {target.name} (trained in {record['train_seconds']:.0f} s)")
            return target, record
        config_file.write_text(config_text)
        say(f"{variant.label}: training {target.name} with the warm Rasa cache...")
        log = MODELS_DIR / f"{target.name}.train.log"
        seconds, cpu = rasa_train_warm(str(config_file), MODELS_DIR, target.name.removesuffix(".tar.gz"), log)
        record = _record(seconds, cpu, log, "warm cache (.rasa/cache)",
                         config=str(config_file), policies_file=str(variant.policies.relative_to(ROOT)))
        sidecar_path(target).write_text(json.dumps(record, indent=2))
    say(f"{variant.label}: trained in {record['train_seconds']:.0f} s; restored from cache: "
        f"{', '.join(record['restored']) or 'nothing'}; trained: {', '.join(record['trained']) or 'nothing'}")
    if not record["diet_restored"]:
        say(f"WARNING: {variant.label}: DIET was not restored from .rasa/cache (cold cache?)")
    return target, record


# --- accuracy -------------------------------------------------------------------------------

def _domain_labels() -> tuple[set[str], set[str]]:
    domain = yaml.safe_load(DOMAIN.read_text())
    actions = set(domain.get("actions") or []) | set(domain.get("responses") or {}) | set(domain.get("forms") or {})
    intents = {i if isinstance(i, str) else next(iter(i)) for i in domain.get("intents") or []}
    return actions, intents


def _label_summary(labels: dict[str, dict]) -> dict:
    support = sum(v["support"] for v in labels.values())
    correct = sum(v["recall"] * v["support"] for v in labels.values())
    return {"support": support, "correct": round(correct),
            "accuracy": round(correct / support, 4) if support else None,
            "f1_weighted": round(sum(v["f1-score"] * v["support"] for v in labels.values()) / support, 4)
            if support else None,
            "f1_macro": round(statistics.fmean(v["f1-score"] for v in labels.values()), 4) if labels else None,
            "imperfect": {k: round(v["f1-score"], 3) for k, v in sorted(labels.items()) if v["f1-score"] < 1}}


def evaluate_stories(model: Path) -> dict:
    """`rasa test core --e2e` on tests/engine_stories, staged as tests/e2e/test_rasa_stories.py
    stages it (with --e2e Rasa 3.6 only reads files named test_*)."""
    files = sorted(STORIES.glob("*.yml"))
    expected = sum(len(yaml.safe_load(f.read_text())["stories"]) for f in files)
    with tempfile.TemporaryDirectory(prefix="nudge-tuning-e2e-") as tmp:
        tmp_path = Path(tmp)
        staged = tmp_path / "stories"
        staged.mkdir()
        for f in files:
            shutil.copy(f, staged / f"test_{f.name}")
        out = tmp_path / "results"
        env = dict(os.environ, RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONHASHSEED="0", SQLALCHEMY_SILENCE_UBER_WARNING="1")
        started = time.monotonic()
        result = subprocess.run(
            [str(RASA), "test", "core", "--e2e", "--model", str(model), "--stories", str(staged),
             "--out", str(out), "--no-plot"], cwd=tmp_path, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        report_file = out / "story_report.json"
        if result.returncode != 0 or not report_file.exists():
            sys.stderr.write((result.stdout + result.stderr)[-4000:])
            raise RuntimeError(f"rasa test core failed for {model.name} ({result.returncode})")
        report = json.loads(report_file.read_text())
        failed_file = out / "failed_test_stories.yml"
        failed_text = failed_file.read_text() if failed_file.exists() else ""
    failed = []
    if "None of the test stories failed" not in failed_text:
        failed = [s["story"] for s in (yaml.safe_load(failed_text) or {}).get("stories") or []]
    conversation = report.get("conversation_accuracy", {})
    actions, intents = _domain_labels()
    labels = {k: v for k, v in report.items()
              if isinstance(v, dict) and "f1-score" in v and not k.endswith(" avg")}
    action_labels = {k: v for k, v in labels.items() if k in actions or k.startswith(("action_", "utter_"))}
    intent_labels = {k: v for k, v in labels.items() if k in intents and k not in action_labels}
    return {"stories_expected": expected, "stories_total": conversation.get("total"),
            "stories_correct": conversation.get("correct"),
            "conversation_accuracy": conversation.get("accuracy"),
            "failed_stories": failed,
            # Rasa's action level: every predicted action, action_listen included.
            "actions": _label_summary(action_labels), "intents": _label_summary(intent_labels),
            "rasa_test_seconds": round(seconds, 1)}


# --- engines --------------------------------------------------------------------------------

class Target:
    """One variant's action server and engine on the shared private Redis."""

    def __init__(self, variant: Variant, model: Path, redis_url: str, index: int):
        self.variant, self.model = variant, model
        self.env = stack_env(f"{redis_url}/0", NUDGE_STATE_DIR=str(RUN_DIR),
                             NUDGE_KEY_PREFIX=f"tuning{index}", NUDGE_ENGINE_KEY_PREFIX=f"tuningengine{index}")
        self.settings = Settings.from_env(self.env)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = RUN_DIR / f"engine_tuning-{variant.key}.log"
        self.log = open(self.log_path, "w")
        self.stack = Stack(self.settings, self.env, out=self.log)
        self.latencies: list[float] = []
        self.per_message: list[float | None] = []  # ms per sample message (None: error), for pairing
        self.by_intent: dict[str, list[float]] = {}
        self.replies: list[str | None] = []        # JSON of the bot's answer, per sample message
        self.bot_messages = 0
        self.errors: list[str] = []
        self.cold_start = 0.0
        self.url = self.settings.engine_urls[0]

    def start(self) -> None:
        self.cold_start = start_actions_and_engine(self.stack, self.model)
        say(f"{self.variant.label}: engine answered /status {self.cold_start:.1f} s after spawning")

    def add_engine(self, own_actions: bool) -> str:
        """A second engine for the same model on a free port, sharing Redis (tracker and lock
        store) with the first; with its own action server unless own_actions is False."""
        actions_port = self.settings.actions_port
        if own_actions:
            actions_port = free_port()
            self.stack._spawn("actions2", [APP_PYTHON, "-m", "service.action_server"],
                              env=dict(self.env, NUDGE_ACTIONS_PORT=str(actions_port)))
            self.stack._wait("actions2", lambda: _http_ok(f"http://127.0.0.1:{actions_port}/health"), 60)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        self.stack.spawn_engine(self.model, port=port, actions_port=actions_port, name="engine2")
        self.stack._wait("engine2", lambda: self.stack.engine_ready(url), 240)
        say(f"{self.variant.label}: second engine answered /status {time.monotonic() - started:.1f} s after spawning")
        return url

    def memory(self) -> dict[str, dict]:
        return {c.name: proc_memory(c.process.pid) for c in self.stack.children if c.process.poll() is None}

    def log_errors(self) -> int:
        markers = (" ERROR ", "Traceback", '"level": "error"')
        return sum(1 for line in self.log_path.read_text(errors="replace").splitlines()
                   if any(m in line for m in markers))

    def stop(self) -> None:
        self.stack.stop()
        self.log.close()


def _metadata(text: str, language: str, index: int) -> dict:
    return {"message_id": f"tuning-{index}", "channel": "sms", "address": "+31600000000",
            "language": language, "today": TODAY.isoformat(), "text": text, "urgent": False}


async def worker_messages(pairs: list[tuple[str, str]], url: str, token: str) -> list[dict]:
    """What the worker would send to the dialogue for each reply: `/intent{entities}`
    (understood once, against the product engine, so every variant gets the same strings)."""
    out = []
    async with EngineClient(url, token, timeout=60) as engine:
        for text, language in pairs:
            understanding = await understand(text, language, engine, today=TODAY)
            if not understanding.is_keyword:
                out.append({"text": text, "language": language, "intent": understanding.intent,
                            "message": understanding.engine_message()})
    return out


async def measure_sequential(targets: list[Target], warm_up: list[dict], sample: list[dict]) -> None:
    clients = [EngineClient(t.url, t.settings.engine_token, timeout=60) for t in targets]
    try:
        for client in clients:
            for index, item in enumerate(warm_up):
                await client.send(f"warmup-{index}", item["message"], _metadata(item["text"], item["language"], index))
        pairs = list(zip(targets, clients, strict=True))
        for index, item in enumerate(sample):
            shift = index % len(pairs)            # rotate which engine goes first
            for target, client in pairs[shift:] + pairs[:shift]:
                meta = _metadata(item["text"], item["language"], index)
                started = time.perf_counter()
                try:
                    replies = await client.send(f"tune-{index}", item["message"], meta)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    target.errors.append(f"{item['message']}: {error!r}"[:300])
                    target.replies.append(None)
                    target.per_message.append(None)
                    continue
                ms = (time.perf_counter() - started) * 1000
                target.latencies.append(ms)
                target.per_message.append(ms)
                target.by_intent.setdefault(item["intent"], []).append(ms)
                target.bot_messages += len(replies)
                target.replies.append(json.dumps(replies, sort_keys=True, ensure_ascii=False))
    finally:
        for client in clients:
            await client.close()


async def open_loop(urls: list[str], token: str, sample: list[dict], rate: float, seconds: float,
                    tag: str) -> dict:
    """`rate` messages a second for `seconds`, each a new conversation, regardless of answers;
    latency from each message's scheduled time to its answer."""
    count = int(rate * seconds)
    latencies: list[float] = []
    finished: list[float] = []
    errors: list[str] = []
    per_engine: Counter = Counter()
    async with EngineClient(",".join(urls), token, timeout=120) as client:
        start = time.perf_counter() + 0.1

        async def one(index: int) -> None:
            item = sample[index % len(sample)]
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            sender = f"{tag}-{index}"
            per_engine[client.engine_for(sender)] += 1
            try:
                await client.send(sender, item["message"], _metadata(item["text"], item["language"], index))
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors.append(repr(error)[:300])
                return
            done = time.perf_counter()
            latencies.append((done - scheduled) * 1000)
            finished.append(done)

        await asyncio.gather(*(one(i) for i in range(count)))
    span = (max(finished) - start) if finished else float("nan")
    return {"engines": len(urls), "offered_per_second": rate, "seconds": seconds, "sent": count,
            "answered": len(latencies), "errors": errors[:10], "error_count": len(errors),
            "per_engine": [per_engine[i] for i in range(len(urls))],
            "achieved_per_second": round(len(latencies) / span, 2) if finished else 0.0,
            "last_answer_after_seconds": round(span, 2),
            "latency_ms": percentiles(latencies) if len(latencies) > 1 else {}}


# --- report ---------------------------------------------------------------------------------

def _fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def render(results: list[dict]) -> str:
    width, col = 38, 18
    lines = [f"{'':<{width}}" + "".join(f"{r['label']:>{col}}" for r in results), "-" * (width + col * len(results))]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{col}}" for v in values))

    row("policies", [r["policies_short"] for r in results])
    row("model archive MB", [f"{r['model_size_mb']:.1f}" for r in results])
    row("train wall s (warm cache)", [_fmt(r["training"].get("train_seconds")) for r in results])
    row("  DIET restored from cache", [
        ("yes" if r["training"]["diet_restored"] else "NO") if "diet_restored" in r["training"] else "-"
        for r in results])
    row("  policies trained (rest restored)", [
        "+".join(c.removesuffix("Policy") for c in r["training"].get("trained", []) if c in POLICY_NAMES)
        or "none" for r in results])
    row("  TED training s (hooks log)", [_fmt(r["training"].get("ted_train_seconds"), ".0f", "no TED")
                                         for r in results])
    row("stories correct / total", [f"{r['accuracy']['stories_correct']} / {r['accuracy']['stories_total']}"
                                    for r in results])
    row("conversation accuracy", [_fmt(r["accuracy"]["conversation_accuracy"], ".3f") for r in results])
    row("action accuracy (incl. listen)", [
        f"{_fmt(r['accuracy']['actions']['accuracy'], '.3f')} ({r['accuracy']['actions']['correct']}/"
        f"{r['accuracy']['actions']['support']})" for r in results])
    row("action F1 weighted / macro", [
        f"{_fmt(r['accuracy']['actions']['f1_weighted'], '.3f')} / {_fmt(r['accuracy']['actions']['f1_macro'], '.3f')}"
        for r in results])
    row("intent accuracy (same NLU)", [_fmt(r["accuracy"]["intents"]["accuracy"], ".3f") for r in results])
    row("engine cold start s", [f"{r['engine_cold_start_seconds']:.1f}" for r in results])
    stats = [r["latency_ms"] for r in results]
    row("REST /intent{} n", [str(s.get("n", 0)) for s in stats])
    for metric in ("p50", "p95", "p99", "mean"):
        row(f"REST /intent{{}} {metric} ms", [_fmt(s.get(metric)) for s in stats])
    row("  paired diff vs A, median ms", [_fmt(r["paired_diff_vs_product_ms"].get("median"), "+.1f")
                                          if r["key"] != "product" else "-" for r in results])
    row("  faster than A (share of msgs)", [_fmt(r["paired_diff_vs_product_ms"].get("faster_share"), ".2f")
                                            if r["key"] != "product" else "-" for r in results])
    for name in ("engine", "actions"):
        row(f"{name} VmRSS MiB (peak)", [
            f"{_fmt(r['memory_mib'].get(name, {}).get('VmRSS'), '.0f')} "
            f"({_fmt(r['memory_mib'].get(name, {}).get('VmHWM'), '.0f')})" for r in results])
    row("replies same as product's", [f"{r['replies_same_as_product']}/{r['latency_ms'].get('n', 0)}"
                                      for r in results])
    row("bot messages per reply (mean)", [f"{r['bot_messages_per_reply']:.2f}" for r in results])
    row("request errors / log errors", [f"{len(r['request_errors'])} / {r['log_error_lines']}" for r in results])
    lines.append("train wall: `rasa train` with the warm .rasa/cache as timed (A: config.yml retrained, so "
                 "every component, TED too, came from the cache);")
    lines.append("  after a story/rule change the policies retrain: add the TED row (its training time "
                 "from the log where it was trained).")
    return "\n".join(lines)


def render_engines(runs: list[dict]) -> str:
    width, col = 38, 18
    lines = [f"{'second engine (A product, open loop)':<{width}}{'1 engine':>{col}}{'2 engines':>{col}}",
             "-" * (width + 2 * col)]
    for rate in sorted({r["offered_per_second"] for r in runs}):
        pair = [next((r for r in runs if r["offered_per_second"] == rate and r["engines"] == n), None) for n in (1, 2)]

        def row(name: str, get, pair=pair) -> None:
            lines.append(f"{name:<{width}}" + "".join(f"{(get(r) if r else '-'):>{col}}" for r in pair))

        row(f"@{rate:g}/s sent / answered", lambda r: f"{r['sent']} / {r['answered']}")
        row(f"@{rate:g}/s split per engine", lambda r: "/".join(map(str, r["per_engine"])))
        for metric in ("p50", "p95", "p99"):
            row(f"@{rate:g}/s {metric} ms", lambda r, m=metric: _fmt(r["latency_ms"].get(m)))
        row(f"@{rate:g}/s achieved msg/s", lambda r: f"{r['achieved_per_second']:.1f}")
        row(f"@{rate:g}/s errors", lambda r: str(r["error_count"]))
        row(f"@{rate:g}/s loadavg 1m before", lambda r: f"{r['loadavg_before'][0]:.2f}")
    return "\n".join(lines)


def policies_short(variant: Variant) -> str:
    path = variant.policies or ROOT / "config.yml"
    policies = yaml.safe_load(path.read_text())["policies"]
    names = {"RulePolicy": "Rule", "MemoizationPolicy": "Memo", "TEDPolicy": "TED"}
    return "+".join(names.get(p["name"], p["name"]) for p in policies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,20", help="open-loop messages/s for the second-engine test")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each open-loop run")
    parser.add_argument("--no-retime", action="store_true",
                        help="do not retrain config.yml (warm cache) to time the product model's training")
    parser.add_argument("--shared-actions", action="store_true",
                        help="the second engine uses the first engine's action server")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    started_all = time.monotonic()
    phases: dict[str, dict] = {}

    def phase(name: str, before: list[float]) -> None:
        phases[name] = {"loadavg_before": before, "loadavg_after": loadavg()}
        say(f"{name}: load average before {before[0]:.2f}, after {phases[name]['loadavg_after'][0]:.2f} (2 cores)")

    before = loadavg()
    models = {v.key: ensure_variant_model(v, retime_product=not args.no_retime) for v in VARIANTS}
    phase("training", before)

    before = loadavg()
    accuracy = {}
    for variant in VARIANTS:
        say(f"{variant.label}: rasa test core --e2e on tests/engine_stories...")
        accuracy[variant.key] = evaluate_stories(models[variant.key][0])
        a = accuracy[variant.key]
        say(f"{variant.label}: {a['stories_correct']}/{a['stories_total']} stories, action accuracy "
            f"{a['actions']['accuracy']}, {a['rasa_test_seconds']:.0f} s")
    phase("accuracy", before)

    warm_texts, sample_pairs = sample_replies(SEED, PER_LANGUAGE, WARM_UP)
    redis = PrivateRedis()
    targets = [Target(v, models[v.key][0], redis.url, i) for i, v in enumerate(VARIANTS)]
    engine_runs: list[dict] = []
    results: list[dict] = []
    try:
        before = loadavg()
        for target in targets:      # one at a time: each cold start has the CPU to itself
            target.start()
        product = targets[0]
        warm_up = asyncio.run(worker_messages(warm_texts, product.url, product.settings.engine_token))
        sample = asyncio.run(worker_messages(sample_pairs, product.url, product.settings.engine_token))
        say(f"sending {len(warm_up)} warm-up and {len(sample)} measured /intent{{}} messages to each engine...")
        asyncio.run(measure_sequential(targets, warm_up, sample))
        phase("latency", before)
        for target in targets:
            answered = len(target.latencies)
            same = sum(1 for mine, theirs in zip(target.replies, product.replies, strict=True)
                       if mine is not None and mine == theirs)
            differing = [{"message": item["message"], "product": theirs, "variant": mine}
                         for item, mine, theirs in zip(sample, target.replies, product.replies, strict=True)
                         if mine != theirs][:5]
            paired = [mine - theirs for mine, theirs in zip(target.per_message, product.per_message, strict=True)
                      if mine is not None and theirs is not None]
            results.append({
                "key": target.variant.key, "label": target.variant.label,
                "policies_file": str((target.variant.policies or ROOT / "config.yml").relative_to(ROOT)),
                "policies_short": policies_short(target.variant),
                "model": target.model.name, "model_size_mb": size_mb(target.model),
                "training": models[target.variant.key][1], "accuracy": accuracy[target.variant.key],
                "engine_cold_start_seconds": round(target.cold_start, 2),
                "latency_ms": percentiles(target.latencies) if answered > 1 else {},
                # the same message to this engine and to the product's, moments apart
                "paired_diff_vs_product_ms": {
                    "median": round(statistics.median(paired), 1),
                    "mean": round(statistics.fmean(paired), 1),
                    "faster_share": round(sum(d < 0 for d in paired) / len(paired), 3)} if paired else {},
                "median_ms_by_intent": {k: {"n": len(v), "median": round(statistics.median(v), 1)}
                                        for k, v in sorted(target.by_intent.items())},
                "memory_mib": target.memory(),
                "replies_same_as_product": same, "replies_differing_examples": differing,
                "bot_messages_per_reply": round(target.bot_messages / max(1, answered), 2),
                "request_errors": target.errors, "log_error_lines": target.log_errors(),
                "process_log": str(target.log_path.relative_to(ROOT)),
            })
        for target in targets[1:]:          # free the cores for the second-engine test
            target.stop()
        targets = targets[:1]

        before = loadavg()
        second = product.add_engine(own_actions=not args.shared_actions)

        async def warm_second() -> None:
            async with EngineClient(second, product.settings.engine_token, timeout=60) as client:
                for index, item in enumerate(warm_up):
                    await client.send(f"warmup2-{index}", item["message"],
                                      _metadata(item["text"], item["language"], index))

        asyncio.run(warm_second())
        for rate in rates:
            for urls in ([product.url], [product.url, second]):
                run_before = loadavg()
                say(f"open loop: {rate:g} msg/s for {args.seconds:g} s to {len(urls)} engine(s)...")
                run = asyncio.run(open_loop(urls, product.settings.engine_token, sample, rate, args.seconds,
                                            f"ol{len(urls)}-{rate:g}"))
                run.update(loadavg_before=run_before, loadavg_after=loadavg())
                engine_runs.append(run)
                say(f"  answered {run['answered']}/{run['sent']}, p50 {run['latency_ms'].get('p50')} ms, "
                    f"p99 {run['latency_ms'].get('p99')} ms, {run['achieved_per_second']} msg/s")
        second_engine_memory = product.memory()
        phase("second engine", before)
    finally:
        for target in targets:
            target.stop()
        redis.stop()

    table = render(results)
    engines_table = render_engines(engine_runs)
    load_lines = [f"load average (1/5/15 min) before/after {name}: {p['loadavg_before']} / {p['loadavg_after']}"
                  for name, p in phases.items()]
    print("\n" + table + "\n\n" + engines_table + "\n\n" + "\n".join(load_lines), flush=True)
    total = time.monotonic() - started_all
    write_json(RESULTS / "engine_tuning.json", {
        "machine": machine(), "runtime_seconds": round(total, 1),
        "sample": {"per_language": PER_LANGUAGE, "measured": len(sample), "warm_up": len(warm_up),
                   "seed": SEED, "source": "tests/nlu_eval/{en,nl,de}.yml, as /intent{entities}",
                   "messages": [item["message"] for item in sample]},
        "phases": phases, "table": table.splitlines(), "second_engine_table": engines_table.splitlines(),
        "variants": results,
        "second_engine": {"model": results[0]["model"], "own_action_server": not args.shared_actions,
                          "runs": engine_runs, "memory_mib_after": second_engine_memory},
    })
    say(f"wrote {(RESULTS / 'engine_tuning.json').relative_to(ROOT)} ({total / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
