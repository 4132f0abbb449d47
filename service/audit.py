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
import re
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.keys import Keys
from service.suppression import address_digest

SYSTEM = "system"  # the actor for changes the bot or the worker make on their own
ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")     # a stream entry id, as a paging cursor


@dataclass(frozen=True)
class AuditPage:
    entries: list[dict[str, Any]]    # newest first
    older: str | None                # the cursor for the next page (`before=`), None at the end
    scanned: int                     # entries read to find these


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

    async def page(self, *, before: str | None = None, limit: int = 50, actor: str | None = None,
                   action: str | None = None, debtor_id: str | None = None,
                   scan_limit: int = 20_000, chunk: int = 500) -> AuditPage:
        """Newest first, strictly older than the entry id `before`: up to `limit` entries
        matching every filter given (`action` also matches its sub-actions: "login" finds
        "login.failed"). Reads backwards in chunks (XREVRANGE) and at most `scan_limit`
        entries per call; when that runs out first, `older` says where to go on searching."""
        if before is not None and not ENTRY_ID.match(before):
            raise ValueError(f"not an audit entry id: {before[:40]!r}")
        wanted = self.pseudonym(debtor_id) if debtor_id else None
        found: list[dict[str, Any]] = []
        scanned, high = 0, f"({before}" if before else "+"
        while True:
            rows = await self.redis.xrevrange(self.keys.audit, max=high, min="-", count=chunk)
            for entry_id, fields in rows:
                scanned += 1
                entry = json.loads(fields[b"data"])
                entry["id"] = entry_id.decode()
                if (wanted is None or entry.get("subject") == wanted) \
                        and (actor is None or entry.get("actor") == actor) \
                        and (action is None or entry.get("action") == action
                             or str(entry.get("action", "")).startswith(action + ".")):
                    if len(found) == limit:           # one more exists: there is an older page
                        return await self._page(found, found[-1]["id"], scanned)
                    found.append(entry)
                if scanned >= scan_limit:
                    return await self._page(found, entry["id"], scanned)
            if len(rows) < chunk:
                return await self._page(found, None, scanned)
            high = "(" + rows[-1][0].decode()

    async def _page(self, entries: list[dict[str, Any]], older: str | None, scanned: int) -> AuditPage:
        subjects = sorted({e["subject"] for e in entries if e.get("subject")})
        names = await self.redis.hmget(self.lookup_key, subjects) if subjects else []
        lookup = {s: v.decode() for s, v in zip(subjects, names, strict=True) if v is not None}
        for entry in entries:
            if entry.get("subject"):
                entry["debtor_id"] = lookup.get(entry["subject"])
        return AuditPage(entries, older, scanned)

    async def forget_subject(self, debtor_id: str) -> None:
        """After an erasure: the entries stay, the link from them to the person goes."""
        await self.redis.hdel(self.lookup_key, self.pseudonym(debtor_id))
