"""The engine client with several engine processes: a conversation always goes to the same
engine, a refused connection moves on to the next engine, and a timeout never does (that
engine may have taken the message; a second one would hear it twice).

The engines here are small HTTP servers that record what reaches them: what is under test is
our client's choice of engine, not Rasa."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from aiohttp import web

from service.engine import EngineClient, EngineError
from service.stack import free_port



class RecordingEngine:
    def __init__(self, name: str, delay: float = 0.0):
        self.name, self.delay = name, delay
        self.senders: list[str] = []
        self.parses = 0
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/rest/webhook", self.rest)
        app.router.add_post("/model/parse", self.parse)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def rest(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.senders.append(body["sender"])
        await asyncio.sleep(self.delay)
        return web.json_response([{"recipient_id": body["sender"], "text": self.name}])

    async def parse(self, request: web.Request) -> web.Response:
        self.parses += 1
        return web.json_response({"intent": {"name": "greet"}, "engine": self.name})


@pytest_asyncio.fixture
async def engines():
    pair = [RecordingEngine("a"), RecordingEngine("b")]
    for engine in pair:
        await engine.start()
    yield pair
    for engine in pair:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_each_conversation_sticks_to_one_engine_and_both_engines_get_work(engines):
    async with EngineClient(",".join(e.url for e in engines), "token") as client:
        conversations = [f"D-{n:03d}" for n in range(40)]
        for _ in range(3):
            for conversation in conversations:
                await client.send(conversation, "/greet", {})
    first, second = (set(e.senders) for e in engines)
    assert not first & second, "a conversation was served by both engines"
    assert first | second == set(conversations)
    assert len(first) >= 10 and len(second) >= 10  # crc32 spreads 40 ids roughly evenly


@pytest.mark.asyncio(loop_scope="function")
async def test_parse_goes_round_robin(engines):
    async with EngineClient(",".join(e.url for e in engines), "token") as client:
        for _ in range(10):
            await client.parse("hello")
    assert [e.parses for e in engines] == [5, 5]


@pytest.mark.asyncio(loop_scope="function")
async def test_a_refused_connection_moves_on_to_the_next_engine(engines):
    down, up = engines
    await down.stop()
    async with EngineClient(f"{down.url},{up.url}", "token") as client:
        answers = [await client.send(f"D-{n}", "/greet", {}) for n in range(20)]
    assert all(a[0]["text"] == "b" for a in answers)
    assert len(up.senders) == 20


@pytest.mark.asyncio(loop_scope="function")
async def test_every_engine_down_is_an_engine_error(engines):
    for engine in engines:
        await engine.stop()
    async with EngineClient(",".join(e.url for e in engines), "token", timeout=2) as client:
        with pytest.raises(EngineError, match="failed"):
            await client.send("D-1", "/greet", {})


@pytest.mark.asyncio(loop_scope="function")
async def test_a_timeout_is_not_retried_on_another_engine():
    slow, fast = RecordingEngine("slow", delay=1.0), RecordingEngine("fast")
    await slow.start()
    await fast.start()
    try:
        async with EngineClient(f"{slow.url},{fast.url}", "token", timeout=0.3) as client:
            conversation = next(f"D-{n}" for n in range(100) if client.engine_for(f"D-{n}") == 0)
            with pytest.raises(EngineError):
                await client.send(conversation, "/greet", {})
        assert slow.senders == [conversation]
        assert fast.senders == []
    finally:
        await slow.stop()
        await fast.stop()


def test_one_url_and_a_list_with_spaces():
    assert EngineClient("http://127.0.0.1:5005/", "t").base_urls == ["http://127.0.0.1:5005"]
    client = EngineClient(" http://127.0.0.1:1/ , http://127.0.0.1:2 ", "t")
    assert client.base_urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    with pytest.raises(ValueError):
        EngineClient(" , ", "t")
