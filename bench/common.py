"""Helpers shared by the benchmark scripts: model variants (train, cache, time), private
Redis, starting actions + engine through `service.stack.Stack`, and small measurements.

The benchmark models live beside the product's model in ~/.cache/nudge/models/ as
`bench-<name>-<inputs hash>.tar.gz`, each with a `.bench.json` sidecar that records how long
its training took (so a cached model still reports its training time).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.engine_model import (  # noqa: E402
    MODELS_DIR, RASA, RASA_VERSION, ensure_model, inputs_hash, model_path)
from service.stack import APP_PYTHON, Stack, _http_ok, free_port  # noqa: E402

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CONFIGS = BENCH / "configs"
RUN_DIR = ROOT / ".run" / "bench"          # logs of the processes the benchmarks start
DOMAIN = ROOT / "bot" / "domain.yml"
DIALOGUE_DATA = ROOT / "bot" / "data"
LANGUAGES = ("en", "nl", "de")


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


# --- model variants -------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """One model to train: a config and the data directories it is trained on."""

    name: str                      # "ours-one", "ours-nl", "rasa-init-one", ...
    config: Path
    data: tuple[Path, ...]
    languages: tuple[str, ...]     # the held-out languages it is evaluated on
    product: bool = False          # True: the product's model, obtained via ensure_model()


def ours_one() -> ModelSpec:
    return ModelSpec("ours-one", ROOT / "config.yml", (ROOT / "nlu_data", DIALOGUE_DATA),
                     LANGUAGES, product=True)


def ours_language(language: str) -> ModelSpec:
    return ModelSpec(f"ours-{language}", ROOT / "config.yml",
                     (ROOT / "nlu_data" / language, DIALOGUE_DATA), (language,))


def rasa_init_one() -> ModelSpec:
    return ModelSpec("rasa-init-one", CONFIGS / "rasa_init.yml",
                     (ROOT / "nlu_data", DIALOGUE_DATA), LANGUAGES)


def spec_inputs(spec: ModelSpec) -> list[Path]:
    files = [spec.config, DOMAIN]
    for folder in spec.data:
        files += sorted(folder.rglob("*.yml"))
    return files


def spec_hash(spec: ModelSpec) -> str:
    """Like service.engine_model.inputs_hash, over this variant's config and data."""
    digest = hashlib.sha256(f"rasa=={RASA_VERSION}\n".encode())
    for path in spec_inputs(spec):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def spec_model_path(spec: ModelSpec) -> Path:
    if spec.product:
        return model_path()
    return MODELS_DIR / f"bench-{spec.name}-{spec_hash(spec)}.tar.gz"


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + ".bench.json")


def read_sidecar(model: Path) -> dict | None:
    path = sidecar_path(model)
    return json.loads(path.read_text()) if path.exists() else None


_HOOK = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) INFO\s+rasa\.engine\.training\.hooks\s+- "
                   r"(Starting to train|Finished training) component '(\w+)'")


def component_seconds(train_log: str) -> dict[str, float]:
    """Seconds per trained component from a `rasa train` log (1 s resolution; summed when a
    component name occurs twice, like the two CountVectorsFeaturizers)."""
    out: dict[str, float] = {}
    started: dict[str, datetime] = {}
    for stamp, what, component in _HOOK.findall(train_log):
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
        if what.startswith("Starting"):
            started[component] = moment
        elif component in started:
            out[component] = out.get(component, 0.0) + (moment - started.pop(component)).total_seconds()
    return out


