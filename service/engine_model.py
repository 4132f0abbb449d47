"""The trained Rasa model, cached by a hash of everything that shapes it.

`ensure_model()` returns the model for the current config, domain, stories, rules, NLU data
and Rasa version, training it first only when no model with that hash exists. Training uses
fixed random seeds (config.yml) and a fixed hash seed, so the same inputs give the same model.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from service.settings import PROJECT_ROOT

ENGINE_VENV = PROJECT_ROOT / ".venv-engine"
RASA = ENGINE_VENV / "bin" / "rasa"
# Outside the checkout so every clone on this machine (CI's fresh clones too) reuses a model
# trained from the same inputs; the file name carries the inputs' hash.
MODELS_DIR = Path(os.environ.get("NUDGE_MODELS_DIR",
                                 Path.home() / ".cache" / "nudge" / "models")).expanduser()
RASA_VERSION = "3.6.21"


def model_inputs(root: Path = PROJECT_ROOT) -> list[Path]:
    files = [root / "config.yml", root / "bot" / "domain.yml"]
    files += sorted((root / "bot" / "data").rglob("*.yml"))
    files += sorted((root / "nlu_data").rglob("*.yml"))
    return files


def inputs_hash(root: Path = PROJECT_ROOT) -> str:
    digest = hashlib.sha256(f"rasa=={RASA_VERSION}\n".encode())
    for path in model_inputs(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def model_path(root: Path = PROJECT_ROOT) -> Path:
    return MODELS_DIR / f"nudge-{inputs_hash(root)}.tar.gz"


def ensure_model(*, force: bool = False, log=print) -> Path:
    """The cached model for the current inputs; trains it (under a file lock) if missing."""
    target = model_path()
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with open(MODELS_DIR / f"{target.name}.lock", "w") as lock:
        # Two test sessions or `make run` and `make test` at once must not train twice.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and not force:
            return target
        log(f"training the engine model {target.name} (inputs changed or no model yet)...")
        started = time.monotonic()
        env = dict(os.environ, PYTHONHASHSEED="0", TF_DETERMINISTIC_OPS="1", RASA_TELEMETRY_ENABLED="false",
                   TF_CPP_MIN_LOG_LEVEL="2")
        command = [
            str(RASA), "train",
            "--config", "config.yml",
            "--domain", "bot/domain.yml",
            "--data", "nlu_data", "bot/data",
            "--out", str(MODELS_DIR),
            "--fixed-model-name", target.name.removesuffix(".tar.gz"),
        ]
        train_log = MODELS_DIR / f"{target.name}.train.log"
        with open(train_log, "w") as log_file:
            result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, stdout=log_file,
                                    stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0 or not target.exists():
            sys.stderr.write(train_log.read_text()[-6000:])
            raise RuntimeError(f"rasa train failed with exit code {result.returncode} (see {train_log})")
        log(f"trained {target.name} in {time.monotonic() - started:.0f} s")
        return target


if __name__ == "__main__":
    print(ensure_model(force="--force" in sys.argv))
