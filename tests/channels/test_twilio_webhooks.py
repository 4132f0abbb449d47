"""Twilio's webhooks on the real gateway app and a real Redis: signatures (Twilio's own test
vectors, then forged, unsigned, re-addressed, replayed and duplicate requests), parsing of SMS
and WhatsApp fields, unknown senders, and status callbacks that only move forward."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from channels.twilio_inbound import TwilioRequestError, parse_message, signature_valid
from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.importer import import_file
from service.keys import Keys
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT.parent / "shared" / "testdata" / "twilio" /
                      "request_validator_vectors.json").read_text())
DEMO = ROOT / "data" / "demo_portfolio.csv"
ACCOUNT = "AC" + "1" * 32
TOKEN = "t0k3n" * 6
BASE = "https://nudge.example.com"     # what Twilio calls: a proxy in front of the gateway
PREFIX = "twtest"


# --- Twilio's own vectors ------------------------------------------------------------------
@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_twilio_request_validator_vectors(case):
    validator = RequestValidator(VECTORS["auth_token"])
    if case["op"] == "compute_hash":
        assert validator.compute_hash(case["body"]) == case["expected"]
        return
    if "params_multi" in case:
        params = MultiDict(case["params_multi"])
    elif "params_querystring" in case:
        params = MultiDict(parse_qsl(case["params_querystring"]))
    else:
        params = case.get("params", case.get("body"))
    if case["op"] == "compute_signature":
        assert validator.compute_signature(case["url"], params) == case["expected"]
        # and an independent computation of the same HMAC-SHA1, so the SDK is checked too
        text = case["url"] + "".join(k + v for k in sorted(set(params))
                                     for v in sorted(set(params.getall(k) if hasattr(params, "getall")
                                                         else [params[k]])))
        digest = hmac.new(VECTORS["auth_token"].encode(), text.encode(), hashlib.sha1).digest()
        assert base64.b64encode(digest).decode() == case["expected"]
    else:
        # our own check, the one the gateway uses
        assert signature_valid(VECTORS["auth_token"], case["url"], params,
                               case["signature"]) is case["expected"]
        assert not signature_valid("wrong-token", case["url"], params, case["signature"])


# --- the gateway ---------------------------------------------------------------------------
@pytest_asyncio.fixture
async def env(aiohttp_client, redis_url):
    settings = Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN, "NUDGE_WEBHOOK_BASE_URL": BASE,
        "NUDGE_PSEUDONYM_KEY": "k" * 32, "NUDGE_SIMULATOR": "0"})
    redis = aioredis.from_url(redis_url)
    await import_file(DEMO, RedisDebtorStore(redis, Keys(PREFIX)))
    client = await aiohttp_client(create_app(settings))
    yield client, redis
    await redis.aclose()


def sms(sid_digit: str = "a", body: str = "how much do I owe", sender: str = "+31612345678",
        **extra: str) -> dict[str, str]:
    return {"MessageSid": "SM" + sid_digit * 32, "AccountSid": ACCOUNT, "From": sender,
            "To": "+3197010520000", "Body": body, "NumMedia": "0", **extra}


async def post(client, path: str, params, *, signed_for: str | None = None,
               signature: str | None = None, headers: dict | None = None):
    url = (signed_for or BASE + path)
    sig = signature if signature is not None else RequestValidator(TOKEN).compute_signature(url, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": sig, **(headers or {})})


async def debtor_phone(redis) -> tuple[str, str]:
    store = RedisDebtorStore(redis, Keys(PREFIX))
    for debtor_id in await store.all_ids():
        debtor = await store.get(debtor_id)
        if debtor and debtor.phone:
            return debtor.id, debtor.phone
    raise AssertionError("the demo portfolio has phones")


@pytest.mark.asyncio
async def test_a_signed_sms_is_stored_queued_and_answered_with_empty_twiml(env):
    client, redis = env
    debtor_id, phone = await debtor_phone(redis)
    response = await post(client, "/twilio/sms", sms(sender=phone))
    assert response.status == 200
    assert response.content_type == "text/xml"
    assert "<Response></Response>" in await response.text()
    keys = Keys(PREFIX)
    assert await redis.lrange(keys.pending(debtor_id), 0, -1) == [b"SM" + b"a" * 32]
    stored = json.loads(await redis.hget(keys.inbound("SM" + "a" * 32), "message"))
    assert stored["channel"] == "sms" and stored["provider"] == "twilio"


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["unsigned", "forged", "other_token", "tampered_body",
                                 "signed_for_the_host_header", "other_path"])
async def test_requests_twilio_did_not_sign_get_403_and_store_nothing(env, how):
    client, redis = env
    params = sms()
    kwargs: dict = {}
    if how == "unsigned":
        response = await client.post("/twilio/sms", data=params)
    else:
        if how == "forged":
            kwargs["signature"] = base64.b64encode(b"x" * 20).decode()
        elif how == "other_token":
            kwargs["signature"] = RequestValidator("not-ours").compute_signature(BASE + "/twilio/sms", params)
        elif how == "signed_for_the_host_header":
            # signed for the URL the attacker's Host header claims, not the configured one
            kwargs["signed_for"] = f"http://{client.host}:{client.port}/twilio/sms"
        elif how == "other_path":
            kwargs["signed_for"] = BASE + "/twilio/status"
        signature = kwargs.pop("signature", None)
        url = kwargs.pop("signed_for", BASE + "/twilio/sms")
        sig = signature or RequestValidator(TOKEN).compute_signature(url, params)
        body = dict(params, Body="pay nothing") if how == "tampered_body" else params
        response = await client.post("/twilio/sms", data=body, headers={"X-Twilio-Signature": sig})
    assert response.status == 403
    assert not [k async for k in redis.scan_iter(match=f"{PREFIX}:in:*")]


@pytest.mark.asyncio
async def test_a_replayed_or_duplicate_webhook_is_processed_once(env):
    client, redis = env
    debtor_id, phone = await debtor_phone(redis)
    params = sms(sender=phone)
    for _ in range(4):   # Twilio retries, and an attacker replays a captured request
        assert (await post(client, "/twilio/sms", params)).status == 200
    assert await redis.llen(Keys(PREFIX).pending(debtor_id)) == 1
    assert await redis.xlen(Keys(PREFIX).transcript(debtor_id)) == 1


@pytest.mark.asyncio
async def test_another_accounts_request_is_refused_even_if_signed(env):
    client, _ = env
    response = await post(client, "/twilio/sms", sms(AccountSid="AC" + "2" * 32))
    assert response.status == 403


@pytest.mark.asyncio
@pytest.mark.parametrize("change, error", [
    ({"MessageSid": "not-a-sid"}, "MessageSid"),
    ({"From": "hello"}, "From"),
    ({"Body": "", "NumMedia": "0"}, "no Body"),
    ({"NumMedia": "many"}, "NumMedia"),
    ({"Body": "x" * 1601}, "longer"),
])
async def test_signed_but_malformed_requests_get_400_with_the_reason(env, change, error):
    client, redis = env
    response = await post(client, "/twilio/sms", sms(**change))
    assert response.status == 400
    assert error in await response.text()
    assert not [k async for k in redis.scan_iter(match=f"{PREFIX}:in:*")]


@pytest.mark.asyncio
async def test_whatsapp_fields_are_parsed(env):
    client, redis = env
    _, phone = await debtor_phone(redis)
    params = sms(sender=f"whatsapp:{phone}", body="", ButtonPayload="PLAN",
                 ButtonText="Payment plan", ProfileName="Anna", WaId=phone.lstrip("+"),
                 To="whatsapp:+3197010520001")
    assert (await post(client, "/twilio/whatsapp", params)).status == 200
    stored = json.loads(await redis.hget(Keys(PREFIX).inbound("SM" + "a" * 32), "message"))
    assert stored["channel"] == "whatsapp" and stored["address"] == phone
    assert stored["button_payload"] == "PLAN" and stored["body"] == "Payment plan"
    assert stored["profile_name"] == "Anna"


def test_media_urls_are_kept_as_references():
    message = parse_message(sms(body="", NumMedia="2", MediaUrl0="https://api.twilio.com/m/1",
                                MediaContentType0="image/jpeg", MediaUrl1="https://api.twilio.com/m/2"))
    assert message.media_urls == ("https://api.twilio.com/m/1", "https://api.twilio.com/m/2")
    with pytest.raises(TwilioRequestError):
        parse_message(sms(NumMedia="11"))


@pytest.mark.asyncio
async def test_an_unknown_sender_gets_a_conversation_named_by_a_digest_and_is_listed(env):
    client, redis = env
    stranger = "+31687654321"
    assert (await post(client, "/twilio/sms", sms(sender=stranger))).status == 200
    listed = [m.decode() for m in await redis.smembers(Keys(PREFIX).unknown_senders)]
    assert len(listed) == 1 and listed[0].startswith("unknown-")
    assert "687654321" not in listed[0]           # the number itself is not in the id


@pytest.mark.asyncio
async def test_status_callbacks_move_delivery_state_forward_only(env):
    client, redis = env
    keys = Keys(PREFIX)
    await redis.hset(keys.delivery("m1"), mapping={"message_id": "m1", "state": "submitted",
                                                   "conversation_id": "D1", "channel": "sms"})
    path = "/twilio/status?m=m1"

    async def status(value: str, code: str | None = None) -> int:
        params = {"MessageSid": "SM" + "b" * 32, "AccountSid": ACCOUNT, "MessageStatus": value,
                  "To": "+31612345678", "From": "+3197010520000"}
        if code:
            params["ErrorCode"] = code
        return (await post(client, path, params)).status

    assert await status("delivered") == 204
    assert await status("sent") == 204          # late: ignored
    assert await status("undelivered", "30003") == 204   # after delivered: ignored
    record = await redis.hgetall(keys.delivery("m1"))
    assert record[b"state"] == b"delivered" and b"error_code" not in record
    assert await status("read") == 204
    assert (await redis.hget(keys.delivery("m1"), "state")) == b"read"
    events = [json.loads(e[b"data"]) for _, e in await redis.xrange(keys.transcript("D1"))]
    assert [e["status"] for e in events] == ["delivered", "read"]


@pytest.mark.asyncio
async def test_a_failed_status_queues_the_failure_job(env):
    client, redis = env
    keys = Keys(PREFIX)
    await redis.hset(keys.delivery("m2"), mapping={"message_id": "m2", "state": "sent",
                                                   "conversation_id": "D1", "channel": "sms"})
    params = {"MessageSid": "SM" + "c" * 32, "AccountSid": ACCOUNT, "MessageStatus": "undelivered",
              "ErrorCode": "30005", "To": "+31612345678"}
    assert (await post(client, "/twilio/status?m=m2", params)).status == 204
    assert (await redis.hget(keys.delivery("m2"), "error_code")) == b"30005"
    assert await redis.exists("arq:job:fail:m2")
