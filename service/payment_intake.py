"""Payments coming in: from the payment provider's webhook (signed JSON, one payment a call) or
from a CSV file of payments (a bank export, a creditor's remittance file).

Both become the same `Payment`, with the amount in exact minor units: amounts are parsed as
Decimal (a JSON number too, with ``parse_float=Decimal``), never as float, and an amount with
more decimals than its currency has is refused rather than rounded.

`PaymentLedger.record` takes each payment id in once: a sender retrying a payment we already
took gets "duplicate", and applying it (crediting the arrangement, appending the business
event) happens once. If applying fails, the payment id is released again so the sender's
retry is applied, not mistaken for a duplicate.

Webhook body (JSON object; unknown fields are ignored):

    {"payment_id": "pay_123", "debtor_id": "D-EN-001" | "reference": "NWM-2026-62403",
     "amount": "25.00" | 25.00, "currency": "GBP" (default: the deployment's),
     "paid_at": "2026-05-06T10:00:00Z", "method": "card" (optional)}
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core.debtors import CURRENCIES, minor_digits, minor_to_decimal
from service.keys import Keys
from service.logs import get_logger
from service.signatures import HEADER, SignatureError, verify

log = get_logger("payment_intake")

Source = Literal["webhook", "csv"]
Outcome = Literal["recorded", "duplicate"]
Apply = Callable[["Payment"], Awaitable[Any]]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")   # ids end up in Redis keys
_PLAIN_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
MAX_AMOUNT_DIGITS = 15       # before the decimal point: no debt is a quadrillion
APPLY_TIMEOUT_SECONDS = 300  # an "applying" marker left by a crashed process expires after this
CSV_REQUIRED = ("payment_id", "amount", "paid_at")


class PaymentInputError(ValueError):
    """A payment cannot be taken in; the message names the field and what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


class PaymentBusy(Exception):
    """The same payment id is being applied right now (a concurrent retry): try again later."""


@dataclass(frozen=True)
class Payment:
    payment_id: str
    amount_minor: int
    currency: str
    paid_at: datetime              # UTC
    source: Source
    debtor_id: str | None = None   # at least one of debtor_id and reference
    reference: str | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if not (self.debtor_id or self.reference):
            raise PaymentInputError("debtor_id", "give the debtor_id or the reference")

    @property
    def amount(self) -> Decimal:
        return minor_to_decimal(self.amount_minor, self.currency)

    def event_data(self) -> dict[str, Any]:
        """For a business event: the amount as a decimal string, times in ISO UTC."""
        data = asdict(self)
        data["amount"] = str(self.amount)
        data["paid_at"] = self.paid_at.isoformat().replace("+00:00", "Z")
        return data


@dataclass(frozen=True)
class RowError:
    line: int          # line in the file, the header being line 1
    message: str


# --- fields ---------------------------------------------------------------------------------

