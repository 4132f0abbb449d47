"""The audit log: an append-only Redis stream of every state change and every view of debtor
data by a person (who, what, when).

Nothing in the project deletes or edits entries, except the retention job trimming entries
older than the audit period (7 years at least, policies/retention.yml). That makes erasure a
question: the log must stay whole, yet an erased debtor must not be findable in
it. So entries never name a debtor directly: they carry a pseudonym (a keyed digest of the
debtor id), and a separate lookup hash maps pseudonym -> debtor id for display. Erasure deletes
the lookup entry; the audit entries stay, pointing at nobody (service/privacy.py).

Message bodies and contact details never go into the log, only ids, names of actions and
reason codes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from service.keys import Keys
from service.suppression import address_digest

SYSTEM = "system"  # the actor for changes the bot or the worker make on their own


class AuditLog:
    def __init__(self, redis: Redis, keys: Keys, secret: str):
        self.redis = redis
        self.keys = keys
        self.secret = secret

    @property
    def lookup_key(self) -> str:
        return f"{self.keys.prefix}:audit_subjects"

    def pseudonym(self, debtor_id: str) -> str:
        return "p-" + address_digest(self.secret, f"debtor:{debtor_id}")[:20]

    async def record(self, actor: str, action: str, *, debtor_id: str | None = None,
                     **detail: Any) -> str:
        """Append one entry. `actor` is a username or SYSTEM; `action` a stable verb such as
        "stop_state.set", "conversation.claim", "debtor.view"."""
        entry: dict[str, Any] = {"at": time.time(), "actor": actor, "action": action}
        if debtor_id:
            subject = self.pseudonym(debtor_id)
            entry["subject"] = subject
            await self.redis.hset(self.lookup_key, subject, debtor_id)
        if detail:
            entry["detail"] = detail
        entry_id = await self.redis.xadd(self.keys.audit, {"data": json.dumps(entry, default=str)})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def entries(self, *, debtor_id: str | None = None, count: int = 1000) -> list[dict[str, Any]]:
        """Newest last. With `debtor_id`, only that debtor's entries; each entry's subject is
        resolved back to a debtor id where the lookup still knows it."""
        rows = await self.redis.xrevrange(self.keys.audit, count=count)
        wanted = self.pseudonym(debtor_id) if debtor_id else None
        lookup = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(self.lookup_key)).items()}
        result = []
        for entry_id, fields in reversed(rows):
            entry = json.loads(fields[b"data"])
            if wanted and entry.get("subject") != wanted:
                continue
            entry["id"] = entry_id.decode()
            if entry.get("subject"):
                entry["debtor_id"] = lookup.get(entry["subject"])
            result.append(entry)
        return result

    async def forget_subject(self, debtor_id: str) -> None:
        """After an erasure: the entries stay, the link from them to the person goes."""
        await self.redis.hdel(self.lookup_key, self.pseudonym(debtor_id))
