"""One model for en/nl/de or one per language, and our pipeline or `rasa init`'s, by measurement.

Variants (every model trained with the engine's `rasa train`, fixed hash seed, empty Rasa cache):
  ours-one           config.yml on nlu_data/ (all languages) + bot/data: the product's model
                     (service.engine_model.ensure_model)
  ours-per-language  config.yml three times, on nlu_data/<lang> + bot/data; each model is
                     evaluated on its own language only
  rasa-init-one      bench/configs/rasa_init.yml (`rasa init`'s defaults) on all languages

Each model is evaluated on the held-out replies in tests/nlu_eval/ through the live
understanding path (service.nlu_eval.evaluate_language: keyword pre-rules, engine,
normalisation), against an engine started with Stack.start_engine_only. The engine's own
intent (no pre-rules) is scored as well, with the same service.nlu_eval.score.

    .venv/bin/python bench/nlu_variants.py            # prints a table, writes bench/results/nlu_variants.json

Models are cached in ~/.cache/nudge/models/ by the hash of their inputs, with a
`.bench.json` sidecar holding their training time, so a second run only evaluates.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    LANGUAGES, RESULTS, ROOT, RUN_DIR, ModelSpec, ensure_spec_model, machine, ours_language,
    ours_one, proc_memory, rasa_init_one, say, size_mb, write_json,
)
from service.engine import EngineClient  # noqa: E402
from service.nlu_eval import evaluate_language, load_examples, score  # noqa: E402
from service.settings import Settings, new_token  # noqa: E402
from service.stack import Stack, free_port  # noqa: E402

VARIANTS: dict[str, tuple[str, list[ModelSpec]]] = {
    "ours-one": ("ours, one model", [ours_one()]),
    "ours-per-language": ("ours, per language", [ours_language(lang) for lang in LANGUAGES]),
    "rasa-init-one": ("rasa init config, one model", [rasa_init_one()]),
}
# Per-language must beat one model by more than this mean macro-F1 to be called a clear win.
CLEAR_WIN = 0.02


async def _score_model(settings: Settings, languages: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    async with EngineClient(settings.engine_url, settings.engine_token, timeout=60) as engine:
        for language in languages:
            live = await evaluate_language(engine, language)
            pairs = []
            for text, expected in load_examples(language):
                parsed = await engine.parse(text)
                name = (parsed.get("intent") or {}).get("name") or "nlu_fallback"
                # As in service.understanding: the FallbackClassifier's nlu_fallback is out_of_scope.
                pairs.append((expected, "out_of_scope" if name == "nlu_fallback" else name))
            out[language] = {"live": dataclasses.asdict(live),
                             "engine_only": dataclasses.asdict(score(pairs, language))}
            say(f"  {language}: live macro-F1 {live.macro_f1:.3f}, accuracy {live.accuracy:.3f}; "
                f"engine only macro-F1 {out[language]['engine_only']['macro_f1']:.3f}")
    return out


def evaluate(spec: ModelSpec, model: Path) -> dict:
    env = {**os.environ, "NUDGE_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
           "NUDGE_ENGINE_TOKEN": new_token(), "NUDGE_STATE_DIR": str(RUN_DIR)}
    settings = Settings.from_env(env)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / f"nlu_variants-{spec.name}.log", "w") as log:
        stack = Stack(settings, env, out=log)
        try:
            started = time.monotonic()
            stack.start_engine_only(model)
            cold_start = time.monotonic() - started
            say(f"evaluating {spec.name} ({model.name}); engine up in {cold_start:.1f} s")
            scores = asyncio.run(_score_model(settings, spec.languages))
            memory = proc_memory(stack.child("engine").process.pid)
        finally:
            stack.stop()
    return {"cold_start_seconds": round(cold_start, 1), "engine_memory_mib": memory, "scores": scores}


def summarise(key: str, label: str, models: list[dict]) -> dict:
    per_language = {}
    for model in models:
        for language, result in model["scores"].items():
            per_language[language] = {
                "macro_f1": round(result["live"]["macro_f1"], 4),
                "accuracy": round(result["live"]["accuracy"], 4),
                "engine_only_macro_f1": round(result["engine_only"]["macro_f1"], 4),
                "engine_only_accuracy": round(result["engine_only"]["accuracy"], 4),
                "model": model["name"],
            }
    train = [m["training"].get("train_seconds") for m in models]
    cpu = [m["training"].get("train_cpu_seconds") for m in models]
    return {
        "key": key, "label": label,
        "per_language": {lang: per_language[lang] for lang in LANGUAGES if lang in per_language},
        "mean_macro_f1": round(statistics.fmean(v["macro_f1"] for v in per_language.values()), 4),
        "mean_engine_only_macro_f1": round(
            statistics.fmean(v["engine_only_macro_f1"] for v in per_language.values()), 4),
        "train_seconds": round(sum(train), 1) if None not in train else None,
        "train_cpu_seconds": round(sum(cpu), 1) if None not in cpu else None,
        "size_mb": round(sum(m["size_mb"] for m in models), 1),
        "engine_rss_mib": round(sum(m["engine_memory_mib"].get("VmRSS", 0) for m in models), 1),
        "models": models,
    }


def render(rows: list[dict]) -> str:
    head = (f"{'variant':<30}" + "".join(f"| {lang + ' F1':>7} {lang + ' acc':>7} " for lang in LANGUAGES)
            + f"| {'mean F1':>7} | {'train s':>7} | {'CPU s':>6} | {'size MB':>7} | {'RSS MiB':>7}")
    lines = ["Held-out replies (tests/nlu_eval), live understanding path (pre-rules + engine):", "",
             head, "-" * len(head)]
    for row in rows:
        cells = "".join(f"| {row['per_language'][lang]['macro_f1']:>7.3f} "
                        f"{row['per_language'][lang]['accuracy']:>7.3f} " for lang in LANGUAGES)
        train = f"{row['train_seconds']:>7.0f}" if row["train_seconds"] is not None else f"{'?':>7}"
        train += " | " + (f"{row['train_cpu_seconds']:>6.0f}" if row.get("train_cpu_seconds")
                          is not None else f"{'?':>6}")
        lines.append(f"{row['label']:<30}{cells}| {row['mean_macro_f1']:>7.3f} | {train} | "
                     f"{row['size_mb']:>7.1f} | {row['engine_rss_mib']:>7.0f}")
    lines += ["", "Engine intent alone (no keyword pre-rules), macro-F1:", ""]
    head2 = f"{'variant':<30}" + "".join(f"| {lang:>6} " for lang in LANGUAGES) + f"| {'mean':>6}"
    lines += [head2, "-" * len(head2)]
    for row in rows:
        lines.append(f"{row['label']:<30}" + "".join(
            f"| {row['per_language'][lang]['engine_only_macro_f1']:>6.3f} " for lang in LANGUAGES)
            + f"| {row['mean_engine_only_macro_f1']:>6.3f}")
    lines += ["", "train s / CPU s: wall time and CPU time of `rasa train` with an empty Rasa cache (per",
              "language: the sum of three trainings; CPU time is less disturbed by other load on the",
              "machine); size MB: model archive(s) on disk; RSS MiB: engine VmRSS after the evaluation",
              "(per language: three engines, summed)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run")
    parser.add_argument("--no-retime", action="store_true",
                        help="do not retrain the product model just to time a cold training")
    args = parser.parse_args()
    chosen = args.only or list(VARIANTS)

    # Train everything first (sequentially: training takes both cores), then evaluate.
    trained: dict[str, tuple[Path, dict]] = {}
    for key in chosen:
        for spec in VARIANTS[key][1]:
            trained[spec.name] = ensure_spec_model(spec, retime_product=not args.no_retime)

    rows = []
    for key in chosen:
        label, specs = VARIANTS[key]
        models = []
        for spec in specs:
            path, training = trained[spec.name]
            models.append({"name": spec.name, "model": path.name, "size_mb": size_mb(path),
                           "training": training, **evaluate(spec, path)})
        rows.append(summarise(key, label, models))

    table = render(rows)
    result = {"machine": machine(), "table": table.splitlines(), "variants": rows}
    by_key = {row["key"]: row for row in rows}
    if "ours-one" in by_key and "ours-per-language" in by_key:
        gain = by_key["ours-per-language"]["mean_macro_f1"] - by_key["ours-one"]["mean_macro_f1"]
        result["decision"] = {
            "per_language_minus_one_model_mean_macro_f1": round(gain, 4),
            "clear_win_threshold": CLEAR_WIN,
            "per_language_wins_clearly": gain > CLEAR_WIN,
        }
        table += (f"\n\nPer language minus one model, mean macro-F1: {gain:+.3f} "
                  f"({'per language wins clearly' if gain > CLEAR_WIN else 'no clear win for per language'}"
                  f", threshold {CLEAR_WIN})")
    print("\n" + table, flush=True)
    write_json(RESULTS / "nlu_variants.json", result)
    say(f"wrote {(RESULTS / 'nlu_variants.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
