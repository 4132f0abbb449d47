"""How simulated debtors answer campaign messages: the true behaviour the bandit must discover.

Pure code: no I/O, no clock; every random draw comes from a seeded ``random.Random``.

The probability that one message leads to a success (a promise or a payment inside the
success window) is

    base[segment][tone] x channel factor x hour factor (the debtor's local hour when it went
    out) x step factor (later reminders persuade less) x the debtor's own multiplier

capped at :data:`P_MAX`. The debtor's multiplier is drawn once per debtor (``2 * Beta(a, a)``,
mean 1) from the seed and the debtor id, so it does not depend on the order messages are
handled in. Only ``base`` differs between tones, so the best tone of a segment is the same
for every debtor, channel and hour of that segment: :meth:`World.best_tone`.

A message's response is drawn from its own ``Random`` (seeded by the world's seed and a stable
key of the message; the simulator uses "<debtor>#<n-th campaign message>"): at most one of
success, opt-out, reply, in that order of precedence, so the
success probability is exactly :meth:`World.p_success`. A success is a promise
(``promise_made``) or a payment (``payment_received``) after an exponential delay; a promise
is kept (a payment follows) or broken.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TONES = ("loss_aversion", "social_proof", "soft")
CHANNELS = ("sms", "whatsapp", "email")
P_MAX = 0.95

#: Success probability per segment and tone (before the other factors). The best tone differs
#: per segment on purpose: a single fixed tone cannot be right everywhere.
DEFAULT_BASE: dict[str, dict[str, float]] = {
    "early": {"loss_aversion": 0.14, "social_proof": 0.22, "soft": 0.17},
    "mid": {"loss_aversion": 0.16, "social_proof": 0.11, "soft": 0.10},
    "late": {"loss_aversion": 0.05, "social_proof": 0.06, "soft": 0.10},
    "late_high": {"loss_aversion": 0.05, "social_proof": 0.12, "soft": 0.07},
    "broken_promise": {"loss_aversion": 0.14, "soft": 0.08},
}
DEFAULT_CHANNEL: dict[str, float] = {"sms": 1.0, "whatsapp": 1.15, "email": 0.7}
#: Later steps of a workflow persuade a little less (the debtor has ignored one already).
DEFAULT_STEP: dict[int, float] = {1: 1.0, 2: 0.85, 3: 0.75}
#: Replies that are neither a promise nor a payment, per tone.
DEFAULT_REPLY: dict[str, float] = {"loss_aversion": 0.04, "social_proof": 0.05, "soft": 0.07}
#: Opt-outs per tone: loss aversion annoys a few more people.
DEFAULT_OPT_OUT: dict[str, float] = {"loss_aversion": 0.025, "social_proof": 0.012, "soft": 0.008}


def hour_factor(local_hour: int) -> float:
    """Early morning is worst, evenings best (people read and pay after work)."""
    if local_hour < 9:
        return 0.8
    if local_hour < 12:
        return 0.95
    if local_hour < 17:
        return 1.0
    if local_hour < 20:
        return 1.2
    return 1.25


@dataclass(frozen=True)
class Event:
    """Something a debtor does, at a simulated time (epoch seconds)."""

    at: float
    kind: str      # replied | opted_out | promise_made | payment_received | promise_broken
    debtor_id: str
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass
class World:
    seed: int
    base: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_BASE)
    channel: Mapping[str, float] = field(default_factory=lambda: DEFAULT_CHANNEL)
    step: Mapping[int, float] = field(default_factory=lambda: DEFAULT_STEP)
    reply: Mapping[str, float] = field(default_factory=lambda: DEFAULT_REPLY)
    opt_out: Mapping[str, float] = field(default_factory=lambda: DEFAULT_OPT_OUT)
    #: Debtor multiplier 2 * Beta(a, a): mean 1, sd 1/sqrt(2a + 1) (a = 8: about 0.24).
    noise_a: float = 8.0
    success_delay_days: float = 1.5     # mean of the exponential delay to a success
    reply_delay_hours: float = 6.0
    opt_out_delay_hours: float = 2.0
    promise_share: float = 0.55         # of successes: a promise (else a payment at once)
    promise_kept: float = 0.75          # a promise is kept (paid) this often
    payment_after_promise_days: float = 2.0
    _noise: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for segment, tones in self.base.items():
            for tone, p in tones.items():
                if tone not in TONES or not 0 <= p <= 1:
                    raise ValueError(f"base[{segment}][{tone}] = {p!r}: a tone and a probability")
        for table in (self.reply, self.opt_out):
            if any(not 0 <= p <= 1 for p in table.values()):
                raise ValueError("reply and opt-out rates must be probabilities")

    # --- truth ---------------------------------------------------------------------------
    def tones(self, segment: str) -> tuple[str, ...]:
        return tuple(self.base[segment])

    def best_tone(self, segment: str, allowed: Iterable[str] | None = None) -> str:
        """The tone with the highest success probability in the segment (among `allowed`)."""
        tones = self._allowed(segment, allowed)
        return max(tones, key=lambda t: (self.base[segment][t], t))

    def debtor_multiplier(self, debtor_id: str) -> float:
        value = self._noise.get(debtor_id)
        if value is None:
            value = 2 * _rng(self.seed, "debtor", debtor_id).betavariate(self.noise_a, self.noise_a)
            self._noise[debtor_id] = value
        return value

    def p_success(self, segment: str, tone: str, *, channel: str, local_hour: int, step: int,
                  debtor_id: str) -> float:
        p = (self.base[segment][tone] * self.channel.get(channel, 1.0) * hour_factor(local_hour)
             * self.step.get(step, min(self.step.values())) * self.debtor_multiplier(debtor_id))
        return min(P_MAX, p)

    def probabilities(self, segment: str, allowed: Iterable[str] | None = None, *, channel: str,
                      local_hour: int, step: int, debtor_id: str) -> dict[str, float]:
        """Each allowed tone's true success probability for this debtor, channel and hour."""
        return {t: self.p_success(segment, t, channel=channel, local_hour=local_hour, step=step,
                                  debtor_id=debtor_id)
                for t in self._allowed(segment, allowed)}

    def best_on_average(self, segments: Mapping[str, Iterable[str]]) -> str:
        """The single tone best on average over the segments (unweighted mean of the base
        rates), among the tones every segment allows: the best a fixed policy can do."""
        common = set(TONES)
        for segment, allowed in segments.items():
            common &= set(self._allowed(segment, allowed))
        if not common:
            raise ValueError("no tone is allowed in every segment")
        return max(sorted(common),
                   key=lambda t: sum(self.base[s][t] for s in segments) / len(segments))

    # --- a response --------------------------------------------------------------------
    def respond(self, *, message_id: str, debtor_id: str, segment: str, tone: str, channel: str,
                local_hour: int, step: int, sent_at: float) -> list[Event]:
        """What the debtor does after this message (nothing, most of the time)."""
        rng = _rng(self.seed, "message", message_id)
        p = self.p_success(segment, tone, channel=channel, local_hour=local_hour, step=step,
                           debtor_id=debtor_id)
        draw = rng.random()
        if draw < p:
            at = sent_at + rng.expovariate(1 / (self.success_delay_days * 86400))
            if rng.random() < self.promise_share:
                kept = rng.random() < self.promise_kept
                later = at + rng.expovariate(1 / (self.payment_after_promise_days * 86400))
                return [Event(at, "promise_made", debtor_id, {"due_in_days": 7}),
                        Event(later, "payment_received" if kept else "promise_broken", debtor_id,
                              {"after_promise": True})]
            return [Event(at, "payment_received", debtor_id)]
        draw -= p
        opt = self.opt_out.get(tone, 0.0)
        if draw < opt:
            at = sent_at + rng.expovariate(1 / (self.opt_out_delay_hours * 3600))
            return [Event(at, "opted_out", debtor_id, {"channel": channel})]
        draw -= opt
        if draw < self.reply.get(tone, 0.0):
            return [Event(sent_at + rng.expovariate(1 / (self.reply_delay_hours * 3600)),
                          "replied", debtor_id)]
        return []

    def _allowed(self, segment: str, allowed: Iterable[str] | None) -> tuple[str, ...]:
        if segment not in self.base:
            raise KeyError(f"the world knows no segment {segment!r}")
        tones = tuple(self.base[segment]) if allowed is None else tuple(allowed)
        missing = [t for t in tones if t not in self.base[segment]]
        if missing:
            raise KeyError(f"the world has no rate for {segment}/{missing[0]}")
        return tones


def _rng(seed: int, *parts: str) -> random.Random:
    """An independent stream for (seed, parts): the same draw whatever else was drawn first."""
    digest = hashlib.sha256(":".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def regret_row(probabilities: Mapping[str, float], chosen: str, fixed: Iterable[str]
               ) -> dict[str, float]:
    """Regret of one message: the chosen tone's, each fixed tone's, and uniform random's
    (expected), against the best tone for exactly this context."""
    best = max(probabilities.values())
    row = {"bandit": best - probabilities[chosen],
           "uniform": best - math.fsum(probabilities.values()) / len(probabilities)}
    for tone in fixed:
        row[f"fixed_{tone}"] = best - probabilities[tone]
    return row
