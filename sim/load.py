"""Simulated debtors under load: an open-loop driver of signed Twilio webhooks, the clock at
the fake Twilio's API, and the checks that nothing was lost, doubled or answered out of order.

Used by the load benchmarks (bench/load.py, bench/soak.py) and the scale-out test
(tests/e2e/test_scale_out.py), so what is measured is also what is checked.

How one run goes:
- `write_portfolio` makes debtors of our own (ids `L<pool>-<n>`, SMS, date-of-birth
  verification only) in a CSV for the real importer.
- Every debtor follows a short script in their language (`script`): a greeting, "how much do I
  owe", their date of birth, thanks. The bot's reply to each turn is known (`Turn.expect`), so
  "the replies are right" is checked turn by turn. A share of debtors send their first two
  turns back to back (a *burst*): those two are processed in order or the dialogue goes wrong.
- `Driver.run` sends at a fixed rate (open loop: a slow answer does not slow the schedule, so
  queueing shows in the latency instead of being hidden), each tick the next turn of a debtor
  whose previous turn was answered. Webhooks go round-robin to every gateway, signed as
  Twilio signs them.
- The fake Twilio runs in this process; its `on_create` hook stamps each API call, so the
  end-to-end latency is "signed webhook sent -> provider API call received", on one clock.
  Our reply ids are `<inbound MessageSid>:<n>` (in the status-callback URL), which ties each
  API call to the turn it answers.
- `check` then reads each conversation's transcript from Redis and the fake's ledger.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from sandbox.fake_twilio import DEFAULT_SPEC, FAKE_TWILIO, FakeTwilio, create_fake_twilio

OUR_NUMBER = "+3197010520000"      # policies/channels.yml sms.from_number
CREDITOR = "Northwind Mobile"      # verifies by date of birth only (policies/arrangements.yml)
BIRTH = date(1980, 5, 1)
BIRTH_FORMAT = {"en": "%d-%m-%Y", "nl": "%d-%m-%Y", "de": "%d.%m.%Y"}
# country, mobile prefix, digits after it, currency, postcode
PROFILES = {"en": ("GB", "+447400", 6, "GBP", "M1 1AE"), "nl": ("NL", "+3161", 7, "EUR", "1012 AB"),
            "de": ("DE", "+49151", 8, "EUR", "10115")}
COLUMNS = ("id", "first_name", "last_name", "phone", "email", "language", "country",
           "date_of_birth", "postcode", "reference", "creditor", "balance", "currency",
           "due_date", "age_band", "product", "payment_history", "preferred_channel",
           "whatsapp_opt_in", "segment")


@dataclass(frozen=True)
class Turn:
    text: str
    expect: frozenset[str]     # the template(s) the bot's first reply may have


def script(language: str) -> list[Turn]:
    """What a debtor says, and what the bot must answer (tests/e2e/test_conversation.py)."""
    words = {"en": ("hello", "how much do i owe", "thanks"),
             "nl": ("hoi", "hoeveel moet ik nog betalen", "bedankt"),
             "de": ("hallo", "wie viel schulde ich euch", "danke")}[language]
    return [Turn(words[0], frozenset({"greet_reply"})),
            Turn(words[1], frozenset({"ask_verification"})),
            Turn(BIRTH.strftime(BIRTH_FORMAT[language]), frozenset({"balance"})),
            Turn(words[2], frozenset({"thank_reply"}))]


@dataclass
class LoadDebtor:
    id: str
    phone: str
    language: str
    burst: bool = False
    turn: int = 0                                   # index of the next turn to send
    waiting: set[str] = field(default_factory=set)  # MessageSids sent, not yet answered
    queued: bool = False                            # in the driver's ready queue
    sids: list[str] = field(default_factory=list)   # every MessageSid sent, in order

    @property
    def done(self) -> bool:
        return self.turn >= len(script(self.language))


def write_portfolio(path: Path, pool: str, count: int, *, pool_number: int,
                    burst_share: float = 0.25, seed: int = 8) -> list[LoadDebtor]:
    """`count` debtors of pool `pool` into a CSV for `nudge import` / `import_file`; pools
    with different `pool_number`s (0..89) have different phone numbers."""
    rng = random.Random(f"{seed}:{pool}")
    debtors, rows = [], []
    for n in range(count):
        language = ("en", "nl", "de")[n % 3]
        country, prefix, digits, currency, postcode = PROFILES[language]
        # unique per pool and number: pools differ in the two digits after the prefix
        local = f"{pool_number + 10:02d}{n:0{digits - 2}d}"   # 10..99: no leading 0
        debtor = LoadDebtor(f"L{pool}-{n:05d}", f"{prefix}{local}", language,
                            burst=rng.random() < burst_share)
        debtors.append(debtor)
        rows.append({
            "id": debtor.id, "first_name": "Sam", "last_name": f"Load{n}", "phone": debtor.phone,
            "email": f"load-{pool.lower()}-{n}@example.org", "language": language,
            "country": country, "date_of_birth": BIRTH.isoformat(), "postcode": postcode,
            "reference": f"LR-{pool}-{n:05d}", "creditor": CREDITOR,
            "balance": f"{100 + n % 400}.50", "currency": currency, "due_date": "2026-09-01",
            "age_band": "41-65", "product": "telecom", "payment_history": "late",
            "preferred_channel": "sms", "whatsapp_opt_in": "false", "segment": ""})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return debtors


def new_sid() -> str:
    return "SM" + secrets.token_hex(16)


def reply_of(status_callback: str | None) -> tuple[str, int] | None:
    """(inbound MessageSid, n) from our status-callback URL `...?m=<sid>:<n>`."""
    if not status_callback:
        return None
    ours = parse_qs(urlsplit(status_callback).query).get("m", [""])[0]
    sid, _, n = ours.rpartition(":")
    return (sid, int(n)) if sid and n.isdigit() else None


# --- the clock at the provider ---------------------------------------------------------------

class ProviderClock:
    """Stamps each message the fake Twilio creates (its `on_create` hook): when the first reply
    to each inbound MessageSid reached the API, and how often each of our ids was created."""

    def __init__(self) -> None:
        self.first_reply: dict[str, float] = {}
        self.created: dict[str, int] = {}           # our message id -> API creations
        self.listeners: list = []

    def __call__(self, message: Any) -> None:
        now = time.time()
        ours = reply_of(message.status_callback)
        if ours is None:
            return
        sid, n = ours
        key = f"{sid}:{n}"
        self.created[key] = self.created.get(key, 0) + 1
        if sid not in self.first_reply:
            self.first_reply[sid] = now
            for listener in self.listeners:
                listener(sid)


async def start_fake_twilio(settings, clock: ProviderClock) -> tuple[web.AppRunner, FakeTwilio]:
    """The fake Twilio API in this process, where the product's settings point the SDK, with
    `clock` stamping every message it creates. Stop it with `runner.cleanup()`."""
    app = create_fake_twilio(DEFAULT_SPEC, {settings.twilio_account_sid: settings.twilio_auth_token})
    app[FAKE_TWILIO].on_create = clock
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = int(settings.twilio_api_url.rsplit(":", 1)[1])
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, app[FAKE_TWILIO]


# --- the driver ------------------------------------------------------------------------------

@dataclass
class Sent:
    debtor: LoadDebtor
    turn: int
    at: float                     # time.time() when the request left
    ack_ms: float | None = None   # the gateway's answer
    status: int | None = None
    second_of_burst: bool = False
    gateway: str = ""


class Driver:
    """Sends debtors' turns as signed Twilio webhooks at a fixed rate (open loop)."""

    def __init__(self, gateways: list[str], *, public_url: str, auth_token: str,
                 account_sid: str, clock: ProviderClock, path: str = "/twilio/sms"):
        self.gateways = gateways
        self.url = public_url.rstrip("/") + path
        self.path = path
        self.validator = RequestValidator(auth_token)
        self.account_sid = account_sid
        self.clock = clock
        self.sent: dict[str, Sent] = {}
        self.by_debtor: dict[str, LoadDebtor] = {}
        self.ready: deque[LoadDebtor] = deque()
        self.starved_ticks = 0
        self.reserve: deque[LoadDebtor] = deque()      # debtors who start as others finish
        self._next_gateway = 0
        clock.listeners.append(self._answered)

    def _answered(self, sid: str) -> None:
        sent = self.sent.get(sid)
        if sent is None:
            return
        debtor = sent.debtor
        debtor.waiting.discard(sid)
        self._make_ready(debtor)
        if debtor.done and not debtor.waiting and self.reserve:
            self._make_ready(self.reserve.popleft())

    def _make_ready(self, debtor: LoadDebtor) -> None:
        # Once: the first reply of a burst can arrive while its second turn is still queued.
        if debtor.queued or debtor.waiting or debtor.done:
            return
        debtor.queued = True
        self.ready.append(debtor)

    def signed(self, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        signature = self.validator.compute_signature(self.url, form)
        return form, {"X-Twilio-Signature": signature}

    def form_for(self, debtor: LoadDebtor, text: str, sid: str) -> dict[str, str]:
        return {"MessageSid": sid, "SmsMessageSid": sid, "AccountSid": self.account_sid,
                "From": debtor.phone, "To": OUR_NUMBER, "Body": text, "NumMedia": "0",
                "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01"}

    async def _post(self, session: aiohttp.ClientSession, sent: Sent, form: dict[str, str]) -> None:
        form, headers = self.signed(form)
        gateway = self.gateways[self._next_gateway % len(self.gateways)]
        self._next_gateway += 1
        sent.gateway = gateway
        started = time.perf_counter()
        try:
            async with session.post(gateway + self.path, data=form, headers=headers) as response:
                await response.read()
                sent.status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            sent.status = 0
        sent.ack_ms = (time.perf_counter() - started) * 1000

    def send_turn(self, session: aiohttp.ClientSession, debtor: LoadDebtor,
                  tasks: set[asyncio.Task]) -> None:
        turn = script(debtor.language)[debtor.turn]
        sid = new_sid()
        sent = Sent(debtor, debtor.turn, time.time(), second_of_burst=debtor.burst and debtor.turn == 1)
        self.sent[sid] = sent
        debtor.waiting.add(sid)
        debtor.sids.append(sid)
        debtor.turn += 1
        task = asyncio.create_task(self._post(session, sent, self.form_for(debtor, turn.text, sid)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def run(self, debtors: list[LoadDebtor], *, rate: float, seconds: float,
                  drain_seconds: float = 120.0, active: int | None = None) -> None:
        """Send at `rate` turns/s for `seconds`, then wait (up to drain_seconds) for answers.

        `active`: at most this many debtors mid-script at once, a new one starting as one
        finishes. The turns cost the engine very different amounts (a greeting ~20 ms, the
        verification form ~150 ms), so a long run needs a steady mix of turns; with every
        debtor queued at once, everyone greets first, then everyone asks, and so on."""
        for index, debtor in enumerate(debtors):
            self.by_debtor[debtor.id] = debtor
            if active is None or index < active:
                self._make_ready(debtor)
            else:
                self.reserve.append(debtor)
        tasks: set[asyncio.Task] = set()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=60)) as session:
            started = time.perf_counter()
            ticks = int(rate * seconds)
            for tick in range(ticks):
                delay = started + tick / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self.ready:
                    self.starved_ticks += 1
                    continue
                debtor = self.ready.popleft()
                debtor.queued = False
                if debtor.burst and debtor.turn == 0:
                    self.send_turn(session, debtor, tasks)
                    debtor.queued = True
                    self.ready.appendleft(debtor)       # its second turn goes next tick
                else:
                    self.send_turn(session, debtor, tasks)
            await self.drain(drain_seconds)
            if tasks:
                await asyncio.wait(tasks, timeout=60)

    async def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(
                d.waiting for d in self.by_debtor.values()):
            await asyncio.sleep(0.1)

    # --- figures -----------------------------------------------------------------------------
    def acks_ms(self) -> list[float]:
        return [s.ack_ms for s in self.sent.values() if s.ack_ms is not None]

    def reply_ms(self) -> list[float]:
        """Signed webhook sent -> first reply's API call; the second turn of a burst is left
        out (it waits for the first by design)."""
        return [(self.clock.first_reply[sid] - s.at) * 1000 for sid, s in self.sent.items()
                if sid in self.clock.first_reply and not s.second_of_burst]

    def unanswered(self) -> list[str]:
        return [sid for sid in self.sent if sid not in self.clock.first_reply]

    def accepted_by_gateway(self) -> dict[str, int]:
        counts = dict.fromkeys(self.gateways, 0)
        for s in self.sent.values():
            if s.status == 200:
                counts[s.gateway] += 1
        return counts

    def bad_status(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self.sent.values():
            if s.status != 200:
                counts[s.status or 0] = counts.get(s.status or 0, 0) + 1
        return counts


async def ack_only(gateways: list[str], *, public_url: str, auth_token: str, account_sid: str,
                   phones: list[str], rate: float, seconds: float) -> tuple[list[float], dict[int, int]]:
    """Webhooks at `rate`/s for `seconds` without waiting for answers; the gateway's answer
    time per request (ms) and the count of each non-200 status (0: no answer)."""
    driver = Driver(gateways, public_url=public_url, auth_token=auth_token,
                    account_sid=account_sid, clock=ProviderClock())
    # Bodies and signatures are made before the clock starts: the sender must not be the limit.
    prepared = []
    for n in range(int(rate * seconds)):
        phone = phones[n % len(phones)]
        form = driver.form_for(LoadDebtor("-", phone, "en"), "hello", new_sid())
        prepared.append(driver.signed(form))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def post(session, gateway, form, headers):
        started = time.perf_counter()
        status = 0
        try:
            async with session.post(gateway + driver.path, data=form, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            statuses[status] = statuses.get(status, 0) + 1

    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        for n, (form, headers) in enumerate(prepared):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, gateways[n % len(gateways)], form, headers)))
        await asyncio.gather(*tasks)
    return latencies, statuses


