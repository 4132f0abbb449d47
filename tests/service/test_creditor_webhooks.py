"""Delivering business events to creditors (service/creditor_webhooks.py) with a real Redis and
the real fake creditor (sandbox/fake_creditor.py) on a local port; plus the creditor config.

Back-off is stepped through with an injected `now`, not by sleeping. The one real wait is the
XAUTOCLAIM test, which depends on Redis's own idle clock (0.3 s).
"""

from __future__ import annotations

import asyncio
import csv
import random
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from sandbox.fake_creditor import FAKE_CREDITOR, FakeCreditor, create_fake_creditor
from service.business_events import BusinessEvents
from service.creditor_config import (
    CreditorConfig,
    CreditorConfigError,
    load_creditor_config,
    parse_creditor_config,
)
from service.creditor_webhooks import GROUP, CreditorWebhooks
from service.keys import Keys
from service.signatures import sign
from service.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + "7" * 32
ENV = "NUDGE_CREDITOR_WEBHOOK_SECRET"


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def config_for(url: str | None, **creditors: dict) -> CreditorConfig:
    return parse_creditor_config({"default": {"events_url": url, "secret_env": ENV},
                                  "creditors": creditors})


@pytest_asyncio.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys():
    return Keys("cwh")


@pytest_asyncio.fixture
async def creditor():
    """The fake creditor on a free port: (FakeCreditor, its events URL)."""
    port = free_port()
    app = create_fake_creditor(SECRET)
    runner = await serve(app, port)
    yield app[FAKE_CREDITOR], f"http://127.0.0.1:{port}/events"
    await runner.cleanup()


@pytest_asyncio.fixture
async def make(redis, keys):
    """Build CreditorWebhooks (closed at the end); deterministic jitter."""
    made: list[CreditorWebhooks] = []

    def build(config: CreditorConfig, secrets=None, **options) -> CreditorWebhooks:
        options.setdefault("rng", random.Random(7))
        hooks = CreditorWebhooks(redis, keys, config, {ENV: SECRET} if secrets is None else secrets,
                                 **options)
        made.append(hooks)
        return hooks

    yield build
    for hooks in made:
        await hooks.close()


async def append(redis, keys, n: int = 1, creditor: str = "Northwind Mobile") -> list[str]:
    events = BusinessEvents(redis, keys)
    return [await events.append("payment_received", f"D-{i}", {"amount": f"{i}.50"},
                                creditor=creditor) for i in range(n)]


async def entry_of(redis, keys, index: int = 0) -> str:
    return (await redis.xrange(keys.business_events))[index][0].decode()


# --- the config -----------------------------------------------------------------------------

def test_repo_config_points_every_portfolio_creditor_at_the_sandbox():
    config = load_creditor_config(ROOT / "policies" / "creditors.yml")
    with open(ROOT / "data" / "demo_portfolio.csv", newline="") as handle:
        names = {row["creditor"] for row in csv.DictReader(handle)}
    assert names <= set(config.creditors)
    for name in [*names, "Someone Unlisted", None]:
        endpoint = config.for_creditor(name)
        assert endpoint.events_url == "http://127.0.0.1:8095/events"
        assert endpoint.secret_env == ENV
    assert config.secrets_from({ENV: "s", "OTHER": "x"}) == {ENV: "s"}
    assert config.missing_secrets({}) == [ENV]


def test_config_entries_inherit_from_default_and_null_turns_delivery_off():
    config = parse_creditor_config({
        "default": {"events_url": "https://hooks.example/events", "secret_env": "A_SECRET"},
        "creditors": {"Quiet Ltd": {"events_url": None},
                      "Own Ltd": {"events_url": "https://own.example/in"}}})
    assert config.for_creditor("Quiet Ltd").events_url is None
    assert config.for_creditor("Own Ltd").secret_env == "A_SECRET"
    assert config.secret_envs == {"A_SECRET"}


