"""Client of the Rasa engine (HTTP API and REST channel), loopback only, with its token.

The API endpoints (parse, tracker, trigger_intent, events) take `?token=`; Rasa's REST
channel cannot take one, so it is reachable on loopback only (the engine binds 127.0.0.1).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from service.metrics import ENGINE_LATENCY


class EngineError(Exception):
    """The engine answered with an error or could not be reached."""


class EngineClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 session: aiohttp.ClientSession | None = None):
        self.base_url = base_url.rstrip("/")
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

    async def _request(self, method: str, path: str, *, json: Any = None, op: str,
                       with_token: bool = True) -> Any:
        params = {"token": self.token} if with_token else None
        started = time.perf_counter()
        try:
            async with self.session.request(method, self.base_url + path, json=json,
                                            params=params) as response:
                if response.status >= 400:
                    detail = (await response.text())[:300]
                    raise EngineError(f"engine {op} answered {response.status}: {detail}")
                return await response.json(content_type=None)
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
                                   with_token=False) or []

    async def trigger_intent(self, conversation_id: str, intent: str,
                             entities: dict[str, Any]) -> list[dict[str, Any]]:
        body = {"name": intent, "entities": entities}
        result = await self._request("POST", f"/conversations/{conversation_id}/trigger_intent",
                                     json=body, op="trigger_intent")
        return (result or {}).get("messages") or []

    async def tracker(self, conversation_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/conversations/{conversation_id}/tracker", op="tracker")

    async def append_events(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        await self._request("POST", f"/conversations/{conversation_id}/tracker/events",
                            json=events, op="events")

    async def status(self) -> dict[str, Any]:
        return await self._request("GET", "/status", op="status")
