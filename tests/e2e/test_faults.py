"""Faults, each bounded and cleaned up after: kill -9 of the worker mid-campaign, of the engine
mid-message, of Redis (AOF on) while traffic flows, then a restart; the fake Twilio server
failing, throttling and hanging; the mail server down. After recovery every planned message
went out exactly once, every inbound reply was answered, and no arrangement, opt-out or event
was lost.

These tests kill things, so they do not share the session's `product`: the module starts its
own stack (`service.stack.Stack`, the same class `make run` uses) on its own redis-server,
which it can kill and start again on the same port and directory. The engine's cold start is
the expensive part (~50 s), so the stack is started once per module; each test restarts only
what it killed, and a finalizer heals whatever a failed test left broken (Redis, worker,
engine, mail sink, scripted faults of the fake Twilio) so the next test starts from a
healthy stack.

The test policies are the real ones with every contact window open, a segment per test (its
own creditor, so a campaign touches only that test's debtors), faster pacing (25 messages/s
instead of 5-10, so a few hundred messages take seconds) and shorter retry timing (provider
timeout 3 s, back-off capped at 8 s, so a hang or an outage is over in seconds). The logic
under test is unchanged. Every process's output goes to .run/test-faults.log.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from channels.email_outbound import email_message_id
from service.arrangements import ArrangementBook
from service.business_events import BusinessEvents
from service.campaigns import message_id_for
from service.channel_config import ChannelConfig
from service.debtor_store import RedisDebtorStore
from service.delivery import RANK, DeliveryStore
from service.engine import EngineClient
from service.engine_model import ensure_model
from service.importer import import_file
from service.keys import Keys
from service.settings import Settings
from service.stack import APP_PYTHON, Stack, StackError, free_port, redis_answers
from service.suppression import SuppressionStore
from tests.conftest import ROOT, always_open_policies, stack_env
from tests.e2e.helpers import DebtorPhone, templates

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]

DEMO = ROOT / "data" / "demo_portfolio.csv"
PACE = 25                     # messages per second: campaigns and the SMS sender
#: segment -> (creditor, channels, debtors, phone prefix): one cohort per test
COHORTS = {
    "fault_campaign": ("Fault Campaign Creditor", ["sms"], 300, "5"),
    "fault_redis": ("Fault Redis Creditor", ["sms"], 60, "6"),
    "fault_twilio": ("Fault Twilio Creditor", ["sms"], 30, "7"),
    "fault_mail": ("Fault Mail Creditor", ["email"], 5, "8"),
}
SUBMITTED = RANK["submitted"]
OUTAGE_SECONDS = 24           # how long Redis stays down in test 3
DEAD_TICKET_SECONDS = 70      # how long the killed engine's lock ticket lives in test 2
SLIPPED = 2                   # sends that may reach Twilio between reading and scripting it


# --- the module's own stack ---------------------------------------------------------------------
@dataclass
class RedisServer:
    """A redis-server with AOF on, in its own directory: killed and started again on the same
    port and directory, it comes back with everything it acknowledged."""
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make setup`")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url):          # PONG only once the AOF is loaded
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Faulty:
    stack: Stack
    env: dict[str, str]
    redis: RedisServer
    model: Path
    cohorts: dict[str, list[str]]                  # segment -> debtor ids

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    @property
    def base_url(self) -> str:
        return self.settings.public_url

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    @property
    def twilio(self) -> "FakeTwilioControl":
        return FakeTwilioControl(self.settings.twilio_api_url)

    @property
    def mail_dir(self) -> Path:
        return self.settings.state_dir / "mail"

    @property
    def api_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['NUDGE_API_TOKEN']}"}


def fault_policies(directory: Path) -> Path:
    always_open_policies(directory)
    segments = yaml.safe_load((directory / "segments.yml").read_text())
    for name, (creditor, channels, _, _) in COHORTS.items():
        segments["segments"].insert(0, {
            "name": name, "when": {"creditor": [creditor]},
            "workflow": {"steps": [{"day": 0, "template": "reminder_first"}],
                         "channels": channels, "tones": ["loss_aversion", "social_proof", "soft"]}})
    segments["campaigns"]["pace_per_second"] = {"sms": PACE, "whatsapp": 20, "email": 20}
    (directory / "segments.yml").write_text(yaml.safe_dump(segments, sort_keys=False))
    channels = yaml.safe_load((directory / "channels.yml").read_text())
    channels["sms"]["pacing_per_second"] = PACE
    channels["retry"] = {"first_delay_seconds": 1, "max_delay_seconds": 8,
                         "provider_timeout_seconds": 3}
    (directory / "channels.yml").write_text(yaml.safe_dump(channels, sort_keys=False))
    return directory


def cohort_csv(path: Path) -> dict[str, list[str]]:
    """Generated debtors for each test's segment (a demo debtor's details, their own ids,
    numbers, addresses and creditor)."""
    model = next(r for r in csv.DictReader(DEMO.open()) if r["id"] == "D-EN-001")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(model))
    writer.writeheader()
    cohorts: dict[str, list[str]] = {}
    for segment, (creditor, channels, size, digit) in COHORTS.items():
        for n in range(size):
            debtor_id = f"F-{digit}-{n:04d}"
            writer.writerow(dict(model, id=debtor_id, creditor=creditor, segment="",
                                 reference=f"FLT-{digit}-{n:05d}",
                                 email=f"fault.{digit}.{n}@example.org",
                                 phone=f"+44 7400 {digit}{n:05d}", preferred_channel=channels[0],
                                 whatsapp_opt_in="false"))
            cohorts.setdefault(segment, []).append(debtor_id)
    path.write_text(out.getvalue())
    return cohorts


async def _import(url: str, keys: Keys, *files: Path) -> None:
    client = aioredis.from_url(url)
    try:
        for file in files:
            report = await import_file(file, RedisDebtorStore(client, keys))
            assert not report.errors, report.errors
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Faulty:
    base = tmp_path_factory.mktemp("faults")
    server = RedisServer(base / "redis")
    server.start()
    policies = fault_policies(base / "policies")
    # its own state directory: the mail sink's files are this module's alone
    env = stack_env(server.url, NUDGE_POLICIES_DIR=str(policies), NUDGE_STATE_DIR=str(base / "state"))
    settings = Settings.from_env(env)
    (ROOT / ".run").mkdir(exist_ok=True)
    log = open(ROOT / ".run" / "test-faults.log", "w")  # every process's output, for post-mortems
    stack = Stack(settings, env, out=log)
    try:
        model = ensure_model(log=lambda text: None)
        stack.start_sandbox_providers()
        stack.start_services(model=model)
        cohorts = cohort_csv(base / "cohorts.csv")
        asyncio.run(_import(server.url, Keys(settings.key_prefix), DEMO, base / "cohorts.csv"))
        yield Faulty(stack, env, server, model, cohorts)
    finally:
        stack.stop()
        server.stop()
        log.close()


# --- killing and healing ------------------------------------------------------------------------
def kill(stack: Stack, name: str) -> None:
    """kill -9 of a child's whole process group; the child is forgotten by the stack."""
    child = stack.child(name)
    os.killpg(child.process.pid, signal.SIGKILL)
    child.process.wait(10)
    stack.children.remove(child)


