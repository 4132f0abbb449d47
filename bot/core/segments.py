"""Segments, their workflows and the learning settings: ``policies/segments.yml``.

Pure code: no I/O beyond reading the file in :func:`load_segment_book`, no clock (planning
passes ``as_of``). Every mistake in the file is an :class:`SegmentConfigError` naming the file,
the dotted place and the bad value, so a manager can fix it without reading code.

    book = load_segment_book("policies/segments.yml")
    segment = book.segment_of(debtor, as_of=date(2026, 11, 23))
    segment.workflow.steps[0].template   # "reminder_first"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bot.core.config_files import read_yaml
from bot.core.debtors import AGE_BANDS, CHANNELS, LANGUAGES, PAYMENT_HISTORIES, Debtor, minor_digits

TONES = ("loss_aversion", "social_proof", "soft")
#: Outcomes Nudge records about a campaign message (service/tone_outcomes.py).
OUTCOMES = ("sent", "delivered", "read", "replied", "link_clicked", "pay_later_chosen",
            "promise_made", "paid", "opted_out", "complained")
#: Outcomes that end a debtor's workflow: the next step is not sent after one of these.
ENGAGED_OUTCOMES = frozenset({"replied", "pay_later_chosen", "promise_made", "paid",
                              "opted_out", "complained"})


class SegmentConfigError(ValueError):
    """policies/segments.yml is invalid; the message names the place."""


@dataclass(frozen=True)
class Conditions:
    """All given conditions must hold; an empty one matches everyone."""

    days_past_due: tuple[int | None, int | None] = (None, None)   # both ends included
    balance: tuple[Decimal | None, Decimal | None] = (None, None)  # min included, max excluded
    age_band: frozenset[str] | None = None
    product: frozenset[str] | None = None
    payment_history: frozenset[str] | None = None
    preferred_channel: frozenset[str] | None = None
    language: frozenset[str] | None = None
    creditor: frozenset[str] | None = None

    def match(self, debtor: Debtor, as_of: date) -> bool:
        low, high = self.days_past_due
        if low is not None or high is not None:
            dpd = debtor.days_past_due(as_of)
            if (low is not None and dpd < low) or (high is not None and dpd > high):
                return False
        low_b, high_b = self.balance
        if low_b is not None or high_b is not None:
            scale = 10 ** minor_digits(debtor.currency)
            if low_b is not None and debtor.balance_minor < low_b * scale:
                return False
            if high_b is not None and debtor.balance_minor >= high_b * scale:
                return False
        for name in ("age_band", "product", "payment_history", "preferred_channel", "language",
                     "creditor"):
            allowed = getattr(self, name)
            if allowed is not None and getattr(debtor, name) not in allowed:
                return False
        return True


@dataclass(frozen=True)
class Step:
    number: int        # from 1
    day: int           # days after step 1
    template: str


@dataclass(frozen=True)
class Workflow:
    steps: tuple[Step, ...]
    channels: tuple[str, ...]     # may contain "preferred"
    tones: tuple[str, ...]

    def step(self, number: int) -> Step:
        if not 1 <= number <= len(self.steps):
            raise ValueError(f"this workflow has steps 1 to {len(self.steps)}, not {number}")
        return self.steps[number - 1]

    def channel_order(self, debtor: Debtor) -> tuple[str, ...]:
        """The channels to try for this debtor, `preferred` resolved, each once."""
        order: list[str] = []
        for channel in self.channels:
            channel = debtor.preferred_channel if channel == "preferred" else channel
            if channel not in order:
                order.append(channel)
        return tuple(order)


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    when: Conditions
    workflow: Workflow


@dataclass(frozen=True)
class Guardrails:
    min_sample: int
    max_opt_out_rate: float
    max_complaint_rate: float


@dataclass(frozen=True)
class BanditSettings:
    exploration_floor: float
    holdout_share: float
    holdout_tone: str
    guardrails: Guardrails


@dataclass(frozen=True)
class SocialProofSettings:
    min_sample: int
    confidence: float
    round_down_to: int
    min_percent: int


@dataclass(frozen=True)
class SegmentBook:
    segments: tuple[Segment, ...]
    success_outcomes: frozenset[str]
    success_days: int
    attribution_days: int
    bandit: BanditSettings
    social_proof: SocialProofSettings
    pace_per_second: Mapping[str, float]
    batch_size: int
    source: str = "segments.yml"
    _by_name: Mapping[str, Segment] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.segments})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.segments)

    def get(self, name: str) -> Segment:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no segment {name!r}; the segments are {', '.join(self.names)}") from None

    def segment_of(self, debtor: Debtor, as_of: date) -> Segment | None:
        """The portfolio's own label when it names one of ours, else the first matching rule
        (None only when the file has no catch-all and nothing matched)."""
        if debtor.segment and debtor.segment in self._by_name:
            return self._by_name[debtor.segment]
        for segment in self.segments:
            if segment.when.match(debtor, as_of):
                return segment
        return None


def load_segment_book(path: Path | str) -> SegmentBook:
    source = Path(path).name
    return segment_book_from_mapping(read_yaml(path, SegmentConfigError, source) or {},
                                     source=source)


_Fail = Callable[[str, str], SegmentConfigError]


def segment_book_from_mapping(raw: Any, *, source: str = "segments.yml") -> SegmentBook:
    def fail(where: str, message: str) -> SegmentConfigError:
        return SegmentConfigError(f"{source}: {where}: {message}")

    top = _mapping(raw, "top level", fail)
    _only(top, {"success", "attribution_days", "bandit", "social_proof", "campaigns", "segments"},
          {"segments"}, "top level", fail)
    success = _mapping(top.get("success") or {}, "success", fail)
    _only(success, {"outcomes", "within_days"}, set(), "success", fail)
    success_outcomes = _choices(success.get("outcomes", ["promise_made", "paid"]),
                                OUTCOMES, "success.outcomes", fail)
    if "sent" in success_outcomes or "delivered" in success_outcomes:
        raise fail("success.outcomes", "sent and delivered say nothing about the tone; "
                                        "choose replied, promise_made, paid ...")
    bandit_raw = _mapping(top.get("bandit") or {}, "bandit", fail)
    _only(bandit_raw, {"exploration_floor", "holdout_share", "holdout_tone", "guardrails"}, set(),
          "bandit", fail)
    rails = _mapping(bandit_raw.get("guardrails") or {}, "bandit.guardrails", fail)
    _only(rails, {"min_sample", "max_opt_out_rate", "max_complaint_rate"}, set(),
          "bandit.guardrails", fail)
    holdout_tone = bandit_raw.get("holdout_tone", "soft")
    if holdout_tone not in TONES:
        raise fail("bandit.holdout_tone", f"must be one of {', '.join(TONES)}, got {holdout_tone!r}")
    bandit = BanditSettings(
        exploration_floor=_fraction(bandit_raw.get("exploration_floor", 0.1),
                                    "bandit.exploration_floor", fail),
        holdout_share=_fraction(bandit_raw.get("holdout_share", 0.1), "bandit.holdout_share", fail,
                                below_one=True),
        holdout_tone=holdout_tone,
        guardrails=Guardrails(
            min_sample=_whole(rails.get("min_sample", 50), "bandit.guardrails.min_sample", fail, 1),
            max_opt_out_rate=_fraction(rails.get("max_opt_out_rate", 0.05),
                                       "bandit.guardrails.max_opt_out_rate", fail),
            max_complaint_rate=_fraction(rails.get("max_complaint_rate", 0.02),
                                         "bandit.guardrails.max_complaint_rate", fail)))
    proof_raw = _mapping(top.get("social_proof") or {}, "social_proof", fail)
    _only(proof_raw, {"min_sample", "confidence", "round_down_to", "min_percent"}, set(),
          "social_proof", fail)
    confidence = proof_raw.get("confidence", 0.95)
    if confidence not in (0.90, 0.95, 0.99):
        raise fail("social_proof.confidence", f"must be 0.90, 0.95 or 0.99, got {confidence!r}")
    proof = SocialProofSettings(
        min_sample=_whole(proof_raw.get("min_sample", 200), "social_proof.min_sample", fail, 30),
        confidence=float(confidence),
        round_down_to=_whole(proof_raw.get("round_down_to", 5), "social_proof.round_down_to",
                             fail, 1, 50),
        min_percent=_whole(proof_raw.get("min_percent", 30), "social_proof.min_percent", fail, 1, 99))
    campaigns = _mapping(top.get("campaigns") or {}, "campaigns", fail)
    _only(campaigns, {"pace_per_second", "batch_size"}, set(), "campaigns", fail)
    pace_raw = _mapping(campaigns.get("pace_per_second") or {"sms": 5, "whatsapp": 20, "email": 20},
                        "campaigns.pace_per_second", fail)
    pace: dict[str, float] = {}
    for channel in CHANNELS:
        value = pace_raw.get(channel, 5)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1000:
            raise fail(f"campaigns.pace_per_second.{channel}",
                       f"must be a number of messages per second above 0 and at most 1000, got {value!r}")
        pace[channel] = float(value)
    unknown = set(pace_raw) - set(CHANNELS)
    if unknown:
        raise fail("campaigns.pace_per_second", f"unknown channel {sorted(unknown)[0]!r}")

    raw_segments = top["segments"]
    if not isinstance(raw_segments, list) or not 1 <= len(raw_segments) <= 12:
        raise fail("segments", "must be a list of 1 to 12 segments (3 to 5 read best)")
    segments: list[Segment] = []
    for index, item in enumerate(raw_segments):
        segments.append(_segment(item, f"segments[{index}]", fail))
    names = [s.name for s in segments]
    for name in names:
        if names.count(name) > 1:
            raise fail("segments", f"the name {name!r} is used twice")
    return SegmentBook(
        segments=tuple(segments), success_outcomes=frozenset(success_outcomes),
        success_days=_whole(success.get("within_days", 7), "success.within_days", fail, 1, 90),
        attribution_days=_whole(top.get("attribution_days", 7), "attribution_days", fail, 1, 90),
        bandit=bandit, social_proof=proof, pace_per_second=pace,
        batch_size=_whole(campaigns.get("batch_size", 500), "campaigns.batch_size", fail, 1, 10_000),
        source=source)


def _segment(raw: Any, where: str, fail: _Fail) -> Segment:
    item = _mapping(raw, where, fail)
    _only(item, {"name", "description", "when", "workflow"}, {"name", "workflow"}, where, fail)
    name = item["name"]
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() \
            or len(name) > 40:
        raise fail(f"{where}.name", f"must be a short name of letters, digits, - and _, got {name!r}")
    where = f"segments.{name}"
    return Segment(name=name, description=str(item.get("description") or ""),
                   when=_conditions(item.get("when") or {}, f"{where}.when", fail),
                   workflow=_workflow(item["workflow"], f"{where}.workflow", fail))


def _conditions(raw: Any, where: str, fail: _Fail) -> Conditions:
    when = _mapping(raw, where, fail)
    _only(when, {"days_past_due", "balance", "age_band", "product", "payment_history",
                 "preferred_channel", "language", "creditor"}, set(), where, fail)
    dpd = (None, None)
    if "days_past_due" in when:
        band = _mapping(when["days_past_due"], f"{where}.days_past_due", fail)
        _only(band, {"min", "max"}, set(), f"{where}.days_past_due", fail)
        low = _whole(band["min"], f"{where}.days_past_due.min", fail, 0) if "min" in band else None
        high = _whole(band["max"], f"{where}.days_past_due.max", fail, 0) if "max" in band else None
        if low is not None and high is not None and low > high:
            raise fail(f"{where}.days_past_due", f"min {low} is above max {high}")
        dpd = (low, high)
    balance: tuple[Decimal | None, Decimal | None] = (None, None)
    if "balance" in when:
        band = _mapping(when["balance"], f"{where}.balance", fail)
        _only(band, {"min", "max"}, set(), f"{where}.balance", fail)
        low_b = _amount(band["min"], f"{where}.balance.min", fail) if "min" in band else None
        high_b = _amount(band["max"], f"{where}.balance.max", fail) if "max" in band else None
        if low_b is not None and high_b is not None and low_b >= high_b:
            raise fail(f"{where}.balance", f"min {low_b} must be below max {high_b}")
        balance = (low_b, high_b)

    def listed(name: str, allowed: Sequence[str] | None) -> frozenset[str] | None:
        if name not in when:
            return None
        return frozenset(_choices(when[name], allowed, f"{where}.{name}", fail))

    return Conditions(days_past_due=dpd, balance=balance,
                      age_band=listed("age_band", AGE_BANDS),
                      product=listed("product", None),
                      payment_history=listed("payment_history", PAYMENT_HISTORIES),
                      preferred_channel=listed("preferred_channel", CHANNELS),
                      language=listed("language", LANGUAGES),
                      creditor=listed("creditor", None))


def _workflow(raw: Any, where: str, fail: _Fail) -> Workflow:
    flow = _mapping(raw, where, fail)
    _only(flow, {"steps", "channels", "tones"}, {"steps", "channels", "tones"}, where, fail)
    raw_steps = flow["steps"]
    if not isinstance(raw_steps, list) or not 1 <= len(raw_steps) <= 10:
        raise fail(f"{where}.steps", "must be a list of 1 to 10 steps")
    steps: list[Step] = []
    for index, raw_step in enumerate(raw_steps):
        step_where = f"{where}.steps[{index}]"
        step = _mapping(raw_step, step_where, fail)
        _only(step, {"day", "template"}, {"day", "template"}, step_where, fail)
        day = _whole(step["day"], f"{step_where}.day", fail, 0, 365)
        if index == 0 and day != 0:
            raise fail(f"{step_where}.day", f"the first step is day 0, got {day}")
        if steps and day <= steps[-1].day:
            raise fail(f"{step_where}.day", f"must come after the step before (day {steps[-1].day}), got {day}")
        template = step["template"]
        if not isinstance(template, str) or not template.replace("_", "").isalnum():
            raise fail(f"{step_where}.template", f"must be a message key, got {template!r}")
        steps.append(Step(index + 1, day, template))
    channels = _choices(flow["channels"], (*CHANNELS, "preferred"), f"{where}.channels", fail)
    tones = _choices(flow["tones"], TONES, f"{where}.tones", fail)
    return Workflow(tuple(steps), tuple(channels), tuple(tones))


# --- small value checks: each returns the value or raises naming the place -----------------
def _mapping(raw: Any, where: str, fail: _Fail) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise fail(where, f"must be a mapping of names to values, got {type(raw).__name__}")
    return raw


def _only(raw: Mapping[str, Any], allowed: set[str], required: set[str], where: str,
          fail: _Fail) -> None:
    for key in raw:
        if key not in allowed:
            raise fail(where, f"unknown setting {key!r}; allowed: {', '.join(sorted(allowed))}")
    for key in sorted(required):
        if key not in raw:
            raise fail(where, f"{key!r} is missing")


def _whole(value: Any, where: str, fail: _Fail, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        span = f"from {low}" + (f" to {high}" if high is not None else "")
        raise fail(where, f"must be a whole number {span}, got {value!r}")
    return value


def _fraction(value: Any, where: str, fail: _Fail, *, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 \
            or (below_one and value >= 1):
        raise fail(where, f"must be a share from 0 to {'below ' if below_one else ''}1 "
                          f"(0.1 is 10 %), got {value!r}")
    return float(value)


def _amount(value: Any, where: str, fail: _Fail) -> Decimal:
    if isinstance(value, float):
        raise fail(where, f"write amounts as text, e.g. \"1000\" or \"99.50\", not {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        amount = Decimal(-1)
    if isinstance(value, bool) or not amount.is_finite() or amount < 0:
        raise fail(where, f"must be an amount of 0 or more, got {value!r}")
    return amount


def _choices(value: Any, allowed: Sequence[str] | None, where: str, fail: _Fail) -> list[str]:
    if not isinstance(value, list) or not value:
        raise fail(where, f"must be a non-empty list, got {value!r}")
    seen: list[str] = []
    for item in value:
        if not isinstance(item, str) or (allowed is not None and item not in allowed):
            expected = f"one of {', '.join(allowed)}" if allowed is not None else "text"
            raise fail(where, f"{item!r} is not {expected}")
        if item in seen:
            raise fail(where, f"{item!r} is listed twice")
        seen.append(item)
    return seen
