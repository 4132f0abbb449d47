"""The contact policy: may this message go to this debtor now, later, or never?

Pure code (no I/O, no clock). Every send path — bot replies, reminders, campaign steps,
instalment reminders, agent replies, confirmations — builds a :class:`Situation` and asks
:func:`decide`. The answer is a :class:`Decision` that always says why:

* ``send``   — go ahead;
* ``defer``  — not now, try again at ``until`` (outside the contact window, over a cap);
  a deferred message is kept and planned again, never dropped;
* ``refuse`` — not to this debtor on this channel (opted out, a stop-state, a rule that
  forbids the channel). The refusal is recorded; nothing is sent.

Rules, in the order they are checked (the first that applies decides):

1. Suppression: an opted-out channel and address gets nothing, except the single opt-out
   confirmation (``opt_out_confirmation``) the rules allow.
2. Wrong number: the address belongs to someone else; nothing more goes to it.
3. Stop-states (dispute, attorney, bankruptcy, deceased, vulnerability, hardship, cease
   communication): each allows only some kinds of message (see ``policies/contact.yml``).
4. Third-party collectors may not text debtors in the US or Canada (Twilio's messaging policy).
5. The debtor's own preferences: channels they asked us to use ("email only").
6. Contact window in the debtor's local time, in every zone they may be in. Crisis support and
   compliance confirmations go at once; a reply to a debtor who wrote within
   ``night_reply.recent_minutes`` goes at once if ``night_reply.mode`` is ``answer_if_recent``.
7. Frequency caps per channel per local day and per rolling 7 days, counting unsolicited
   messages only (reminders, campaign steps, agents writing first). A message to a debtor who
   wrote within ``conversation_minutes`` is a reply, not unsolicited, and is not capped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot.core.contact_windows import JurisdictionPack, is_open, next_opening

Verdict = Literal["send", "defer", "refuse"]

#: What a message is, which decides the rules it meets.
KINDS = (
    "reply",                 # the bot answering a debtor's message
    "confirmation",          # acknowledgements with no collection content (help, opt-in, hand-off)
    "opt_out_confirmation",  # the one confirmation of an opt-out
    "support",               # crisis support information
    "agent",                 # a person writing from the console
    "reminder",              # scheduled reminders (first reminder, promise and instalment reminders)
    "campaign",              # campaign steps
    "final_notice",          # notices the law still permits after cease-communication
)
MessageKind = Literal["reply", "confirmation", "opt_out_confirmation", "support", "agent",
                      "reminder", "campaign", "final_notice"]
#: Kinds that reach the debtor at once, whatever the hour: holding them would do harm
#: (crisis support) or break a rule (a confirmation sent hours after the opt-out).
IMMEDIATE_KINDS = frozenset({"support", "opt_out_confirmation", "confirmation"})
#: Kinds that are the business writing first; capped unless the debtor wrote recently.
UNSOLICITED_KINDS = frozenset({"reminder", "campaign", "final_notice", "agent"})

STOP_STATES = ("dispute", "attorney", "bankruptcy", "deceased", "vulnerability", "hardship",
               "cease_communication", "wrong_number")


class ContactPolicyError(ValueError):
    """policies/contact.yml is invalid; the message names the place."""


@dataclass(frozen=True)
class Cap:
    per_day: int
    per_7_days: int


@dataclass(frozen=True)
class StopStateRule:
    name: str
    allows: frozenset[str]        # message kinds still allowed while this state holds
    priority_reason: str          # the agent-queue reason it escalates with
    lift_roles: frozenset[str]    # who may lift it


@dataclass(frozen=True)
class ContactPolicy:
    caps: Mapping[str, Cap]
    night_reply_mode: Literal["answer_if_recent", "defer"]
    night_reply_recent_minutes: int
    conversation_minutes: int
    creditor_party: Literal["first", "third"]
    third_party_sms_blocked: frozenset[str]
    stop_states: Mapping[str, StopStateRule]


@dataclass(frozen=True)
class Preferences:
    """What the debtor asked for: "not before noon", "only by email"."""

    not_before: time | None = None
    not_after: time | None = None
    channels: frozenset[str] = frozenset()  # empty: no restriction

    @classmethod
    def from_mapping(cls, raw: Mapping[str, str]) -> "Preferences":
        def clock(name: str) -> time | None:
            return time.fromisoformat(raw[name]) if raw.get(name) else None
        channels = frozenset(c for c in (raw.get("channels") or "").split(",") if c)
        return cls(clock("not_before"), clock("not_after"), channels)


@dataclass(frozen=True)
class Situation:
    now: datetime                         # aware UTC
    kind: str
    channel: str
    zones: tuple[str, ...]
    pack: JurisdictionPack
    country: str | None = None            # the debtor's country (address)
    phone_country: str | None = None      # the country of the number we would text
    suppressed: str | None = None         # the opt-out's source, if any
    stop_states: frozenset[str] = frozenset()
    wrong_number: bool = False            # this address was reported as somebody else's
    preferences: Preferences = field(default_factory=Preferences)
    last_inbound_at: datetime | None = None
    recent_unsolicited: Sequence[datetime] = ()  # on this channel, newest or oldest first


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str                       # stable code: "opted_out", "stop_state:dispute", ...
    detail: str                       # words for an agent or an operator
    until: datetime | None = None     # for defer
    counts_against_caps: bool = False  # a send the caps must count (unsolicited)


def _refuse(reason: str, detail: str) -> Decision:
    return Decision("refuse", reason, detail)


def decide(policy: ContactPolicy, s: Situation) -> Decision:
    """The one answer every send path obeys. See the module docstring for the order."""
    if s.kind not in KINDS:
        raise ValueError(f"unknown message kind {s.kind!r}")
    for check in (_suppression, _wrong_number, _stop_states, _third_party_sms, _channel_preference):
        decision = check(policy, s)
        if decision is not None:
            return decision
    return (_window(policy, s) or _caps(policy, s)
            or Decision("send", "ok", "allowed", counts_against_caps=_unsolicited(policy, s)))


def _suppression(policy: ContactPolicy, s: Situation) -> Decision | None:
    if s.suppressed and s.kind != "opt_out_confirmation":
        return _refuse("opted_out", f"the debtor opted out of {s.channel} ({s.suppressed})")
    return None


def _wrong_number(policy: ContactPolicy, s: Situation) -> Decision | None:
    if s.wrong_number and s.kind not in ("confirmation", "opt_out_confirmation"):
        return _refuse("wrong_number", "this address was reported as a wrong number")
    return None


def _stop_states(policy: ContactPolicy, s: Situation) -> Decision | None:
    for name in sorted(s.stop_states):
        rule = policy.stop_states.get(name)
        if rule is not None and s.kind not in rule.allows and s.kind != "opt_out_confirmation":
            return _refuse(f"stop_state:{name}",
                           f"automation is paused ({name.replace('_', ' ')}); "
                           f"only {', '.join(sorted(rule.allows)) or 'nothing'} may be sent")
    return None


def _third_party_sms(policy: ContactPolicy, s: Situation) -> Decision | None:
    if (s.channel == "sms" and policy.creditor_party == "third"
            and (s.phone_country in policy.third_party_sms_blocked
                 or s.country in policy.third_party_sms_blocked)):
        return _refuse("third_party_sms",
                       "third-party debt collection may not use SMS in "
                       f"{s.phone_country or s.country}")
    return None


def _channel_preference(policy: ContactPolicy, s: Situation) -> Decision | None:
    if (s.preferences.channels and s.channel not in s.preferences.channels
            and s.kind in UNSOLICITED_KINDS):
        return _refuse("debtor_preference",
                       f"the debtor asked to be contacted only by {', '.join(sorted(s.preferences.channels))}")
    return None


def _wrote_within(s: Situation, minutes: int) -> bool:
    return s.last_inbound_at is not None and s.now - s.last_inbound_at <= timedelta(minutes=minutes)


def _window(policy: ContactPolicy, s: Situation) -> Decision | None:
    if s.kind in IMMEDIATE_KINDS:
        return None
    if (s.kind == "reply" and policy.night_reply_mode == "answer_if_recent"
            and _wrote_within(s, policy.night_reply_recent_minutes)):
        return None
    prefs = s.preferences
    if is_open(s.pack, s.zones, s.now, not_before=prefs.not_before, not_after=prefs.not_after):
        return None
    opening = next_opening(s.pack, s.zones, s.now, not_before=prefs.not_before,
                           not_after=prefs.not_after)
    return Decision("defer", "outside_contact_window",
                    f"outside the contact window in {', '.join(s.zones)} ({s.pack.name}); "
                    f"next opening {opening.isoformat()}", opening)


def _unsolicited(policy: ContactPolicy, s: Situation) -> bool:
    """The business writing first: capped and counted. Not when the debtor wrote lately."""
    return s.kind in UNSOLICITED_KINDS and not _wrote_within(s, policy.conversation_minutes)


def _caps(policy: ContactPolicy, s: Situation) -> Decision | None:
    if not _unsolicited(policy, s):
        return None
    cap = policy.caps.get(s.channel)
    if cap is None:
        return None
    zone = ZoneInfo(s.zones[0])
    local_today = s.now.astimezone(zone).date()
    week_ago = s.now - timedelta(days=7)
    in_week = sorted(t for t in s.recent_unsolicited if t > week_ago)
    today = [t for t in in_week if t.astimezone(zone).date() == local_today]
    if len(in_week) >= cap.per_7_days:
        # Free again when enough of the oldest sends have aged out of the rolling week.
        frees_at = in_week[len(in_week) - cap.per_7_days] + timedelta(days=7)
        return _defer_to_window(policy, s, frees_at, "cap_7_days",
                                f"{len(in_week)} unsolicited {s.channel} messages in 7 days "
                                f"(cap {cap.per_7_days})")
    if len(today) >= cap.per_day:
        midnight = datetime.combine(local_today + timedelta(days=1), time(0), zone)
        return _defer_to_window(policy, s, midnight, "cap_per_day",
                                f"{len(today)} unsolicited {s.channel} messages today "
                                f"(cap {cap.per_day})")
    return None


def _defer_to_window(policy: ContactPolicy, s: Situation, earliest: datetime, reason: str,
                     detail: str) -> Decision:
    prefs = s.preferences
    until = next_opening(s.pack, s.zones, earliest, not_before=prefs.not_before,
                         not_after=prefs.not_after)
    return Decision("defer", reason, f"{detail}; next try {until.isoformat()}", until)


# --------------------------------------------------------------------------- config


def load_policy(raw: Mapping[str, Any], *, source: str = "contact.yml") -> ContactPolicy:
    """Validate the parsed YAML; every error names the place and what is expected."""
    def fail(where: str, message: str) -> ContactPolicyError:
        return ContactPolicyError(f"{source}: {where}: {message}")

    def positive_int(where: str, value: Any, *, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise fail(where, f"expected a whole number >= {low}, got {value!r}")
        return value

    _only(raw, {"caps", "night_reply", "conversation_minutes", "creditor_party",
                "third_party_sms_blocked_countries", "stop_states"}, "", fail)
    caps: dict[str, Cap] = {}
    for channel, values in (raw.get("caps") or {}).items():
        if channel not in ("sms", "whatsapp", "email"):
            raise fail(f"caps.{channel}", "unknown channel; expected sms, whatsapp or email")
        _only(values, {"per_day", "per_7_days"}, f"caps.{channel}", fail)
        per_day = positive_int(f"caps.{channel}.per_day", values.get("per_day"), low=1)
        per_week = positive_int(f"caps.{channel}.per_7_days", values.get("per_7_days"), low=1)
        if per_week < per_day:
            raise fail(f"caps.{channel}", f"per_7_days ({per_week}) is below per_day ({per_day})")
        caps[channel] = Cap(per_day, per_week)

    night = raw.get("night_reply") or {}
    _only(night, {"mode", "recent_minutes"}, "night_reply", fail)
    mode = night.get("mode", "answer_if_recent")
    if mode not in ("answer_if_recent", "defer"):
        raise fail("night_reply.mode", f"expected answer_if_recent or defer, got {mode!r}")
    party = raw.get("creditor_party")
    if party not in ("first", "third"):
        raise fail("creditor_party", f"declare first or third (party collecting), got {party!r}")
    blocked = raw.get("third_party_sms_blocked_countries", ["US", "CA"])
    if not isinstance(blocked, list) or not all(isinstance(c, str) and len(c) == 2 for c in blocked):
        raise fail("third_party_sms_blocked_countries", "expected a list of ISO country codes")

    states: dict[str, StopStateRule] = {}
    raw_states = raw.get("stop_states") or {}
    for name in STOP_STATES:
        if name not in raw_states:
            raise fail(f"stop_states.{name}", "missing: every stop-state needs its rule")
    for name, values in raw_states.items():
        where = f"stop_states.{name}"
        if name not in STOP_STATES:
            raise fail(where, f"unknown stop-state; expected one of {', '.join(STOP_STATES)}")
        _only(values, {"allows", "escalate_as", "lift_roles"}, where, fail)
        allows = frozenset(values.get("allows") or [])
        unknown = allows - set(KINDS)
        if unknown:
            raise fail(f"{where}.allows", f"unknown message kinds {sorted(unknown)}")
        roles = frozenset(values.get("lift_roles") or [])
        if not roles or roles - {"agent", "supervisor", "manager", "admin"}:
            raise fail(f"{where}.lift_roles", "expected a non-empty list of agent, supervisor, "
                                              "manager, admin")
        states[name] = StopStateRule(name, allows, values.get("escalate_as", name), roles)

    return ContactPolicy(
        caps=caps,
        night_reply_mode=mode,
        night_reply_recent_minutes=positive_int("night_reply.recent_minutes",
                                                night.get("recent_minutes", 30)),
        conversation_minutes=positive_int("conversation_minutes", raw.get("conversation_minutes", 60)),
        creditor_party=party,
        third_party_sms_blocked=frozenset(blocked),
        stop_states=states,
    )


def _only(mapping: Any, allowed: set[str], where: str, fail) -> None:
    if not isinstance(mapping, Mapping):
        raise fail(where or "top level", f"expected a mapping, got {type(mapping).__name__}")
    extra = set(mapping) - allowed
    if extra:
        raise fail(where or "top level", f"unknown keys {sorted(extra)}; expected {sorted(allowed)}")
