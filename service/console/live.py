"""Live updates for console pages: server-sent events fed by Redis pub/sub.

Every transcript change is already published on the conversation's channel
(`<prefix>:live:<conversation>`, service/conversations.py and the Lua scripts that append to
transcripts). A page subscribes to one conversation, or the inbox to all of them by pattern.
The stream checks every 15 s that the session which opened it is still alive, so a logout or an
idle timeout also closes the streams it opened.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError

from service import appkeys as K
from service.console import auth

KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 3600.0   # the browser's EventSource reconnects by itself


async def stream(request: web.Request, *, channel: str | None = None, pattern: str | None = None,
                 transform: Callable[[dict[str, Any], str], Awaitable[dict[str, Any] | None]]
                 ) -> web.StreamResponse:
    """Relay pub/sub messages as `data:` lines. `transform(payload, channel)` returns what to
    send (None: skip), so each role sees only what it may."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    auth.harden(response)
    await response.prepare(request)
    pubsub = request.app[K.REDIS].pubsub()
    if channel:
        await pubsub.subscribe(channel)
    if pattern:
        await pubsub.psubscribe(pattern)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM_SECONDS
    next_check = loop.time() + KEEPALIVE_SECONDS
    try:
        await response.write(b"retry: 2000\n\n")
        while loop.time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if loop.time() >= next_check:
                if not await auth.session_alive(request):
                    await response.write(b"event: logout\ndata: {}\n\n")
                    break
                await response.write(b": keep-alive\n\n")
                next_check = loop.time() + KEEPALIVE_SECONDS
            if message is None or message.get("type") not in ("message", "pmessage"):
                continue
            try:
                payload = json.loads(message["data"])
            except (ValueError, TypeError):
                continue
            source = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            out = await transform(payload, source)
            if out is not None:
                await response.write(b"data: " + json.dumps(out, default=str).encode() + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError, RedisConnectionError):
        pass  # the browser left, or the gateway is shutting down
    finally:
        await pubsub.aclose()
    return response
