"""Rules of the channels themselves, applied after the contact rules said a message may go:

* WhatsApp: the 24-hour window, approved templates outside it, opt-in for messages we start
  (channels/whatsapp_rules.py decides; this reads the state it needs from Redis).
* Numbers a provider called invalid (Twilio 21211, 21614) get nothing more on that channel.
* Fallback: the next channel, in the configured order, that the debtor has an address for.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from redis.asyncio import Redis

from bot.core.debtors import Debtor
from channels.whatsapp_rules import WhatsAppPlan, plan_whatsapp
from service.channel_config import ChannelConfig
from service.keys import Keys
from service.suppression import address_digest
from service.templates import sandbox_environment

REASONS = {
    "whatsapp_no_opt_in": "the debtor has not opted in to WhatsApp messages we start",
    "whatsapp_window_closed": ("more than 24 hours since the debtor last wrote on WhatsApp, and "
                               "this message has no approved WhatsApp template"),
    "invalid_address": "the provider said this number cannot receive messages",
}


class ChannelRules:
    def __init__(self, redis: Redis, keys: Keys, config: ChannelConfig, secret: str):
        self.redis = redis
        self.keys = keys
        self.config = config
        self.secret = secret

    # --- WhatsApp -------------------------------------------------------------------
    async def whatsapp_plan(self, *, conversation_id: str, debtor: Debtor | None, kind: str,
                            template: str, language: str, now: float) -> WhatsAppPlan:
        """The opt-in is the portfolio's (the creditor collected it: `whatsapp_opt_in`) or
        one recorded since (`record_opt_in`)."""
        last = await self.redis.hget(self.keys.conversation(conversation_id),
                                     "last_inbound_whatsapp")
        opted_in = False
        if debtor is not None:
            recorded = await self.redis.hget(self.keys.whatsapp_opt_in(debtor.id), "state")
            # what the debtor said since (START / STOP on WhatsApp) outranks the portfolio
            opted_in = recorded == b"in" if recorded else debtor.whatsapp_opt_in
        return plan_whatsapp(
            kind=kind, template=template, language=language, now=now,
            last_inbound_at=float(last) if last else None, opted_in=opted_in,
            session_hours=self.config.session_hours,
            content_sids={key: spec.sids for key, spec in self.config.content_templates.items()})

    def content_variables(self, template: str, language: str, variables: dict[str, Any]) -> str:
        """ContentVariables for an approved template: each placeholder's expression rendered in
        the template sandbox with the message's variables (a JSON object, as Twilio wants)."""
        spec = self.config.content_templates[template]
        values = {number: _compiled(language, expression).render(variables).strip()
                  for number, expression in spec.variables.items()}
        return json.dumps(values, ensure_ascii=False)

    async def record_opt_in(self, debtor_id: str, source: str, at: float | None = None) -> None:
        await self.redis.hset(self.keys.whatsapp_opt_in(debtor_id),
                              mapping={"state": "in", "source": source, "at": at or time.time()})

    async def withdraw_opt_in(self, debtor_id: str, source: str = "whatsapp_keyword") -> None:
        await self.redis.hset(self.keys.whatsapp_opt_in(debtor_id),
                              mapping={"state": "out", "source": source, "at": time.time()})

    # --- invalid numbers ------------------------------------------------------------
    async def flag_invalid(self, channel: str, address: str, code: str) -> None:
        await self.redis.set(self.keys.invalid_address(self._digest(channel, address)),
                             json.dumps({"code": code, "at": time.time()}))

    async def is_invalid(self, channel: str, address: str) -> bool:
        return bool(await self.redis.exists(self.keys.invalid_address(self._digest(channel, address))))

    def _digest(self, channel: str, address: str) -> str:
        # A number invalid for SMS (not a mobile) may still work on WhatsApp, and vice versa.
        return address_digest(self.secret, f"{channel}:{address}")

    # --- fallback -------------------------------------------------------------------
    def next_channel(self, debtor: Debtor, tried: set[str]) -> tuple[str, str] | None:
        """(channel, address) after the ones tried, in the configured order, or None."""
        for channel in self.config.fallback_order:
            if channel in tried:
                continue
            address = debtor.email if channel == "email" else debtor.phone
            if address:
                return channel, address
        return None


@lru_cache(maxsize=256)
def _compiled(language: str, expression: str):
    return sandbox_environment(None, language).from_string(expression)