def parse_amount(value: Any, currency: str) -> int:
    """An amount (decimal string, or a Decimal/int from JSON) in exact minor units."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        # float only reaches here if a caller parsed JSON without parse_float=Decimal
        raise PaymentInputError("amount", f"expected an amount like \"25.00\", got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not _PLAIN_DECIMAL.match(text.lstrip("-")):
            raise PaymentInputError("amount", f"expected an amount like 25.00 (a dot for the "
                                              f"decimals, no separators), got {value!r}")
        value = Decimal(text)
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise PaymentInputError("amount", f"expected an amount, got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise PaymentInputError("amount", f"must be more than 0, got {value}")
    if amount.adjusted() >= MAX_AMOUNT_DIGITS:
        # 1e999999 overflowed Decimal and 1e5000 was an int too long for Redis: both a 500
        raise PaymentInputError("amount", f"is too large (more than {MAX_AMOUNT_DIGITS} digits "
                                          f"before the decimal point)")
    digits = minor_digits(currency)
    scaled = amount.scaleb(digits)
    # below one minor unit: too many decimals (and 1E-999999999 scaled to 0, an empty payment)
    if amount.adjusted() < -digits or scaled != scaled.to_integral_value():
        allowed = f"{digits} decimals" if digits else "no decimals"
        raise PaymentInputError("amount", f"{value} has more decimals than {currency} "
                                          f"allows ({allowed})")
    return int(scaled)


def parse_currency(value: Any, default: str | None) -> str:
    if value in (None, ""):
        if default is None:
            raise PaymentInputError("currency", "is missing")
        value = default
    code = value.strip().upper() if isinstance(value, str) else value
    if not isinstance(code, str) or code not in CURRENCIES:
        raise PaymentInputError("currency", f"expected an ISO 4217 code like EUR, got {value!r}")
    return code


def parse_paid_at(value: Any) -> datetime:
    """ISO 8601 with a time zone (Z or +01:00), or a bare date (taken as 00:00 UTC)."""
    if not isinstance(value, str) or not value.strip():
        raise PaymentInputError("paid_at", "expected a time like 2026-05-06T10:00:00Z")
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PaymentInputError("paid_at", f"expected a time like 2026-05-06T10:00:00Z, "
                                           f"got {value!r}") from None
    if moment.tzinfo is None:
        raise PaymentInputError("paid_at", f"{value!r} has no time zone; add Z for UTC")
    try:
        return moment.astimezone(UTC)
    except OverflowError:       # 9999-12-31T23:59-01:00 is in the year 10000 in UTC
        raise PaymentInputError("paid_at", f"{value!r} is out of range") from None


def _identifier(raw: dict[str, Any], field: str, required: bool) -> str | None:
    value = raw.get(field)
    if value in (None, ""):
        if required:
            raise PaymentInputError(field, "is missing")
        return None
    if not isinstance(value, str) or not _ID.match(value.strip()):
        raise PaymentInputError(field, "expected letters, digits and . _ : / - "
                                       f"(at most 128), got {str(value)[:40]!r}")
    return value.strip()


def payment_from(raw: dict[str, Any], source: Source, default_currency: str | None) -> Payment:
    """A Payment from one record (a JSON object, a CSV row), or PaymentInputError."""
    payment_id = _identifier(raw, "payment_id", True)
    debtor_id = _identifier(raw, "debtor_id", False)
    reference = _identifier(raw, "reference", False)
    if not (debtor_id or reference):
        raise PaymentInputError("debtor_id", "give the debtor_id or the reference")
    currency = parse_currency(raw.get("currency"), default_currency)
    method = raw.get("method")
    if method is not None and not isinstance(method, str):
        raise PaymentInputError("method", f"expected text, got {method!r}")
    return Payment(payment_id=payment_id, amount_minor=parse_amount(raw.get("amount"), currency),
                   currency=currency, paid_at=parse_paid_at(raw.get("paid_at")), source=source,
                   debtor_id=debtor_id, reference=reference, method=(method or None))


# --- the two ways in ---------------------------------------------------------------------

def parse_payment_json(body: bytes, default_currency: str) -> Payment:
    try:
        raw = json.loads(body, parse_float=Decimal)   # 25.10 stays exactly 25.10
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or objects nested thousands deep ("[[[[..."), once a 500
        raise PaymentInputError("body", f"is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise PaymentInputError("body", "expected a JSON object")
    return payment_from(raw, "webhook", default_currency)


def parse_payments_csv(text: str, default_currency: str | None = None
                       ) -> tuple[list[Payment], list[RowError]]:
    """Every good row as a Payment, every bad one as a RowError naming its line (the header is
    line 1). A bad row never stops the others. Without `default_currency` the currency column
    must be filled in."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in CSV_REQUIRED if name not in header]
    if "debtor_id" not in header and "reference" not in header:
        missing.append("debtor_id or reference")
    if missing:
        return [], [RowError(1, f"missing column(s): {', '.join(missing)}")]
    reader.fieldnames = header
    payments: list[Payment] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for row in reader:
        # The row's first line: where it ends, less the line breaks inside quoted cells.
        cells = [v for v in row.values() if isinstance(v, str)]
        start = reader.line_num - sum(v.count("\n") for v in cells)
        if not any(value.strip() for value in cells):
            continue                                  # blank line
        try:
            if None in row:  # more cells than the header has
                raise PaymentInputError("row", f"has more cells than the {len(header)} columns")
            payment = payment_from(row, "csv", default_currency)
        except PaymentInputError as exc:
            errors.append(RowError(start, str(exc)))
            continue
        if payment.payment_id in seen:
            errors.append(RowError(start, f"payment_id: {payment.payment_id} is already on "
                                          f"line {seen[payment.payment_id]}"))
            continue
        seen[payment.payment_id] = start
        payments.append(payment)
    return payments, errors


