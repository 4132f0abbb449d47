"""Which tone a debtor's next message gets: Thompson sampling per segment, with guardrails.

Pure code: the counts come in, a decision comes out; randomness only from the ``rng`` passed
(so tests and the simulator are reproducible).

Order of the rules in :func:`choose_tone`:

1. **protected** (vulnerable, hardship): always ``soft`` (domain rules: CONC 7.3 / FG21/1).
2. **holdout**: a stable random share of debtors always gets the holdout tone, so the bandit's
   lift can be measured against a fixed policy.
3. **pinned**: a manager chose the tone for the segment.
4. **bandit**: Thompson sampling over the allowed tones that are not suspended.

Thompson sampling draws one conversion rate per tone from its Beta(1 + successes,
1 + failures) posterior and uses the tone with the highest draw. Choosing with probability
P(tone is best) is the same thing in distribution, and that probability is what we log for an
unbiased (inverse-propensity) analysis; it is estimated once per segment and batch by Monte
Carlo (:func:`thompson_allocation`), because outcomes arrive days later, not per message.
The exploration floor mixes in a uniform share: p = floor / K + (1 - floor) * P(best).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.core.segments import BanditSettings, Guardrails, SocialProofSettings

PROTECTED_TONE = "soft"
_Z = {0.90: 1.6448536, 0.95: 1.9599640, 0.99: 2.5758293}


@dataclass(frozen=True)
class ArmCounts:
    successes: int = 0
    failures: int = 0


@dataclass(frozen=True)
class ToneDecision:
    tone: str
    probability: float   # P(this tone | the rules and the state when chosen)
    group: str           # bandit | holdout | pinned | guardrail
    reason: str = ""


def thompson_allocation(arms: Mapping[str, ArmCounts], *, floor: float, rng: random.Random,
                        draws: int = 4000) -> dict[str, float]:
    """P(each tone is chosen) under Thompson sampling with the exploration floor."""
    tones = list(arms)
    if not tones:
        raise ValueError("no tone to choose from")
    if len(tones) == 1:
        return {tones[0]: 1.0}
    wins = dict.fromkeys(tones, 0)
    params = [(1 + arms[t].successes, 1 + arms[t].failures) for t in tones]
    for _ in range(draws):
        best_value, best = -1.0, tones[0]
        for tone, (alpha, beta) in zip(tones, params):
            value = rng.betavariate(alpha, beta)
            if value > best_value:
                best_value, best = value, tone
        wins[best] += 1
    share = floor / len(tones)
    return {t: share + (1 - floor) * wins[t] / draws for t in tones}


def in_holdout(debtor_id: str, share: float, salt: str = "nudge-holdout") -> bool:
    """Stable: the same debtor is in or out on every step and in every process."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{debtor_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


def sample(allocation: Mapping[str, float], rng: random.Random) -> str:
    point, total = rng.random(), 0.0
    tone = next(iter(allocation))
    for tone, p in allocation.items():
        total += p
        if point < total:
            return tone
    return tone  # rounding at the top end


def choose_tone(*, debtor_id: str, allowed: Iterable[str], settings: BanditSettings,
                allocation: Mapping[str, float] | None, rng: random.Random,
                protected: bool = False, pinned: str | None = None,
                suspended: Iterable[str] = ()) -> ToneDecision:
    """The tone for one message. `allocation` is :func:`thompson_allocation` over the
    candidates (allowed minus suspended); None when there is no candidate left."""
    allowed = tuple(allowed)
    suspended = frozenset(suspended)
    if protected:
        return ToneDecision(PROTECTED_TONE, 1.0, "guardrail", "vulnerable or in hardship")
    if in_holdout(debtor_id, settings.holdout_share) and settings.holdout_tone not in suspended:
        return ToneDecision(settings.holdout_tone, 1.0, "holdout")
    if pinned and pinned in allowed and pinned not in suspended:
        return ToneDecision(pinned, 1.0, "pinned", "a manager pinned this tone")
    if not allocation:
        return ToneDecision(PROTECTED_TONE, 1.0, "guardrail", "every allowed tone is suspended")
    tone = sample(allocation, rng)
    return ToneDecision(tone, allocation[tone], "bandit")


def candidates(allowed: Iterable[str], suspended: Iterable[str]) -> list[str]:
    out = set(suspended)
    return [t for t in allowed if t not in out]


def suspended_tones(sent: Mapping[str, int], opted_out: Mapping[str, int],
                    complained: Mapping[str, int], rails: Guardrails) -> dict[str, str]:
    """Tones whose opt-out or complaint rate is, with 95 % confidence, above the limit (the
    Wilson lower bound passes it: three opt-outs in the first fifty messages of a tone whose
    true rate is 1 % are bad luck, not a reason to stop it for good). tone -> why."""
    out: dict[str, str] = {}
    for tone, n in sent.items():
        if n < rails.min_sample:
            continue
        for what, count, limit in (("opt-out", opted_out.get(tone, 0), rails.max_opt_out_rate),
                                   ("complaint", complained.get(tone, 0), rails.max_complaint_rate)):
            low, _high = wilson_interval(count, n, 0.95)
            if low > limit:
                out[tone] = (f"{what} rate {count / n:.1%} (at least {low:.1%}) over "
                             f"{limit:.1%} ({n} sent)")
                break
    return out


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) with no data."""
    if total <= 0:
        return 0.0, 1.0
    z = _Z[confidence]
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def proof_percent(successes: int, total: int, settings: SocialProofSettings) -> int | None:
    """The figure a social-proof message may state ("N out of 100 people..."), or None: the
    wording without numbers. Conservative: the lower confidence bound, rounded down."""
    if total < settings.min_sample:
        return None
    low, _high = wilson_interval(successes, total, settings.confidence)
    percent = int(low * 100) // settings.round_down_to * settings.round_down_to
    return percent if percent >= settings.min_percent else None
