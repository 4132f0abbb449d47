"""Per-debtor payment-page links: signed, expiring, and telling nothing by themselves.

A link is ``<public url>/pay/<token>``; the token is the debtor id signed with a timestamp by
itsdangerous (HMAC-SHA256, URL-safe), so it cannot be forged or altered, and it expires after
the portfolio's ``payment_page.link_valid_days``. The token carries the debtor id, not their
name or balance; the page shows those only after the person verified (service/pay_page.py).
"""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "nudge.pay-link.v1"


class PayLinkError(ValueError):
    """The link was altered, forged or has expired; `expired` tells which."""

    def __init__(self, message: str, *, expired: bool = False):
        super().__init__(message)
        self.expired = expired


class PayLinks:
    def __init__(self, secret: str, public_url: str):
        if not secret:
            raise ValueError("NUDGE_PAY_LINK_SECRET is not set (run `make run` once, or set it)")
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.public_url = public_url.rstrip("/")

    def token(self, debtor_id: str) -> str:
        return self._serializer.dumps({"d": debtor_id})

    def url(self, debtor_id: str) -> str:
        return f"{self.public_url}/pay/{self.token(debtor_id)}"

    def debtor_id(self, token: str, *, max_age_seconds: float) -> str:
        """The debtor a token was made for; PayLinkError when forged, altered or too old."""
        try:
            data = self._serializer.loads(token, max_age=max_age_seconds)
        except SignatureExpired as exc:
            raise PayLinkError("this payment link has expired", expired=True) from exc
        except BadSignature as exc:
            raise PayLinkError("this payment link is not valid") from exc
        if not isinstance(data, dict) or not isinstance(data.get("d"), str):
            raise PayLinkError("this payment link is not valid")
        return data["d"]

    def issued_at(self, token: str) -> float | None:
        """When a (valid or expired) token was made, for the audit; None when forged."""
        try:
            _, when = self._serializer.loads(token, return_timestamp=True, max_age=None)
        except (BadSignature, SignatureExpired):
            return None
        return when.timestamp()
