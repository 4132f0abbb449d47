"""Intent quality on the held-out replies in tests/nlu_eval/ (never used for training).

Every reply goes through the live understanding path (keyword pre-rules, the engine, the
normalisation), and the report gives macro-F1 and per-intent recall per language.

    .venv/bin/python -m service.nlu_eval --start-engine     # or `make eval`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date

import yaml

from service.engine import EngineClient
from service.settings import PROJECT_ROOT, Settings, new_token
from service.understanding import understand

EVAL_DIR = PROJECT_ROOT / "tests" / "nlu_eval"
REPORT = PROJECT_ROOT / "docs" / "nlu-evaluation.md"
LANGUAGES = ("en", "nl", "de")
_ANNOTATION = re.compile(r"\[([^\]]+)\]\([a-z_]+\)")


def load_examples(language: str) -> list[tuple[str, str]]:
    data = yaml.safe_load((EVAL_DIR / f"{language}.yml").read_text(encoding="utf-8"))
    examples = []
    for block in data["nlu"]:
        for line in block["examples"].splitlines():
            line = line.strip()
            if line.startswith("- "):
                examples.append((_ANNOTATION.sub(r"\1", line[2:].strip()), block["intent"]))
    return examples


@dataclass
class LanguageScore:
    language: str
    total: int
    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    f1: dict[str, float]
    confusions: list[tuple[str, str, int]]


def score(pairs: list[tuple[str, str]], language: str) -> LanguageScore:
    """pairs: (expected, predicted)."""
    intents = sorted({expected for expected, _ in pairs})
    true_pos, false_pos, false_neg = Counter(), Counter(), Counter()
    confusion = Counter()
    for expected, predicted in pairs:
        if expected == predicted:
            true_pos[expected] += 1
        else:
            false_pos[predicted] += 1
            false_neg[expected] += 1
            confusion[(expected, predicted)] += 1
    recall, f1 = {}, {}
    for intent in intents:
        tp, fp, fn = true_pos[intent], false_pos[intent], false_neg[intent]
        r = tp / (tp + fn) if tp + fn else 0.0
        p = tp / (tp + fp) if tp + fp else 0.0
        recall[intent] = r
        f1[intent] = 2 * p * r / (p + r) if p + r else 0.0
    return LanguageScore(language, len(pairs), sum(true_pos.values()) / max(1, len(pairs)),
                         sum(f1.values()) / max(1, len(f1)), recall, f1,
                         [(e, p, n) for (e, p), n in confusion.most_common(8)])


async def evaluate_language(engine: EngineClient, language: str) -> LanguageScore:
    pairs = []
    for text, expected in load_examples(language):
        result = await understand(text, language, engine, today=date(2026, 11, 18))
        pairs.append((expected, result.intent))
    return score(pairs, language)


def render_report(scores: list[LanguageScore], model: str) -> str:
    lines = [
        "# Understanding: held-out evaluation",
        "",
        f"Model `{model}`; replies in `tests/nlu_eval/<lang>.yml`, written apart from the training",
        "data and never trained on. Each goes through the live path (keyword pre-rules, engine,",
        "normalisation). Reproduce with `make eval` (`.venv/bin/python -m service.nlu_eval --start-engine`).",
        "",
        "| language | replies | accuracy | intent macro-F1 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s.language} | {s.total} | {s.accuracy:.3f} | {s.macro_f1:.3f} |" for s in scores]
    lines += ["", "## Recall per intent", "", "| intent | " + " | ".join(s.language for s in scores) + " |",
              "|---|" + "---|" * len(scores)]
    for intent in sorted(scores[0].recall):
        lines.append(f"| {intent} | " + " | ".join(f"{s.recall.get(intent, 0):.2f}" for s in scores) + " |")
    lines += ["", "## Most frequent confusions", ""]
    for s in scores:
        pairs = ", ".join(f"{e} → {p} ({n})" for e, p, n in s.confusions) or "none"
        lines.append(f"- **{s.language}**: {pairs}")
    return "\n".join(lines) + "\n"


async def evaluate_all(settings: Settings, console=None, *, write: bool = True) -> int:
    from service.engine_model import model_path

    scores = []
    async with EngineClient(settings.engine_url, settings.engine_token, timeout=60) as engine:
        for language in LANGUAGES:
            scores.append(await evaluate_language(engine, language))
    report = render_report(scores, model_path().name)
    print(report)
    if write:
        REPORT.write_text(report, encoding="utf-8")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start-engine", action="store_true",
                        help="start a temporary engine with the current model")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not args.start_engine:
        sys.exit(asyncio.run(evaluate_all(Settings.from_env(), write=not args.no_write)))
    from service.stack import Stack, free_port

    env = {**os.environ, "NUDGE_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
           "NUDGE_ENGINE_TOKEN": new_token()}
    settings = Settings.from_env(env)
    stack = Stack(settings, env, quiet=True)
    try:
        stack.start_engine_only()
        code = asyncio.run(evaluate_all(settings, write=not args.no_write))
    finally:
        stack.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
