"""What the channels cost.

1. Webhook acknowledgement: signed Twilio webhooks posted at a fixed rate (open loop: each
   request leaves at its scheduled time, whether or not the previous one was answered) to a
   real gateway process, while a real worker is stuck on an engine that never answers (an
   aiohttp server that holds every request: the saturated engine). The gateway verifies the
   signature, stores, queues and answers; it never waits for the engine. p50/p99 per rate.
2. Outbound throughput: messages handed to the outbox, then delivered through the real twilio
   SDK to the fake Twilio server (its own process), pacing off, 1 and 8 concurrent senders.

Run: .venv/bin/python bench/channels.py   (writes bench/results/channels.json)
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import time

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from arq import create_pool
from arq.connections import RedisSettings
from common import RESULTS, ROOT, PrivateRedis, machine, percentiles, say, write_json
from twilio.request_validator import RequestValidator

from channels.base import OutboundMessage
from service.channel_config import ChannelConfig
from service.debtor_store import RedisDebtorStore
from service.delivery import Deliverer
from service.importer import import_file
from service.keys import Keys
from service.outbox import OutboxTransport
from service.providers import TwilioProvider
from service.settings import Settings, new_token
from service.stack import APP_PYTHON, Stack, _http_ok, free_port, sandbox_env

ACCOUNT = "AC" + secrets.token_hex(16)
TOKEN = secrets.token_hex(16)


async def hanging_engine(port: int) -> web.AppRunner:
    """An engine that takes every request and never answers: the worker stays saturated."""
    async def hold(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hold)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def post_at_rate(base: str, phones: list[str], rate: int, seconds: float) -> dict:
    validator = RequestValidator(TOKEN)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            nonlocal errors
            params = {"MessageSid": "SM" + secrets.token_hex(16), "AccountSid": ACCOUNT,
                      "From": phones[i % len(phones)], "To": "+3197010520000",
                      "Body": "how much do I still owe you?", "NumMedia": "0"}
            signature = validator.compute_signature(f"{base}/twilio/sms", params)
            started = time.perf_counter()
            async with session.post(f"{base}/twilio/sms", data=params,
                                    headers={"X-Twilio-Signature": signature}) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - start)
    return {"rate": rate, "achieved_rate": round(achieved), "errors": errors,
            **percentiles(latencies)}


async def acknowledgement(redis_url: str) -> list[dict]:
    engine_port, gateway_port = free_port(), free_port()
    env = {**os.environ, "REDIS_URL": redis_url,
           "NUDGE_ENGINE_URL": f"http://127.0.0.1:{engine_port}", "NUDGE_ENGINE_TOKEN": new_token(),
           "NUDGE_ACTIONS_TOKEN": new_token(), "NUDGE_PSEUDONYM_KEY": new_token(),
           "NUDGE_GATEWAY_PORT": str(gateway_port), "NUDGE_LOG_LEVEL": "WARNING",
           "NUDGE_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
           "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "NUDGE_SIMULATOR": "0",
           **sandbox_env(twilio_port=free_port(), smtp_port=free_port(), smtp_listen_port=0)}
    settings = Settings.from_env(env)
    client = aioredis.from_url(redis_url)
    store = RedisDebtorStore(client, Keys())
    await import_file(ROOT / "data" / "demo_portfolio.csv", store)
    phones = [d.phone for d in [await store.get(i) for i in await store.all_ids()] if d and d.phone]
    await client.aclose()
    engine = await hanging_engine(engine_port)
    stack = Stack(settings, env, quiet=True)
    stack._spawn("gateway", [APP_PYTHON, "-m", "service.gateway"])
    stack._spawn("worker", [APP_PYTHON, "-m", "service.worker"])
    try:
        stack._wait("gateway", lambda: _http_ok(f"http://127.0.0.1:{gateway_port}/healthz"), 30)
        base = f"http://127.0.0.1:{gateway_port}"
        await post_at_rate(base, phones, 50, 2)          # warm-up
        results = []
        for rate in (50, 200, 500):
            result = await post_at_rate(base, phones, rate, 10)
            say(f"ack at {rate:3}/s: p50 {result['p50']} ms, p99 {result['p99']} ms, "
                f"errors {result['errors']}")
            results.append(result)
        return results
    finally:
        stack.stop()
        await engine.cleanup()


async def outbound(redis_url: str) -> list[dict]:
    twilio_port = free_port()
    env = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}
    settings = Settings.from_env({"REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": "benchout",
                                  "NUDGE_PSEUDONYM_KEY": "b" * 32, "TWILIO_ACCOUNT_SID": ACCOUNT,
                                  "TWILIO_AUTH_TOKEN": TOKEN,
                                  "NUDGE_TWILIO_API_URL": f"http://127.0.0.1:{twilio_port}"})
    stack = Stack(settings, env, quiet=True)
    stack._spawn("twilio", [APP_PYTHON, "-m", "sandbox.fake_twilio", "--port", str(twilio_port),
                            "--callback-delay", "60"])
    results = []
    try:
        stack._wait("twilio", lambda: _http_ok(f"http://127.0.0.1:{twilio_port}/_fake/health"), 30)
        config = ChannelConfig.load(ROOT / "policies")
        config = dataclasses.replace(config, sms=dataclasses.replace(config.sms, pacing_per_second=0))
        queue = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name="benchout:q")
        keys = Keys("benchout")
        provider = TwilioProvider(settings, config)
        deliverer = Deliverer(queue, keys, config, {"sms": provider}, "benchout:q")
        outbox = OutboxTransport(queue, keys, "benchout:q")
        for concurrency, count in ((1, 300), (8, 800)):
            ids = [f"bench-{concurrency}-{i}" for i in range(count)]
            for message_id in ids:
                await outbox.send(OutboundMessage(message_id, "D-EN-001", "sms", "+447400123001",
                                                  f"Reminder {message_id}", "help_reply", "en",
                                                  extra={"kind": "reply"}))
            pending = list(ids)
            started = time.perf_counter()

            async def sender() -> None:
                while pending:
                    assert await deliverer.deliver(pending.pop()) == "submitted"
            await asyncio.gather(*(sender() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            result = {"concurrency": concurrency, "messages": count,
                      "messages_per_s": round(count / elapsed)}
            say(f"outbound, {concurrency} sender(s): {result['messages_per_s']} messages/s")
            results.append(result)
        await provider.close()
        await queue.aclose()
    finally:
        stack.stop()
    return results


async def main() -> None:
    redis = PrivateRedis()
    try:
        data = {"machine": machine(), "acknowledgement": await acknowledgement(redis.url),
                "outbound": await outbound(redis.url)}
    finally:
        redis.stop()
    write_json(RESULTS / "channels.json", data)
    say(f"written to {RESULTS / 'channels.json'}")


if __name__ == "__main__":
    asyncio.run(main())
