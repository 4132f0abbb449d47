"""Twilio's webhooks: an inbound SMS or WhatsApp message, and a status callback.

Signatures: Twilio signs each request with HMAC-SHA1 over the full URL it called plus the
sorted POST parameters (``X-Twilio-Signature``); the SDK's ``RequestValidator`` checks it.
The URL must be the one Twilio called, which behind a proxy or tunnel is not the URL our
server sees, so it is built from the configured public base URL and the request's path and
query, never from the Host header (an attacker controls that one).

Parsing trusts nothing: every field Nudge uses is checked, and a request that is signed but
malformed gets a clear 400 rather than a half-stored message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import phonenumbers
from twilio.request_validator import RequestValidator, get_signature_algorithm

from channels.base import InboundMessage

_MESSAGE_SID = re.compile(r"^(SM|MM|IM)[0-9a-f]{32}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
MAX_BODY = 1600
MAX_MEDIA = 10


class TwilioRequestError(ValueError):
    """A signed request whose content is not what Twilio sends."""


def signature_valid(secret: str, public_url: str, params: Mapping[str, str] | str,
                    signature: str | None, settings_header: str | None = None) -> bool:
    """True if `signature` is Twilio's for this URL and these form parameters.

    `params` may be a multi-dict (aiohttp's form): Twilio signs every value of a repeated
    parameter. `settings_header` is X-Twilio-Webhooks-Signature-Settings: when present it
    names the algorithm (HMAC-SHA256) and the request is signed with the webhook shared key,
    which the caller passes as `secret` instead of the auth token."""
    if not signature or not secret:
        return False
    algorithm = get_signature_algorithm(settings_header)
    return RequestValidator(secret).validate(public_url, params, signature, algorithm)


def _e164(value: str, field: str) -> str:
    bare = value.removeprefix("whatsapp:")
    try:
        number = phonenumbers.parse(bare, None)
    except phonenumbers.NumberParseException:
        raise TwilioRequestError(f"{field} is not a phone number in E.164 form") from None
    if not phonenumbers.is_possible_number(number):
        raise TwilioRequestError(f"{field} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _message_sid(params: Mapping[str, str]) -> str:
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    if not _MESSAGE_SID.match(sid):
        raise TwilioRequestError("MessageSid is missing or malformed")
    return sid


def check_account(params: Mapping[str, str], account_sid: str) -> None:
    """A request for another Twilio account is not ours, even if signed with a token we know."""
    sent = params.get("AccountSid", "")
    if not _ACCOUNT_SID.match(sent) or (account_sid and sent != account_sid):
        raise TwilioRequestError("AccountSid is missing or not this account's")


def parse_message(params: Mapping[str, str], *, received_at: float | None = None) -> InboundMessage:
    """An inbound SMS or WhatsApp message. The channel comes from the From address's prefix."""
    sid = _message_sid(params)
    sender = params.get("From", "")
    channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
    address = _e164(sender, "From")
    to = _e164(params.get("To", ""), "To")
    body = params.get("Body", "") or ""
    if len(body) > MAX_BODY:
        raise TwilioRequestError(f"Body is longer than {MAX_BODY} characters")
    try:
        num_media = int(params.get("NumMedia", "0") or 0)
    except ValueError:
        raise TwilioRequestError("NumMedia is not a number") from None
    if not 0 <= num_media <= MAX_MEDIA:
        raise TwilioRequestError(f"NumMedia must be between 0 and {MAX_MEDIA}")
    media = tuple(params[f"MediaUrl{i}"] for i in range(num_media)
                  if params.get(f"MediaUrl{i}", "").startswith("https://"))
    button = (params.get("ButtonPayload") or "").strip() or None
    if not body.strip() and not media and not button:
        raise TwilioRequestError("the message has no Body, media or button")
    profile = (params.get("ProfileName") or "").strip()[:100] or None
    return InboundMessage(
        message_id=sid, channel=channel, address=address,
        body=body.strip() or (params.get("ButtonText") or "").strip(),
        received_at=received_at or time.time(), to=to, media_urls=media,
        profile_name=profile if channel == "whatsapp" else None, provider="twilio",
        button_payload=button)


@dataclass(frozen=True)
class StatusUpdate:
    message_sid: str
    status: str                 # Twilio's MessageStatus
    error_code: str | None
    channel: str


TWILIO_STATUSES = {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "read",
                   "undelivered", "failed", "canceled", "receiving", "received",
                   "partially_delivered"}


def parse_status(params: Mapping[str, str]) -> StatusUpdate:
    sid = _message_sid(params)
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if status not in TWILIO_STATUSES:
        raise TwilioRequestError("MessageStatus is missing or unknown")
    code = (params.get("ErrorCode") or "").strip() or None
    if code is not None and not code.isdigit():
        raise TwilioRequestError("ErrorCode is not a number")
    channel = "whatsapp" if params.get("To", "").startswith("whatsapp:") else "sms"
    return StatusUpdate(sid, status, code, channel)
