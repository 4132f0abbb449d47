"""What a creditor lets us agree: policies/arrangements.yml, validated and merged per debtor.

Pure code (no I/O beyond reading the file in :func:`load_policy_book`, no clock). The file has
``defaults`` (every section, every key) and ``portfolios`` keyed by creditor name, each with
partial sections and partial ``segments``. A debtor's policy is

    defaults <- portfolio <- portfolio.segments[segment]

merged section by section, key by key; a list replaces the list above it whole.

Everything is checked when the file is loaded, every merged portfolio and segment included, so
a mistake stops the process at start-up instead of surfacing in a conversation. Errors name the
file, the dotted place and what is wrong with the value::

    arrangements.yml: portfolios.Northwind Mobile.plans.max_installments: must be a whole number
    from 1 to 60, got 'twelve'

Money is a :class:`~decimal.Decimal` in major units of the debtor's currency (the currency is the
debtor's, not the policy's); code works in integer minor units, via :func:`money_to_minor`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bot.core.config_files import read_yaml
from bot.core.debtors import minor_digits, minor_to_decimal

FREQUENCIES = ("weekly", "fortnightly", "monthly")
WEEKEND_RULES = ("allow", "next_business_day", "previous_business_day")
VERIFICATION_METHODS = ("date_of_birth", "postcode", "reference")
URL_FIELDS = ("reference", "amount", "currency", "debtor_id")
SECTIONS = ("verification", "plans", "promises", "settlement", "negotiation", "follow_up",
            "payment_page")
#: The most decimals a money value in the file may have: exact in every 2-digit currency.
MONEY_DECIMALS = 2


class ArrangementPolicyError(ValueError):
    """policies/arrangements.yml is invalid; the message names the file and the place."""


def money_to_minor(amount: Decimal | int, currency: str, *, rounding: str = ROUND_CEILING) -> int:
    """Major units -> integer minor units of ``currency`` ("25.00" EUR -> 2500).

    Exact for the file's amounts in 2-digit currencies; in a 0-digit currency (JPY) a fraction is
    rounded up by default, so a minimum never drops below what the creditor wrote.
    """
    if isinstance(amount, (float, bool)) or not isinstance(amount, (Decimal, int)):
        raise TypeError(f"money must be a Decimal or int, not {type(amount).__name__}")
    scaled = Decimal(amount).scaleb(minor_digits(currency))
    return int(scaled.to_integral_value(rounding=rounding))


@dataclass(frozen=True)
class VerificationPolicy:
    methods: tuple[str, ...]      # asked in this order, all of them
    max_attempts: int
    valid_for_minutes: int
    lock_minutes: int


@dataclass(frozen=True)
class PlanRules:
    min_instalment: Decimal       # major units, debtor's currency
    min_instalment_share: Decimal  # of the balance
    max_installments: int
    frequencies: tuple[str, ...]
    default_frequency: str
    first_payment_within_days: int
    weekend: str                  # one of WEEKEND_RULES

    def min_instalment_minor(self, currency: str) -> int:
        return money_to_minor(self.min_instalment, currency)


@dataclass(frozen=True)
class PromiseRules:
    horizon_days: int
    reminder_days_before: int
    grace_days: int


@dataclass(frozen=True)
class SettlementRules:
    enabled: bool
    min_days_past_due: int
    balance_min: Decimal | None
    balance_max: Decimal | None
    first_discount: Decimal
    max_discount: Decimal
    pay_within_days: int

    def balance_band_minor(self, currency: str) -> tuple[int | None, int | None]:
        """(lowest, highest) balance eligible, in minor units; None where unbounded. Rounded
        inwards, so an amount that does not convert exactly never widens the band."""
        low = None if self.balance_min is None else money_to_minor(self.balance_min, currency)
        high = (None if self.balance_max is None
                else money_to_minor(self.balance_max, currency, rounding=ROUND_FLOOR))
        return low, high


@dataclass(frozen=True)
class NegotiationRules:
    max_rounds: int
    ladder: tuple[int, ...]       # instalment counts, ascending, ladder[0] == 1 (pay in full)
    far_outside_share: Decimal


@dataclass(frozen=True)
class FollowUpRules:
    instalment_reminder_days_before: int
    grace_days: int


@dataclass(frozen=True)
class PaymentPage:
    url_template: str
    link_valid_days: int

    def url_for(self, *, reference: str, amount_minor: int, currency: str, debtor_id: str) -> str:
        """The link, every value URL-quoted (a reference may hold '/' or '&')."""
        amount = str(minor_to_decimal(amount_minor, currency))
        return self.url_template.format(
            reference=quote(reference, safe=""), amount=quote(amount, safe=""),
            currency=quote(currency, safe=""), debtor_id=quote(debtor_id, safe=""))


@dataclass(frozen=True)
class ArrangementPolicy:
    verification: VerificationPolicy
    plans: PlanRules
    promises: PromiseRules
    settlement: SettlementRules
    negotiation: NegotiationRules
    follow_up: FollowUpRules
    payment_page: PaymentPage
    scope: str = "defaults"       # where it came from: "defaults", "<creditor>", "<creditor>/<segment>"

    @staticmethod
    def to_minor(amount: Decimal | int, currency: str) -> int:
        return money_to_minor(amount, currency)

    def min_instalment_minor(self, currency: str) -> int:
        return self.plans.min_instalment_minor(currency)

    def settlement_band_minor(self, currency: str) -> tuple[int | None, int | None]:
        return self.settlement.balance_band_minor(currency)


@dataclass(frozen=True)
class PolicyBook:
    """Every creditor's policy, merged and validated at load."""

    defaults: ArrangementPolicy
    portfolios: Mapping[str, ArrangementPolicy] = field(default_factory=dict)
    segments: Mapping[tuple[str, str], ArrangementPolicy] = field(default_factory=dict)
    source: str = "arrangements.yml"

    def for_debtor(self, creditor: str, segment: str | None) -> ArrangementPolicy:
        """The creditor's policy for the segment; a creditor not in the file gets the defaults,
        a segment not listed gets the creditor's policy."""
        if segment and (creditor, segment) in self.segments:
            return self.segments[(creditor, segment)]
        return self.portfolios.get(creditor, self.defaults)


