"""Debtors in Redis.

Layout (key names from :class:`service.keys.Keys`):

* ``Keys.debtor(id)``                      string: ``Debtor.to_json()``
* ``Keys.debtor_index``                    set of all debtor ids
* ``Keys.debtor_by_address(kind, addr)``   string: the debtor id owning that address;
  ``kind`` is ``phone`` (E.164) or ``email`` (lower-cased)
* ``Keys.debtor_references``               hash: creditor reference -> debtor id (payments
  name the reference the creditor knows, not our id)

Every write of one debtor (document, index, address entries) happens in one
MULTI/EXEC transaction, guarded by WATCH on every key it read, and is retried when
another client changed one of them in between. So readers never see a debtor whose
address entries point elsewhere, and two writers cannot both take one address.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from bot.core.debtors import Debtor
from service.keys import Keys

AddressKind = Literal["phone", "email"]
UpsertOutcome = Literal["created", "updated", "unchanged"]
ADDRESS_KINDS: tuple[AddressKind, ...] = ("phone", "email")
MAX_ATTEMPTS = 20


class AddressInUseError(Exception):
    """The phone number or email address already belongs to another debtor."""

    def __init__(self, kind: str, address: str, owner_id: str, debtor_id: str) -> None:
        super().__init__(
            f"{address} already belongs to debtor {owner_id}; "
            f"one address can only belong to one debtor (while saving {debtor_id})"
        )
        self.kind = kind
        self.address = address
        self.owner_id = owner_id
        self.debtor_id = debtor_id


class DebtorStore(Protocol):
    """What the rest of the code needs from a debtor store."""

    async def upsert(
        self, debtor: Debtor, *, take_over_from: Collection[str] = ()
    ) -> UpsertOutcome: ...
    async def get(self, debtor_id: str) -> Debtor | None: ...
    async def find_by_address(self, kind: AddressKind, address: str) -> Debtor | None: ...
    async def find_by_reference(self, reference: str) -> Debtor | None:
        owner = _text(await self.redis.hget(self.keys.debtor_references, reference.strip().upper()))
        debtor = await self.get(owner) if owner else None
        return debtor if debtor is not None and debtor.reference.upper() == reference.strip().upper() else None

    async def all_ids(self) -> list[str]: ...
    async def delete(self, debtor_id: str) -> bool: ...


def normalise_address(kind: str, address: str) -> str:
    """The form used in index keys: E.164 phone as is (trimmed), email lower-cased."""
    if kind == "phone":
        return address.strip()
    if kind == "email":
        return address.strip().lower()
    raise ValueError(f"address kind must be 'phone' or 'email', not {kind!r}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


class RedisDebtorStore:
    """Debtors in Redis (works with clients with or without ``decode_responses``)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # --- reads -----------------------------------------------------------------------
    async def get(self, debtor_id: str) -> Debtor | None:
        raw = await self.redis.get(self.keys.debtor(debtor_id))
        return None if raw is None else Debtor.from_json(_text(raw) or "")

    async def get_many(self, debtor_ids: list[str]) -> list[Debtor | None]:
        """Several debtors in one round trip (MGET), in the order asked; None for a missing or
        unreadable one (a record of an older shape must not break a whole list)."""
        if not debtor_ids:
            return []
        out: list[Debtor | None] = []
        for raw in await self.redis.mget([self.keys.debtor(i) for i in debtor_ids]):
            try:
                out.append(None if raw is None else Debtor.from_json(_text(raw) or ""))
            except (ValueError, TypeError, KeyError):
                out.append(None)
        return out

    async def address_owner(self, kind: AddressKind, address: str) -> str | None:
        """Id of the debtor the index gives for this address (None if none, or stale)."""
        debtor = await self.find_by_address(kind, address)
        return None if debtor is None else debtor.id

    async def find_by_address(self, kind: AddressKind, address: str) -> Debtor | None:
        """The debtor with this phone (E.164) or email (any case), or None."""
        address = normalise_address(kind, address)
        owner = _text(await self.redis.get(self.keys.debtor_by_address(kind, address)))
        if owner is None:
            return None
        debtor = await self.get(owner)
        if debtor is None or debtor.addresses().get(kind) != address:
            return None  # stale entry: the owner no longer has this address
        return debtor

    async def find_by_reference(self, reference: str) -> Debtor | None:
        owner = _text(await self.redis.hget(self.keys.debtor_references, reference.strip().upper()))
        debtor = await self.get(owner) if owner else None
        return debtor if debtor is not None and debtor.reference.upper() == reference.strip().upper() else None

    async def all_ids(self) -> list[str]:
        members = await self.redis.smembers(self.keys.debtor_index)
        return sorted(_text(m) or "" for m in members)

    # --- writes ----------------------------------------------------------------------
    async def upsert(self, debtor: Debtor, *, take_over_from: Collection[str] = ()) -> UpsertOutcome:
        """Create or replace one debtor atomically; say whether anything changed.

        Raises :class:`AddressInUseError` when the debtor's phone or email is indexed
        for another debtor that still has it, unless that debtor's id is in
        ``take_over_from`` (a batch that is about to move that debtor off the address,
        e.g. two debtors swapping numbers in one import).
        """
        doc_key = self.keys.debtor(debtor.id)
        new_addresses = debtor.addresses()
        for _ in range(MAX_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(doc_key)
                    raw = await pipe.get(doc_key)
                    old = None if raw is None else Debtor.from_json(_text(raw) or "")
                    old_addresses = old.addresses() if old else {}

                    # who holds the addresses this debtor needs?
                    for kind, address in new_addresses.items():
                        addr_key = self.keys.debtor_by_address(kind, address)
                        await pipe.watch(addr_key)
                        owner = _text(await pipe.get(addr_key))
                        if owner is None or owner == debtor.id or owner in take_over_from:
                            continue
                        owner_key = self.keys.debtor(owner)
                        await pipe.watch(owner_key)
                        owner_raw = await pipe.get(owner_key)
                        if owner_raw is not None:
                            holder = Debtor.from_json(_text(owner_raw) or "")
                            if holder.addresses().get(kind) == address:
                                raise AddressInUseError(kind, address, owner, debtor.id)
                        # else: stale entry, ours to take

                    # old addresses this debtor gives up: drop them if they still point here
                    released: list[str] = []
                    for kind, address in old_addresses.items():
                        if new_addresses.get(kind) == address:
                            continue
                        addr_key = self.keys.debtor_by_address(kind, address)
                        await pipe.watch(addr_key)
                        if _text(await pipe.get(addr_key)) == debtor.id:
                            released.append(addr_key)

                    pipe.multi()
                    if old != debtor:
                        pipe.set(doc_key, debtor.to_json())
                    # index entries are (re)written even when unchanged: repairs lost ones
                    pipe.sadd(self.keys.debtor_index, debtor.id)
                    for kind, address in new_addresses.items():
                        pipe.set(self.keys.debtor_by_address(kind, address), debtor.id)
                    if old is not None and old.reference.upper() != debtor.reference.upper():
                        pipe.hdel(self.keys.debtor_references, old.reference.upper())
                    pipe.hset(self.keys.debtor_references, debtor.reference.upper(), debtor.id)
                    if released:
                        pipe.delete(*released)
                    await pipe.execute()
                except WatchError:
                    continue
            if old is None:
                return "created"
            return "unchanged" if old == debtor else "updated"
        raise RuntimeError(f"debtor {debtor.id}: gave up after {MAX_ATTEMPTS} concurrent changes")

    async def delete(self, debtor_id: str) -> bool:
        """Remove a debtor, its index entry and its address entries. False if absent."""
        doc_key = self.keys.debtor(debtor_id)
        for _ in range(MAX_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(doc_key)
                    raw = await pipe.get(doc_key)
                    owned: list[str] = []
                    reference = None
                    if raw is not None:
                        reference = Debtor.from_json(_text(raw) or "").reference.upper()
                        await pipe.watch(self.keys.debtor_references)
                        if _text(await pipe.hget(self.keys.debtor_references, reference)) != debtor_id:
                            reference = None  # another debtor holds that reference now
                        for kind, address in Debtor.from_json(_text(raw) or "").addresses().items():
                            addr_key = self.keys.debtor_by_address(kind, address)
                            await pipe.watch(addr_key)
                            if _text(await pipe.get(addr_key)) == debtor_id:
                                owned.append(addr_key)
                    pipe.multi()
                    pipe.delete(doc_key, *owned)
                    pipe.srem(self.keys.debtor_index, debtor_id)
                    if reference:
                        pipe.hdel(self.keys.debtor_references, reference)
                    await pipe.execute()
                except WatchError:
                    continue
            return raw is not None
        raise RuntimeError(f"debtor {debtor_id}: gave up after {MAX_ATTEMPTS} concurrent changes")
