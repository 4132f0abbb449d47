"""Opt-outs: which channel and address may no longer be written to.

An opt-out applies to the channel and address it was made for ("stop emailing me" does not stop
texts). Two widenings, both from ../shared/domain-rules.md:

* WhatsApp: Twilio's carrier-level opt-out handling does not cover WhatsApp, so an opt-out made
  on any channel is honoured on WhatsApp too (for the debtor's phone number).
* Nothing else widens: SMS and email opt-outs stay on their own channel.

Addresses are stored only as a keyed digest (HMAC-SHA256 with the deployment's pseudonym key):
an opt-out must outlive the erasure of the debtor it belonged to (or a re-import would text a
person who said stop), yet the kept record must not identify anybody.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from redis.asyncio import Redis

from service.keys import Keys
from service.settings import SettingsError

PHONE_CHANNELS = ("sms", "whatsapp")


def address_digest(secret: str, address: str) -> str:
    """A stable pseudonym for an address: same address, same digest; unknowable without the key."""
    if not secret:
        raise SettingsError("NUDGE_PSEUDONYM_KEY is not set (run `make run` once, or set it)")
    normalised = address.strip().lower()
    return hmac.new(secret.encode(), normalised.encode(), hashlib.sha256).hexdigest()[:32]


class SuppressionStore:
    def __init__(self, redis: Redis, keys: Keys, secret: str):
        self.redis = redis
        self.keys = keys
        self.secret = secret

    def key(self, channel: str, address: str) -> str:
        return self.keys.suppression(channel, address_digest(self.secret, address))

    async def suppress(self, channel: str, address: str, source: str, *,
                       whatsapp_phone: str | None = None) -> bool:
        """Record an opt-out. True if it is new for this channel and address (the caller sends
        at most one confirmation). `whatsapp_phone` is the debtor's number, suppressed on
        WhatsApp as well."""
        record = json.dumps({"source": source, "at": time.time()})
        first = await self.redis.set(self.key(channel, address), record, nx=True)
        if whatsapp_phone and not (channel == "whatsapp" and whatsapp_phone == address):
            await self.redis.set(self.key("whatsapp", whatsapp_phone),
                                 json.dumps({"source": f"{source}:{channel}", "at": time.time()}),
                                 nx=True)
        return bool(first)

    async def lift(self, channel: str, address: str) -> bool:
        """START/UNSTOP: the debtor subscribes again to this channel and address."""
        return bool(await self.redis.delete(self.key(channel, address)))

    async def reason(self, channel: str, address: str) -> str | None:
        """The source of the opt-out ("keyword", "opt_out_intent", "twilio_21610", ...) or None."""
        raw = await self.redis.get(self.key(channel, address))
        if raw is None:
            return None
        return json.loads(raw).get("source", "opted_out")

    async def is_suppressed(self, channel: str, address: str) -> bool:
        return await self.reason(channel, address) is not None