# --- checks ----------------------------------------------------------------------------------

@dataclass
class CheckResult:
    conversations: int = 0
    inbound: int = 0
    replies: int = 0
    lost: list[str] = field(default_factory=list)            # inbound with no reply
    doubled: list[str] = field(default_factory=list)         # an id created twice at the provider
    out_of_order: list[str] = field(default_factory=list)    # conversations answered out of order
    wrong: list[str] = field(default_factory=list)           # "debtor turn: got X, expected Y"

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.out_of_order or self.wrong)

    def summary(self) -> dict[str, Any]:
        return {"conversations": self.conversations, "inbound": self.inbound,
                "replies": self.replies, "lost": len(self.lost), "doubled": len(self.doubled),
                "out_of_order": len(self.out_of_order), "wrong_replies": len(self.wrong),
                "examples": (self.lost + self.doubled + self.out_of_order + self.wrong)[:5]}


async def check(redis, transcript_key, debtors: list[LoadDebtor], clock: ProviderClock) -> CheckResult:
    """Every turn answered once, in order, with the right template; nothing created twice at
    the provider. `transcript_key(debtor_id)` names a conversation's transcript stream."""
    result = CheckResult(doubled=sorted(k for k, n in clock.created.items() if n > 1))
    for debtor in debtors:
        if not debtor.sids:
            continue
        result.conversations += 1
        rows = await redis.xrange(transcript_key(debtor.id))
        entries = [json.loads(fields[b"data"]) for _, fields in rows]
        inbound = [e["message_id"] for e in entries if e.get("direction") == "in"]
        replies = [e for e in entries if e.get("direction") == "out"]
        result.inbound += len(inbound)
        result.replies += len(replies)
        first_reply: dict[str, dict] = {}
        answered_order: list[str] = []
        out_ids = [r.get("message_id", "") for r in replies]
        if len(out_ids) != len(set(out_ids)):
            result.doubled.append(f"{debtor.id}: an outbound id twice in the transcript")
        for reply in replies:
            sid = reply.get("message_id", "").rpartition(":")[0]
            if sid in debtor.sids and sid not in first_reply:
                first_reply[sid] = reply
                answered_order.append(sid)
        for index, sid in enumerate(debtor.sids):
            if sid not in inbound:
                result.lost.append(f"{debtor.id} turn {index}: not in the transcript")
            elif sid not in first_reply:
                result.lost.append(f"{debtor.id} turn {index}: no reply")
            else:
                expected = script(debtor.language)[index].expect
                got = first_reply[sid].get("template")
                if got not in expected:
                    result.wrong.append(f"{debtor.id} turn {index}: got {got}, expected {sorted(expected)}")
        if answered_order != [s for s in debtor.sids if s in first_reply]:
            result.out_of_order.append(debtor.id)
    return result
