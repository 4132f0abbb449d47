"""Recording a payment: from the signed payment webhook or a CSV import to the debtor's
balance, their arrangement, the business events and a receipt.

service/payment_intake.py parses and de-duplicates (one payment id, applied once); this module
says what applying means. The receipt is a job for the worker (`payment_receipt`), so a
webhook answers at once and a provider outage cannot lose the thank-you.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arq.connections import ArqRedis

from service.arrangements import ArrangementBook
from service.debtor_store import RedisDebtorStore
from service.keys import Keys
from service.payment_intake import (
    Payment, PaymentInputError, PaymentLedger, RowError, parse_payments_csv,
)

RECEIPT_JOB = "payment_receipt"


@dataclass(frozen=True)
class ImportReport:
    recorded: list[str]
    duplicates: list[str]
    errors: list[RowError]


class PaymentRecorder:
    def __init__(self, redis: ArqRedis, keys: Keys, queue_name: str,
                 book: ArrangementBook | None = None):
        self.redis = redis
        self.keys = keys
        self.queue_name = queue_name
        self.debtors = RedisDebtorStore(redis, keys)
        self.book = book or ArrangementBook(redis, keys)
        self.ledger = PaymentLedger(redis, keys)

    async def apply(self, payment: Payment) -> None:
        """Apply one payment (the ledger calls this once per payment id)."""
        debtor = None
        if payment.debtor_id:
            debtor = await self.debtors.get(payment.debtor_id)
        elif payment.reference:
            debtor = await self.debtors.find_by_reference(payment.reference)
        if debtor is None:
            raise PaymentInputError("debtor_id" if payment.debtor_id else "reference",
                                    "no debtor with this identifier")
        if payment.currency != debtor.currency:
            raise PaymentInputError("currency", f"is {payment.currency} but the debt is in "
                                                f"{debtor.currency}")
        await self.book.apply_payment(debtor, payment.payment_id, payment.amount_minor,
                                      payment.paid_at.date(), source=payment.source)
        if hasattr(self.redis, "enqueue_job"):
            await self.redis.enqueue_job(RECEIPT_JOB, debtor.id, payment.payment_id,
                                         payment.amount_minor,
                                         _job_id=f"receipt:{payment.payment_id}",
                                         _queue_name=self.queue_name)

    async def record(self, payment: Payment) -> str:
        """"recorded" or "duplicate"."""
        return await self.ledger.record(payment, self.apply)

    async def import_csv(self, path: Path) -> ImportReport:
        """Every good row recorded (duplicates skipped), every broken one reported with its
        line; one bad row never stops the others."""
        payments, errors = parse_payments_csv(path.read_text(encoding="utf-8-sig"))
        recorded, duplicates = [], []
        errors = list(errors)
        lines = _lines_by_payment(path)
        for payment in payments:
            try:
                outcome = await self.record(payment)
            except PaymentInputError as exc:
                errors.append(RowError(lines.get(payment.payment_id, 0), str(exc)))
                continue
            (recorded if outcome == "recorded" else duplicates).append(payment.payment_id)
        return ImportReport(recorded, duplicates, sorted(errors, key=lambda e: e.line))


def _lines_by_payment(path: Path) -> dict[str, int]:
    """payment_id -> line number in the file (the header is line 1), for error messages."""
    import csv

    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return {(row.get("payment_id") or "").strip(): reader.line_num for row in reader}


# --- the gateway's payment webhook -------------------------------------------------------------
def add_routes(app) -> None:
    """POST /payments/webhook: payments the creditor's payment provider reports, signed with
    NUDGE_PAYMENT_WEBHOOK_SECRET (service/signatures.py)."""
    from service import appkeys as K
    from service.payment_intake import payment_webhook_handler

    state: dict = {}

    def handler():
        # Made on first use: the Redis pool exists only once the app has started. The secret
        # is read on every call, so a rotated one applies without a restart.
        if "handler" not in state:
            settings = app[K.SETTINGS]
            recorder = PaymentRecorder(app[K.REDIS], app[K.KEYS], settings.queue_name)
            state["handler"] = payment_webhook_handler(
                lambda: settings.payment_webhook_secret, recorder.ledger, recorder.apply,
                default_currency=settings.default_currency)
        return state["handler"]

    async def handle(request):
        return await handler()(request)

    app.router.add_post("/payments/webhook", handle)
