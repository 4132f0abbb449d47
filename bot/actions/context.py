"""What every action needs: the app state in Redis, the debtor, and a way to speak.

Actions send nothing themselves: they return events and name a template with its variables
(`say`); the worker renders and sends. The action server (service/action_server.py) calls
`configure` once at start-up with its Redis connection and settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from redis.asyncio import Redis

from bot.core.arrangement_policy import ArrangementPolicy, PolicyBook, load_policy_book
from bot.core.debtors import Debtor
from service.arrangements import ArrangementBook
from service.business_events import BusinessEvents
from service.contact_rules import ContactConfig, ContactRules
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.identity import IdentityChecks
from service.keys import Keys
from service.pay_links import PayLinks
from service.settings import Settings


@dataclass
class ActionContext:
    redis: Redis
    keys: Keys
    settings: Settings
    debtors: RedisDebtorStore
    conversations: ConversationStore
    policies: PolicyBook  # policies/arrangements.yml: what each creditor allows
    rules: ContactRules  # stop-states, suppressions and the audit log
    identity: IdentityChecks
    book: ArrangementBook
    events: BusinessEvents
    pay_links: PayLinks

    def policy_for(self, debtor: Debtor) -> ArrangementPolicy:
        return self.policies.for_debtor(debtor.creditor, debtor.segment)


_context: ActionContext | None = None


def configure(redis: Redis, settings: Settings) -> ActionContext:
    global _context
    keys = Keys(settings.key_prefix)
    rules = ContactRules(redis, keys, ContactConfig.load(settings.policies_dir),
                         settings.pseudonym_key)
    events = BusinessEvents(redis, keys)
    _context = ActionContext(
        redis, keys, settings, RedisDebtorStore(redis, keys), ConversationStore(redis, keys),
        load_policy_book(settings.policies_dir / "arrangements.yml"), rules,
        IdentityChecks(redis, keys), ArrangementBook(redis, keys, events), events,
        PayLinks(settings.pay_link_secret, settings.public_url))
    return _context


def context() -> ActionContext:
    if _context is None:
        raise RuntimeError("the action server did not call bot.actions.context.configure()")
    return _context


def say(dispatcher: CollectingDispatcher, template: str, **variables: Any) -> None:
    """Name the template to send; the worker renders it for channel, language and tone."""
    dispatcher.utter_message(json_message={"template": template, "vars": variables})


async def debtor_of(tracker: Tracker) -> Debtor | None:
    return await context().debtors.get(tracker.sender_id)


def message_metadata(tracker: Tracker) -> dict[str, Any]:
    return (tracker.latest_message or {}).get("metadata") or {}


def today_of(tracker: Tracker) -> date:
    """The worker passes the debtor's local date, so "friday" means their Friday."""
    raw = message_metadata(tracker).get("today")
    return date.fromisoformat(raw) if raw else date.today()


def now_of(tracker: Tracker) -> float:
    """When the debtor's message arrived (the worker passes it), else now."""
    raw = message_metadata(tracker).get("now")
    return float(raw) if raw else time.time()


async def is_verified(tracker: Tracker) -> bool:
    """Verified in this conversation, and not longer ago than the portfolio allows."""
    return await context().identity.is_verified(tracker.sender_id, "chat", now_of(tracker))
