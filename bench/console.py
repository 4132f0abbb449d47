"""The console's own costs, on the gateway's real app and a private Redis (issue 7).

1. login: a POST of the login form (argon2id verify + a new session), p50/p95;
2. the inbox API with 50 and 500 conversations waiting (each a debtor of the demo portfolio
   cycled under new ids), p50/p95;
3. one conversation's API (case, transcript of 40 entries, canned replies), p50/p95;
4. live updates: from a transcript entry's publish to its `data:` line on an open
   conversation stream, p50/p95 over 200 entries; and the same for 20 open inbox streams at
   once (the pattern subscription), per delivery.

Run: .venv/bin/python bench/console.py   (writes bench/results/console.json)
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time

from common import RESULTS, ROOT, PrivateRedis, machine, say, write_json

PASSWORD = "bench console password"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def figures(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p95_ms": pct(values, 0.95),
            "mean_ms": round(statistics.mean(values) * 1000, 2)}


async def main() -> dict:
    import aiohttp
    from aiohttp.test_utils import TestServer

    from bot.core.debtors import Debtor
    from service import appkeys as K
    from service.gateway import create_app
    from service.importer import import_file
    from tests.service.console_support import add_people, console_settings

    redis = PrivateRedis()
    try:
        app = create_app(console_settings(redis.url))
        server = TestServer(app)
        await server.start_server()
        await add_people(app, {"alice": "agent"})
        from service.users import Users
        await Users(app[K.REDIS], app[K.KEYS]).set_password("alice", PASSWORD)
        await import_file(ROOT / "data" / "demo_portfolio.csv", app[K.DEBTORS])
        store, conversations = app[K.DEBTORS], app[K.CONVERSATIONS]
        demo = [await store.get(i) for i in sorted(await store.all_ids())]

        def browser() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(base_url=str(server.make_url("/")),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True))

        async def login(client: aiohttp.ClientSession) -> float:
            form = await client.get("/console/login")
            token = re.search(r'name="csrf" value="([^"]+)"', await form.text()).group(1)
            started = time.perf_counter()
            response = await client.post("/console/login", allow_redirects=False,
                                         data={"csrf": token, "username": "alice", "password": PASSWORD})
            elapsed = time.perf_counter() - started
            assert response.status == 302, response.status
            return elapsed

        logins = []
        for _ in range(20):
            client = browser()
            logins.append(await login(client))
            await client.close()
        say(f"login: {figures(logins)}")

        client = browser()
        await login(client)

        async def make_waiting(count: int) -> None:
            have = await app[K.REDIS].zcard(app[K.KEYS].agent_queue)
            for n in range(have, count):
                base: Debtor = demo[n % len(demo)]
                clone = Debtor(**{**base.__dict__, "id": f"B-{n:05d}", "phone": None,
                                  "email": f"bench{n}@example.org"})
                await store.upsert(clone)
                await conversations.escalate(clone.id, "request_human")

        inbox: dict[str, dict] = {}
        for count in (50, 500):
            await make_waiting(count)
            times = []
            for _ in range(30):
                started = time.perf_counter()
                response = await client.get("/console/api/inbox")
                rows = (await response.json())["conversations"]
                times.append(time.perf_counter() - started)
            assert len(rows) == count
            inbox[str(count)] = figures(times)
            say(f"inbox with {count} waiting: {inbox[str(count)]}")

        target = "B-00000"
        for n in range(40):
            await conversations.add_event(target, "note", {"by": "alice", "text": f"note {n}"})
        times = []
        for _ in range(30):
            started = time.perf_counter()
            response = await client.get(f"/console/api/conversations/{target}")
            await response.json()
            times.append(time.perf_counter() - started)
        conversation = figures(times)
        say(f"one conversation: {conversation}")

        # live: publish -> data line on an open stream
        stream = await client.get(f"/console/api/conversations/{target}/stream")
        await asyncio.sleep(0.3)
        delays = []
        for n in range(200):
            started = time.perf_counter()
            await conversations.add_event(target, "note", {"by": "alice", "text": f"live {n}"})
            while True:
                line = await stream.content.readline()
                if line.startswith(b"data: ") and json.loads(line[6:]).get("text") == f"live {n}":
                    break
            delays.append(time.perf_counter() - started)
        stream.close()
        live = figures(delays)
        say(f"conversation stream, write to browser: {live}")

        streams = []
        for _ in range(20):
            viewer = browser()
            await login(viewer)
            streams.append((viewer, await viewer.get("/console/api/inbox/stream")))
        await asyncio.sleep(0.5)
        fan = []
        for n in range(20):
            conversation_id = f"B-{n:05d}"
            await conversations.hand_back(conversation_id)
            started = time.perf_counter()
            await conversations.escalate(conversation_id, "request_human")

            async def one(response):
                while True:
                    line = await response.content.readline()
                    if line.startswith(b"data: ") and json.loads(line[6:])["conversation"] == conversation_id \
                            and json.loads(line[6:])["name"] == "handoff":
                        return time.perf_counter() - started
            fan += await asyncio.gather(*(one(r) for _, r in streams))
        for viewer, response in streams:
            response.close()
            await viewer.close()
        inbox_live = figures(fan)
        say(f"20 inbox streams, hand-off to each browser: {inbox_live}")
        await client.close()
        await server.close()
        return {"machine": machine(), "login": figures(logins), "inbox_api": inbox,
                "conversation_api": conversation, "conversation_stream": live,
                "inbox_streams_20": inbox_live}
    finally:
        redis.stop()


if __name__ == "__main__":
    result = asyncio.run(main())
    write_json(RESULTS / "console.json", result)
    say(f"written {RESULTS / 'console.json'}")
