"""Which conversation an inbound message belongs to.

One debtor, one conversation, whatever the channel: a phone number (SMS and WhatsApp) and an
email address both lead to the debtor's id, which is the conversation id.

Email also threads: our outbound mail has a per-conversation reply address
(``reply+<token>@<reply domain>``) and a Message-ID we remember, so a reply maps back to its
conversation by its To address or its In-Reply-To/References. A thread is only trusted when
the sender is that conversation's debtor: someone else replying to a forwarded reminder gets
the unknown-sender answer, with no debt detail.

A sender we cannot match gets a conversation of its own, ``unknown-<digest>``, named by a
keyed digest of the address (never the address itself: ids end up in logs and job names).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from service.debtor_store import RedisDebtorStore
from service.keys import Keys
from service.suppression import address_digest

REPLY_LOCAL_PART = "reply"
_REPLY_ADDRESS = re.compile(rf"^{REPLY_LOCAL_PART}\+([a-z2-7]{{16}})@", re.IGNORECASE)
#: Threading records live as long as a conversation may plausibly be answered.
THREAD_TTL_SECONDS = 400 * 24 * 3600


def unknown_conversation_id(secret: str, address: str) -> str:
    return "unknown-" + address_digest(secret, address)[:20]


def reply_token(secret: str, conversation_id: str) -> str:
    """16 base32 characters: unguessable without the key, so nobody can write into another
    debtor's thread by guessing its address."""
    digest = hmac.new(secret.encode(), b"reply:" + conversation_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:16]


@dataclass(frozen=True)
class Route:
    conversation_id: str
    debtor_id: str | None          # None: an unknown sender
    matched_by: str                # address | reply_address | thread | unknown
    thread_mismatch: bool = False  # replied in a debtor's thread but is not that debtor


class InboundRouter:
    def __init__(self, redis: Redis, keys: Keys, secret: str):
        self.redis = redis
        self.keys = keys
        self.secret = secret
        self.debtors = RedisDebtorStore(redis, keys)

    async def for_phone(self, address: str) -> Route:
        owner = await self.debtors.address_owner("phone", address)
        if owner:
            return Route(owner, owner, "address")
        return Route(unknown_conversation_id(self.secret, address), None, "unknown")

    async def for_email(self, from_address: str, to_addresses: Iterable[str],
                        thread_ids: Iterable[str]) -> Route:
        sender = await self.debtors.address_owner("email", from_address)
        thread, how = await self._thread(to_addresses, thread_ids)
        if thread is not None and sender == thread:
            return Route(thread, sender, how)
        if sender:
            return Route(sender, sender, "address", thread_mismatch=thread is not None)
        return Route(unknown_conversation_id(self.secret, from_address), None, "unknown",
                     thread_mismatch=thread is not None)

    async def _thread(self, to_addresses: Iterable[str],
                      thread_ids: Iterable[str]) -> tuple[str | None, str]:
        for address in to_addresses:
            match = _REPLY_ADDRESS.match(address.strip())
            if match:
                owner = await self.redis.get(self.keys.reply_token(match.group(1).lower()))
                if owner:
                    return owner.decode(), "reply_address"
        for message_id in thread_ids:
            owner = await self.redis.hget(self.keys.email_thread(message_id.strip("<> ")),
                                          "conversation_id")
            if owner:
                return owner.decode(), "thread"
        return None, "unknown"

    # --- what outbound mail leaves behind for threading ---------------------------------
    async def reply_address(self, conversation_id: str, domain: str) -> str:
        token = reply_token(self.secret, conversation_id)
        await self.redis.set(self.keys.reply_token(token), conversation_id, ex=THREAD_TTL_SECONDS)
        return f"{REPLY_LOCAL_PART}+{token}@{domain}"

    async def remember_thread(self, message_id_header: str, conversation_id: str,
                              message_id: str) -> None:
        key = self.keys.email_thread(message_id_header.strip("<> "))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"conversation_id": conversation_id, "message_id": message_id})
            pipe.expire(key, THREAD_TTL_SECONDS)
            await pipe.execute()

    async def message_for_thread(self, message_id_header: str) -> str | None:
        """Our outbound message id behind an email Message-ID (a bounce names it)."""
        value = await self.redis.hget(self.keys.email_thread(message_id_header.strip("<> ")),
                                      "message_id")
        return value.decode() if value else None