def start_mail_sink(f: Faulty) -> None:
    """The SMTP sink again, on its port and directory (what start_sandbox_providers runs)."""
    f.mail_dir.mkdir(parents=True, exist_ok=True)
    f.stack._spawn("mail", [APP_PYTHON, "-m", "sandbox.smtp_sink", "--port",
                            str(f.settings.smtp_port), "--dir", str(f.mail_dir)])
    _wait_sync(lambda: _port_open(f.settings.smtp_port), 30, "the mail sink to listen")


def heal(f: Faulty) -> None:
    """Whatever a test killed comes back; scripted faults are cleared. Fails if a process the
    tests never kill has died (the stack is broken: the remaining tests would mean nothing)."""
    if not f.redis.running():
        f.redis.start()
    stack = f.stack
    for child in [c for c in stack.children if c.process.poll() is not None]:
        stack.children.remove(child)
    alive = {c.name for c in stack.children}
    lost = {"twilio", "creditor", "actions", "gateway"} - alive
    if lost:
        pytest.fail(f"a process the tests do not kill has died: {sorted(lost)} "
                    "(see .run/test-faults.log)")
    if "mail" not in alive:
        start_mail_sink(f)
    if "engine" not in alive:
        stack.spawn_engine(f.model)
    if not any(name.startswith("worker") for name in alive):
        stack.start_worker("worker")
    _wait_sync(stack.engine_ready, 240, "the engine to load its model")
    _wait_sync(lambda: _http_ok(f"{f.base_url}/healthz"), 30, "the gateway to see Redis")
    request = urllib.request.Request(f"{f.settings.twilio_api_url}/_fake/reset", data=b"{}",
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture
def fault_stack(faulty: Faulty) -> Faulty:
    heal(faulty)
    yield faulty
    heal(faulty)


def _wait_sync(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float, what: str,
                     interval: float = 0.3) -> Any:
    """The first truthy result of `check`, polled until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        await asyncio.sleep(interval)


# --- what the providers saw ---------------------------------------------------------------------
class FakeTwilioControl:
    """The fake Twilio's control API (/_fake/...): its ledger of created messages, the status
    callbacks it posted (their URL names our message id), and scripted faults."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    async def _get(self, what: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}/_fake/{what}") as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def messages(self) -> list[dict[str, Any]]:
        return await self._get("messages")

    async def requests(self) -> list[dict[str, Any]]:
        return await self._get("requests")

    async def sids_by_message_id(self) -> dict[str, set[str]]:
        """Our message id -> the Twilio messages whose status callbacks named it."""
        found: dict[str, set[str]] = defaultdict(set)
        for attempt in await self._get("callbacks"):
            ours = parse_qs(urlsplit(attempt["url"]).query).get("m", [""])[0]
            found[ours].add(attempt["params"]["MessageSid"])
        return found

    async def script(self, operation: str, **arguments: Any) -> None:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.base_url}/_fake/{operation}", json=arguments) as r:
            assert r.status == 200, await r.text()