def test_config_errors_name_the_file_the_path_and_the_problem():
    with pytest.raises(CreditorConfigError) as caught:
        parse_creditor_config({
            "default": {"events_url": "ftp://x", "secret_env": "lower-case"},
            "creditors": {"Bad Ltd": {"events_url": "https://x.example", "secret_env": None,
                                      "colour": "red"}},
            "extra": 1}, source="policies/creditors.yml")
    lines = str(caught.value).splitlines()
    assert "policies/creditors.yml: extra: unknown key; expected default or creditors" in lines
    assert any(line.startswith("policies/creditors.yml: default.events_url: expected an "
                               "http(s) URL or null, got 'ftp://x'") for line in lines)
    assert any(line.startswith("policies/creditors.yml: default.secret_env:") for line in lines)
    assert "policies/creditors.yml: creditors.Bad Ltd.colour: unknown key; expected one of " \
           "events_url, secret_env" in lines
    assert "policies/creditors.yml: creditors.Bad Ltd.secret_env: required when events_url " \
           "is set" in lines
    with pytest.raises(CreditorConfigError, match="creditors.yml: expected a mapping"):
        parse_creditor_config(None, source="creditors.yml")


def test_config_file_that_cannot_be_read(tmp_path):
    (tmp_path / "creditors.yml").write_text("default: [unclosed")
    with pytest.raises(CreditorConfigError, match="creditors.yml: is not valid YAML"):
        CreditorConfig.load(tmp_path)


# --- delivery -------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_events_are_delivered_signed_and_acknowledged(redis, keys, creditor, make):
    fake, url = creditor
    hooks = make(config_for(url))
    ids = await append(redis, keys, 2) + await append(redis, keys, 1, creditor="Unlisted Ltd")
    assert await hooks.run_once() == 3
    assert list(fake.events) == ids
    assert fake.events[ids[1]]["data"] == {"amount": "1.50"}      # decimal strings survive
    assert {post["type"] for post in fake.wire} == {"payment_received"}
    assert [post["status"] for post in fake.wire] == [200, 200, 200]
    state = await hooks.delivery_state(await entry_of(redis, keys))
    assert state["attempts"] == "1" and "delivered_at" in state and state["event_id"] == ids[0]
    assert await redis.ttl(keys.creditor_webhook_state(await entry_of(redis, keys))) > 0
    assert (await redis.xpending(keys.business_events, GROUP))["pending"] == 0
    assert await redis.zcard(keys.creditor_webhook_due) == 0
    assert await hooks.run_once() == 0                               # nothing more to do
    assert len(fake.wire) == 3
    assert await redis.xlen(keys.business_events) == 3               # the stream keeps them
    summary = await hooks.pending_summary()
    assert summary == {"due": 0, "retrying": 0, "unread": 0, "pending": 0, "oldest": None}


@pytest.mark.asyncio
async def test_receiver_failing_three_times_then_recovering(redis, keys, creditor, make):
    fake, url = creditor
    fake.fail_next = 3
    hooks = make(config_for(url))
    [event_id] = await append(redis, keys)
    entry = await entry_of(redis, keys)
    now = time.time()
    waits = []
    for attempt in (1, 2, 3):
        assert await hooks.run_once(now) == 1
        state = await hooks.delivery_state(entry)
        assert state["attempts"] == str(attempt) and state["last_error"] == "HTTP 500"
        next_at = float(state["next_attempt_at"])
        waits.append(next_at - now)
        # not due a moment before: nothing goes on the wire
        assert await hooks.run_once(next_at - 0.01) == 0
        assert fake.received(event_id) == attempt
        now = next_at
    # 1 s doubling, within the 10 % jitter
    for wait, base in zip(waits, (1, 2, 4)):
        assert base * 0.9 <= wait <= base * 1.1
    summary = await hooks.pending_summary(now - 1)
    assert summary["retrying"] == 1 and summary["pending"] == 1
    assert summary["oldest"]["event_id"] == event_id and summary["oldest"]["attempts"] == 3
    assert summary["oldest"]["last_error"] == "HTTP 500"
    assert await hooks.run_once(now) == 1
    assert list(fake.events) == [event_id]                          # once, de-duplicated
    assert [p["status"] for p in fake.wire] == [500, 500, 500, 200]  # at least once on the wire
    assert (await hooks.delivery_state(entry))["attempts"] == "4"
    assert (await hooks.pending_summary(now))["pending"] == 0


@pytest.mark.asyncio
async def test_backoff_doubles_to_an_hour_and_stays_there(make):
    hooks = make(config_for(None), rng=random.Random(3))
    for attempts, base in ((1, 1), (2, 2), (5, 16), (12, 2048)):
        assert base * 0.9 <= hooks.backoff(attempts) <= base * 1.1
    assert all(3240 <= hooks.backoff(n) <= 3600 for n in (13, 20, 5000))


