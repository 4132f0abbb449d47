"""Payments coming in (service/payment_intake.py): parsing (JSON and CSV), taking each payment
id in once with a real Redis, and the signed webhook handler in a real aiohttp server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from service.keys import Keys
from service.payment_intake import (
    Payment,
    PaymentBusy,
    PaymentInputError,
    PaymentLedger,
    parse_payment_json,
    parse_payments_csv,
    payment_webhook_handler,
)
from service.signatures import sign
from service.stack import free_port

SECRET = "pay_" + "9" * 32
PAID = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


def body(**fields) -> bytes:
    record = {"payment_id": "pay_1", "debtor_id": "D-EN-001", "amount": "25.00",
              "currency": "GBP", "paid_at": "2026-05-06T10:00:00Z", **fields}
    return json.dumps({k: v for k, v in record.items() if v is not None}).encode()


# --- JSON ------------------------------------------------------------------------------------

def test_a_good_payment():
    payment = parse_payment_json(body(method="card"), "EUR")
    assert payment == Payment("pay_1", 2500, "GBP", PAID, "webhook", debtor_id="D-EN-001",
                              method="card")
    assert payment.event_data()["amount"] == "25.00"
    assert payment.event_data()["paid_at"] == "2026-05-06T10:00:00Z"


@pytest.mark.parametrize("raw, minor", [
    (b'19.99', 1999),     # as a float this is 19.989999...: int(19.99 * 100) == 1998
    (b'0.29', 29),
    (b'25', 2500),
    (b'1e2', 10000),
    (b'"1000000.01"', 100000001),
])
def test_amounts_are_exact_minor_units(raw, minor):
    text = body().replace(b'"25.00"', raw)
    assert parse_payment_json(text, "EUR").amount_minor == minor


def test_currency_default_zero_decimal_currency_and_reference():
    payment = parse_payment_json(body(currency=None, debtor_id=None, reference="NWM-1",
                                      amount="1500"), "JPY")
    assert (payment.currency, payment.amount_minor, payment.reference) == ("JPY", 1500, "NWM-1")
    moved = parse_payment_json(body(paid_at="2026-05-06T12:00:00+02:00"), "EUR")
    assert moved.paid_at == PAID and moved.paid_at.tzinfo == UTC


@pytest.mark.parametrize("raw, message", [
    (b"not json", "body: is not valid JSON"),
    (b"\xff\xfe", "body: is not valid JSON"),
    (b"[1, 2]", "body: expected a JSON object"),
    (body(payment_id=None), "payment_id: is missing"),
    (body(payment_id="has space"), "payment_id: expected letters"),
    (body(debtor_id=None), "debtor_id: give the debtor_id or the reference"),
    (body(amount="-5.00"), "amount: must be more than 0"),
    (body(amount="0.00"), "amount: must be more than 0"),
    (body(amount="25.001"), "amount: 25.001 has more decimals than GBP allows (2 decimals)"),
    (body(amount="10.5", currency="JPY"),
     "amount: 10.5 has more decimals than JPY allows (no decimals)"),
    (body(amount="1,50"), "amount: expected an amount like 25.00"),
    (body(amount=True), "amount: expected an amount"),
    (body(amount=None), "amount: expected an amount"),
    (body(currency="XXY"), "currency: expected an ISO 4217 code"),
    (body(paid_at="2026-05-06T10:00:00"), "paid_at: '2026-05-06T10:00:00' has no time zone"),
    (body(paid_at="yesterday"), "paid_at: expected a time"),
    (body(method=5), "method: expected text"),
])
def test_bad_input_names_the_field(raw, message):
    with pytest.raises(PaymentInputError) as caught:
        parse_payment_json(raw, "EUR")
    assert str(caught.value).startswith(message)


def test_a_json_number_with_too_many_decimals_is_refused_not_rounded():
    with pytest.raises(PaymentInputError, match="more decimals"):
        parse_payment_json(body().replace(b'"25.00"', b"25.005"), "EUR")


# --- CSV -------------------------------------------------------------------------------------

CSV = (
    "payment_id,debtor_id,reference,amount,currency,paid_at,method\n"     # line 1
    "p1,D-EN-001,,25.00,GBP,2026-05-06T10:00:00Z,card\n"                 # 2 good
    "p2,,,10.00,GBP,2026-05-06,\n"                                       # 3 no debtor
    "p3,,HV-2026-1,12.5,EUR,2026-05-06,\n"                               # 4 good (by reference)
    "\n"                                                                 # 5 blank
    "p4,D-EN-002,,12.345,EUR,2026-05-06,\n"                              # 6 too many decimals
    "p5,D-EN-003,,\"7.00\",EUR,2026-05-06,\"bank\ntransfer\"\n"          # 7-8 good, two lines
    "p6,D-EN-004,,abc,EUR,2026-05-06,\n"                                 # 9 not an amount
    "p1,D-EN-001,,25.00,GBP,2026-05-06,\n"                               # 10 repeated id
    "p7,D-EN-005,,3.00,EUR,2026-05-06,,extra\n"                          # 11 extra cell
    "p8,D-EN-006,,4.00,EUR,2026-05-06T09:00:00+01:00,\n"                 # 12 good
)


def test_csv_reports_broken_rows_by_line_and_keeps_the_good_ones():
    payments, errors = parse_payments_csv(CSV)
    assert [p.payment_id for p in payments] == ["p1", "p3", "p5", "p8"]
    assert [p.amount_minor for p in payments] == [2500, 1250, 700, 400]
    assert payments[1].reference == "HV-2026-1" and payments[1].debtor_id is None
    assert payments[2].method == "bank\ntransfer" and all(p.source == "csv" for p in payments)
    assert payments[3].paid_at == datetime(2026, 5, 6, 8, 0, tzinfo=UTC)
    assert [(e.line, e.message.split(":")[0]) for e in errors] == [
        (3, "debtor_id"), (6, "amount"), (9, "amount"), (10, "payment_id"), (11, "row")]
    assert "already on line 2" in errors[3].message


def test_csv_header_problems_and_defaults():
    payments, errors = parse_payments_csv("payment_id,amount\np1,1.00\n")
    assert payments == [] and len(errors) == 1
    assert errors[0].line == 1
    assert errors[0].message == "missing column(s): paid_at, debtor_id or reference"
    # a BOM, upper-case headers, no currency column but a default
    payments, errors = parse_payments_csv("\ufeffPayment_ID,Reference,Amount,Paid_At\n"
                                          "p1,R-1,1.00,2026-05-06\n", default_currency="EUR")
    assert errors == [] and payments[0].currency == "EUR" and payments[0].amount_minor == 100
    _, errors = parse_payments_csv("payment_id,reference,amount,paid_at\np1,R-1,1.00,2026-05-06\n")
    assert errors[0].line == 2 and errors[0].message == "currency: is missing"


# --- taking a payment in once --------------------------------------------------------------

@pytest_asyncio.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def ledger(redis):
    return PaymentLedger(redis, Keys("pay"))


class Applier:
    """Stands in for what applying a payment does; fails the first `fail` calls."""

    def __init__(self, fail: int = 0):
        self.fail, self.applied = fail, []

    async def __call__(self, payment: Payment) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("arrangement store unavailable")
        self.applied.append(payment.payment_id)


@pytest.mark.asyncio
async def test_a_payment_is_applied_once(ledger, redis):
    apply = Applier()
    payment = parse_payment_json(body(), "EUR")
    assert await ledger.record(payment, apply) == "recorded"
    assert await ledger.record(payment, apply) == "duplicate"
    assert apply.applied == ["pay_1"]
    marker = json.loads(await redis.get(Keys("pay").payment("pay_1")))
    assert marker["state"] == "recorded" and await redis.ttl(Keys("pay").payment("pay_1")) == -1


@pytest.mark.asyncio
async def test_apply_failing_releases_the_id_so_the_retry_is_applied(ledger, redis):
    apply = Applier(fail=1)
    payment = parse_payment_json(body(), "EUR")
    with pytest.raises(RuntimeError, match="unavailable"):
        await ledger.record(payment, apply)
    assert await redis.get(Keys("pay").payment("pay_1")) is None
    assert await ledger.record(payment, apply) == "recorded"
    assert apply.applied == ["pay_1"]


@pytest.mark.asyncio
async def test_a_concurrent_retry_while_applying_is_told_to_come_back(ledger):
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(payment):
        started.set()
        await release.wait()

    payment = parse_payment_json(body(), "EUR")
    first = asyncio.create_task(ledger.record(payment, slow))
    await started.wait()
    with pytest.raises(PaymentBusy):
        await ledger.record(payment, slow)
    release.set()
    assert await first == "recorded"
    assert await ledger.record(payment, slow) == "duplicate"


# --- the webhook -----------------------------------------------------------------------------

@pytest_asyncio.fixture
async def hook(aiohttp_client, ledger):
    apply = Applier()
    app = web.Application()
    app.router.add_post("/webhooks/payments",
                        payment_webhook_handler(lambda: SECRET, ledger, apply,
                                                default_currency="EUR"))
    client = await aiohttp_client(app)
    client.apply = apply
    return client


async def post(client, raw: bytes, secret: str | None = SECRET, **headers):
    if secret:
        headers.setdefault("Nudge-Signature", sign(secret, raw))
    response = await client.post("/webhooks/payments", data=raw, headers=headers)
    return response.status, await response.json()


@pytest.mark.asyncio
async def test_webhook_records_then_reports_duplicates(hook):
    assert await post(hook, body()) == (200, {"status": "recorded", "payment_id": "pay_1"})
    # the sender retries (its own timeout): same payment, freshly signed
    assert await post(hook, body()) == (200, {"status": "duplicate", "payment_id": "pay_1"})
    assert hook.apply.applied == ["pay_1"]


@pytest.mark.asyncio
async def test_webhook_refuses_bad_signatures(hook, capsys):
    raw = body(payment_id="pay_sig")
    assert (await post(hook, raw, secret=None))[0] == 403
    status, answer = await post(hook, raw, secret="wrong")
    assert status == 403 and "mismatch" in answer["error"]
    tampered = body(payment_id="pay_sig", amount="2500.00")
    status, answer = await post(hook, tampered, **{"Nudge-Signature": sign(SECRET, raw)})
    assert status == 403
    assert hook.apply.applied == []
    captured = capsys.readouterr()
    logged = captured.out + captured.err
    assert "payment_webhook.refused" in logged and "mismatch" in logged   # the reason...
    assert "D-EN-001" not in logged and "2500.00" not in logged           # ...never the body


@pytest.mark.asyncio
async def test_webhook_explains_bad_input(hook):
    assert await post(hook, b"{broken") == (400, {"error": "body: is not valid JSON "
                                                           "(JSONDecodeError)"})
    status, answer = await post(hook, body(amount="1.234"))
    assert status == 400 and answer["error"].startswith("amount: 1.234 has more decimals")


@pytest.mark.asyncio
async def test_webhook_apply_failing_then_retried(aiohttp_client, ledger):
    apply = Applier(fail=1)
    app = web.Application()
    app.router.add_post("/webhooks/payments",
                        payment_webhook_handler(lambda: SECRET, ledger, apply))
    client = await aiohttp_client(app)
    status, answer = await post(client, body())
    assert status == 500 and "retry" in answer["error"]
    assert await post(client, body()) == (200, {"status": "recorded", "payment_id": "pay_1"})
    assert apply.applied == ["pay_1"]


@pytest.mark.asyncio
async def test_webhook_unknown_debtor_is_unprocessable(aiohttp_client, ledger):
    async def refuse(payment):
        raise PaymentInputError("debtor_id", f"no debtor {payment.debtor_id}")

    app = web.Application()
    app.router.add_post("/p", payment_webhook_handler(lambda: SECRET, ledger, refuse))
    client = await aiohttp_client(app)
    raw = body()
    response = await client.post("/p", data=raw, headers={"Nudge-Signature": sign(SECRET, raw)})
    assert response.status == 422
    assert (await response.json())["error"] == "debtor_id: no debtor D-EN-001"


@pytest.mark.asyncio
async def test_webhook_answers_503_when_redis_is_down(aiohttp_client):
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    app = web.Application()
    app.router.add_post("/webhooks/payments",
                        payment_webhook_handler(lambda: SECRET, PaymentLedger(dead, Keys("pay")),
                                                Applier()))
    client = await aiohttp_client(app)
    status, answer = await post(client, body())
    assert status == 503 and "retry" in answer["error"]
    await dead.aclose()


@pytest.mark.asyncio
async def test_webhook_without_a_configured_secret_refuses_everything(aiohttp_client, ledger):
    app = web.Application()
    app.router.add_post("/webhooks/payments", payment_webhook_handler(lambda: "", ledger,
                                                                      Applier()))
    client = await aiohttp_client(app)
    status, answer = await post(client, body())
    assert status == 403 and "no signing secret" in answer["error"]
