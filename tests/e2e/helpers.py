"""A debtor's-eye client of the running product: the simulator API of the real gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp


class DebtorPhone:
    """Sends replies as one debtor and waits for what the bot sends back."""

    def __init__(self, base_url: str, debtor_id: str, channel: str = "sms"):
        self.base_url = base_url
        self.debtor_id = debtor_id
        self.channel = channel
        self.seen: set[str] = set()
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "DebtorPhone":
        self.session = aiohttp.ClientSession(base_url=self.base_url)
        for entry in await self.transcript():
            self.seen.add(entry["id"])
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None
        await self.session.close()

    async def transcript(self) -> list[dict[str, Any]]:
        assert self.session is not None
        async with self.session.get(f"/simulator/api/debtors/{self.debtor_id}/transcript") as response:
            assert response.status == 200, await response.text()
            return (await response.json())["entries"]

    async def remind(self) -> None:
        assert self.session is not None
        async with self.session.post(f"/simulator/api/debtors/{self.debtor_id}/remind",
                                     json={"channel": self.channel}) as response:
            assert response.status == 202, await response.text()

    async def send(self, body: str, message_id: str | None = None) -> str:
        assert self.session is not None
        message_id = message_id or f"TEST{uuid.uuid4().hex}"
        async with self.session.post(f"/simulator/api/debtors/{self.debtor_id}/messages",
                                     json={"channel": self.channel, "body": body,
                                           "message_id": message_id}) as response:
            assert response.status in (200, 202), await response.text()
            # the provider's id: the simulator posts as Twilio (a MessageSid) or by email
            return (await response.json())["message_id"]

    async def new_entries(self, *, until_templates: int = 1, timeout: float = 30,
                          settle: float = 0.0) -> list[dict[str, Any]]:
        """New transcript entries, once `until_templates` bot messages arrived (then `settle` s)."""
        deadline = time.monotonic() + timeout
        collected: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            for entry in await self.transcript():
                if entry["id"] not in self.seen:
                    self.seen.add(entry["id"])
                    collected.append(entry)
            if sum(1 for e in collected if _is_out(e)) >= until_templates:
                if settle:
                    await asyncio.sleep(settle)
                    settle = 0.0
                    continue
                return collected
            await asyncio.sleep(0.1)
        return collected

    async def say(self, body: str, *, expect: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        """Send a reply; return the bot's messages to it."""
        await self.send(body)
        entries = await self.new_entries(until_templates=expect, timeout=timeout)
        return [e for e in entries if _is_out(e)]

    async def understood(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e.get("kind") == "event" and e.get("name") == "understood"]


def _is_out(entry: dict[str, Any]) -> bool:
    return entry.get("kind") == "message" and entry.get("direction") == "out"


def templates(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("template") for m in messages]
