"""The campaign API through the gateway's real app factory, on a real Redis."""

from __future__ import annotations

import json

import pytest
import pytest_asyncio

from service.gateway import create_app
from service.settings import Settings

TOKEN = "campaign-api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings(redis_url: str, token: str = TOKEN) -> Settings:
    return Settings.from_env({"REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": "apitest",
                              "TWILIO_ACCOUNT_SID": "AC" + "5" * 32, "TWILIO_AUTH_TOKEN": "x",
                              "NUDGE_PSEUDONYM_KEY": "api-test", "NUDGE_API_TOKEN": token})


@pytest_asyncio.fixture
async def client(aiohttp_client, redis_url):
    return await aiohttp_client(create_app(settings(redis_url)))


@pytest.mark.asyncio
async def test_start_read_pause_resume_cancel(client):
    response = await client.post("/api/campaigns", headers=AUTH,
                                 json={"segment": "mid", "step": 1, "by": "maria"})
    assert response.status == 201
    campaign_id = (await response.json())["id"]
    status = await (await client.get(f"/api/campaigns/{campaign_id}", headers=AUTH)).json()
    assert (status["segment"], status["step"], status["state"]) == ("mid", 1, "planning")
    listed = await (await client.get("/api/campaigns", headers=AUTH)).json()
    assert [c["id"] for c in listed["campaigns"]] == [campaign_id]
    for action, state in (("pause", "paused"), ("resume", "planning"), ("cancel", "cancelled")):
        response = await client.post(f"/api/campaigns/{campaign_id}/{action}", headers=AUTH,
                                     json={"by": "maria"})
        assert (response.status, (await response.json())["state"]) == (200, state)
    response = await client.post(f"/api/campaigns/{campaign_id}/resume", headers=AUTH,
                                 json={"by": "maria"})
    assert response.status == 409
    assert "cancelled" in (await response.json())["error"]
    segments = await (await client.get("/api/segments", headers=AUTH)).json()
    assert "mid" in [s["name"] for s in segments["segments"]]


@pytest.mark.asyncio
@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": TOKEN}, 401)])
async def test_no_token_no_access(client, headers, status):
    for method, path in (("get", "/api/campaigns"), ("post", "/api/campaigns"),
                         ("get", "/api/segments"), ("post", "/api/campaigns/x/pause")):
        response = await getattr(client, method)(path, headers=headers,
                                                 json={"segment": "mid", "by": "x"})
        assert response.status == status, (method, path)


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "error"), [
    ("not json", "not JSON"),
    (json.dumps([1]), "JSON object"),
    (json.dumps({"segment": "mid", "step": 1}), "'by'"),
    (json.dumps({"segment": "vip", "step": 1, "by": "m"}), "no segment 'vip'"),
    (json.dumps({"segment": "mid", "step": 9, "by": "m"}), "steps 1 to 3"),
    (json.dumps({"segment": "mid", "step": "one", "by": "m"}), "whole number"),
])
async def test_bad_requests_are_named(client, body, error):
    response = await client.post("/api/campaigns", headers=AUTH, data=body)
    assert response.status == 400
    assert error in (await response.json())["error"]


@pytest.mark.asyncio
async def test_unknown_campaign_is_404_and_without_a_token_the_api_is_off(client, aiohttp_client,
                                                                         redis_url):
    assert (await client.get("/api/campaigns/nope", headers=AUTH)).status == 404
    assert (await client.post("/api/campaigns/nope/pause", headers=AUTH,
                              json={"by": "m"})).status == 404
    off = await aiohttp_client(create_app(settings(redis_url, token="")))
    assert (await off.get("/api/campaigns", headers=AUTH)).status == 503