@pytest.mark.asyncio
async def test_receiver_down_entirely_then_back(redis, keys, make):
    port = free_port()                  # nothing listens here yet
    hooks = make(config_for(f"http://127.0.0.1:{port}/events"), timeout=0.5,
                 visibility_timeout=5)
    [event_id] = await append(redis, keys)
    entry = await entry_of(redis, keys)
    now = time.time()
    for _ in range(3):
        assert await hooks.run_once(now) == 1
        state = await hooks.delivery_state(entry)
        assert "connect" in state["last_error"].lower()
        now = float(state["next_attempt_at"])
    assert (await redis.xpending(keys.business_events, GROUP))["pending"] == 1  # not dropped
    app = create_fake_creditor(SECRET)
    runner = await serve(app, port)
    try:
        assert await hooks.run_once(now) == 1
        assert list(app[FAKE_CREDITOR].events) == [event_id]
        assert (await redis.xpending(keys.business_events, GROUP))["pending"] == 0
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_receiver_that_never_answers_times_out_and_is_retried(redis, keys, make):
    hung = asyncio.Event()

    async def hang(request):
        await hung.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/events", hang)
    port = free_port()
    runner = await serve(app, port)
    try:
        hooks = make(config_for(f"http://127.0.0.1:{port}/events"), timeout=0.2,
                     visibility_timeout=5)
        await append(redis, keys)
        assert await hooks.run_once() == 1
        state = await hooks.delivery_state(await entry_of(redis, keys))
        assert state["last_error"] == "no answer within 0.2 s"
        assert await redis.zcard(keys.creditor_webhook_due) == 1
    finally:
        hung.set()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_bad_signature_is_refused_by_the_fake_and_retried(redis, keys, creditor, make):
    fake, url = creditor
    hooks = make(config_for(url), secrets={ENV: "not-the-shared-secret"})
    await append(redis, keys)
    assert await hooks.run_once() == 1
    assert fake.events == {} and [p["status"] for p in fake.wire] == [403]
    state = await hooks.delivery_state(await entry_of(redis, keys))
    assert state["last_error"] == "HTTP 403" and state["last_status"] == "403"
    # the fake says why, to a caller who sends rubbish directly
    async with aiohttp.ClientSession() as session:
        body = b'{"id":"x"}'
        for header, reason in ((None, "missing"), (sign("wrong", body), "mismatch"),
                               (sign(SECRET, body, time.time() - 900), "too old")):
            headers = {"Nudge-Event-Id": "x", **({"Nudge-Signature": header} if header else {})}
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 403
                assert reason in (await response.json())["error"]
    assert fake.events == {}


@pytest.mark.asyncio
async def test_a_missing_secret_is_retried_without_posting(redis, keys, creditor, make):
    fake, url = creditor
    hooks = make(config_for(url), secrets={})
    await append(redis, keys)
    assert await hooks.run_once() == 1
    state = await hooks.delivery_state(await entry_of(redis, keys))
    assert state["last_error"] == f"secret {ENV} is not set"
    assert fake.wire == []


@pytest.mark.asyncio
async def test_creditor_without_url_gets_nothing_but_events_are_kept(redis, keys, creditor, make):
    fake, url = creditor
    hooks = make(config_for(url, **{"Quiet Ltd": {"events_url": None}}))
    await append(redis, keys, 2, creditor="Quiet Ltd")
    assert await hooks.run_once() == 2
    assert fake.wire == []
    assert (await redis.xpending(keys.business_events, GROUP))["pending"] == 0
    assert await redis.xlen(keys.business_events) == 2