def _is_create(request: dict[str, Any]) -> bool:
    return request["method"] == "POST" and request["path"].endswith("/Messages.json")


async def records_of(client, keys: Keys, message_ids: list[str]) -> dict[str, dict[str, str]]:
    store = DeliveryStore(client, keys)
    return {message_id: await store.get(message_id) for message_id in message_ids}


async def all_handed_over(client, keys: Keys, message_ids: list[str]) -> dict[str, dict[str, str]] | None:
    """The delivery records once every message was accepted by its provider, else None."""
    records = await records_of(client, keys, message_ids)
    if all(RANK.get(r.get("state", ""), -1) >= SUBMITTED for r in records.values()):
        return records
    return None


async def assert_sent_once_by_twilio(f: Faulty, client, message_ids: list[str]) -> dict[str, dict[str, str]]:
    """Every planned message is exactly one Twilio message: the one our delivery record names,
    the only one whose callbacks name our id, and no other copy of it (same number, same body)
    exists at the fake."""
    records = await eventually(lambda: all_handed_over(client, f.keys, message_ids), 150,
                               f"all of {len(message_ids)} messages accepted by Twilio")
    twilio = f.twilio
    # status callbacks follow each created message by half a second
    sids = await eventually(
        lambda: _named_all(twilio, message_ids), 30, "a status callback for every message")
    problems = {m: (sorted(sids[m]), records[m].get("provider_id")) for m in message_ids
                if sids[m] != {records[m].get("provider_id")}}
    assert not problems, f"messages not sent exactly once (our id: Twilio sids, recorded sid): {problems}"
    # Belt and braces, by content: no more copies of a text to a number at Twilio than we ever
    # planned (the fake's ledger starts empty at each test; ours holds every test's messages).
    ours = Counter()
    for _, fields in await client.xrange(f.keys.outbox):
        entry = json.loads(fields[b"data"])
        ours[(entry["address"], entry["body"])] += 1
    pairs = {(r["address"], r["body"]) for r in records.values()}
    at_twilio = Counter((m["to"], m["body"]) for m in await twilio.messages()
                        if (m["to"], m["body"]) in pairs)
    doubled = {pair: n for pair, n in at_twilio.items() if n > ours[pair]}
    assert not doubled, f"more copies at Twilio than planned: {doubled}"
    return records


