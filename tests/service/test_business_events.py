"""The business-events stream (service/business_events.py) against a real Redis."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.business_events import CSV_COLUMNS, BusinessEvents
from service.keys import Keys

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys():
    return Keys("bev")


@pytest.fixture
def events(redis, keys):
    return BusinessEvents(redis, keys)


async def test_append_writes_one_json_field_and_returns_the_event_id(events, redis, keys):
    event_id = await events.append("arrangement_accepted", "D-1",
                                   {"amount": Decimal("25.00"), "instalments": 3},
                                   creditor="Northwind Mobile",
                                   occurred_at=datetime(2026, 5, 6, 12, 0,
                                                        tzinfo=timezone(timedelta(hours=2))))
    assert len(event_id) == 32
    rows = await redis.xrange(keys.business_events)
    assert len(rows) == 1 and list(rows[0][1]) == [b"data"]
    event = json.loads(rows[0][1][b"data"])
    assert event == {"id": event_id, "type": "arrangement_accepted", "debtor_id": "D-1",
                     "creditor": "Northwind Mobile", "occurred_at": "2026-05-06T10:00:00.000Z",
                     "data": {"amount": "25.00", "instalments": 3}}


async def test_amounts_must_not_be_floats(events, redis, keys):
    with pytest.raises(TypeError, match=r"data.plan\[0\].amount is a float"):
        await events.append("offer_made", "D-1", {"plan": [{"amount": 25.1}]}, creditor="X")
    with pytest.raises(ValueError, match="time zone"):
        await events.append("offer_made", "D-1", {}, creditor="X",
                            occurred_at=datetime(2026, 5, 6))
    assert await redis.xlen(keys.business_events) == 0


async def test_creditor_is_looked_up_from_the_debtor_when_not_given(events, redis, keys):
    await redis.set(keys.debtor("D-EN-001"), json.dumps({"id": "D-EN-001",
                                                         "creditor": "Hollis & Vane"}))
    await events.append("promise_made", "D-EN-001", {})
    await events.append("promise_made", "D-UNKNOWN", {})
    (_, first), (_, second) = await events.read()
    assert first["creditor"] == "Hollis & Vane"
    assert second["creditor"] is None


async def test_an_event_id_is_appended_once_however_often_retried(events, redis, keys):
    first = await events.append("instalment_paid", "D-1", {"n": 1}, event_id="inst:A:1",
                                creditor="X")
    again = await events.append("instalment_paid", "D-1", {"n": 1}, event_id="inst:A:1",
                                creditor="X")
    assert first == again == "inst:A:1"
    assert await redis.xlen(keys.business_events) == 1


async def test_concurrent_retries_append_once(events, redis, keys):
    # Two copies of a job racing: the Lua check-and-append lets exactly one through.
    await asyncio.gather(*(events.append("payment_received", "D-1", {"amount": "5.00"},
                                         event_id="pay:1", creditor="X") for _ in range(20)))
    assert await redis.xlen(keys.business_events) == 1


async def test_read_pages_after_an_entry(events):
    for n in range(5):
        await events.append("offer_made", "D-1", {"n": n}, creditor="X")
    first = await events.read(count=2)
    rest = await events.read(after=first[-1][0], count=10)
    assert [e["data"]["n"] for _, e in first + rest] == [0, 1, 2, 3, 4]
    assert await events.read(after=rest[-1][0]) == []


async def _fill(events: BusinessEvents) -> None:
    """Seven events an hour apart, alternating types, one creditor name a spreadsheet would
    take for a formula."""
    for n in range(7):
        await events.append("offer_made" if n % 2 else "payment_received", f"D-{n}",
                            {"amount": f"{n}.50", "note": "comma, \"quote\""},
                            creditor="=HYPERLINK()" if n == 3 else "Northwind Mobile",
                            occurred_at=T0 + timedelta(hours=n))


async def test_export_jsonl_filters_by_time_and_type_in_batches(events, monkeypatch):
    await _fill(events)
    pages = []
    real_read = events.read

    async def counting_read(after=None, count=100):
        page = await real_read(after, count)
        pages.append(len(page))
        return page

    monkeypatch.setattr(events, "read", counting_read)
    monkeypatch.setattr("service.business_events.EXPORT_BATCH", 2)
    out = io.StringIO()
    written = await events.export_jsonl(out, since=T0 + timedelta(hours=1),
                                        until=T0 + timedelta(hours=6), types={"offer_made"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert written == 3 == len(lines)
    assert [e["debtor_id"] for e in lines] == ["D-1", "D-3", "D-5"]
    assert lines[0]["data"]["amount"] == "1.50"
    assert max(pages) == 2 and len(pages) == 4   # paged, never the whole stream at once


async def test_export_csv_columns_and_quoting(events):
    await _fill(events)
    out = io.StringIO()
    assert await events.export_csv(out) == 7
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1][1:5] == ["payment_received", "2026-05-06T10:00:00.000Z", "D-0",
                            "Northwind Mobile"]
    assert json.loads(rows[1][5]) == {"amount": "0.50", "note": "comma, \"quote\""}
    assert rows[4][4] == "'=HYPERLINK()"   # kept as text in a spreadsheet


async def test_export_of_an_empty_stream(events):
    out = io.StringIO()
    assert await events.export_csv(out) == 0
    assert out.getvalue() == ",".join(CSV_COLUMNS) + "\n"
    assert await events.export_jsonl(io.StringIO()) == 0
