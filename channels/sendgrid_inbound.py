"""SendGrid Inbound Parse: the request's security check and its form, to a ParsedEmail.

Security: Inbound Parse's security policy signs each request with ECDSA (P-256, SHA-256) over
the timestamp header followed by the raw request body, base64 DER signature in
``X-Twilio-Email-Event-Webhook-Signature``, timestamp in
``X-Twilio-Email-Event-Webhook-Timestamp`` (the same scheme as SendGrid's signed Event
Webhook). The public key comes with the policy; we verify with ``cryptography``. Without a
configured key every request is refused: an unauthenticated inbound endpoint would let anyone
write into any debtor's conversation.

There is no freshness window on the timestamp: SendGrid retries a failed post for up to three
days, and a replayed post is a duplicate Message-ID, dropped like any other duplicate.

Both of Inbound Parse's modes arrive here: the default parsed mode (fields text, html, from,
headers...) and the raw mode ("Send Raw", the whole MIME message in the ``email`` field).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
)

from channels.email_inbound import (
    ParsedEmail,
    parse_sendgrid_fields,
    parse_sendgrid_raw,
)

_TEXT_FIELDS = {"text", "html", "subject", "from", "to", "cc"}
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class SendGridRequestError(ValueError):
    pass


def load_public_key(text: str) -> ec.EllipticCurvePublicKey | None:
    text = text.strip()
    if not text:
        return None
    try:
        key = (load_pem_public_key(text.encode()) if text.startswith("-----")
               else load_der_public_key(base64.b64decode(text)))
    except (ValueError, binascii.Error):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def verify_sendgrid_signature(public_key: str, body: bytes, headers: Mapping[str, str]) -> bool:
    key = load_public_key(public_key)
    signature, timestamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if key is None or not signature or not timestamp:
        return False
    try:
        key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def parse_sendgrid_request(content_type: str, body: bytes) -> ParsedEmail:
    """The posted form (multipart/form-data) as a ParsedEmail. The body was read whole for
    the signature, so the form is parsed from those bytes (the stdlib MIME parser reads
    multipart/form-data like any multipart)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise SendGridRequestError("Inbound Parse posts multipart/form-data")
    form = email.message_from_bytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body,
        policy=email.policy.HTTP)
    if not form.is_multipart():
        raise SendGridRequestError("the form has no parts")
    fields: dict[str, str | bytes] = {}
    attachments: dict[str, tuple[str, str, int]] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename and name != "email":
            attachments[name] = (filename, part.get_content_type(), len(content))
        elif name == "email":
            fields[name] = content        # the raw MIME message, as bytes
        elif name in _TEXT_FIELDS:
            # as bytes: the parser decodes them with the charsets SendGrid names in `charsets`
            fields[name] = content
        else:
            charset = part.get_content_charset() or "utf-8"
            try:
                fields[name] = content.decode(charset, errors="replace")
            except (LookupError, ValueError):
                # an unknown label, a NUL in it (ValueError), or a codec such as idna that
                # cannot "replace" (UnicodeError, a ValueError): the form's own UTF-8
                fields[name] = content.decode("utf-8", errors="replace")
    if "email" in fields:
        return parse_sendgrid_raw(fields)
    if "from" not in fields:
        raise SendGridRequestError("the form has neither an email field (raw mode) nor from")
    return parse_sendgrid_fields(fields, attachments)