def load_policy_book(path: Path | str) -> PolicyBook:
    source = Path(path).name
    return policy_book_from_mapping(read_yaml(path, ArrangementPolicyError, source) or {},
                                    source=source)


def policy_book_from_mapping(raw: Any, *, source: str = "arrangements.yml") -> PolicyBook:
    """Validate the parsed YAML; every error names the place and what is expected."""
    def fail(where: str, message: str) -> ArrangementPolicyError:
        return ArrangementPolicyError(f"{source}: {where}: {message}")

    _only(raw, {"defaults", "portfolios"}, "top level", fail)
    if "defaults" not in raw:
        raise fail("defaults", "missing: every section needs its defaults")
    base = _parse_layer(raw["defaults"], "defaults", fail, complete=True)
    defaults = _build(base, "defaults", "defaults", fail)

    portfolios: dict[str, ArrangementPolicy] = {}
    segments: dict[tuple[str, str], ArrangementPolicy] = {}
    raw_portfolios = raw.get("portfolios") or {}
    _only(raw_portfolios, None, "portfolios", fail)
    for creditor, layer in raw_portfolios.items():
        where = f"portfolios.{creditor}"
        if not isinstance(creditor, str) or not creditor.strip():
            raise fail(where, "a creditor name must be text, as in the portfolio file")
        own = _parse_layer(layer, where, fail, extra=frozenset({"segments"}))
        merged = _merge(base, own)
        portfolios[creditor] = _build(merged, where, creditor, fail)
        raw_segments = layer.get("segments") or {}
        _only(raw_segments, None, f"{where}.segments", fail)
        for segment, seg_layer in raw_segments.items():
            seg_where = f"{where}.segments.{segment}"
            if not isinstance(segment, str) or not segment.strip():
                raise fail(seg_where, "a segment name must be text, as in the portfolio file")
            seg_merged = _merge(merged, _parse_layer(seg_layer, seg_where, fail))
            segments[(creditor, segment)] = _build(seg_merged, seg_where,
                                                   f"{creditor}/{segment}", fail)
    return PolicyBook(defaults, portfolios, segments, source)


