"""The contact rules with their state: what the pure policy (bot/core/contact_policy.py) needs
to know about a debtor, read from Redis, and the state the rules keep.

* ``ContactConfig``  policies/contact.yml and policies/jurisdictions.yml, validated at start-up.
* ``StopStates``     the stop-states of a debtor (dispute, attorney, ...): set from replies,
                     lifted only by a person whose role the policy names; every change audited.
* ``ContactRules``   gathers a ``Situation`` (zones, jurisdiction, opt-out, stop-states,
                     preferences, recent unsolicited sends) and asks the policy; records sends
                     so the caps can count them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import phonenumbers
from redis.asyncio import Redis

from bot.core.config_files import read_yaml
from bot.core.contact_policy import (
    ContactPolicy,
    ContactPolicyError,
    Decision,
    Preferences,
    Situation,
    decide,
    load_policy,
)
from bot.core.contact_windows import Jurisdictions, candidate_zones, load_packs
from bot.core.debtors import Debtor
from service.audit import SYSTEM, AuditLog
from service.keys import Keys
from service.settings import PROJECT_ROOT
from service.suppression import SuppressionStore, address_digest

POLICIES_DIR = PROJECT_ROOT / "policies"
WEEK_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class ContactConfig:
    policy: ContactPolicy
    jurisdictions: Jurisdictions

    @classmethod
    def load(cls, directory: Path = POLICIES_DIR) -> "ContactConfig":
        """Both files, validated; ContactPolicyError / ContactRulesError name the bad place."""
        path = Path(directory) / "contact.yml"
        policy = load_policy(read_yaml(path, ContactPolicyError) or {}, source=str(path))
        return cls(policy, load_packs(Path(directory) / "jurisdictions.yml"))


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


class StopStateError(Exception):
    """Unknown state, or a person whose role may not lift it."""


class StopStates:
    def __init__(self, redis: Redis, keys: Keys, audit: AuditLog, policy: ContactPolicy):
        self.redis = redis
        self.keys = keys
        self.audit = audit
        self.policy = policy

    async def set(self, debtor_id: str, state: str, *, source: str, actor: str = SYSTEM,
                  address_digest_: str | None = None) -> bool:
        """Enter a stop-state. True if it is new. A wrong number also records which address."""
        if state not in self.policy.stop_states:
            raise StopStateError(f"unknown stop-state {state!r}")
        key = self.keys.stop_states(debtor_id)
        current = await self.redis.hget(key, state)
        record = json.loads(current) if current else {"since": time.time(), "source": source,
                                                      "by": actor, "addresses": []}
        if address_digest_ and address_digest_ not in record["addresses"]:
            record["addresses"].append(address_digest_)
        await self.redis.hset(key, state, json.dumps(record))
        if current is None:
            await self.audit.record(actor, "stop_state.set", debtor_id=debtor_id, state=state,
                                    source=source)
        return current is None

    async def active(self, debtor_id: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.stop_states(debtor_id))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def lift(self, debtor_id: str, state: str, *, by: str, role: str, note: str = "") -> None:
        rule = self.policy.stop_states.get(state)
        if rule is None:
            raise StopStateError(f"unknown stop-state {state!r}")
        if role not in rule.lift_roles:
            await self.audit.record(by, "stop_state.lift_refused", debtor_id=debtor_id,
                                    state=state, role=role)
            raise StopStateError(f"a {role} may not lift {state}; "
                                 f"ask someone who is {' or '.join(sorted(rule.lift_roles))}")
        if not await self.redis.hdel(self.keys.stop_states(debtor_id), state):
            raise StopStateError(f"{debtor_id} is not in stop-state {state}")
        await self.audit.record(by, "stop_state.lift", debtor_id=debtor_id, state=state,
                                role=role, note=note)

    async def blocking_bot(self, debtor_id: str) -> list[str]:
        """The states under which the bot may not answer the debtor (no hand-back to it)."""
        return [name for name in await self.active(debtor_id)
                if "reply" not in self.policy.stop_states[name].allows]


class ContactRules:
    def __init__(self, redis: Redis, keys: Keys, config: ContactConfig, pseudonym_key: str):
        self.redis = redis
        self.keys = keys
        self.config = config
        self.suppressions = SuppressionStore(redis, keys, pseudonym_key)
        self.audit = AuditLog(redis, keys, pseudonym_key)
        self.stop_states = StopStates(redis, keys, self.audit, config.policy)
        self.pseudonym_key = pseudonym_key

    async def situation(self, debtor: Debtor | None, channel: str, address: str, kind: str,
                        now: datetime) -> Situation:
        return (await self.situations([(debtor, channel, address)], kind, now))[0]

    async def situations(self, items: list[tuple[Debtor | None, str, str]], kind: str,
                         now: datetime) -> list[Situation]:
        """The situation of each (debtor, channel, address), all read in one round trip (a
        campaign plans hundreds at a time)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for debtor, channel, address in items:
                pipe.get(self.suppressions.key(channel, address))
                if debtor is not None:
                    pipe.hgetall(self.keys.stop_states(debtor.id))
                    pipe.hgetall(self.keys.preferences(debtor.id))
                    pipe.hget(self.keys.conversation(debtor.id), "last_inbound")
                    pipe.zrangebyscore(self.keys.contact_log(debtor.id, channel),
                                       now.timestamp() - WEEK_SECONDS, "+inf", withscores=True)
            replies = iter(await pipe.execute())
        out = []
        for debtor, channel, address in items:
            raw_opt_out = next(replies)
            suppressed = (json.loads(raw_opt_out).get("source", "opted_out")
                          if raw_opt_out is not None else None)
            if debtor is None:
                out.append(self._situation(None, channel, address, kind, now, suppressed))
                continue
            raw_states, raw_prefs, last, scores = (next(replies) for _ in range(4))
            out.append(self._situation(
                debtor, channel, address, kind, now, suppressed,
                states={k.decode(): json.loads(v) for k, v in raw_states.items()},
                preferences=Preferences.from_mapping({k.decode(): v.decode()
                                                      for k, v in raw_prefs.items()}),
                last_inbound=utc(float(last)) if last else None,
                recent=[utc(score) for _member, score in scores]))
        return out

    def _situation(self, debtor: Debtor | None, channel: str, address: str, kind: str,
                   now: datetime, suppressed: str | None, *,
                   states: dict[str, dict[str, Any]] | None = None,
                   preferences: Preferences | None = None, last_inbound: datetime | None = None,
                   recent: list[datetime] | None = None) -> Situation:
        country = debtor.country if debtor else None
        phone = debtor.phone if debtor else (address if channel != "email" else None)
        zones = candidate_zones(country, phone)
        pack = self.config.jurisdictions.pack_for(country or _phone_country(phone))
        states = states or {}
        preferences = preferences or Preferences()
        recent = recent or []
        digest = address_digest(self.pseudonym_key, address)
        wrong = any(digest in (record.get("addresses") or [])
                    for name, record in states.items() if name == "wrong_number")
        return Situation(
            now=now, kind=kind, channel=channel, zones=zones, pack=pack, country=country,
            phone_country=_phone_country(address) if channel != "email" else None,
            suppressed=suppressed, stop_states=frozenset(states), wrong_number=wrong,
            preferences=preferences, last_inbound_at=last_inbound, recent_unsolicited=recent)

    async def decide(self, debtor: Debtor | None, channel: str, address: str, kind: str,
                     now: datetime) -> Decision:
        situation = await self.situation(debtor, channel, address, kind, now)
        return decide(self.config.policy, situation)

    async def decide_many(self, items: list[tuple[Debtor | None, str, str]], kind: str,
                          now: datetime) -> list[Decision]:
        return [decide(self.config.policy, s) for s in await self.situations(items, kind, now)]

    async def record_sent(self, debtor_id: str, channel: str, message_id: str,
                          now: datetime) -> None:
        """Count a sent message against the caps (the decision said it counts)."""
        key = self.keys.contact_log(debtor_id, channel)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {message_id: now.timestamp()})
            pipe.zremrangebyscore(key, "-inf", now.timestamp() - WEEK_SECONDS)
            pipe.expire(key, WEEK_SECONDS + 3600)
            await pipe.execute()


def _phone_country(phone: str | None) -> str | None:
    if not phone:
        return None
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(phone.removeprefix("whatsapp:")))
    except phonenumbers.NumberParseException:
        return None