async def _named_all(twilio: FakeTwilioControl, message_ids: list[str]) -> dict[str, set[str]] | None:
    sids = await twilio.sids_by_message_id()
    return sids if all(sids.get(m) for m in message_ids) else None


async def assert_recorded_once(client, keys: Keys, message_ids: list[str],
                               conversations: list[str]) -> None:
    """No duplicate in Redis: one outbox entry per message id, one transcript entry per
    outbound message."""
    outbox = Counter(json.loads(fields[b"data"])["message_id"]
                     for _, fields in await client.xrange(keys.outbox))
    assert {m: outbox[m] for m in message_ids if outbox[m] != 1} == {}
    for conversation in conversations:
        out = [json.loads(fields[b"data"]) for _, fields in
               await client.xrange(keys.transcript(conversation))]
        ids = [e["message_id"] for e in out if e.get("direction") == "out"]
        assert len(ids) == len(set(ids)), (conversation, ids)


# --- campaigns ----------------------------------------------------------------------------------
async def start_campaign(f: Faulty, segment: str) -> str:
    async with aiohttp.ClientSession(base_url=f.base_url, headers=f.api_auth) as api:
        async with api.post("/api/campaigns", json={"segment": segment, "step": 1, "by": "faults",
                                                    "follow": False}) as response:
            assert response.status == 201, await response.text()
            return (await response.json())["id"]


async def campaign_status(f: Faulty, campaign_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=f.base_url, headers=f.api_auth) as api:
        async with api.get(f"/api/campaigns/{campaign_id}") as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def campaign_done(f: Faulty, campaign_id: str) -> dict[str, Any] | None:
    status = await campaign_status(f, campaign_id)
    return status if status["state"] == "done" else None


def assert_campaign_counts(status: dict[str, Any], size: int) -> None:
    """Planned once, sent once, nothing refused or skipped or counted twice."""
    assert status["state"] == "done", status
    assert status["counts"] == {"planned": size, "sent": size}, status["counts"]
    assert status["queued"] == status["handled"] == size, status


async def phones_of(client, keys: Keys, debtor_ids: list[str]) -> dict[str, str]:
    store = RedisDebtorStore(client, keys)
    return {(await store.get(d)).phone: d for d in debtor_ids}


async def at_twilio_for(twilio: FakeTwilioControl, numbers) -> int:
    return sum(1 for m in await twilio.messages() if m["to"] in numbers)


