"""The payment-arrangement dialogues of tests/engine_stories/, evaluated by Rasa itself.

`rasa test core --e2e` runs every `user:` text through the trained model's NLU (intent and
inline entities must match) and asks the policies for every `action:`; a single wrong intent,
entity or action fails its story. The actions themselves are not executed, so the verification
form they start at runtime never appears here (tests/e2e/test_conversation.py covers it).

Two details of Rasa 3.6 shape how this runs:
- with `--e2e` Rasa only reads story files whose name starts with `test_` (anything else is
  silently skipped, and zero stories "pass"), so the files are staged under that prefix, and
  the number of stories Rasa evaluated is checked against the number in the files;
- `--fail-on-prediction-errors` aborts at the first wrong prediction, before Rasa writes
  failed_test_stories.yml, so it is not used: every story is evaluated and the report and the
  failed stories file decide, and the file goes into the assertion message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from service.engine_model import RASA, ensure_model

# Loading the model takes ~30-60 s, evaluating the stories a few seconds more; a training
# (only if the inputs changed since the cached model) takes much longer.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT / "tests" / "engine_stories"


def story_names(path: Path) -> list[str]:
    return [story["story"] for story in yaml.safe_load(path.read_text())["stories"]]


def test_arrangement_stories_pass_rasa_end_to_end_evaluation(tmp_path):
    files = sorted(STORIES.glob("*.yml"))
    assert {f.name for f in files} >= {"arrangements_en.yml", "arrangements_nl.yml",
                                       "arrangements_de.yml"}
    expected = [name for f in files for name in story_names(f)]
    assert len(expected) == len(set(expected)), "story names must be unique"

    staged = tmp_path / "stories"
    staged.mkdir()
    for f in files:
        shutil.copy(f, staged / f"test_{f.name}")
    out = tmp_path / "results"

    model = ensure_model()
    env = dict(os.environ, RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONHASHSEED="0", SQLALCHEMY_SILENCE_UBER_WARNING="1")
    started = time.monotonic()
    result = subprocess.run(
        [str(RASA), "test", "core", "--e2e", "--model", str(model), "--stories", str(staged),
         "--out", str(out), "--no-plot"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    elapsed = time.monotonic() - started
    output = f"rasa test core ({elapsed:.0f} s), exit {result.returncode}:\n" + \
        (result.stdout + result.stderr)[-8000:]
    assert result.returncode == 0, output

    failed = out / "failed_test_stories.yml"
    report_file = out / "story_report.json"
    assert failed.exists() and report_file.exists(), output
    failed_text = failed.read_text()
    report = json.loads(report_file.read_text())
    accuracy = report.get("conversation_accuracy", {})
    # Per label (intent, action, or "[text](entity)"), what Rasa got wrong: the failed stories
    # file marks a wrong action "# predicted: ..." but shows a wrong NLU step only as what the
    # NLU found, without the user's text.
    wrong_labels = "\n".join(
        f"  {label}: precision {scores['precision']:.2f}, recall {scores['recall']:.2f}, "
        f"support {scores['support']}"
        for label, scores in report.items()
        if isinstance(scores, dict) and "f1-score" in scores and scores["f1-score"] < 1
        and not label.endswith(" avg"))

    assert accuracy.get("total") == len(expected), (
        f"Rasa evaluated {accuracy.get('total')} stories, the files hold {len(expected)}\n{output}")
    assert accuracy.get("correct") == len(expected), (
        f"{len(expected) - accuracy.get('correct', 0)} of {len(expected)} stories failed.\n"
        f"Labels with wrong predictions:\n{wrong_labels}\n"
        f"{failed.name}:\n{failed_text}")
    assert "None of the test stories failed" in failed_text, failed_text
