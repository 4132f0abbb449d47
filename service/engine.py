"""Client of the Rasa engine (HTTP API and REST channel), loopback only, with its token.

The API endpoints (parse, tracker, trigger_intent, events) take `?token=`; Rasa's REST
channel cannot take one, so it is reachable on loopback only (the engine binds 127.0.0.1).

Several engine processes (scale-out): `NUDGE_ENGINE_URL` may list them, comma-separated. They
share the Redis tracker store and lock store, so any of them can serve any conversation; a
conversation still goes to one engine by a stable hash of its id (its tracker stays warm in
that engine's lock queue), `/model/parse` goes round-robin. Only a request that never
reached an engine (connection refused: it is down or restarting) moves on to the next one;
a timeout or an error answer does not, because that engine may have taken the message and a
second engine would then hear it twice (the processor's `engine_sent` check handles retries).
"""

from __future__ import annotations

import itertools
import time
import zlib
from typing import Any

import aiohttp

from service.metrics import ENGINE_LATENCY


class EngineError(Exception):
    """The engine answered with an error or could not be reached."""


class EngineClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 session: aiohttp.ClientSession | None = None):
        self.base_urls = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not self.base_urls:
            raise ValueError("no engine URL given")
        self.base_url = self.base_urls[0]
        self._round_robin = itertools.cycle(range(len(self.base_urls)))
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session

    async def __aenter__(self) -> "EngineClient":
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    def engine_for(self, conversation_id: str | None) -> int:
        """Index of the engine that serves this conversation (round-robin without one)."""
        if len(self.base_urls) == 1:
            return 0
        if conversation_id is None:
            return next(self._round_robin)
        return zlib.crc32(conversation_id.encode()) % len(self.base_urls)

    async def _request(self, method: str, path: str, *, json: Any = None, op: str,
                       with_token: bool = True, conversation_id: str | None = None) -> Any:
        params = {"token": self.token} if with_token else None
        first = self.engine_for(conversation_id)
        started = time.perf_counter()
        try:
            for attempt in range(len(self.base_urls)):
                base_url = self.base_urls[(first + attempt) % len(self.base_urls)]
                try:
                    async with self.session.request(method, base_url + path, json=json,
                                                    params=params) as response:
                        if response.status >= 400:
                            detail = (await response.text())[:300]
                            raise EngineError(f"engine {op} answered {response.status}: {detail}")
                        return await response.json(content_type=None)
                except aiohttp.ClientConnectorError as error:
                    # Never reached this engine: safe to try the next one, if any.
                    if attempt == len(self.base_urls) - 1:
                        raise EngineError(f"engine {op} failed: {error!r}") from error
                except (aiohttp.ClientError, TimeoutError) as error:
                    raise EngineError(f"engine {op} failed: {error!r}") from error
        finally:
            ENGINE_LATENCY.labels(op).observe(time.perf_counter() - started)

    async def parse(self, text: str) -> dict[str, Any]:
        return await self._request("POST", "/model/parse", json={"text": text}, op="parse")

    async def send(self, conversation_id: str, message: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """A user turn through the REST channel; returns the bot's responses."""
        body = {"sender": conversation_id, "message": message, "metadata": metadata}
        return await self._request("POST", "/webhooks/rest/webhook", json=body, op="message",
                                   with_token=False, conversation_id=conversation_id) or []

    async def trigger_intent(self, conversation_id: str, intent: str,
                             entities: dict[str, Any]) -> list[dict[str, Any]]:
        body = {"name": intent, "entities": entities}
        result = await self._request("POST", f"/conversations/{conversation_id}/trigger_intent",
                                     json=body, op="trigger_intent",
                                     conversation_id=conversation_id)
        return (result or {}).get("messages") or []

    async def tracker(self, conversation_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/conversations/{conversation_id}/tracker", op="tracker",
                                   conversation_id=conversation_id)

    async def append_events(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        await self._request("POST", f"/conversations/{conversation_id}/tracker/events",
                            json=events, op="events", conversation_id=conversation_id)

    async def status(self) -> dict[str, Any]:
        return await self._request("GET", "/status", op="status")
