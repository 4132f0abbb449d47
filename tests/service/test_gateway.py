"""The gateway through its real app factory, on a real Redis (no engine needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from channels.simulator import message_sid_for
from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.importer import import_file
from service.keys import Keys
from service.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"


@pytest_asyncio.fixture
async def client(aiohttp_client, redis_url):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": "gwtest",
                                  "TWILIO_ACCOUNT_SID": "AC" + "5" * 32,
                                  "TWILIO_AUTH_TOKEN": "gateway-test-token",
                                  "NUDGE_PSEUDONYM_KEY": "gateway-test-key"})
    redis = aioredis.from_url(redis_url)
    await import_file(DEMO, RedisDebtorStore(redis, Keys("gwtest")))
    await redis.aclose()
    return await aiohttp_client(create_app(settings))


@pytest.mark.asyncio
async def test_healthz_and_metrics(client):
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json())["status"] == "ok"
    metrics = await (await client.get("/metrics")).text()
    assert "nudge_inbound_messages_total" in metrics and "nudge_engine_latency_seconds" in metrics


@pytest.mark.asyncio
async def test_a_reply_is_stored_queued_and_acknowledged(client, redis_url):
    response = await client.post("/simulator/api/debtors/D-EN-001/messages",
                                 json={"channel": "sms", "body": "how much", "message_id": "SMgw1"})
    assert response.status == 202
    # the simulator posted it as Twilio would: a signed webhook with a MessageSid
    sid = (await response.json())["message_id"]
    assert sid == message_sid_for("SMgw1") and sid.startswith("SM") and len(sid) == 34
    redis = aioredis.from_url(redis_url)
    keys = Keys("gwtest")
    assert await redis.lrange(keys.pending("D-EN-001"), 0, -1) == [sid.encode()]
    assert await redis.exists(f"arq:job:in:{sid}")           # the job id comes from the message id
    transcript = await redis.xrange(keys.transcript("D-EN-001"))
    assert json.loads(transcript[0][1][b"data"])["body"] == "how much"
    await redis.aclose()


@pytest.mark.asyncio
async def test_duplicates_are_dropped(client, redis_url):
    for _ in range(3):
        response = await client.post("/simulator/api/debtors/D-EN-001/messages",
                                     json={"channel": "sms", "body": "hi", "message_id": "SMdup"})
    assert response.status == 200 and (await response.json())["duplicate"] is True
    redis = aioredis.from_url(redis_url)
    assert await redis.llen(Keys("gwtest").pending("D-EN-001")) == 1
    await redis.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("path, body, status, error", [
    ("/simulator/api/debtors/NOPE/messages", {"channel": "sms", "body": "x"}, 404, "no such debtor"),
    ("/simulator/api/debtors/D-EN-001/messages", {"channel": "fax", "body": "x"}, 400, "channel"),
    ("/simulator/api/debtors/D-EN-001/messages", {"channel": "sms", "body": "  "}, 400, "body"),
    ("/simulator/api/debtors/D-EN-001/messages", {"channel": "sms", "body": "x" * 1601}, 400, "longer"),
    ("/simulator/api/debtors/D-EN-001/messages", ["not", "an", "object"], 400, "object"),
    ("/simulator/api/debtors/D-EN-001/remind", {"channel": "pigeon"}, 400, "cannot be reached"),
])
async def test_bad_requests_get_a_clear_error_and_store_nothing(client, redis_url, path, body, status, error):
    response = await client.post(path, json=body)
    assert response.status == status
    assert error in (await response.json())["error"]
    redis = aioredis.from_url(redis_url)
    assert not [k async for k in redis.scan_iter(match="gwtest:pending:*")]
    await redis.aclose()


@pytest.mark.asyncio
async def test_a_body_that_is_not_json_is_refused(client):
    response = await client.post("/simulator/api/debtors/D-EN-001/messages", data=b"\xff{not json",
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400


@pytest.mark.asyncio
async def test_the_simulator_page_is_served(client):
    page = await client.get("/simulator")
    assert page.status == 200 and "simulator.js" in await page.text()
    assert (await client.get("/static/simulator.js")).status == 200
