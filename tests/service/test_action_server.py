"""The action server refuses calls without the engine's token and runs the SDK's executor."""

from __future__ import annotations

import pytest

from service.action_server import create_app
from service.settings import Settings


@pytest.mark.asyncio
async def test_token_required(aiohttp_client, redis_url):
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_ACTIONS_TOKEN": "right",
                                  "NUDGE_PAY_LINK_SECRET": "links"})
    client = await aiohttp_client(create_app(settings))
    call = {"next_action": "action_who_we_are", "tracker": {}, "domain": {}}
    assert (await client.post("/webhook", json=call)).status == 403
    assert (await client.post("/webhook?token=wrong", json=call)).status == 403
    unknown = await client.post("/webhook?token=right", json={**call, "next_action": "action_nope"})
    assert unknown.status == 404
    health = await (await client.get("/health")).json()
    assert health["actions"] >= 14