@pytest.mark.asyncio
async def test_a_worker_that_died_mid_delivery_is_taken_over(redis, keys, creditor, make):
    """Worker A posts through a proxy that hands the event to the creditor, then never
    answers; A dies. Once A's lease runs out, worker B delivers again: the creditor saw it
    twice on the wire and keeps it once."""
    fake, url = creditor
    forwarded, released = asyncio.Event(), asyncio.Event()

    async def forward_then_hang(request):
        async with aiohttp.ClientSession() as session, session.post(
                url, data=await request.read(), headers=dict(request.headers)) as response:
            await response.read()
        forwarded.set()
        await released.wait()          # never answers while the test runs
        return web.Response(status=200)

    proxy = web.Application()
    proxy.router.add_post("/events", forward_then_hang)
    port = free_port()
    runner = await serve(proxy, port)
    try:
        a = make(config_for(f"http://127.0.0.1:{port}/events"), consumer="a", timeout=30,
                 visibility_timeout=60)
        b = make(config_for(url), consumer="b", timeout=30, visibility_timeout=60)
        [event_id] = await append(redis, keys)
        now = time.time()
        dying = asyncio.create_task(a.run_once(now))
        await asyncio.wait_for(forwarded.wait(), 5)
        dying.cancel()                                    # the worker process is gone
        with pytest.raises(asyncio.CancelledError):
            await dying
        assert await b.run_once(now + 30) == 0            # A's lease still holds
        assert await b.run_once(now + 61) == 1            # ran out: B takes over
        assert list(fake.events) == [event_id] and fake.duplicates == 1
        assert (await redis.xpending(keys.business_events, GROUP))["pending"] == 0
        assert (await b.delivery_state(await entry_of(redis, keys)))["attempts"] == "2"
    finally:
        released.set()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_an_event_read_by_a_dead_worker_is_reclaimed(redis, keys, creditor, make):
    """A worker read the event (XREADGROUP) and died before doing anything with it: it sits in
    the dead consumer's pending list until XAUTOCLAIM hands it to a live worker."""
    fake, url = creditor
    hooks = make(config_for(url), consumer="live", timeout=0.1, visibility_timeout=0.3)
    [event_id] = await append(redis, keys)
    await redis.xgroup_create(keys.business_events, GROUP, id="0")
    await redis.xreadgroup(GROUP, "dead", {keys.business_events: ">"}, count=10)
    assert await hooks.run_once() == 0                    # not idle long enough yet
    await asyncio.sleep(0.35)
    assert await hooks.run_once() == 1
    assert list(fake.events) == [event_id]
    assert (await redis.xpending(keys.business_events, GROUP))["pending"] == 0


@pytest.mark.asyncio
async def test_two_workers_never_post_the_same_event_at_once(redis, keys, creditor, make):
    fake, url = creditor
    a, b = make(config_for(url), consumer="a"), make(config_for(url), consumer="b")
    await append(redis, keys, 20)
    await redis.xgroup_create(keys.business_events, GROUP, id="0")
    # both see every entry as due through the schedule: only one lease each
    for entry_id, _ in await redis.xrange(keys.business_events):
        await redis.zadd(keys.creditor_webhook_due, {entry_id: 0})
    now = time.time()
    counts = await asyncio.gather(a.run_once(now), b.run_once(now))
    assert sum(counts) == 20
    assert len(fake.wire) == 20 and fake.duplicates == 0


@pytest.mark.asyncio
async def test_run_forever_delivers_and_stops(redis, keys, creditor, make):
    fake, url = creditor
    hooks = make(config_for(url))
    stop = asyncio.Event()
    task = asyncio.create_task(hooks.run_forever(stop, interval=0.05))
    [event_id] = await append(redis, keys)
    for _ in range(100):
        if fake.events:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert list(fake.events) == [event_id]


@pytest.mark.asyncio
async def test_summary_before_any_worker_ran(redis, keys, make):
    hooks = make(config_for(None))
    assert (await hooks.pending_summary())["oldest"] is None
    await append(redis, keys, 2)
    summary = await hooks.pending_summary()
    assert summary["unread"] == 2 and summary["oldest"]["entry_id"] == await entry_of(redis, keys)
    # a group that has read nothing yet: the lag counts them, the oldest is the first unread
    await redis.xgroup_create(keys.business_events, GROUP, id="0")
    summary = await hooks.pending_summary()
    assert (summary["unread"], summary["pending"]) == (2, 0)
    assert summary["oldest"]["entry_id"] == await entry_of(redis, keys)
    assert summary["oldest"]["attempts"] == 0 and summary["oldest"]["age_seconds"] >= 0


@pytest.mark.asyncio
async def test_fake_creditor_scripted_failures_and_listing(creditor):
    fake, url = creditor
    base = url.rsplit("/", 1)[0]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/_fake/fail", json={"count": 1, "status": 503}) as r:
            assert r.status == 200
        body = b'{"id":"e1","type":"offer_made"}'
        headers = {"Nudge-Signature": sign(SECRET, body), "Nudge-Event-Id": "e1"}
        statuses = []
        for _ in range(3):
            async with session.post(url, data=body, headers=headers) as r:
                statuses.append(r.status)
        async with session.get(f"{base}/_fake/events") as r:
            listing = await r.json()
    assert statuses == [503, 200, 200]
    assert [e["id"] for e in listing["events"]] == ["e1"] and listing["duplicates"] == 1
    assert isinstance(fake, FakeCreditor) and fake.received("e1") == 3
