"""Inbound email on the real gateway app and a real Redis: SendGrid Inbound Parse (parsed and
raw modes) behind its ECDSA signature, threading to the right conversation, strangers in a
debtor's thread, and auto-replies and bounces that never reach the engine."""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels.sendgrid_inbound import SIGNATURE_HEADER, TIMESTAMP_HEADER
from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.importer import import_file
from service.keys import Keys
from service.routing import InboundRouter
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "mailtest"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest_asyncio.fixture
async def env(aiohttp_client, redis_url):
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "NUDGE_PSEUDONYM_KEY": "m" * 32,
        "TWILIO_ACCOUNT_SID": "AC" + "7" * 32, "TWILIO_AUTH_TOKEN": "x" * 32,
        "NUDGE_SENDGRID_INBOUND_PUBLIC_KEY": PUBLIC, "NUDGE_SIMULATOR": "0"})
    redis = aioredis.from_url(redis_url)
    await import_file(ROOT / "data" / "demo_portfolio.csv", RedisDebtorStore(redis, Keys(PREFIX)))
    client = await aiohttp_client(create_app(settings))
    yield client, redis, InboundRouter(redis, Keys(PREFIX), settings.pseudonym_key)
    await redis.aclose()


async def post(client, fields, *, key=KEY, signed=True):
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, value)
    payload = data()

    class Collect:
        def __init__(self):
            self.parts = []

        async def write(self, chunk):
            self.parts.append(bytes(chunk))
    sink = Collect()
    await payload.write(sink)
    body = b"".join(sink.parts)
    headers = {"Content-Type": payload.content_type}
    if signed:
        timestamp = "1795000000"
        signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers.update({SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                        TIMESTAMP_HEADER: timestamp})
    return await client.post("/email/sendgrid", data=body, headers=headers)


def mime(sender: str, to: str, body: str, **headers: str) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, "Re: your account"
    mail["Message-ID"] = headers.pop("message_id", "<reply-1@debtor.example>")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return mail.as_bytes()


async def pending(redis, conversation: str) -> list[str]:
    return [m.decode() for m in await redis.lrange(Keys(PREFIX).pending(conversation), 0, -1)]


@pytest.mark.asyncio
async def test_raw_mode_threads_by_the_reply_address(env):
    client, redis, router = env
    to = await router.reply_address("D-DE-001", "reply.nudge.example")
    raw = mime("jonas.weber@example.org", to,
               "Ich zahle am Freitag.\n\nAm 12.11.2026 um 10:00 schrieb Nudge <x@nudge.example>:\n> Ihre Rechnung")
    debtor = await RedisDebtorStore(redis, Keys(PREFIX)).get("D-DE-001")
    raw = raw.replace(b"jonas.weber@example.org", debtor.email.encode())
    response = await post(client, {"email": raw.decode(), "to": to})
    assert response.status == 200, await response.text()
    assert await pending(redis, "D-DE-001") == ["reply-1@debtor.example"]
    stored = json.loads(await redis.hget(Keys(PREFIX).inbound("reply-1@debtor.example"), "message"))
    assert stored["body"] == "Ich zahle am Freitag."          # quoted history stripped
    assert stored["channel"] == "email" and stored["subject"] == "Re: your account"


@pytest.mark.asyncio
async def test_parsed_mode_is_accepted_too(env):
    client, redis, _ = env
    debtor = await RedisDebtorStore(redis, Keys(PREFIX)).get("D-EN-001")
    headers = (f"From: {debtor.email}\nTo: collections@nudge.example\nSubject: hello\n"
               "Message-ID: <parsed-1@debtor.example>\n")
    response = await post(client, {"headers": headers, "from": debtor.email,
                                   "to": "collections@nudge.example", "subject": "hello",
                                   "text": "Can I pay next week?", "envelope": json.dumps(
                                       {"to": ["collections@nudge.example"], "from": debtor.email}),
                                   "charsets": json.dumps({"text": "utf-8"})})
    assert response.status == 200, await response.text()
    assert await pending(redis, "D-EN-001") == ["parsed-1@debtor.example"]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["unsigned", "other_key", "tampered"])
async def test_requests_sendgrid_did_not_sign_are_refused(env, how):
    client, redis, _ = env
    fields = {"email": mime("a@example.org", "collections@nudge.example", "hi").decode()}
    if how == "unsigned":
        response = await post(client, fields, signed=False)
    elif how == "other_key":
        response = await post(client, fields, key=OTHER_KEY)
    else:
        data = aiohttp.FormData(default_to_multipart=True)
        data.add_field("email", fields["email"])
        signature = KEY.sign(b"1795000000" + b"something else", ec.ECDSA(hashes.SHA256()))
        response = await client.post("/email/sendgrid", data=data, headers={
            SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: "1795000000"})
    assert response.status == 403
    assert not [k async for k in redis.scan_iter(match=f"{PREFIX}:in:*")]


@pytest.mark.asyncio
async def test_a_stranger_replying_in_a_debtors_thread_gets_the_unknown_sender_path(env):
    client, redis, router = env
    to = await router.reply_address("D-DE-001", "reply.nudge.example")
    raw = mime("forwarded.to@someone.example", to, "What is this about?", message_id="<s-1@x.example>")
    assert (await post(client, {"email": raw.decode()})).status == 200
    assert await pending(redis, "D-DE-001") == []
    [unknown] = [m.decode() for m in await redis.smembers(Keys(PREFIX).unknown_senders)]
    assert await pending(redis, unknown) == ["s-1@x.example"]


@pytest.mark.asyncio
async def test_auto_replies_are_not_processed(env):
    client, redis, _ = env
    debtor = await RedisDebtorStore(redis, Keys(PREFIX)).get("D-EN-001")
    raw = mime(debtor.email, "collections@nudge.example", "I am out of the office until Monday.",
               Auto_Submitted="auto-replied", message_id="<ooo-1@debtor.example>")
    assert (await post(client, {"email": raw.decode()})).status == 200
    assert await pending(redis, "D-EN-001") == []


@pytest.mark.asyncio
async def test_a_bounce_marks_our_message_undelivered_and_queues_the_fallback(env):
    client, redis, router = env
    keys = Keys(PREFIX)
    await redis.hset(keys.delivery("out-1:0"), mapping={
        "message_id": "out-1:0", "state": "sent", "conversation_id": "D-EN-001", "channel": "email"})
    await router.remember_thread("<nudge.abc@reply.nudge.example>", "D-EN-001", "out-1:0")
    report = EmailMessage()
    report["From"] = "MAILER-DAEMON@mx.example.org"
    report["To"] = "collections@nudge.example"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = "<bounce-1@mx.example.org>"
    report.set_content("This is the mail system. The mailbox does not exist.")
    original = EmailMessage()
    original["Message-ID"] = "<nudge.abc@reply.nudge.example>"
    original["To"] = "gone@example.org"
    original.set_content("Your reminder")
    report.add_attachment(original, filename=None)
    report.replace_header("Content-Type", 'multipart/report; report-type=delivery-status')
    raw = report.as_bytes()
    assert (await post(client, {"email": raw.decode(errors="replace")})).status == 200
    record = await redis.hgetall(keys.delivery("out-1:0"))
    assert record[b"state"] == b"undelivered" and record[b"error_code"] == b"bounce"
    assert await redis.exists("arq:job:fail:out-1:0")
