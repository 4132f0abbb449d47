"""Ownership of a conversation on real Redis: escalation once, claims atomic, hand-back."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from service.conversations import ClaimError, ConversationStore
from service.keys import Keys


@pytest.mark.asyncio
async def test_escalate_claim_and_hand_back(redis_url):
    client = aioredis.from_url(redis_url)
    store = ConversationStore(client, Keys("convtest"))
    results = await asyncio.gather(store.escalate("D1", "dispute"), store.escalate("D1", "hardship"))
    assert sorted(results) == [False, True]                      # one escalation wins
    await store.escalate("D2", "vulnerability", urgent=True)
    assert [s.conversation_id for s in await store.escalated()] == ["D2", "D1"]  # most urgent first

    claims = await asyncio.gather(store.claim("D1", "alice"), store.claim("D1", "bob"),
                                  return_exceptions=True)
    assert sum(isinstance(c, ClaimError) for c in claims) == 1
    owner = (await store.get("D1")).agent
    assert owner in ("alice", "bob")
    assert "D1" in [s.conversation_id for s in await store.escalated()]  # claimed, still listed

    await store.hand_back("D1", owner)
    state = await store.get("D1")
    assert (state.owner, state.agent) == ("bot", None)
    assert [s.conversation_id for s in await store.escalated()] == ["D2"]
    with pytest.raises(ClaimError):
        await store.claim("D1", "alice")                         # nothing to claim any more
    await client.aclose()
