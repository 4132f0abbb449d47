"""Understanding one debtor reply: keyword pre-rules, the engine's NLU, entity normalisation.

This is the one path both the live worker and `nudge understand` take, so what the shell
prints is what the bot acted on. The result is handed to the dialogue as Rasa's intent
syntax (`/intent{"entity": value}`), so the dialogue acts on exactly this understanding and
the engine does not classify the text a second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from bot.core.entities import Amount, normalise_entities
from bot.core.keywords import match_prerules
from service.engine import EngineClient

# What the worker answers itself, never the dialogue: carrier keywords (opt-out, opt-in, help)
# and a request to cease all communication (not an intent of the engine's contract).
KEYWORD_INTENTS = {"opt_out", "opt_in", "help", "cease_communication"}


@dataclass(frozen=True)
class Understanding:
    intent: str
    confidence: float
    entities: dict[str, Any] = field(default_factory=dict)   # normalised: Amount, date, int, str
    source: str = "engine"          # "engine" or "prerule:<rule name>"
    urgent: bool = False

    @property
    def is_keyword(self) -> bool:
        return self.source.startswith("prerule:") and self.intent in KEYWORD_INTENTS

    def entities_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.entities.items():
            if isinstance(value, Amount):
                out[name] = value.to_json()
            elif isinstance(value, date):
                out[name] = value.isoformat()
            else:
                out[name] = value
        return out

    def to_contract(self) -> dict[str, Any]:
        """The understanding contract's fields (design.md)."""
        return {"intent": self.intent, "confidence": round(self.confidence, 4),
                "entities": self.entities_json(), "source": self.source,
                **({"urgent": True} if self.urgent else {})}

    @classmethod
    def from_contract(cls, stored: dict[str, Any]) -> "Understanding":
        """The inverse of `to_contract`: typed entities back from their JSON form."""
        entities: dict[str, Any] = {}
        for name, value in (stored.get("entities") or {}).items():
            if name == "amount":
                entities[name] = Amount(Decimal(str(value["value"])), value.get("currency"))
            elif name == "date":
                entities[name] = date.fromisoformat(value)
            else:
                entities[name] = value
        return cls(stored["intent"], float(stored["confidence"]), entities,
                   stored.get("source", "engine"), bool(stored.get("urgent")))

    def engine_message(self) -> str:
        return f"/{self.intent}{json.dumps(self.entities_json(), ensure_ascii=False)}"


def _mark(value: str) -> str:
    return "\u0000" + value + "\u0000"


async def understand(text: str, language: str, engine: EngineClient, *, today: date,
                     default_currency: str | None = None) -> Understanding:
    rule = match_prerules(text, language)
    if rule is not None and rule.intent in KEYWORD_INTENTS:
        return Understanding(rule.intent, 1.0, {}, f"prerule:{rule.rule}", rule.urgent)
    parsed = await engine.parse(text)
    spans = parsed.get("entities") or []
    entities = normalise_entities(text, language, spans, today, default_currency)
    if rule is not None:
        # A high-precision phrase rule (self-harm, deceased, attorney, bankruptcy) wins over
        # the statistical guess: missing one of these is worse than a rare false alarm.
        return Understanding(rule.intent, 1.0, entities, f"prerule:{rule.rule}", rule.urgent)
    intent = parsed.get("intent") or {}
    name = intent.get("name") or "nlu_fallback"
    if name == "nlu_fallback":
        # FallbackClassifier: below the threshold. The contract has out_of_scope for this.
        name = "out_of_scope"
    return Understanding(name, float(intent.get("confidence") or 0.0), entities, "engine")


def contract_json(understanding: Understanding, indent: int | None = None) -> str:
    """JSON of the contract with the amount as a bare exact number (no float rounding)."""
    data = understanding.to_contract()
    if "amount" in data["entities"]:
        data["entities"]["amount"]["value"] = _mark(str(data["entities"]["amount"]["value"]))
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    return text.replace('"\\u0000', "").replace('\\u0000"', "")


