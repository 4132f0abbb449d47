"""One signature scheme for every webhook Nudge sends or takes: the business events we POST to
creditors (service/creditor_webhooks.py) and the payments posted to us
(service/payment_intake.py).

    Nudge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

* The timestamp is signed with the body, so a captured request cannot be replayed after the
  tolerance (5 minutes by default) has passed.
* Several ``v1=`` values may be present: while a secret is being rotated the sender signs with
  the old and the new one, and a receiver holding either accepts. A receiver may likewise hold
  several secrets. Unknown schemes (``v0=``, ``v2=``) are ignored, so a future scheme can be
  added beside v1 without breaking today's receivers.
* Signatures are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable

HEADER = "Nudge-Signature"
DEFAULT_TOLERANCE = 300
_MAX_HEADER = 4096  # a real header is ~80 characters a signature; refuse junk before parsing
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Secrets = str | bytes | Iterable[str | bytes]


class SignatureError(Exception):
    """The signature is missing, malformed, outside the time tolerance or does not match.

    The message says which, and never contains the body or a secret."""


def _secret_list(secret: Secrets | None) -> list[bytes]:
    if secret is None:
        return []
    items = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    return [s.encode() if isinstance(s, str) else s for s in items if s]


def compute(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex v1 signature of `body` sent at `timestamp`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: Secrets, body: bytes, now: float | None = None) -> str:
    """The Nudge-Signature header value for `body`; one v1 per secret (rotation)."""
    keys = _secret_list(secret)
    if not keys:
        raise ValueError("cannot sign without a secret")
    timestamp = int(time.time() if now is None else now)
    return ",".join([f"t={timestamp}", *(f"v1={compute(k, timestamp, body)}" for k in keys)])


def parse(header: str | None) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header, or SignatureError saying what is wrong."""
    if header is None or not header.strip():
        raise SignatureError(f"missing: no {HEADER} header")
    if len(header) > _MAX_HEADER:
        raise SignatureError(f"malformed: header longer than {_MAX_HEADER} characters")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed: expected name=value pairs, got {part.strip()[:20]!r}")
        if name == "t":
            if timestamp is not None:
                raise SignatureError("malformed: more than one t=")
            if not value.isascii() or not value.isdigit():
                raise SignatureError("malformed: t= must be whole unix seconds")
            timestamp = int(value)
        elif name == "v1":
            if not _HEX64.match(value):
                raise SignatureError("malformed: v1= must be 64 lower-case hex digits")
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("malformed: no t= timestamp")
    if not signatures:
        raise SignatureError("malformed: no v1= signature")
    return timestamp, signatures


def verify(secret: Secrets | None, header: str | None, body: bytes, now: float | None = None,
           tolerance: int = DEFAULT_TOLERANCE) -> None:
    """Return quietly when `header` is a valid signature of `body` by (one of) `secret`;
    otherwise raise SignatureError with the reason."""
    keys = _secret_list(secret)
    if not keys:
        # A receiver with no secret configured must refuse everything, not accept everything.
        raise SignatureError("no signing secret is configured here")
    timestamp, signatures = parse(header)
    now = time.time() if now is None else now
    if timestamp < now - tolerance:
        raise SignatureError(f"too old: signed {int(now - timestamp)} s ago, "
                             f"tolerance is {tolerance} s")
    if timestamp > now + tolerance:
        raise SignatureError(f"in the future: signed {int(timestamp - now)} s ahead, "
                             f"tolerance is {tolerance} s")
    # Check every pair without stopping early, so the time taken says nothing about which
    # signature or secret came close.
    matched = False
    for key in keys:
        expected = compute(key, timestamp, body)
        for given in signatures:
            matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise SignatureError("mismatch: no v1 signature matches the body")