def rasa_train(spec: ModelSpec, out_dir: Path, model_name: str, train_log: Path) -> tuple[float, float]:
    """`rasa train` for this spec with a fresh, empty Rasa cache (so the time is a cold
    training, not components restored from .rasa/cache); returns wall and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="nudge-bench-rasa-cache-") as cache:
        return timed_rasa_train(
            ["--config", str(spec.config.relative_to(ROOT)), "--domain", str(DOMAIN.relative_to(ROOT)),
             "--data", *[str(d.relative_to(ROOT)) for d in spec.data]],
            out_dir, model_name, train_log, cache_dir=cache, what=spec.name)


def timed_rasa_train(arguments: list[str], out_dir: Path, model_name: str, train_log: Path, *,
                     cache_dir: str | None, what: str) -> tuple[float, float]:
    """`rasa train <arguments>` from the project root into out_dir/model_name.tar.gz, its output
    in train_log; returns wall and CPU seconds. cache_dir: Rasa's cache (None: the project's
    own `.rasa/cache`, so unchanged components are restored)."""
    env = {k: v for k, v in os.environ.items() if k != "RASA_CACHE_DIRECTORY"}
    env.update(PYTHONHASHSEED="0", TF_DETERMINISTIC_OPS="1", RASA_TELEMETRY_ENABLED="false",
               TF_CPP_MIN_LOG_LEVEL="2")
    if cache_dir is not None:
        env["RASA_CACHE_DIRECTORY"] = cache_dir
    command = [str(RASA), "train", *arguments, "--out", str(out_dir), "--fixed-model-name", model_name]
    started, cpu_before = time.monotonic(), _children_cpu()
    with open(train_log, "w") as log_file:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, text=True)
    seconds, cpu = time.monotonic() - started, _children_cpu() - cpu_before
    if result.returncode != 0 or not (out_dir / f"{model_name}.tar.gz").exists():
        sys.stderr.write(train_log.read_text(errors="replace")[-4000:])
        raise RuntimeError(f"rasa train for {what} failed ({result.returncode}); see {train_log}")
    return seconds, cpu


def sample_replies(seed: int, per_language: int, warm_up: int) -> tuple[list[tuple[str, str]],
                                                                        list[tuple[str, str]]]:
    """(warm-up, sample): fixed, mixed-language (text, language) pairs from tests/nlu_eval."""
    from service.nlu_eval import load_examples

    rng = random.Random(seed)
    sample, rest = [], []
    for language in LANGUAGES:
        texts = [text for text, _ in load_examples(language)]
        rng.shuffle(texts)
        sample += [(t, language) for t in texts[:per_language]]
        rest += [(t, language) for t in texts[per_language:]]
    rng.shuffle(sample)
    rng.shuffle(rest)
    return rest[:warm_up], sample


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _training_record(spec: ModelSpec, seconds: float, cpu: float, train_log: Path, how: str) -> dict:
    components = component_seconds(train_log.read_text(errors="replace"))
    return {
        "variant_model": spec.name,
        "inputs_hash": inputs_hash() if spec.product else spec_hash(spec),
        "config": str(spec.config.relative_to(ROOT)),
        "data": [str(d.relative_to(ROOT)) for d in spec.data],
        "train_seconds": round(seconds, 1),
        # CPU seconds of `rasa train`: close to 2 x wall when it had both cores to itself.
        "train_cpu_seconds": round(cpu, 1),
        "component_seconds": components,
        "timed": how, "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "train_log": str(train_log),
        # Other work on the machine (tests, another training) slows training: the 1-minute
        # load average when training finished, against 2 cores.
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


def model_fingerprint(model: Path) -> dict[str, str]:
    """sha256 of every file in a model archive, by member name."""
    out = {}
    with tarfile.open(model) as archive:
        for member in archive.getmembers():
            if member.isfile():
                out[member.name] = hashlib.sha256(archive.extractfile(member).read()).hexdigest()
    return out


def ensure_spec_model(spec: ModelSpec, *, retime_product: bool = True) -> tuple[Path, dict]:
    """The cached model for this spec (trained if missing) and its training record.

    The product's model comes from `ensure_model()`. It was trained with the project's Rasa
    cache (often restoring DIET from it), so its own log does not tell a cold training time;
    unless its sidecar has one, it is retrained once into a temporary directory with an empty
    cache purely to time it, and the two archives are compared file by file.
    """
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    if spec.product:
        target = ensure_model(log=say)
        record = read_sidecar(target)
        if record is None or (retime_product and record.get("timed") != "cold"):
            if not retime_product:
                return target, {"train_seconds": None, "timed": "unknown (not retimed)"}
            say(f"timing a cold training of {spec.name} (identical inputs, empty Rasa cache, "
                "temporary output; the cached model is kept)...")
            with _train_lock(), tempfile.TemporaryDirectory(prefix="nudge-bench-retime-") as tmp:
                log = MODELS_DIR / f"{target.name}.bench-retime.log"
                seconds, cpu = rasa_train(spec, Path(tmp), "retimed", log)
                record = _training_record(spec, seconds, cpu, log, "cold")
                cached, retrained = model_fingerprint(target), model_fingerprint(Path(tmp) / "retimed.tar.gz")
                same = sorted(n for n in cached if retrained.get(n) == cached[n])
                record["retrain_identical_files"] = f"{len(same)} of {len(cached)}"
                record["retrain_differing_files"] = sorted(set(cached) - set(same))
            sidecar_path(target).write_text(json.dumps(record, indent=2))
            say(f"{spec.name}: cold training took {record['train_seconds']:.0f} s")
        return target, record
    target = spec_model_path(spec)
    with _train_lock():
        record = read_sidecar(target)
        if target.exists() and record is not None:
            return target, record
        say(f"training {target.name} ({spec.config.name} on "
            f"{', '.join(str(d.relative_to(ROOT)) for d in spec.data)})...")
        log = MODELS_DIR / f"{target.name}.train.log"
        seconds, cpu = rasa_train(spec, MODELS_DIR, target.name.removesuffix(".tar.gz"), log)
        record = _training_record(spec, seconds, cpu, log, "cold")
        sidecar_path(target).write_text(json.dumps(record, indent=2))
        say(f"trained {target.name} in {seconds:.0f} s")
        return target, record


class _train_lock:
    """Never two benchmark trainings at once (they would share the two cores and both times
    would be wrong). ensure_model() locks per model (<model>.lock), so it is not held off."""

    def __enter__(self):
        self._file = open(MODELS_DIR / ".train.lock", "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


# --- processes ------------------------------------------------------------------------------

class PrivateRedis:
    """A throw-away redis-server on a free loopback port (no persistence); stop() ends it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make setup`")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from service.stack import redis_answers
        deadline = time.monotonic() + 20
        while not redis_answers(self.url):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_actions_and_engine(stack: Stack, model: Path) -> float:
    """Action server, then engine (Redis tracker and lock store, endpoints.yml), as
    Stack.start_services starts them, without gateway and worker. Returns the engine's cold
    start: seconds from spawning it until /status answers."""
    settings = stack.settings
    stack._spawn("actions", [APP_PYTHON, "-m", "service.action_server"])
    stack._wait("actions", lambda: _http_ok(f"http://127.0.0.1:{settings.actions_port}/health"), 60)
    return start_engine(stack, model, with_endpoints=True)


def start_engine(stack: Stack, model: Path, *, with_endpoints: bool) -> float:
    """Spawn the engine as the product does; seconds until /status answers (cold start)."""
    started = time.monotonic()
    stack.spawn_engine(model, with_endpoints=with_endpoints)
    stack._wait("engine", stack.engine_ready, 240)
    return time.monotonic() - started


def start_gateway_and_worker(stack: Stack) -> None:
    settings = stack.settings
    stack._spawn("gateway", [APP_PYTHON, "-m", "service.gateway"])
    stack._spawn("worker", [APP_PYTHON, "-m", "service.worker"])
    stack._wait("gateway", lambda: _http_ok(
        f"http://{settings.gateway_host}:{settings.gateway_port}/healthz"), 60)


# --- measurements ---------------------------------------------------------------------------

def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB; plus the RSS of its descendants, if any."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except FileNotFoundError:
        return {}
    children = _descendants(pid)
    if children:
        out["descendants_VmRSS"] = round(sum(proc_memory(c).get("VmRSS", 0) for c in children), 1)
    return out


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ValueError):
            pass
    return found


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 (inclusive method: with ~150 samples p99 lies between the two largest),
    mean and max, in ms."""
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"n": len(samples_ms), "p50": round(cuts[49], 1), "p95": round(cuts[94], 1),
            "p99": round(cuts[98], 1), "mean": round(statistics.fmean(samples_ms), 1),
            "max": round(max(samples_ms), 1)}


def size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 1)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, text=True,
                                    capture_output=True).stdout.strip())
    except OSError:
        commit, dirty = "?", None
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "rasa": RASA_VERSION, "git_commit": commit, "git_dirty": dirty,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