# === 1. the worker, kill -9 mid-campaign =========================================================
@pytest.mark.timeout(480)     # the module's stack starts with the first test (~60 s)
async def test_worker_killed_mid_campaign_sends_every_message_once(fault_stack):
    f = fault_stack
    debtors = f.cohorts["fault_campaign"]
    client = aioredis.from_url(f.settings.redis_url)
    twilio = f.twilio
    try:
        numbers = await phones_of(client, f.keys, debtors)
        campaign_id = await start_campaign(f, "fault_campaign")
        await eventually(lambda: _at_least(at_twilio_for(twilio, numbers), len(debtors) // 2), 90,
                         "half of the campaign at Twilio")

        # Sends in flight at the moment of the kill, three of them at least: Twilio creates
        # those and holds its answer, so the dead worker never learns that they exist.
        before = len(await twilio.requests())
        await twilio.script("hang_next", n=3, seconds=20, create_then_hang=True)
        await eventually(lambda: _creates_after(twilio, before, 3 + SLIPPED), 10,
                         "three sends waiting for Twilio's answer", interval=0.02)
        kill(f.stack, "worker")
        planned = [message_id_for(campaign_id, d) for d in debtors]
        cut_off = await _cut_off(client, f.keys, planned, twilio)
        assert len(cut_off) >= 3, cut_off          # recorded as attempting, and at Twilio
        at_kill = await campaign_status(f, campaign_id)
        assert at_kill["handled"] < len(debtors), "the campaign ended before the kill"

        f.stack.start_worker("worker")
        # leases of the dead dispatcher run out after 120 s; its deliveries are re-enqueued
        # by the sweep (30 s) once their due time is a minute old
        status = await eventually(lambda: campaign_done(f, campaign_id), 240, "the campaign done")
        assert_campaign_counts(status, len(debtors))

        records = await assert_sent_once_by_twilio(f, client, planned)
        await assert_recorded_once(client, f.keys, planned, debtors)
        # the sends Twilio had created when their worker died were never attempted again (their
        # status callbacks, which name our id, told the gateway that they exist)
        assert {m: records[m]["attempts"] for m in cut_off} == dict.fromkeys(cut_off, "1")
    finally:
        await client.aclose()


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def _creates_after(twilio: FakeTwilioControl, before: int, n: int) -> bool:
    """At least n message creations reached Twilio since its request number `before`. (Faults
    scripted just after `before` was read apply from the next request on, so a few creations
    may slip in ahead of them: wait for SLIPPED more.)"""
    return sum(1 for r in (await twilio.requests())[before:] if _is_create(r)) >= n


async def _cut_off(client, keys: Keys, message_ids: list[str],
                   twilio: FakeTwilioControl) -> dict[str, dict[str, str]]:
    """Messages whose send was cut off mid-call: our record says `attempting` (the outcome
    was never recorded), no status callback moved it on, and Twilio has created it."""
    at_twilio = {m["to"] for m in await twilio.messages()}
    return {m: r for m, r in (await records_of(client, keys, message_ids)).items()
            if r.get("state") == "attempting" and r.get("maybe_sent") is None
            and not r.get("provider_id") and r["address"] in at_twilio}


def _message_id_of(request: dict[str, Any]) -> str:
    return parse_qs(urlsplit(request["params"]["StatusCallback"]).query)["m"][0]


# === 2. the engine, kill -9 mid-message ==========================================================
@pytest.mark.timeout(360)
async def test_engine_killed_mid_message_answers_every_reply_once_in_order(fault_stack):
    f = fault_stack
    debtor_id = "D-EN-003"
    client = aioredis.from_url(f.settings.redis_url)
    try:
        async with DebtorPhone(f.base_url, debtor_id, "sms") as phone:
            assert templates(await phone.say("hello", timeout=60)) == ["greet_reply"]
            burst = {"thanks": "thank_reply", "bye": "goodbye_reply", "good morning": "greet_reply"}
            sent = [await phone.send(text) for text in burst]

            # Kill it while it works on one of them: our side marked the message as sent to the
            # engine and has no answer yet; the engine holds the conversation's lock ticket.
            engine_lock = f"{f.settings.engine_key_prefix}:lock:{debtor_id}"

            async def mid_message() -> str | None:
                for message_id in sent:
                    engine_sent, responses = await client.hmget(
                        f.keys.inbound(message_id), ["engine_sent", "engine_responses"])
                    if engine_sent and not responses and _tickets(await client.get(engine_lock)):
                        return message_id
                return None
            caught = await eventually(mid_message, 20, "a message inside the engine", interval=0.005)
            kill(f.stack, "engine")
            killed_at = time.time()
            assert await client.hget(f.keys.inbound(caught), "engine_responses") is None

            # The dead engine's ticket keeps the conversation locked for the engine's lock
            # lifetime (60 s from when it was issued). An engine that restarts faster than that
            # answers the next message only once the ticket has expired, later than our
            # conversation lock lasts (5 s in tests). Ours restarts in 40-60 s on this machine,
            # so the ticket is made to outlive the restart whatever its speed today.
            dead = _tickets(await client.get(engine_lock))
            assert dead, "the engine died without holding the conversation"
            await client.set(engine_lock, json.dumps({
                "conversation_id": debtor_id,
                "tickets": [json.dumps({**t, "expires": killed_at + DEAD_TICKET_SECONDS}) for t in dead]}))

            f.stack.spawn_engine(f.model)
            await eventually(lambda: asyncio.to_thread(f.stack.engine_ready), 240, "the engine back")
            entries = await phone.new_entries(until_templates=len(burst), timeout=180, settle=3.0)

        replies = [e for e in entries if e.get("kind") == "message" and e.get("direction") == "out"]
        # one answer per message, in the order they were written, each the right one
        assert [r["message_id"] for r in replies] == [f"{m}:0" for m in sent]
        assert templates(replies) == list(burst.values())
        async with EngineClient(f.settings.engine_url, f.settings.engine_token) as engine:
            tracker = await engine.tracker(debtor_id)
        turns = Counter((e.get("metadata") or {}).get("message_id") for e in tracker["events"]
                        if e.get("event") == "user")
        assert {m: turns[m] for m in sent} == dict.fromkeys(sent, 1)    # the engine heard each once
        await assert_sent_once_by_twilio(f, client, [r["message_id"] for r in replies])
        await assert_recorded_once(client, f.keys, [r["message_id"] for r in replies], [debtor_id])
        assert not await client.llen(f.keys.pending(debtor_id))
    finally:
        await client.aclose()


def _tickets(raw: bytes | None) -> list[dict[str, Any]]:
    """The tickets of one of the engine's conversation locks (rasa.core.lock.TicketLock)."""
    return [json.loads(t) for t in json.loads(raw)["tickets"]] if raw else []


# === 3. Redis, kill -9 with AOF on, then a restart ===============================================
@pytest.mark.timeout(360)
async def test_redis_killed_and_restarted_loses_nothing_and_sends_nothing_twice(fault_stack):
    f = fault_stack
    keys = f.keys
    debtors = f.cohorts["fault_redis"]
    promiser, stopper = "D-EN-005", "D-EN-004"
    client = aioredis.from_url(f.settings.redis_url)
    twilio = f.twilio
    store = RedisDebtorStore(client, keys)
    try:
        numbers = await phones_of(client, keys, debtors)
        promiser_debtor = await store.get(promiser)
        stopper_phone = (await store.get(stopper)).phone
        async with DebtorPhone(f.base_url, promiser, "sms") as promising, \
                DebtorPhone(f.base_url, stopper, "sms") as stopping:
            assert templates(await promising.say("i will pay it all on friday")) == ["ask_verification"]

            # Traffic: a campaign going out, a promise being agreed, an opt-out; and two of the
            # campaign's sends waiting for Twilio's answer, which never comes in time: Twilio
            # has created them. Redis dies before their first status callback could be recorded.
            campaign_id = await start_campaign(f, "fault_redis")
            await eventually(lambda: _at_least(at_twilio_for(twilio, numbers), 10), 60,
                             "the campaign under way")
            promise_id = await promising.send(promiser_debtor.date_of_birth.strftime("%d-%m-%Y"))
            stop_id = await stopping.send("STOP")
            before = await _durable_view(client, keys, [promiser, stopper])
            requests_before = len(await twilio.requests())
            await twilio.script("hang_next", n=2, seconds=30, create_then_hang=True)
            await eventually(lambda: _creates_after(twilio, requests_before, 2 + SLIPPED), 10,
                             "two sends waiting for Twilio's answer", interval=0.02)
            f.redis.kill()

            # Down for longer than Twilio keeps retrying a status callback (three tries per
            # status: the last try of a message's last status comes 18.5 s after it was
            # created): the gateway can record none of the callbacks of what was in flight, so
            # only Twilio's message list can tell that those messages exist.
            for _ in range(OUTAGE_SECONDS):
                await asyncio.sleep(1)
                assert f.stack.first_exited() is None, f"{f.stack.first_exited()} exited without Redis"
            f.redis.start()
            campaign_messages = [message_id_for(campaign_id, d) for d in debtors]
            cut_off = await _cut_off(client, keys, campaign_messages, twilio)
            assert len(cut_off) >= 2, cut_off           # the two held by Twilio at least

            confirmed = await promising.new_entries(until_templates=1, timeout=150, settle=2.0)
            opted_out = await stopping.new_entries(until_templates=1, timeout=150, settle=2.0)

        # every service reconnected by itself: none exited, and the worker works again
        assert f.stack.first_exited() is None, f"{f.stack.first_exited()} exited"
        after = await _durable_view(client, keys, [promiser, stopper])
        for name, ids in before.items():
            assert ids <= after[name], f"acknowledged before the kill, gone after it: {name}"

        # the promise: agreed once, its events recorded and delivered to the creditor's system
        assert templates([e for e in confirmed if e.get("direction") == "out"]) == ["promise_confirmed"]
        promise = await ArrangementBook(client, keys).current(promiser)
        assert promise is not None and (promise.kind, promise.state) == ("promise", "accepted")
        events = [e for _, e in await BusinessEvents(client, keys).read(count=100_000)
                  if e["debtor_id"] == promiser]
        assert Counter(e["type"] for e in events)["promise_made"] == 1, events
        receiver = f.env["NUDGE_CREDITOR_EVENTS_URL"].rsplit("/", 1)[0] + "/_fake/events"

        async def creditor_has_them() -> bool:
            async with aiohttp.ClientSession() as http, http.get(receiver) as response:
                received = {e["id"] for e in (await response.json())["events"]}
            return {e["id"] for e in events} <= received
        await eventually(creditor_has_them, 60, "the promise's events at the creditor's system")

        # the opt-out: recorded once, confirmed once
        assert await SuppressionStore(client, keys, f.settings.pseudonym_key).is_suppressed(
            "sms", stopper_phone)
        assert templates([e for e in opted_out if e.get("direction") == "out"]) == ["optout_confirmation"]
        stop_events = [e for _, e in await _transcript(client, keys, stopper)
                       if e.get("name") == "opted_out"]
        assert len(stop_events) == 1, stop_events

        # the campaign: done, every message once
        status = await eventually(lambda: campaign_done(f, campaign_id), 240, "the campaign done")
        assert_campaign_counts(status, len(debtors))
        planned = campaign_messages + [f"{promise_id}:0", f"{stop_id}:0"]
        records = await assert_sent_once_by_twilio(f, client, planned)
        await assert_recorded_once(client, keys, planned, debtors + [promiser, stopper])
        # the sends cut off by the outage were looked up at Twilio, found, and not sent again
        assert {m: (records[m].get("reconciled"), records[m]["attempts"]) for m in cut_off} \
            == dict.fromkeys(cut_off, ("1", "1"))
    finally:
        await client.aclose()


async def _transcript(client, keys: Keys, conversation: str) -> list[tuple[bytes, dict]]:
    return [(i, json.loads(fields[b"data"])) for i, fields in
            await client.xrange(keys.transcript(conversation))]


async def _durable_view(client, keys: Keys, conversations: list[str]) -> dict[str, set]:
    """Entry ids of append-only streams: whatever Redis acknowledged must outlive its crash."""
    view = {"outbox": {i for i, _ in await client.xrange(keys.outbox)},
            "business_events": {i for i, _ in await client.xrange(keys.business_events)},
            "audit": {i for i, _ in await client.xrange(keys.audit)}}
    for conversation in conversations:
        view[f"transcript:{conversation}"] = {i for i, _ in await _transcript(client, keys, conversation)}
    return view


# === 4. the fake Twilio failing, throttling, hanging ============================================
@pytest.mark.timeout(240)
async def test_twilio_failing_throttling_and_hanging_delivers_each_message_once(fault_stack):
    f = fault_stack
    debtors = f.cohorts["fault_twilio"]
    client = aioredis.from_url(f.settings.redis_url)
    twilio = f.twilio
    try:
        numbers = await phones_of(client, f.keys, debtors)
        # The first sends meet, in this order: two 500s after Twilio created the message, two
        # hangs past our 3 s timeout after it created the message, three 429s, two 500s and a
        # hang where nothing was created.
        before = len(await twilio.requests())
        await twilio.script("fail_next", n=2, status=500, code=20500, create_then_fail=True)
        await twilio.script("hang_next", n=2, seconds=8, create_then_hang=True)
        await twilio.script("throttle_next", n=3)
        await twilio.script("fail_next", n=2, status=500, code=20500)
        await twilio.script("hang_next", n=1, seconds=8)
        campaign_id = await start_campaign(f, "fault_twilio")
        await eventually(lambda: _at_least(at_twilio_for(twilio, numbers), len(debtors) // 2), 60,
                         "half of the campaign at Twilio")
        # ...and then an outage: every request answers 503 for a while
        await twilio.script("fail_for", seconds=3, status=503)

        status = await eventually(lambda: campaign_done(f, campaign_id), 120, "the campaign done")
        assert_campaign_counts(status, len(debtors))
        planned = [message_id_for(campaign_id, d) for d in debtors]
        records = await assert_sent_once_by_twilio(f, client, planned)
        await assert_recorded_once(client, f.keys, planned, debtors)

        # The faults did cost attempts. The four sends Twilio carried out while answering with
        # an error or not at all were ambiguous for us, and were never attempted again: their
        # status callbacks (naming our id) or Twilio's message list told us they exist.
        assert sum(int(r["attempts"]) for r in records.values()) > len(records)
        first = [r for r in (await twilio.requests())[before:] if _is_create(r)][:4]
        created_anyway = [_message_id_of(r) for r in first]
        assert {m: (records[m].get("maybe_sent"), records[m]["attempts"])
                for m in created_anyway} == dict.fromkeys(created_anyway, ("1", "1"))
    finally:
        await client.aclose()


# === 5. the mail server down =====================================================================
@pytest.mark.timeout(180)
async def test_smtp_down_then_back_delivers_each_email_once(fault_stack):
    f = fault_stack
    debtors = f.cohorts["fault_mail"]
    client = aioredis.from_url(f.settings.redis_url)
    try:
        kill(f.stack, "mail")
        assert not _port_open(f.settings.smtp_port)

        campaign_id = await start_campaign(f, "fault_mail")
        async with DebtorPhone(f.base_url, "D-DE-001", "email") as phone:
            answer = await phone.say("hallo", timeout=60)
        assert templates(answer) == ["greet_reply"]
        status = await eventually(lambda: campaign_done(f, campaign_id), 60, "the campaign done")
        assert_campaign_counts(status, len(debtors))
        planned = [message_id_for(campaign_id, d) for d in debtors] + [answer[0]["message_id"]]

        # tried again and again while the server was down, and not given up
        async def all_tried() -> bool:
            records = await records_of(client, f.keys, planned)
            return all(int(r.get("attempts") or 0) >= 2 for r in records.values())
        await eventually(all_tried, 30, "every email tried twice")
        records = await records_of(client, f.keys, planned)
        assert {m: r["state"] for m, r in records.items() if r["state"] != "queued"} == {}
        assert all("SMTP connection failed" in r.get("last_error", "") for r in records.values())

        start_mail_sink(f)
        records = await eventually(lambda: all_handed_over(client, f.keys, planned), 60,
                                   "every email accepted by the mail server")
        assert {r["state"] for r in records.values()} == {"sent"}

        domain = ChannelConfig.load(f.settings.policies_dir).email.reply_domain
        expected = {email_message_id(m, domain): m for m in planned}
        received = Counter()
        for path in sorted(f.mail_dir.glob("*.eml")):
            message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            received[str(message["Message-ID"])] += 1
        assert {mid: n for mid, n in received.items() if n != 1} == {}, "an email arrived twice"
        assert {expected[mid] for mid in received if mid in expected} == set(planned)
        await assert_recorded_once(client, f.keys, planned, debtors + ["D-DE-001"])
    finally:
        await client.aclose()
