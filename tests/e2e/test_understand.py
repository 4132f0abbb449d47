"""Understanding through the live path (pre-rules → engine → normalisation), from the shell
as a user runs it, and on the held-out replies of every language."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from service.engine import EngineClient
from service.nlu_eval import evaluate_language

pytestmark = [pytest.mark.engine]

CASES = [
    # text, lang, intent (None: any), expected entities (subset)
    ("ik kan 75 euro per maand", "nl", "propose_amount",
     {"amount": {"value": 75, "currency": "EUR"}, "frequency": "monthly"}),
    ("I can pay €1.234,56 on friday", "en", "promise_to_pay",
     {"amount": {"value": 1234.56, "currency": "EUR"}, "date": "2026-11-20"}),
    ("ich kann fünfzig Euro im monat zahlen", "de", "propose_amount",
     {"amount": {"value": 50, "currency": "EUR"}, "frequency": "monthly"}),
    ("i can do £25 a week", "en", "propose_amount",
     {"amount": {"value": 25, "currency": "GBP"}, "frequency": "weekly"}),
    ("ik betaal volgende week maandag", "nl", "promise_to_pay", {"date": "2026-11-23"}),
    ("ich zahle am 25.", "de", "promise_to_pay", {"date": "2026-11-25"}),
    ("i'll pay the rest at the end of the month", "en", None, {"date": "2026-11-30"}),
    ("can i pay it in 3 payments", "en", "request_payment_plan", {"installments": 3}),
    ("zwei Raten wären gut", "de", None, {"installments": 2}),
    ("STOP", "en", "opt_out", {}),
    ("AFMELDEN", "nl", "opt_out", {}),
]


def run_understand(product, text: str, lang: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "understand", text, "--lang", lang,
         "--today", "2026-11-18", "--currency", "EUR"],
        env=product.env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("text, lang, intent, entities", CASES)
def test_nudge_understand_prints_the_contract(product, text, lang, intent, entities):
    understood = run_understand(product, text, lang)
    assert set(understood) >= {"intent", "confidence", "entities"}
    if intent is not None:
        assert understood["intent"] == intent
    for name, value in entities.items():
        assert understood["entities"].get(name) == value, understood


def test_amounts_are_exact_numbers_in_the_json(product):
    understood = run_understand(product, "ik kan €1.234,56 betalen", "nl")
    assert understood["entities"]["amount"] == {"value": 1234.56, "currency": "EUR"}


def test_a_carrier_keyword_is_understood_without_the_engine(product):
    understood = run_understand(product, "  Stop!! ", "de")
    assert understood["intent"] == "opt_out" and understood["source"].startswith("prerule:")


CRITICAL = ("dispute", "wrong_number", "hardship", "vulnerability", "deceased", "bankruptcy",
            "attorney", "request_human", "opt_out")


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize("language", ["en", "nl", "de"])
async def test_held_out_replies_are_understood(product, language):
    """The held-out set (tests/nlu_eval/) was never trained on. docs/nlu-evaluation.md has the
    full table; these floors catch a model or data change that makes things worse."""
    async with EngineClient(product.settings.engine_url, product.settings.engine_token) as engine:
        score = await evaluate_language(engine, language)
    assert score.macro_f1 >= 0.80, score
    weak = {i: r for i, r in score.recall.items() if i in CRITICAL and r < 0.5}
    assert not weak, f"critical intents recalled too rarely in {language}: {weak}"