# --- value parsers: each returns the parsed value or a message saying what is wrong ---------

Parser = Callable[[Any], Any]


class _Bad(Exception):
    """A value is wrong; the message is what to say after the place."""


def _whole(low: int, high: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        bad = isinstance(value, bool) or not isinstance(value, int)
        if bad or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise _Bad(f"must be a whole number {span}, got {value!r}")
        return value
    return parse


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {value!r}")
    return value


def _decimal(value: Any) -> Decimal | None:
    """A number written as text or as a YAML number (str() first: never via binary float
    arithmetic); None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _money(nullable: bool = False) -> Parser:
    def parse(value: Any) -> Decimal | None:
        if value is None and nullable:
            return None
        number = _decimal(value)
        if number is None or number < 0 or -number.as_tuple().exponent > MONEY_DECIMALS:  # type: ignore[operator]
            null = " or null" if nullable else ""
            raise _Bad(f'must be an amount such as "25.00" (not negative, at most '
                       f"{MONEY_DECIMALS} decimals){null}, got {value!r}")
        return number
    return parse


def _share(*, below: Decimal | None = None) -> Parser:
    """A fraction of the balance: 0..1, or 0 up to (not including) ``below``."""
    def parse(value: Any) -> Decimal:
        number = _decimal(value)
        too_big = number is not None and (number >= below if below is not None else number > 1)
        if number is None or number < 0 or too_big:
            span = f"from 0 to below {below}" if below is not None else "from 0 to 1"
            raise _Bad(f'must be a share {span} such as "0.05", got {value!r}')
        return number
    return parse


def _choice(options: tuple[str, ...]) -> Parser:
    def parse(value: Any) -> str:
        if value not in options:
            raise _Bad(f"must be one of {', '.join(options)}, got {value!r}")
        return value
    return parse


def _subset(options: tuple[str, ...]) -> Parser:
    def parse(value: Any) -> tuple[str, ...]:
        if (not isinstance(value, list) or not value or any(v not in options for v in value)
                or len(set(value)) != len(value)):
            raise _Bad(f"must be a list of one or more of {', '.join(options)} without repeats, "
                       f"got {value!r}")
        return tuple(value)
    return parse


def _ladder(value: Any) -> tuple[int, ...]:
    if (not isinstance(value, list) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 60 for v in value)):
        raise _Bad(f"must be a list of instalment counts from 1 to 60, got {value!r}")
    if value[0] != 1:
        raise _Bad(f"must start with 1 (pay in full), got {value!r}")
    if any(a >= b for a, b in pairwise(value)):
        raise _Bad(f"must go up step by step (more instalments each time), got {value!r}")
    return tuple(value)


def _url_template(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise _Bad(f"must be an http(s) address, got {value!r}")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise _Bad(f"is not a valid template ({exc}), got {value!r}") from None
    unknown = [n for n in names if n not in URL_FIELDS]
    if unknown:
        raise _Bad(f"unknown placeholder {{{unknown[0]}}}; use "
                   f"{' '.join('{' + f + '}' for f in URL_FIELDS)}, got {value!r}")
    return value


#: Every key of every section, with its parser. Ranges are the ones docs and the spec name.
SCHEMA: Mapping[str, Mapping[str, Parser]] = {
    "verification": {"methods": _subset(VERIFICATION_METHODS), "max_attempts": _whole(1, 10),
                     "valid_for_minutes": _whole(1), "lock_minutes": _whole(1)},
    "plans": {"min_instalment": _money(), "min_instalment_share": _share(),
              "max_installments": _whole(1, 60), "frequencies": _subset(FREQUENCIES),
              "default_frequency": _choice(FREQUENCIES),
              "first_payment_within_days": _whole(0, 60), "weekend": _choice(WEEKEND_RULES)},
    "promises": {"horizon_days": _whole(1, 90), "reminder_days_before": _whole(0, 14),
                 "grace_days": _whole(0, 30)},
    "settlement": {"enabled": _boolean, "min_days_past_due": _whole(0),
                   "balance_min": _money(nullable=True), "balance_max": _money(nullable=True),
                   "first_discount": _share(below=Decimal("0.9")),
                   "max_discount": _share(below=Decimal("0.9")), "pay_within_days": _whole(1, 60)},
    "negotiation": {"max_rounds": _whole(1, 10), "ladder": _ladder,
                    "far_outside_share": _share()},
    "follow_up": {"instalment_reminder_days_before": _whole(0, 14), "grace_days": _whole(0, 60)},
    "payment_page": {"url_template": _url_template, "link_valid_days": _whole(1, 90)},
}

Layer = dict[str, dict[str, Any]]


def _parse_layer(raw: Any, where: str, fail, *, complete: bool = False,
                 extra: frozenset[str] = frozenset()) -> Layer:
    """One layer's parsed values, section -> key -> value; ``complete`` demands every key."""
    _only(raw, set(SECTIONS) | set(extra), where, fail)
    layer: Layer = {}
    for section, parsers in SCHEMA.items():
        values = raw.get(section)
        if values is None:
            if complete:
                raise fail(f"{where}.{section}", "missing: the defaults need every section")
            continue
        _only(values, set(parsers), f"{where}.{section}", fail)
        layer[section] = {}
        for key, parse in parsers.items():
            if key not in values:
                if complete:
                    raise fail(f"{where}.{section}.{key}", "missing: the defaults need every key")
                continue
            try:
                layer[section][key] = parse(values[key])
            except _Bad as exc:
                raise fail(f"{where}.{section}.{key}", str(exc)) from None
    return layer


def _merge(below: Layer, above: Layer) -> Layer:
    return {section: {**below.get(section, {}), **above.get(section, {})} for section in SCHEMA}


def _build(layer: Layer, where: str, scope: str, fail) -> ArrangementPolicy:
    """The merged values as a policy, after the checks that involve more than one key."""
    plans, settlement = layer["plans"], layer["settlement"]
    if plans["default_frequency"] not in plans["frequencies"]:
        raise fail(f"{where}.plans.default_frequency",
                   f"must be one of frequencies {list(plans['frequencies'])}, "
                   f"got {plans['default_frequency']!r}")
    if plans["weekend"] != "allow" and plans["first_payment_within_days"] < 2:
        # A window of only Saturday and Sunday would leave no business day to start on.
        raise fail(f"{where}.plans.first_payment_within_days",
                   f"must be at least 2 when weekend is {plans['weekend']}, "
                   f"got {plans['first_payment_within_days']!r}")
    if settlement["first_discount"] > settlement["max_discount"]:
        raise fail(f"{where}.settlement.first_discount",
                   f"must not be above max_discount ({settlement['max_discount']}), "
                   f"got {str(settlement['first_discount'])!r}")
    low, high = settlement["balance_min"], settlement["balance_max"]
    if low is not None and high is not None and low > high:
        raise fail(f"{where}.settlement.balance_min",
                   f"must not be above balance_max ({high}), got {str(low)!r}")
    return ArrangementPolicy(
        verification=VerificationPolicy(**layer["verification"]),
        plans=PlanRules(**plans),
        promises=PromiseRules(**layer["promises"]),
        settlement=SettlementRules(**settlement),
        negotiation=NegotiationRules(**layer["negotiation"]),
        follow_up=FollowUpRules(**layer["follow_up"]),
        payment_page=PaymentPage(**layer["payment_page"]),
        scope=scope,
    )


def _only(mapping: Any, allowed: set[str] | None, where: str, fail) -> None:
    """``mapping`` is a mapping with no keys outside ``allowed`` (None: any keys)."""
    if not isinstance(mapping, Mapping):
        raise fail(where, f"expected a mapping, got {type(mapping).__name__}")
    extra = set(mapping) - allowed if allowed is not None else set()
    if extra:
        raise fail(where, f"unknown keys {sorted(map(str, extra))}; expected {sorted(allowed)}")  # type: ignore[arg-type]