# --- taking a payment in once ----------------------------------------------------------------

class PaymentLedger:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    async def record(self, payment: Payment, apply: Apply) -> Outcome:
        """Apply `payment` unless its id was taken in before ("duplicate").

        The id is claimed first (SET NX), so two deliveries of one payment cannot both apply
        it. The claim says "applying" and expires after APPLY_TIMEOUT_SECONDS: a process that
        dies mid-apply does not block the payment for ever. Once applied it says "recorded"
        for good. If `apply` raises, the claim is removed and the error re-raised."""
        key = self.keys.payment(payment.payment_id)
        marker = {"state": "applying", "source": payment.source, "at": time.time()}
        for _ in range(3):
            if await self.redis.set(key, json.dumps(marker), nx=True, ex=APPLY_TIMEOUT_SECONDS):
                break
            existing = await self.redis.get(key)
            if existing is None:
                continue  # released in between (an apply failed): claim it again
            if json.loads(existing).get("state") == "applying":
                raise PaymentBusy(payment.payment_id)
            return "duplicate"
        else:
            raise PaymentBusy(payment.payment_id)
        try:
            await apply(payment)
        except BaseException:
            await self.redis.delete(key)
            raise
        marker.update(state="recorded", at=time.time())
        await self.redis.set(key, json.dumps(marker))   # no expiry: a duplicate stays one
        return "recorded"


def payment_webhook_handler(secret_provider: Callable[[], str | Sequence[str] | None],
                            ledger: PaymentLedger, apply: Apply, *,
                            default_currency: str = "EUR"
                            ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for the payment webhook. `secret_provider` is asked on every call
    (so a rotated secret takes effect without a restart). Answers: 200 {"status": "recorded"
    | "duplicate"}; 400 bad JSON or fields; 403 bad signature; 422 `apply` refused the payment
    (PaymentInputError, e.g. an unknown reference); 503 Redis down or the same payment being
    applied right now (the sender retries); 500 any other failure (the sender retries)."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(secret_provider(), request.headers.get(HEADER), body)
        except SignatureError as exc:
            # The reason only: never the body, which holds who paid what.
            log.warning("payment_webhook.refused", reason=str(exc))
            return web.json_response({"error": f"signature {exc}"}, status=403)
        try:
            payment = parse_payment_json(body, default_currency)
        except PaymentInputError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            outcome = await ledger.record(payment, apply)
        except PaymentInputError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        except PaymentBusy:
            return web.json_response({"error": "this payment is being applied; retry"},
                                     status=503, headers={"Retry-After": "5"})
        except (RedisError, OSError) as exc:
            log.warning("payment_webhook.unavailable", error=type(exc).__name__)
            return web.json_response({"error": "temporarily unavailable; retry"}, status=503,
                                     headers={"Retry-After": "30"})
        except Exception:
            log.exception("payment_webhook.apply_failed", payment_id=payment.payment_id)
            return web.json_response({"error": "payment could not be applied; retry"},
                                     status=500)
        log.info("payment_webhook.taken", payment_id=payment.payment_id, outcome=outcome)
        return web.json_response({"status": outcome, "payment_id": payment.payment_id})

    return handle
