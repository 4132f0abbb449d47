from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import date

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.core.debtors import Debtor
from service.debtor_store import AddressInUseError, RedisDebtorStore
from service.keys import Keys


def make_debtor(debtor_id: str = "D-EN-900", **changes: object) -> Debtor:
    base = Debtor(
        id=debtor_id,
        first_name="Oliver",
        last_name="Bennett",
        phone="+447400123001",
        email="Oliver.Bennett@example.org",
        language="en",
        country="GB",
        date_of_birth=date(2001, 9, 24),
        postcode="M1 1AE",
        reference="NWM-2026-62403",
        creditor="Northwind Mobile",
        balance_minor=24850,
        currency="GBP",
        due_date=date(2026, 11, 17),
        age_band="18-25",
        product="telecom",
        payment_history="good",
        preferred_channel="sms",
        whatsapp_opt_in=False,
        segment="early",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def client(redis_server_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server_url)
    await c.flushdb()
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(client: aioredis.Redis, keys: Keys) -> RedisDebtorStore:
    return RedisDebtorStore(client, keys)


async def all_keys(client: aioredis.Redis, keys: Keys) -> set[str]:
    return {k.decode() for k in await client.keys(f"{keys.prefix}:*")}


@pytest.mark.asyncio
async def test_create_get_and_plain_json_string(store: RedisDebtorStore, client: aioredis.Redis, keys: Keys) -> None:
    d = make_debtor()
    assert await store.upsert(d) == "created"
    assert await store.get(d.id) == d
    assert await client.type(keys.debtor(d.id)) == b"string"
    stored = json.loads(await client.get(keys.debtor(d.id)))
    assert stored["balance_minor"] == 24850 and stored["due_date"] == "2026-11-17"
    assert await store.all_ids() == [d.id]
    assert await all_keys(client, keys) == {
        keys.debtor(d.id),
        keys.debtor_index,
        keys.debtor_by_address("phone", "+447400123001"),
        keys.debtor_by_address("email", "oliver.bennett@example.org"),
        keys.debtor_references,
    }
    assert await store.find_by_reference(d.reference.lower()) == d


@pytest.mark.asyncio
async def test_get_missing_is_none(store: RedisDebtorStore) -> None:
    assert await store.get("nope") is None
    assert await store.find_by_address("phone", "+447400123001") is None
    assert await store.all_ids() == []


@pytest.mark.asyncio
async def test_upsert_same_is_unchanged_and_change_is_updated(store: RedisDebtorStore) -> None:
    d = make_debtor()
    assert await store.upsert(d) == "created"
    assert await store.upsert(d) == "unchanged"
    assert await store.upsert(make_debtor()) == "unchanged"  # equal content, new object
    changed = make_debtor(balance_minor=10000)
    assert await store.upsert(changed) == "updated"
    assert (await store.get(d.id)) == changed
    assert await store.upsert(changed) == "unchanged"


@pytest.mark.asyncio
async def test_find_by_address(store: RedisDebtorStore) -> None:
    d = make_debtor()
    await store.upsert(d)
    assert await store.find_by_address("phone", "+447400123001") == d
    assert await store.find_by_address("email", "OLIVER.BENNETT@EXAMPLE.ORG") == d
    assert await store.find_by_address("email", " oliver.bennett@example.org ") == d
    assert await store.find_by_address("phone", "+447400123002") is None
    with pytest.raises(ValueError):
        await store.find_by_address("fax", "123")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_phone_change_moves_the_index(store: RedisDebtorStore, client: aioredis.Redis, keys: Keys) -> None:
    await store.upsert(make_debtor())
    moved = make_debtor(phone="+447400123099")
    assert await store.upsert(moved) == "updated"
    assert await store.find_by_address("phone", "+447400123099") == moved
    assert await store.find_by_address("phone", "+447400123001") is None
    assert not await client.exists(keys.debtor_by_address("phone", "+447400123001"))


@pytest.mark.asyncio
async def test_removing_an_address_drops_its_index(store: RedisDebtorStore, client: aioredis.Redis, keys: Keys) -> None:
    await store.upsert(make_debtor())
    await store.upsert(make_debtor(email=None))
    assert not await client.exists(keys.debtor_by_address("email", "oliver.bennett@example.org"))
    assert await store.find_by_address("phone", "+447400123001") is not None


@pytest.mark.asyncio
async def test_address_of_another_debtor_is_refused(store: RedisDebtorStore) -> None:
    first = make_debtor("D-1")
    await store.upsert(first)
    with pytest.raises(AddressInUseError) as info:
        await store.upsert(make_debtor("D-2", email="someone.else@example.org"))
    assert info.value.kind == "phone" and info.value.owner_id == "D-1"
    assert await store.get("D-2") is None  # nothing written
    assert await store.find_by_address("phone", "+447400123001") == first
    assert await store.address_owner("phone", "+447400123001") == "D-1"


@pytest.mark.asyncio
async def test_address_given_up_can_be_taken(store: RedisDebtorStore) -> None:
    await store.upsert(make_debtor("D-1"))
    await store.upsert(make_debtor("D-1", phone="+447400123050"))
    second = make_debtor("D-2", email="other@example.org")
    assert await store.upsert(second) == "created"
    assert await store.find_by_address("phone", "+447400123001") == second


@pytest.mark.asyncio
async def test_stale_index_entry_is_overwritten(store: RedisDebtorStore, client: aioredis.Redis, keys: Keys) -> None:
    await client.set(keys.debtor_by_address("phone", "+447400123001"), "GHOST")
    assert await store.address_owner("phone", "+447400123001") is None
    assert await store.find_by_address("phone", "+447400123001") is None
    d = make_debtor()
    assert await store.upsert(d) == "created"
    assert await store.find_by_address("phone", "+447400123001") == d


@pytest.mark.asyncio
async def test_unchanged_upsert_repairs_lost_index_entries(
    store: RedisDebtorStore, client: aioredis.Redis, keys: Keys
) -> None:
    d = make_debtor()
    await store.upsert(d)
    await client.delete(keys.debtor_index, keys.debtor_by_address("phone", "+447400123001"))
    assert await store.upsert(d) == "unchanged"
    assert await store.all_ids() == [d.id]
    assert await store.find_by_address("phone", "+447400123001") == d


@pytest.mark.asyncio
async def test_delete_removes_document_index_and_addresses(
    store: RedisDebtorStore, client: aioredis.Redis, keys: Keys
) -> None:
    await store.upsert(make_debtor("D-1"))
    await store.upsert(make_debtor("D-2", phone="+447400123002", email=None))
    assert await store.delete("D-1") is True
    assert await store.delete("D-1") is False
    assert await store.get("D-1") is None
    assert await store.all_ids() == ["D-2"]
    assert await all_keys(client, keys) == {
        keys.debtor("D-2"),
        keys.debtor_index,
        keys.debtor_by_address("phone", "+447400123002"),
        keys.debtor_references,
    }
    assert await client.hlen(keys.debtor_references) == 1   # D-1's reference went with it


@pytest.mark.asyncio
async def test_all_ids_sorted(store: RedisDebtorStore) -> None:
    for n, debtor_id in enumerate(["D-3", "D-1", "D-2"]):
        await store.upsert(make_debtor(debtor_id, phone=f"+4474001230{n:02d}", email=None))
    assert await store.all_ids() == ["D-1", "D-2", "D-3"]


@pytest.mark.asyncio
async def test_concurrent_upserts_stay_consistent(store: RedisDebtorStore, client: aioredis.Redis, keys: Keys) -> None:
    await store.upsert(make_debtor())
    versions = [make_debtor(phone=f"+4474001231{n:02d}", balance_minor=n) for n in range(20)]
    await asyncio.gather(*(store.upsert(v) for v in versions))
    final = await store.get("D-EN-900")
    assert final in versions
    phone_keys = {k for k in await all_keys(client, keys) if ":address:phone:" in k}
    assert phone_keys == {keys.debtor_by_address("phone", final.phone or "")}


@pytest.mark.asyncio
async def test_two_debtors_racing_for_one_address_only_one_wins(store: RedisDebtorStore) -> None:
    a = make_debtor("D-A", email=None)
    b = make_debtor("D-B", email=None)
    results = await asyncio.gather(store.upsert(a), store.upsert(b), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["AddressInUseError", "str"]
    owner = await store.find_by_address("phone", "+447400123001")
    assert owner is not None and owner.id in {"D-A", "D-B"}


@pytest.mark.asyncio
async def test_works_with_decode_responses_client(redis_server_url: str, keys: Keys) -> None:
    c = aioredis.Redis.from_url(redis_server_url, decode_responses=True)
    try:
        s = RedisDebtorStore(c, keys)
        d = make_debtor()
        assert await s.upsert(d) == "created"
        assert await s.get(d.id) == d
        assert await s.find_by_address("email", "oliver.bennett@example.org") == d
        assert await s.all_ids() == [d.id]
        assert await s.upsert(make_debtor(phone="+447400123077")) == "updated"
        assert await s.delete(d.id) is True
    finally:
        await c.aclose()


@pytest.mark.asyncio
async def test_take_over_from_lets_a_batch_swap_numbers(store: RedisDebtorStore) -> None:
    await store.upsert(make_debtor("D-1", phone="+447400123001", email=None))
    await store.upsert(make_debtor("D-2", phone="+447400123002", email=None))
    a = make_debtor("D-1", phone="+447400123002", email=None)
    b = make_debtor("D-2", phone="+447400123001", email=None)
    with pytest.raises(AddressInUseError):
        await store.upsert(a)
    assert await store.upsert(a, take_over_from={"D-2"}) == "updated"
    assert await store.upsert(b) == "updated"  # its new number was released by D-1
    assert (await store.find_by_address("phone", "+447400123002")) == a
    assert (await store.find_by_address("phone", "+447400123001")) == b
